"""Both parties' jurisdictions in transfer audit entries, and the cross-border export report.

Every transfer entry a connector writes (``transfer.<state>``) carries, where known::

    "jurisdictions": {"provider": {"country": "CN", "subdivision": "CN-SH"},
                      "consumer": {"country": "DE"}},
    "crossBorder": true

This side's jurisdiction comes from its own DAT, the peer's from the DAT its message came with
(so the provider knows both from the transfer request on, the consumer from the provider's
start message on). ``crossBorder`` is there when both are known: the countries differ.

``export_report`` reads a log and lists each transfer that crossed a border, grouped by
agreement; ``connector audit export-report`` prints it as CSV or JSON.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from typing import Any

from connector.audit.log import Entry
from connector.identity.participants import crosses_border, jurisdiction_label
from connector.identity.tokens import Claims

CSV_COLUMNS = (
    "agreement_id",
    "transfer_id",
    "role",
    "provider_jurisdiction",
    "consumer_jurisdiction",
    "first_seen",
    "last_state",
    "last_seen",
)


def _jurisdiction(claims: Claims | None) -> dict[str, Any] | None:
    if claims is None:
        return None
    value = claims.attributes.get("jurisdiction")
    return dict(value) if isinstance(value, Mapping) else None


def transfer_jurisdictions(role: str, own: Claims | None, peer: Claims | None) -> dict[str, Any]:
    """The audit data of a transfer entry written by the party in ``role``
    (``provider`` or ``consumer``): both jurisdictions where known, and whether they differ."""
    mine, theirs = _jurisdiction(own), _jurisdiction(peer)
    role = role.lower()  # the process role (PROVIDER, CONSUMER) names a party
    other = "consumer" if role == "provider" else "provider"
    known = {k: v for k, v in ((role, mine), (other, theirs)) if v is not None}
    if not known:
        return {}
    out: dict[str, Any] = {"jurisdictions": known}
    crossed = crosses_border(mine, theirs)
    if crossed is not None:
        out["crossBorder"] = crossed
    return out


def export_report(entries: Iterable[Entry]) -> list[dict[str, Any]]:
    """Every transfer that crossed a border, one row each, grouped by agreement (sorted by
    agreement, then first entry). A transfer's jurisdictions are the last ones its entries
    name (an entry without them does not erase them)."""
    rows: dict[str, dict[str, Any]] = {}
    for e in entries:
        if not e.kind.startswith("transfer.") or e.transfer_id is None:
            continue
        row = rows.setdefault(
            e.transfer_id,
            {
                "agreement_id": e.agreement_id or "",
                "transfer_id": e.transfer_id,
                "role": str(e.data.get("role", "")).lower(),
                "jurisdictions": {},
                "crossBorder": None,
                "first_seen": e.time,
            },
        )
        row["last_state"] = e.data.get("state", e.kind.removeprefix("transfer."))
        row["last_seen"] = e.time
        found = e.data.get("jurisdictions")
        if isinstance(found, Mapping):
            row["jurisdictions"].update({k: v for k, v in found.items() if k in ("provider", "consumer")})
        if isinstance(e.data.get("crossBorder"), bool):
            row["crossBorder"] = e.data["crossBorder"]
    crossed = [r for r in rows.values() if r["crossBorder"]]
    crossed.sort(key=lambda r: (r["agreement_id"], r["first_seen"], r["transfer_id"]))
    return [
        {
            "agreement_id": r["agreement_id"],
            "transfer_id": r["transfer_id"],
            "role": r["role"],
            "provider_jurisdiction": jurisdiction_label(r["jurisdictions"].get("provider")),
            "consumer_jurisdiction": jurisdiction_label(r["jurisdictions"].get("consumer")),
            "jurisdictions": r["jurisdictions"],
            "first_seen": r["first_seen"],
            "last_state": r["last_state"],
            "last_seen": r["last_seen"],
        }
        for r in crossed
    ]


def report_json(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"agreements": [{"agreement_id": A, "transfers": [row, ...]}, ...]}``."""
    by: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by.setdefault(row["agreement_id"], []).append(row)
    return {"agreements": [{"agreement_id": a, "transfers": ts} for a, ts in by.items()]}


def report_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
