"""Append/verify round trips, every kind of tampering detected and located, concurrency."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import MakeLog, StepClock

from connector.audit import (
    GENESIS,
    AuditError,
    AuditLog,
    Entry,
    KeySigner,
    canonical,
    head_path_for,
    read_entries,
)
from connector.audit.log import HEAD_SLOT, read_head, read_head_slots
from connector.audit.signing import ENTRY_TYP, sha256_hex, sign_detached, verify_detached
from connector.identity.keys import PrivateKey, SigningKey, generate_private_key


def fill(log: AuditLog, n: int = 10) -> list[Entry]:
    kinds = ["negotiation.requested", "negotiation.finalized", "transfer.started", "receipt"]
    return [
        log.append(kinds[i % 4], {"i": i, "note": f"event {i}"}, process_id=f"p{i % 3}", agreement_id="a1")
        for i in range(n)
    ]


def lines_of(log: AuditLog) -> list[bytes]:
    return log.path.read_bytes().splitlines(keepends=True)


def rewrite(log: AuditLog, lines: list[bytes]) -> None:
    log.path.write_bytes(b"".join(lines))


def resign(raw: dict[str, object], signer: PrivateKey) -> dict[str, object]:
    """What a forger with some key does: recompute the hash and sign it."""
    body = {k: v for k, v in raw.items() if k not in ("hash", "sig")}
    digest = sha256_hex(canonical(body))
    return {**body, "hash": digest, "sig": sign_detached(KeySigner(signer), digest.encode(), ENTRY_TYP)}


def test_round_trip(make_log: MakeLog, key: PrivateKey) -> None:
    log = make_log(key)
    written = fill(log, 12)
    batch = log.append_many([("deletion-notice", {"deleted": True}, {"transfer_id": "t1"})] * 3)
    assert [e.seq for e in batch] == [12, 13, 14]
    entries = list(log.entries())
    assert entries == [*written, *batch]
    assert entries[0].prev == GENESIS
    assert all(b.prev == a.hash for a, b in itertools.pairwise(entries))
    assert entries[0].time == "2026-09-21T14:13:20.000000Z"
    assert entries[0].process_id == "p0" and entries[0].agreement_id == "a1"
    assert entries[12].transfer_id == "t1" and "process_id" not in entries[12].ids
    report = log.verify()
    assert report.ok and report.entries == 15 and report.head_checked, report
    assert report.summary() == "OK: 15 entries, chain intact"
    assert report.last_seq == 14 and report.last_hash == entries[-1].hash
    # an entry's sig is a detached JWS any JOSE library can check against the hash
    assert verify_detached(entries[3].sig, entries[3].hash.encode(), key.public_key(), ENTRY_TYP)
    # hash is over the canonical JSON without hash and sig
    raw = json.loads(lines_of(log)[5])
    assert raw["hash"] == sha256_hex(canonical({k: v for k, v in raw.items() if k not in ("hash", "sig")}))


def test_reopen_continues_the_chain(tmp_path: Path, key: PrivateKey) -> None:
    path = tmp_path / "a.jsonl"
    with AuditLog.open(path, key, key.public_key(), StepClock(), fsync=True) as log:
        fill(log, 3)
    with AuditLog.open(path, SigningKey.from_private_key(key), key.public_key(), StepClock()) as log:
        assert log.next_seq == 3
        entry = log.append("transfer.completed", {"bytes": 5}, transfer_id="t")
        assert entry.seq == 3
        assert log.verify().ok


def test_datetime_clock_and_empty_log(tmp_path: Path, ed_key: PrivateKey) -> None:
    moment = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    with AuditLog.open(tmp_path / "x.jsonl", ed_key, ed_key.public_key(), lambda: moment, fsync=False) as log:
        assert log.verify().ok and log.verify().entries == 0
        assert log.append("k").time == "2026-05-01T12:00:00.000000Z"


def test_open_refuses_a_signer_not_matching_the_certificate(tmp_path: Path, ed_key: PrivateKey) -> None:
    other = generate_private_key("EdDSA")
    with pytest.raises(AuditError, match="does not match"):
        AuditLog.open(tmp_path / "x.jsonl", ed_key, other.public_key(), StepClock())


def test_one_writer_per_log(make_log: MakeLog, ed_key: PrivateKey) -> None:
    log = make_log(ed_key)
    with pytest.raises(AuditError, match="another writer"):
        AuditLog.open(log.path, ed_key, ed_key.public_key(), StepClock())
    log.close()
    AuditLog.open(log.path, ed_key, ed_key.public_key(), StepClock()).close()


def test_bad_arguments(make_log: MakeLog, ed_key: PrivateKey) -> None:
    log = make_log(ed_key)
    with pytest.raises(ValueError, match="unknown id"):
        log.append("k", {}, dataset_id="x")
    with pytest.raises(ValueError):
        log.append("k", {"x": float("nan")})
    with pytest.raises(ValueError, match="kind"):
        log.append("", {})
    assert log.next_seq == 0


# --- tampering: each is detected AND located -------------------------------------------------


def test_changed_data_is_located(make_log: MakeLog, key: PrivateKey) -> None:
    log = make_log(key)
    fill(log)
    lines = lines_of(log)
    raw = json.loads(lines[6])
    raw["data"]["i"] = 999
    lines[6] = json.dumps(raw).encode() + b"\n"
    rewrite(log, lines)
    report = log.verify()
    assert not report.ok and report.entries == 6
    assert str(report.problem) == "line 7 (seq 6): hash mismatch: the entry was changed after it was written"


def test_changed_hash_field_is_located(make_log: MakeLog, key: PrivateKey) -> None:
    log = make_log(key)
    fill(log)
    lines = lines_of(log)
    raw = json.loads(lines[4])
    raw["hash"] = "ab" * 32
    lines[4] = json.dumps(raw).encode() + b"\n"
    rewrite(log, lines)
    assert str(log.verify().problem) == (
        "line 5 (seq 4): hash mismatch: the entry was changed after it was written"
    )


def test_changed_data_with_recomputed_hash_fails_the_signature(make_log: MakeLog, key: PrivateKey) -> None:
    log = make_log(key)
    fill(log)
    lines = lines_of(log)
    raw = json.loads(lines[3])
    raw["data"]["i"] = 999
    body = {k: v for k, v in raw.items() if k not in ("hash", "sig")}
    raw["hash"] = sha256_hex(canonical(body))
    lines[3] = json.dumps(raw).encode() + b"\n"
    rewrite(log, lines)
    assert str(log.verify().problem) == "line 4 (seq 3): signature does not verify"


def test_reordered_lines_are_located(make_log: MakeLog, ed_key: PrivateKey) -> None:
    log = make_log(ed_key)
    fill(log)
    lines = lines_of(log)
    lines[4], lines[5] = lines[5], lines[4]
    rewrite(log, lines)
    report = log.verify()
    assert report.problem is not None and report.problem.line == 5
    assert str(report.problem) == "line 5: seq 5 follows 3: entries are out of order (seq 4 is at line 6)"


def test_removed_middle_entry_is_located(make_log: MakeLog, ed_key: PrivateKey) -> None:
    log = make_log(ed_key)
    fill(log)
    lines = lines_of(log)
    del lines[8]
    rewrite(log, lines)
    assert str(log.verify().problem) == "line 9: seq 9 follows 7: an entry was removed (seq 8)"


def test_removed_first_entries_are_located(make_log: MakeLog, ed_key: PrivateKey) -> None:
    log = make_log(ed_key)
    fill(log)
    rewrite(log, lines_of(log)[2:])
    assert "line 1: seq 2 at the start, expected 0" in str(log.verify().problem)


def test_duplicated_entry_is_located(make_log: MakeLog, ed_key: PrivateKey) -> None:
    log = make_log(ed_key)
    fill(log)
    lines = lines_of(log)
    lines.insert(3, lines[2])
    rewrite(log, lines)
    assert str(log.verify().problem) == "line 4: seq 2 follows 2: entries are out of order or duplicated"


def test_inserted_forged_entry_is_located(make_log: MakeLog, key: PrivateKey) -> None:
    """A forger renumbers and re-chains everything after the insertion; only the key is missing."""
    log = make_log(key)
    fill(log)
    raws = [json.loads(line) for line in lines_of(log)]
    forged = {**raws[5], "kind": "deletion-notice", "data": {"deleted": True}}
    raws.insert(5, forged)
    forger = generate_private_key("EdDSA")
    prev = raws[4]["hash"]
    for seq in range(5, len(raws)):
        raws[seq] = resign({**raws[seq], "seq": seq, "prev": prev}, forger)
        prev = raws[seq]["hash"]
    rewrite(log, [canonical(r) + b"\n" for r in raws])
    assert str(log.verify().problem) == "line 6 (seq 5): signature does not verify"


def test_inserted_entry_keeping_old_links_breaks_the_chain(make_log: MakeLog, key: PrivateKey) -> None:
    """Replacing an entry with a correctly signed one from another log of the same key."""
    log = make_log(key)
    fill(log)
    other = make_log(key, name="other.jsonl")
    for i in range(5):
        other.append("something.else", {"i": i})
    other.append("deletion-notice", {"deleted": True})
    lines = lines_of(log)
    lines[5] = lines_of(other)[5]
    rewrite(log, lines)
    assert "line 6 (seq 5): prev does not match" in str(log.verify().problem)


def test_forged_signature_by_another_key_is_located(make_log: MakeLog, key: PrivateKey) -> None:
    log = make_log(key)
    fill(log)
    lines = lines_of(log)
    raw = json.loads(lines[2])
    raw = resign(raw, generate_private_key("ES256"))
    lines[2] = canonical(raw) + b"\n"
    rewrite(log, lines)
    assert str(log.verify().problem) == "line 3 (seq 2): signature does not verify"


def test_verifying_with_the_wrong_key_fails_at_the_first_entry(make_log: MakeLog, key: PrivateKey) -> None:
    log = make_log(key)
    fill(log, 3)
    report = log.verify(generate_private_key("EdDSA").public_key())
    assert str(report.problem) == "line 1 (seq 0): signature does not verify"


def test_truncated_last_line_is_located(make_log: MakeLog, ed_key: PrivateKey) -> None:
    log = make_log(ed_key)
    fill(log)
    data = log.path.read_bytes()
    log.path.write_bytes(data[:-40])
    log.close()
    report = log.verify()
    assert str(report.problem) == "line 10: truncated: the last line is incomplete (a torn append)"
    with pytest.raises(AuditError, match="line 10 is torn"):
        AuditLog.open(log.path, ed_key, ed_key.public_key(), StepClock())


def test_garbage_line_is_located(make_log: MakeLog, ed_key: PrivateKey) -> None:
    log = make_log(ed_key)
    fill(log)
    lines = lines_of(log)
    lines[6] = lines[6][:50] + b"\n"
    rewrite(log, lines)
    assert str(log.verify().problem) == "line 7: truncated/not JSON"
    lines[6] = b'{"seq": 6}\n'
    rewrite(log, lines)
    assert "line 7 (seq 6): not an audit entry: missing time" in str(log.verify().problem)


def test_removed_last_entry_is_detected_by_the_head_anchor(make_log: MakeLog, key: PrivateKey) -> None:
    log = make_log(key)
    fill(log)
    rewrite(log, lines_of(log)[:-2])
    report = log.verify()
    assert str(report.problem) == (
        "line 9: the log ends at seq 7 but its head anchor says seq 9: "
        "entries were removed from the end (seq 8..9)"
    )
    log.close()
    with pytest.raises(AuditError, match="does not match its head anchor"):
        AuditLog.open(log.path, key, key.public_key(), StepClock())


def test_without_the_anchor_tail_removal_is_invisible(make_log: MakeLog, ed_key: PrivateKey) -> None:
    log = make_log(ed_key)
    fill(log)
    rewrite(log, lines_of(log)[:-1])
    log.head_path.unlink()
    report = log.verify()
    assert report.ok and not report.head_checked
    assert any("cannot be detected" in note for note in report.notes)


def test_rewritten_tail_differs_from_the_anchor(make_log: MakeLog, ed_key: PrivateKey) -> None:
    """Replace the last entry by a re-signed one (with the key): the anchor still remembers."""
    log = make_log(ed_key)
    fill(log)
    lines = lines_of(log)
    raw = json.loads(lines[-1])
    raw["data"] = {"i": 0}
    lines[-1] = canonical(resign(raw, ed_key)) + b"\n"
    rewrite(log, lines)
    assert "line 10 (seq 9): hash differs from the head anchor" in str(log.verify().problem)


def test_forged_stale_and_torn_anchor(make_log: MakeLog, ed_key: PrivateKey) -> None:
    log = make_log(ed_key)
    fill(log, 3)
    stale = log.head_path.read_bytes()
    assert len(stale) == 2 * HEAD_SLOT
    log.append("late", {})
    log.head_path.write_bytes(stale)  # as if the anchor update of the last append was lost
    report = log.verify()
    assert report.ok and any("1 behind" in n for n in report.notes), report
    slots = [json.loads(line) for line in stale.splitlines()]
    forged = canonical({**slots[0], "seq": 7}).ljust(HEAD_SLOT - 1) + b"\n"
    log.head_path.write_bytes(forged + stale[HEAD_SLOT:])
    assert str(log.verify().problem) == "head anchor audit.jsonl.head: signature does not verify"
    torn = b"{" + b"\0" * (HEAD_SLOT - 2) + b"\n"
    log.head_path.write_bytes(torn + stale[HEAD_SLOT:])
    report = log.verify()
    assert report.ok and any("unreadable" in n for n in report.notes), report
    log.head_path.write_bytes(torn)
    assert str(log.verify().problem) == "head anchor audit.jsonl.head: no readable slot"


def test_anchor_slots_alternate_and_survive_reopen(tmp_path: Path, ed_key: PrivateKey) -> None:
    path = tmp_path / "a.jsonl"
    for round_ in range(3):
        with AuditLog.open(path, ed_key, ed_key.public_key(), StepClock(), fsync=False) as log:
            fill(log, 3 + round_)
            assert log.verify().ok
    slots = read_head_slots(head_path_for(path))
    assert slots is not None and sorted(s.seq for s in slots if s) == [10, 11]
    head = read_head(head_path_for(path), ed_key.public_key())
    assert head is not None and head.seq == 11


# --- concurrency -------------------------------------------------------------------------------


async def test_200_concurrent_appends_from_tasks(tmp_path: Path, key: PrivateKey) -> None:
    with AuditLog.open(tmp_path / "c.jsonl", key, key.public_key(), StepClock(), fsync=False) as log:
        entries = await asyncio.gather(
            *(log.aappend("transfer.started", {"n": n}, transfer_id=f"t{n}") for n in range(200))
        )
        assert sorted(e.seq for e in entries) == list(range(200))
        report = log.verify()
        assert report.ok and report.entries == 200
        assert sorted(e.data["n"] for e in read_entries(log.path)) == list(range(200))


def test_concurrent_appends_from_threads(tmp_path: Path, ed_key: PrivateKey) -> None:
    with AuditLog.open(tmp_path / "t.jsonl", ed_key, ed_key.public_key(), StepClock(), fsync=False) as log:

        def work(w: int) -> None:
            for n in range(25):
                if n % 5 == 0:
                    log.append_many([("batch", {"w": w, "n": n}, {})] * 2)
                else:
                    log.append("single", {"w": w, "n": n})

        threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        report = log.verify()
        assert report.ok and report.entries == 8 * 30, report
