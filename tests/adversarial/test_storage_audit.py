"""The audit log on a full disk (a real, small tmpfs): an append that does not fit leaves no
torn line (the chain verifies, and the log reopens), raises `StoreFull`, and keeps nothing; a
deferred entry waits in memory and is written first once space is back, with no reopen."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from storage_testlib import fill, free, tmpfs

from connector.audit import AuditLog, read_entries, verify_file
from connector.faults import StoreFull
from connector.identity.keys import generate_private_key

BLOB = "x" * 3000  # a line of ~3.5 KiB: wider than what is left of the file's last block


def test_full_disk_never_tears_the_audit_chain(tmp_path: Path) -> None:
    key = generate_private_key("EdDSA")
    with tmpfs(tmp_path / "disk", "1m") as disk:
        path = disk / "audit.log"
        log = AuditLog.open(path, key, key.public_key(), time.time, fsync=False)
        try:
            log.append("started", {})
            fill(disk)
            with pytest.raises(StoreFull) as caught:  # the last block's slack, then no more
                for i in range(100):
                    log.append("event", {"blob": BLOB, "i": i})
            assert caught.value.reason == "the audit log: no space left on the device"
            assert str(path) in caught.value.check
            written = log.next_seq
            assert verify_file(path, key.public_key()).ok  # no torn line
            log.defer([("deferred", {"why": "kept while the disk is full"}, {})])
            assert log.pending == 1
            with pytest.raises(StoreFull):
                log.flush_pending()
            with pytest.raises(StoreFull):
                log.append("refused", {"blob": BLOB})  # not kept: the caller was told
            assert log.next_seq == written and log.pending == 1
            free(disk)
            log.append("after", {})  # the same open log: the deferred entry goes first
            assert log.pending == 0
            kinds = [e.kind for e in read_entries(path)]
            assert kinds[-2:] == ["deferred", "after"] and "refused" not in kinds
            report = verify_file(path, key.public_key())
            assert report.ok and report.entries == written + 2, report
        finally:
            log.close()
        AuditLog.open(path, key, key.public_key(), time.time).close()  # reopens: no torn tail
