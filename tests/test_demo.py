"""The README's main job: `connector demo` runs a small data space end to end."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_demo_runs_end_to_end() -> None:
    result = subprocess.run([sys.executable, "-m", "connector", "demo"], capture_output=True,
                            text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Demo complete." in out
    # a negotiation between real connector processes, and the engine's reasons reach the user
    assert "FINALIZED: agreement" in out
    assert "the consumer sees: ['urn:asset:weather-2026']" in out
    assert "asking for urn:asset:grid-load directly: TERMINATED" in out
    assert "SECURITY_LEVEL" in out
    assert "use number 4 (3 completed)" in out
    assert "is revoked" in out
    assert "the consumer's catalog request now gets: 502" in out
