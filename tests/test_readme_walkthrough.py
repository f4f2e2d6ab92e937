"""README's walkthrough, run as written: the ```sh blocks between the walkthrough markers,
literally (read from README.md, not copied here), in an empty folder, with bash."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from connector.devspace import port_is_free, process_env

README = Path(__file__).resolve().parents[1] / "README.md"
PORTS = (8700, 8801, 8802, 8803, 8811, 8812, 8813)

pytestmark = pytest.mark.integration


def walkthrough_blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("<!-- walkthrough -->", 1)[1].split("<!-- /walkthrough -->", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.S)


def test_the_walkthrough_runs_as_written(tmp_path: Path) -> None:
    blocks = walkthrough_blocks()
    assert len(blocks) >= 6
    busy = [p for p in PORTS if not port_is_free(p)]
    if busy:
        pytest.skip(f"the walkthrough's fixed ports {busy} are in use on this machine")
    bin_dir = Path(sys.executable).parent
    assert (bin_dir / "connector").exists() or shutil.which("connector"), "connector not installed"
    env = {**process_env(), "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    # the blocks as one script; a failing command stops it (the denied pull is the README's
    # own `|| echo`); whatever happens, the background processes go
    script = "set -eo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n" + "\n".join(blocks)
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = done.stdout + done.stderr
    logs = "".join(f"\n--- {p.name}\n{p.read_text()[-3000:]}" for p in tmp_path.glob("*.log"))
    assert done.returncode == 0, out[-6000:] + logs
    # what the walkthrough says happens, happened
    assert "use, at most 3 times" in done.stdout  # the catalog's terms in words
    assert "Weather in Bonn" in done.stdout
    assert "FINALIZED" in done.stdout
    assert (tmp_path / "weather.csv").read_text() == "day,temp\n1,12\n2,14\n"
    assert "COMPLETED: transfer" in done.stdout  # the push
    assert (tmp_path / "again.csv").is_file()
    assert "denied, as agreed" in done.stdout
    # the data plane's reason for the fourth pull, in the engine's words
    assert "403" in done.stderr and "use number 4 (3 completed)" in done.stderr, out
    assert "OK: " in done.stdout and "chain intact" in done.stdout  # the audit log
    assert not (tmp_path / "denied.csv").exists() or (tmp_path / "denied.csv").stat().st_size == 0
