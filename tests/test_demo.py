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
    # the engine's reasons reach the user
    assert "idsc:BASE_SECURITY_PROFILE = idsc:TRUST_SECURITY_PROFILE does not hold" in out
    assert "use number 4 (3 completed)" in out
    assert "is revoked" in out
