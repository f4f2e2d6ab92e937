"""The append-only, hash-chained, signed audit log of one connector.

Storage is a JSON Lines file, one entry per line, opened with ``O_APPEND`` and written one whole
line per ``write``. Every entry is::

    {"seq": 0, "time": "2026-01-01T00:00:00.000000Z", "kind": "negotiation.finalized",
     "process_id": "...", "agreement_id": "...", "transfer_id": "...",   # where relevant
     "data": {...}, "prev": "<hex sha256 of the previous entry>", "hash": "<hex>", "sig": "<jws>"}

``hash`` is SHA-256 over the canonical JSON of the entry without ``hash`` and ``sig`` (sorted
keys, no whitespace, UTF-8; see `signing.canonical`); ``prev`` is the previous entry's ``hash``
(64 zeros for seq 0); ``sig`` is a detached compact JWS (typ ``audit-entry+jws``) by the
connector's participant key over the ASCII hex of ``hash`` (format in `connector.audit.signing`).

What the chain proves, and what it cannot: changing, inserting, removing or reordering any entry
is detected and located by `verify` because it breaks a hash, a ``prev`` link, the ``seq``
sequence or a signature that only the connector's key can make. Removing entries *at the end*
leaves a shorter chain that is still perfectly valid, so it is invisible from the log alone. For
that the log keeps a head anchor, ``<log>.head``: the last seq and hash, signed (typ
``audit-head+jws``) and rewritten after every append (or batch). `verify` compares the log with
it. The anchor only helps if it is kept (or periodically copied, or sent to the counter-party)
somewhere an attacker who can rewrite the log cannot; an attacker with the signing key can
forge anything, and an attacker who deletes both the tail and the anchor is detected only by
the counter-party's copy (``connector audit verify --peer-receipts``).

The anchor file holds two fixed-size slots (`HEAD_SLOT` bytes each, a padded JSON line) written in
place alternately: a rename per append costs milliseconds on some file systems, and a torn write
can only damage the slot being written, never the other one. The newest slot with a valid
signature counts. A crash between appending an entry and updating the anchor leaves the anchor one
batch behind: `verify` reports that as a note, not a failure. A crash in the middle of a line leaves a torn
last line: `verify` fails on it and `AuditLog.open` refuses to append after it.

Storage faults (a full disk, a read-only or failing file system): an append either writes all its
entries or raises `StoreUnavailable` (connector.faults) having written none; a line the file
system took only part of is cut off again, so a full disk never tears the chain. A caller that must
not lose an entry `defer`s it: deferred entries (at most `MAX_PENDING`; beyond, one
``audit.lost`` entry counts the dropped ones) are written, in order, before the next append, or by
`flush_pending`. The data plane serves nothing while entries are pending and cannot be written.
A failed update of the head anchor only leaves it behind (a note in `verify`); the next append
rewrites it.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connector.audit.signing import (
    ENTRY_TYP,
    HEAD_TYP,
    Signer,
    as_signer,
    canonical,
    sha256_hex,
    sign_detached,
    verify_detached,
)
from connector.faults import from_os_error
from connector.identity.keys import PrivateKey, PublicKey, SigningKey, algorithm_of
from connector.wireformat import Clock as DateClock
from connector.wireformat import WallClock

log = logging.getLogger(__name__)

GENESIS = "0" * 64
ID_FIELDS: tuple[str, ...] = ("process_id", "agreement_id", "transfer_id", "participant_id")
_REQUIRED: tuple[str, ...] = ("seq", "time", "kind", "data", "prev", "hash", "sig")
_ALLOWED = frozenset(_REQUIRED + ID_FIELDS)
MAX_PENDING = 10_000  # deferred entries kept in memory while the storage refuses them
LOST_KIND = "audit.lost"  # written after a fault: how many deferred entries were dropped

Clock = WallClock | DateClock  # the log takes either (connector.wireformat)
Event = tuple[str, Mapping[str, Any], Mapping[str, Any]]  # (kind, data, ids)


class AuditError(Exception):
    """The audit log cannot be used as asked (a torn tail, a fork from its anchor, a bad key)."""


def iso_time(now: float | datetime) -> str:
    """UTC ISO 8601 with microseconds and a ``Z``; a naive datetime is taken as UTC."""
    if isinstance(now, datetime):
        moment = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    else:
        moment = datetime.fromtimestamp(now, UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def head_path_for(path: Path | str) -> Path:
    p = Path(path)
    return p.with_name(p.name + ".head")


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    time: str
    kind: str
    data: dict[str, Any]
    prev: str
    hash: str
    sig: str
    ids: dict[str, str] = field(default_factory=dict)

    @property
    def process_id(self) -> str | None:
        return self.ids.get("process_id")

    @property
    def agreement_id(self) -> str | None:
        return self.ids.get("agreement_id")

    @property
    def transfer_id(self) -> str | None:
        return self.ids.get("transfer_id")

    def body(self) -> dict[str, Any]:
        """The hashed part: everything but ``hash`` and ``sig``."""
        return {
            "seq": self.seq,
            "time": self.time,
            "kind": self.kind,
            **self.ids,
            "data": self.data,
            "prev": self.prev,
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.body(), "hash": self.hash, "sig": self.sig}

    def to_line(self) -> bytes:
        return canonical(self.to_dict()) + b"\n"

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Entry:
        """Shape check only (types and fields); `verify` checks hashes and signatures."""
        missing = [name for name in _REQUIRED if name not in raw]
        if missing:
            raise ValueError(f"not an audit entry: missing {', '.join(missing)}")
        unknown = sorted(set(raw) - _ALLOWED)
        if unknown:
            raise ValueError(f"not an audit entry: unknown field(s) {', '.join(unknown)}")
        seq = raw["seq"]
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise ValueError(f"not an audit entry: seq {seq!r} is not a non-negative integer")
        for name in ("time", "kind", "prev", "hash", "sig", *(i for i in ID_FIELDS if i in raw)):
            if not isinstance(raw[name], str):
                raise ValueError(f"not an audit entry: {name} is not a string")
        if not isinstance(raw["data"], dict):
            raise ValueError("not an audit entry: data is not a JSON object")
        return cls(
            seq=seq,
            time=raw["time"],
            kind=raw["kind"],
            data=raw["data"],
            prev=raw["prev"],
            hash=raw["hash"],
            sig=raw["sig"],
            ids={name: raw[name] for name in ID_FIELDS if name in raw},
        )


@dataclass(frozen=True, slots=True)
class Problem:
    line: int | None
    seq: int | None
    reason: str

    def __str__(self) -> str:
        if self.line is None:
            return self.reason
        where = f"line {self.line}" + (f" (seq {self.seq})" if self.seq is not None else "")
        return f"{where}: {self.reason}"


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The outcome of `verify`: the first problem (if any) and how far the chain was sound."""

    entries: int
    problem: Problem | None = None
    last_seq: int | None = None
    last_hash: str = GENESIS
    head_checked: bool = False
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.problem is None

    def summary(self) -> str:
        if self.problem is None:
            return f"OK: {self.entries} entries, chain intact"
        return f"FAILED: {self.problem}"


@dataclass(frozen=True, slots=True)
class Head:
    seq: int
    hash: str
    sig: str

    def payload(self) -> bytes:
        return canonical({"seq": self.seq, "hash": self.hash})


HEAD_SLOT = 512


def _encode_head(head: Head) -> bytes:
    record = canonical({"seq": head.seq, "hash": head.hash, "sig": head.sig})
    if len(record) >= HEAD_SLOT:
        raise AuditError("head anchor record does not fit its slot")
    return record + b" " * (HEAD_SLOT - 1 - len(record)) + b"\n"


def _decode_head(chunk: bytes) -> Head | None:
    try:
        raw = json.loads(chunk)
        head = Head(seq=raw["seq"], hash=raw["hash"], sig=raw["sig"])
    except (ValueError, KeyError, TypeError):
        return None
    seq_ok = isinstance(head.seq, int) and not isinstance(head.seq, bool)
    if not seq_ok or not isinstance(head.hash, str) or not isinstance(head.sig, str):
        return None
    return head


def read_head_slots(path: Path | str) -> list[Head | None] | None:
    """The anchor's slots (None for an empty or torn one), or None if there is no anchor file."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        return None
    if not data:
        return None  # created by `AuditLog.open`, no append yet (or wiped, like a missing anchor)
    return [_decode_head(line) if line.strip() else None for line in data.splitlines()]


def select_head(slots: list[Head | None], public_key: PublicKey) -> tuple[Head | None, str | None]:
    """The newest slot, and a problem: a parsable slot whose signature fails is forgery."""
    best: Head | None = None
    for slot in slots:
        if slot is None:
            continue
        if not verify_detached(slot.sig, slot.payload(), public_key, HEAD_TYP):
            return None, "signature does not verify"
        if best is None or slot.seq > best.seq:
            best = slot
    if best is None:
        return None, "no readable slot"
    return best, None


def read_head(path: Path | str, public_key: PublicKey) -> Head | None:
    """The verified head anchor, or None if there is none; a bad anchor raises AuditError."""
    slots = read_head_slots(path)
    if slots is None:
        return None
    head, problem = select_head(slots, public_key)
    if problem is not None:
        raise AuditError(f"{Path(path).name}: head anchor: {problem}")
    return head


def read_lines(path: Path | str) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, raw line including its newline if it has one)."""
    with open(path, "rb") as fh:
        yield from enumerate(fh, start=1)


def read_entries(path: Path | str) -> Iterator[Entry]:
    """Every entry, unverified; a line that is not an entry raises AuditError with its number."""
    for number, line in read_lines(path):
        if not line.strip():
            continue
        try:
            yield Entry.from_dict(json.loads(line))
        except ValueError as exc:
            raise AuditError(f"line {number}: {exc}") from exc


def _seq_of(line: bytes) -> int | None:
    try:
        raw = json.loads(line)
    except ValueError:
        return None
    seq = raw.get("seq") if isinstance(raw, dict) else None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


def verify_file(
    path: Path | str,
    public_key: PublicKey,
    *,
    head: Path | str | bool | None = True,
) -> VerifyReport:
    """Check the whole chain and, if present, the head anchor; stop at the first bad entry.

    ``head=True`` uses ``<path>.head`` when it exists, a path uses that file (which must exist),
    ``False``/None skips the anchor.
    """
    algorithm_of(public_key)
    lines = list(read_lines(path))
    seq_lines: dict[int, int] = {}
    for number, line in lines:
        seq = _seq_of(line)
        if seq is not None:
            seq_lines.setdefault(seq, number)

    prev_hash = GENESIS
    count = 0
    last_seq: int | None = None

    def fail(line: int | None, seq: int | None, reason: str) -> VerifyReport:
        return VerifyReport(count, Problem(line, seq, reason), last_seq, prev_hash)

    for number, line in lines:
        if not line.endswith(b"\n"):
            return fail(number, None, "truncated: the last line is incomplete (a torn append)")
        if not line.strip():
            return fail(number, None, "empty line: an entry was blanked out")
        try:
            raw = json.loads(line)
        except ValueError:
            return fail(number, None, "truncated/not JSON")
        if not isinstance(raw, dict):
            return fail(number, None, "not a JSON object")
        try:
            entry = Entry.from_dict(raw)
        except ValueError as exc:
            return fail(number, _seq_of(line), str(exc))
        expected = count
        if entry.seq != expected:
            if expected == 0:
                how = f"seq {entry.seq} at the start, expected 0: the beginning of the log was removed"
            elif entry.seq < expected:
                how = f"seq {entry.seq} follows {expected - 1}: entries are out of order or duplicated"
            elif expected in seq_lines:
                how = (
                    f"seq {entry.seq} follows {expected - 1}: entries are out of order "
                    f"(seq {expected} is at line {seq_lines[expected]})"
                )
            else:
                gone = f"{expected}" if entry.seq == expected + 1 else f"{expected}..{entry.seq - 1}"
                what = "an entry was" if entry.seq == expected + 1 else "entries were"
                how = f"seq {entry.seq} follows {expected - 1}: {what} removed (seq {gone})"
            return fail(number, None, how)
        try:
            body = canonical(entry.body())
        except ValueError as exc:
            return fail(number, entry.seq, f"not canonical JSON: {exc}")
        if sha256_hex(body) != entry.hash:
            return fail(number, entry.seq, "hash mismatch: the entry was changed after it was written")
        if entry.prev != prev_hash:
            return fail(
                number,
                entry.seq,
                "prev does not match the hash of the entry before: the chain is broken "
                "(an entry was inserted, replaced or re-hashed)",
            )
        if not verify_detached(entry.sig, entry.hash.encode("ascii"), public_key, ENTRY_TYP):
            return fail(number, entry.seq, "signature does not verify")
        prev_hash = entry.hash
        last_seq = entry.seq
        count += 1

    notes: list[str] = []
    head_file: Path | None
    if head is True:
        candidate = head_path_for(path)
        head_file = candidate if candidate.exists() and candidate.stat().st_size else None
        if head_file is None:
            notes.append("no head anchor: removal of entries at the end cannot be detected")
    elif head is False or head is None:
        head_file = None
        notes.append("head anchor not checked: removal of entries at the end cannot be detected")
    else:
        head_file = Path(head)
        if not head_file.exists():
            return fail(None, None, f"head anchor {head_file} is missing")
    if head_file is None:
        return VerifyReport(count, None, last_seq, prev_hash, False, tuple(notes))

    slots = read_head_slots(head_file) or []
    anchor, problem = select_head(slots, public_key)
    if anchor is None:
        return fail(None, None, f"head anchor {head_file.name}: {problem}")
    if None in slots:
        notes.append("one head anchor slot is unreadable (a torn anchor update); the other was used")
    final = -1 if last_seq is None else last_seq
    if anchor.seq > final:
        missing = f"{final + 1}" if anchor.seq == final + 1 else f"{final + 1}..{anchor.seq}"
        return fail(
            len(lines) + 1,
            None,
            f"the log ends at seq {final} but its head anchor says seq {anchor.seq}: "
            f"entries were removed from the end (seq {missing})",
        )
    anchored_line = seq_lines.get(anchor.seq)
    anchored = json.loads(lines[anchored_line - 1][1]) if anchored_line else {}
    if anchored.get("hash") != anchor.hash:
        return fail(
            anchored_line,
            anchor.seq,
            "hash differs from the head anchor: the log was rewritten after this entry was appended",
        )
    if anchor.seq < final:
        notes.append(
            f"head anchor is at seq {anchor.seq}, {final - anchor.seq} behind the log "
            "(a crash between an append and the anchor update)"
        )
    return VerifyReport(count, None, last_seq, prev_hash, True, tuple(notes))


def _tail(path: Path) -> tuple[int, str]:
    """(next seq, last hash) of a log, refusing a torn or foreign last line."""
    last: bytes | None = None
    for number, line in read_lines(path):
        if not line.endswith(b"\n"):
            raise AuditError(f"{path}: line {number} is torn (incomplete write); not appending")
        last = line
    if last is None:
        return 0, GENESIS
    try:
        tail = Entry.from_dict(json.loads(last))
    except ValueError as exc:
        raise AuditError(f"{path}: the last line is not an audit entry: {exc}") from exc
    return tail.seq + 1, tail.hash


def _write_all(fd: int, data: bytes) -> None:
    """Append `data` whole or not at all: a write the file system took only part of (a full
    disk) is cut off again, so no torn line is left behind. One writer per log (flock)."""
    view = memoryview(data)
    done = 0
    try:
        while view:
            written = os.write(fd, view)
            view = view[written:]
            done += written
    except OSError:
        if done:
            os.ftruncate(fd, os.fstat(fd).st_size - done)
        raise


def _checked(
    kind: str, data: Mapping[str, Any], ids: Mapping[str, Any]
) -> tuple[dict[str, str], dict[str, Any]]:
    """An entry's ids and data as they will be hashed; ValueError if it cannot be one."""
    if not isinstance(kind, str) or not kind:
        raise ValueError("kind must be a non-empty string")
    unknown = sorted(set(ids) - set(ID_FIELDS))
    if unknown:
        raise ValueError(f"unknown id field(s) {', '.join(unknown)}; use {', '.join(ID_FIELDS)}")
    present = {name: str(ids[name]) for name in ID_FIELDS if ids.get(name) is not None}
    # A round trip through JSON freezes the data exactly as it will be read back and hashed.
    frozen = json.loads(canonical(dict(data)))
    return present, frozen


class AuditLog:
    """An open audit log; appends are serialized by a lock, so threads and tasks may share it.

    `append` does blocking file I/O (and an fsync if enabled): from a coroutine use `aappend`,
    which runs it in a worker thread.
    """

    def __init__(
        self,
        path: Path,
        signer: Signer,
        verifier_key: PublicKey,
        clock: Clock,
        *,
        fd: int,
        next_seq: int,
        last_hash: str,
        fsync: bool,
        head_fd: int,
        head_slot: int,
    ):
        self.path = path
        self.head_path = head_path_for(path)
        self._signer = signer
        self.verifier_key = verifier_key
        self._clock = clock
        self._fd = fd
        self._next_seq = next_seq
        self._last_hash = last_hash
        self.fsync = fsync
        self._head_fd = head_fd
        self._head_slot = head_slot
        self._lock = threading.Lock()
        # entries deferred after a storage fault, oldest first, with the time they happened
        self._pending: list[tuple[float | datetime, str, Mapping[str, Any], Mapping[str, Any]]] = []
        self._lost = 0  # deferred entries dropped beyond MAX_PENDING since the last write
        self._pending_built: list[Entry] = []  # the first deferred entries, built for writing

    @classmethod
    def open(
        cls,
        path: Path | str,
        signer: Signer | PrivateKey | SigningKey,
        verifier_key: PublicKey,
        clock: Clock,
        *,
        fsync: bool = True,
        head_anchor: bool = True,
    ) -> AuditLog:
        """Open (or create) a log for appending.

        Refuses a signer that does not match ``verifier_key`` (the certificate's key), a second
        writer (an exclusive ``flock``; give each replica its own log), a torn last line, and a
        log shorter than or diverging from its head anchor: appending there would bury the
        evidence.
        """
        p = Path(path)
        sig = as_signer(signer)
        if algorithm_of(verifier_key) != sig.alg or not verify_detached(
            sign_detached(sig, b"probe", ENTRY_TYP), b"probe", verifier_key, ENTRY_TYP
        ):
            raise AuditError("the signer's key does not match the verification key")
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        except OSError as exc:
            fault = from_os_error(exc, "the audit log", p)
            if fault is None:
                raise
            raise fault from exc
        head_fd = -1
        try:
            try:
                # One writer per log: a second one would fork the chain.
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise AuditError(f"{p}: another writer has this audit log open") from exc
            next_seq, last_hash = _tail(p)
            head_slot = 0
            if head_anchor:
                anchor = read_head(head_path_for(p), verifier_key)
                if anchor is not None and (
                    anchor.seq > next_seq - 1 or (anchor.seq == next_seq - 1 and anchor.hash != last_hash)
                ):
                    raise AuditError(
                        f"{p}: the log (last seq {next_seq - 1}) does not match its head anchor "
                        f"(seq {anchor.seq}); run `connector audit verify`"
                    )
                if anchor is not None:
                    slots = read_head_slots(head_path_for(p)) or []
                    # overwrite the slot that does not hold the newest anchor
                    head_slot = 1 if slots and slots[0] == anchor else 0
                head_fd = os.open(head_path_for(p), os.O_WRONLY | os.O_CREAT, 0o640)
        except BaseException:
            os.close(fd)
            raise
        return cls(
            p,
            sig,
            verifier_key,
            clock,
            fd=fd,
            next_seq=next_seq,
            last_hash=last_hash,
            fsync=fsync,
            head_fd=head_fd,
            head_slot=head_slot,
        )

    @property
    def head_anchor(self) -> bool:
        return self._head_fd != -1

    @property
    def next_seq(self) -> int:
        return self._next_seq

    @property
    def last_hash(self) -> str:
        return self._last_hash

    @property
    def pending(self) -> int:
        """Entries deferred after a storage fault and not written yet."""
        return len(self._pending) + (1 if self._lost else 0)

    def close(self) -> None:
        with self._lock:
            if self._pending or self._lost:
                log.error(
                    "%s: closed with %d entries unwritten (the storage refused them)",
                    self.path,
                    len(self._pending) + self._lost,
                )
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            if self._head_fd >= 0:
                os.close(self._head_fd)
                self._head_fd = -2  # still "has an anchor" for verify after close

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _build(
        self,
        seq: int,
        prev: str,
        kind: str,
        data: Mapping[str, Any],
        ids: Mapping[str, Any],
        at: float | datetime | None = None,
    ) -> Entry:
        present, frozen = _checked(kind, data, ids)
        moment = iso_time(self._clock() if at is None else at)
        body: dict[str, Any] = {
            "seq": seq,
            "time": moment,
            "kind": kind,
            **present,
            "data": frozen,
            "prev": prev,
        }
        digest = sha256_hex(canonical(body))
        return Entry(
            seq=seq,
            time=moment,
            kind=kind,
            data=frozen,
            prev=prev,
            hash=digest,
            sig=sign_detached(self._signer, digest.encode("ascii"), ENTRY_TYP),
            ids=present,
        )

    def append(self, kind: str, data: Mapping[str, Any] | None = None, **ids: Any) -> Entry:
        """Append one entry; ids are any of ``process_id``, ``agreement_id``, ``transfer_id``,
        ``participant_id``."""
        return self.append_many([(kind, data or {}, ids)])[0]

    def append_many(self, events: Iterable[Event]) -> list[Entry]:
        """Append a batch as consecutive entries with one write and one anchor update, after
        the deferred ones. Raises `StoreUnavailable` (a full disk, a read-only file system)
        having written nothing: the deferred entries stay deferred, these are not kept."""
        with self._lock:
            if self._fd < 0:
                raise AuditError("the audit log is closed")
            now = self._clock()
            return self._write([(now, kind, data, ids) for kind, data, ids in events])

    def defer(self, events: Iterable[Event]) -> None:
        """Keep entries the storage refused, to be written (in order, with the time given now)
        before the next append or by `flush_pending`."""
        with self._lock:
            now = self._clock()
            for kind, data, ids in events:
                _checked(kind, data, ids)  # refuse now what could never be written
                if len(self._pending) >= MAX_PENDING:
                    self._lost += 1
                else:
                    self._pending.append((now, kind, data, ids))

    def flush_pending(self) -> None:
        """Write the deferred entries; raises `StoreUnavailable` while the storage refuses."""
        with self._lock:
            if self._fd < 0:
                raise AuditError("the audit log is closed")
            if self._pending or self._lost:
                self._write([])

    def _write(
        self, batch: list[tuple[float | datetime, str, Mapping[str, Any], Mapping[str, Any]]]
    ) -> list[Entry]:
        """Build and write the deferred entries, then `batch`; returns `batch`'s entries."""
        lost: list[tuple[float | datetime, str, Mapping[str, Any], Mapping[str, Any]]] = []
        if self._lost:
            lost = [
                (self._clock(), LOST_KIND, {"entries": self._lost, "why": "the storage refused them"}, {})
            ]
        # The deferred entries go first and nothing is written until they are, so their seq and
        # prev do not change between attempts: built (signed) once, not at every retry.
        seq, prev = self._next_seq, self._last_hash
        if self._pending_built:
            seq, prev = self._pending_built[-1].seq + 1, self._pending_built[-1].hash
        for at, kind, data, ids in self._pending[len(self._pending_built) :]:
            self._pending_built.append(self._build(seq, prev, kind, data, ids, at))
            seq, prev = seq + 1, self._pending_built[-1].hash
        built = list(self._pending_built)
        for at, kind, data, ids in [*lost, *batch]:
            entry = self._build(seq, prev, kind, data, ids, at)
            built.append(entry)
            seq, prev = seq + 1, entry.hash
        if not built:
            return built
        try:
            _write_all(self._fd, b"".join(entry.to_line() for entry in built))
        except OSError as exc:
            fault = from_os_error(exc, "the audit log", self.path)
            if fault is None:
                raise
            raise fault from exc
        waiting = len(self._pending_built) + len(lost)
        self._pending, self._pending_built, self._lost = [], [], 0
        self._next_seq, self._last_hash = seq, prev
        if self.fsync:
            try:
                os.fsync(self._fd)
            except OSError as exc:  # the lines are in the file; only their durability is in doubt
                log.warning("%s: fsync failed: %s", self.path, exc)
        if self._head_fd >= 0:
            try:
                self._write_head(built[-1])
            except OSError as exc:  # the anchor stays behind (a note in verify) until the next append
                log.warning("%s: the head anchor could not be updated: %s", self.head_path, exc)
        return built[waiting:]

    async def aappend(self, kind: str, data: Mapping[str, Any] | None = None, **ids: Any) -> Entry:
        return await asyncio.to_thread(self.append, kind, data, **ids)

    async def aappend_many(self, events: Iterable[Event]) -> list[Entry]:
        batch = list(events)
        return await asyncio.to_thread(self.append_many, batch)

    def _write_head(self, last: Entry) -> None:
        unsigned = Head(seq=last.seq, hash=last.hash, sig="")
        head = Head(last.seq, last.hash, sign_detached(self._signer, unsigned.payload(), HEAD_TYP))
        record = _encode_head(head)
        written = os.pwrite(self._head_fd, record, self._head_slot * HEAD_SLOT)
        if written != len(record):
            raise AuditError(f"{self.head_path}: short write of the head anchor")
        if self.fsync:
            os.fsync(self._head_fd)
        self._head_slot ^= 1

    def entries(self) -> Iterator[Entry]:
        return read_entries(self.path)

    def verify(self, public_key: PublicKey | None = None) -> VerifyReport:
        with self._lock:
            return verify_file(
                self.path,
                public_key if public_key is not None else self.verifier_key,
                head=self.head_anchor,
            )
