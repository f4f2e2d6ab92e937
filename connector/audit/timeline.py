"""A readable timeline of audit entries, for `connector audit show` and the management API."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

from connector.audit.log import ID_FIELDS, Entry, parse_time

_ID_LABELS = {
    "process_id": "processId",
    "agreement_id": "agreementId",
    "transfer_id": "transferId",
    "participant_id": "participantId",
}
SUMMARY_WIDTH = 80


def kind_matches(kind: str, wanted: Sequence[str]) -> bool:
    """``negotiation`` matches ``negotiation.finalized``; an exact kind matches itself."""
    return not wanted or any(kind == w or kind.startswith(w + ".") for w in wanted)


def select(
    entries: Iterable[Entry], *, kinds: Sequence[str] = (), since: datetime | None = None
) -> Iterator[Entry]:
    for entry in entries:
        if not kind_matches(entry.kind, kinds):
            continue
        if since is not None and parse_time(entry.time) < since:
            continue
        yield entry


def summarize(data: dict[str, Any], width: int = SUMMARY_WIDTH) -> str:
    parts = []
    for name, value in data.items():
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
        if isinstance(value, str) and len(text) > 24:
            text = text[:12] + "…" + text[-6:]
        parts.append(f"{name}={text}")
    line = " ".join(parts)
    return line if len(line) <= width else line[: width - 1] + "…"


def to_view(entry: Entry) -> dict[str, Any]:
    """The JSON a management API returns for one timeline row."""
    return {
        "seq": entry.seq,
        "time": entry.time,
        "kind": entry.kind,
        **{_ID_LABELS[name]: entry.ids[name] for name in ID_FIELDS if name in entry.ids},
        "summary": summarize(entry.data),
        "data": entry.data,
        "hash": entry.hash,
    }


def format_entry(entry: Entry) -> str:
    ids = " ".join(f"{_ID_LABELS[n]}={entry.ids[n]}" for n in ID_FIELDS if n in entry.ids)
    columns = [entry.time, f"#{entry.seq:<5}", f"{entry.kind:<24}"]
    if ids:
        columns.append(ids)
    summary = summarize(entry.data)
    if summary:
        columns.append(summary)
    return "  ".join(columns)
