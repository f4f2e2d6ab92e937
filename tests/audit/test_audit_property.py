"""Property: changing any single byte of a log (or dropping any line) is detected."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import StepClock
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.audit import AuditLog, verify_file
from connector.identity.keys import PrivateKey, generate_private_key

KEY: PrivateKey = generate_private_key("EdDSA")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("prop") / "log.jsonl"
    with AuditLog.open(path, KEY, KEY.public_key(), StepClock(), fsync=False) as log:
        for i in range(6):
            log.append("transfer.started", {"i": i, "s": "é ü"}, transfer_id=f"t{i}", agreement_id="a")
    return path


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.floats(0, 1, exclude_max=True), replacement=st.integers(0, 255))
def test_any_changed_byte_is_detected(
    pristine: Path, tmp_path: Path, position: float, replacement: int
) -> None:
    data = bytearray(pristine.read_bytes())
    index = int(position * len(data))
    if data[index] == replacement:
        replacement = (replacement + 1) % 256
    data[index] = replacement
    target = tmp_path / "log.jsonl"
    target.write_bytes(bytes(data))
    shutil.copy(pristine.with_name("log.jsonl.head"), tmp_path / "log.jsonl.head")
    assert not verify_file(target, KEY.public_key()).ok


@pytest.mark.parametrize("drop", range(6))
def test_any_dropped_line_is_detected(pristine: Path, tmp_path: Path, drop: int) -> None:
    lines = pristine.read_bytes().splitlines(keepends=True)
    del lines[drop]
    target = tmp_path / "log.jsonl"
    target.write_bytes(b"".join(lines))
    shutil.copy(pristine.with_name("log.jsonl.head"), tmp_path / "log.jsonl.head")
    report = verify_file(target, KEY.public_key())
    assert not report.ok and report.problem is not None and report.problem.line == drop + 1, report
