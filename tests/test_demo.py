"""The README's main job: `connector demo` runs a small data space end to end."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_demo_runs_end_to_end() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "connector", "demo"], capture_output=True, text=True, timeout=180, check=False
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Demo complete." in out
    # a negotiation between real connector processes, and the engine's reasons reach the user
    assert "FINALIZED: agreement" in out
    assert "the consumer sees: ['urn:asset:weather-2026']" in out
    assert "asking for urn:asset:grid-load directly: TERMINATED" in out
    assert "SECURITY_LEVEL" in out
    assert "use number 4 (3 completed)" in out
    # the data moves under the agreement: pull, push, the 4th request denied at the data plane
    assert "done: 17 bytes" in out and "signed receipt(s) verified" in out
    assert "COMPLETED: transfer" in out
    assert "DENY   pull number 4 at the provider's data plane" in out
    # the local read shares the agreement's one limit, used up by the three pulls
    assert "DENY   local read of" in out and "one limit for pulls, pushes and local reads" in out
    assert "OK: 4 provider receipts match the consumer's log" in out
    assert "is revoked" in out
    assert "the consumer's catalog request now gets: 502" in out


def test_demo_keep_running_json_leaves_the_space_up_until_sigterm() -> None:
    """`demo --keep-running --json`: a machine-readable summary, then the data space stays up
    (its dashboards' URLs in the summary) until SIGTERM, which stops every process."""
    import json
    import signal
    import urllib.request

    proc = subprocess.Popen(
        [sys.executable, "-m", "connector", "demo", "--keep-running", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        text = ""
        decoder = json.JSONDecoder()
        while True:  # the summary is printed whole, then the demo waits
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else "no output"
            text += line
            try:
                summary, _ = decoder.raw_decode(text.strip())
                break
            except ValueError:
                continue
        assert summary["agreement"]["state"] == "FINALIZED"
        denied = [d for d in summary["decisions"] if not d["permit"]]
        assert any("pull number 4" in d["what"] and "use number 4" in d["reason"] for d in denied)
        assert all(a["verified"] for a in summary["audit"]) and len(summary["audit"]) == 3
        assert summary["refusedNegotiation"]["state"] == "TERMINATED"
        running = summary["running"]
        for name in ("Provider", "Consumer"):
            with urllib.request.urlopen(running[name]["managementApi"] + "/health", timeout=10) as r:
                assert json.loads(r.read()) == {"status": "live"}
            assert running[name]["dashboard"].endswith("/ui")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    # the connectors went with it
    with pytest.raises(OSError):
        urllib.request.urlopen(running["Provider"]["managementApi"] + "/health", timeout=3)
