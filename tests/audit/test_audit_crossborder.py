"""Both parties' jurisdictions in transfer audit entries, and the cross-border export report."""

from __future__ import annotations

import csv
import io
from types import MappingProxyType
from typing import Any

from conftest import MakeLog

from connector.audit.crossborder import (
    CSV_COLUMNS,
    export_report,
    report_csv,
    report_json,
    transfer_jurisdictions,
)
from connector.audit.log import read_entries
from connector.identity.keys import PrivateKey
from connector.identity.tokens import Claims


def claims(jurisdiction: dict[str, str] | None) -> Claims:
    return Claims(
        scheme="dat",
        issuer="i",
        subject="s",
        audience=(),
        issued_at=0,
        not_before=0,
        expires_at=1,
        token_id="j",
        key_id=None,
        attributes=MappingProxyType(
            {"jurisdiction": MappingProxyType(jurisdiction) if jurisdiction else None}
        ),
    )


CN = {"country": "CN", "subdivision": "CN-SH"}
DE = {"country": "DE"}


def test_transfer_jurisdictions() -> None:
    assert transfer_jurisdictions("provider", claims(CN), claims(DE)) == {
        "jurisdictions": {"provider": CN, "consumer": DE},
        "crossBorder": True,
    }
    assert transfer_jurisdictions("CONSUMER", claims(DE), claims(CN)) == {
        "jurisdictions": {"consumer": DE, "provider": CN},
        "crossBorder": True,
    }
    same = transfer_jurisdictions("provider", claims(CN), claims({"country": "CN"}))
    assert same["crossBorder"] is False
    assert transfer_jurisdictions("consumer", claims(DE), None) == {"jurisdictions": {"consumer": DE}}
    assert transfer_jurisdictions("provider", None, claims(None)) == {}


def _entries(
    make_log: MakeLog, key: PrivateKey, events: list[tuple[str, dict[str, Any], dict[str, str]]]
) -> Any:
    log = make_log(key)
    for kind, data, ids in events:
        log.append(kind, data, **ids)
    return list(read_entries(log.path))


def test_export_report_lists_crossing_transfers_by_agreement(make_log: MakeLog, key: PrivateKey) -> None:
    crossing = {"role": "provider", **transfer_jurisdictions("provider", claims(CN), claims(DE))}
    domestic = {
        "role": "provider",
        **transfer_jurisdictions("provider", claims(CN), claims({"country": "CN"})),
    }
    entries = _entries(
        make_log,
        key,
        [
            (
                "transfer.requested",
                {"role": "provider", "state": "REQUESTED"},
                {"transfer_id": "t2", "agreement_id": "b"},
            ),
            (
                "transfer.started",
                {**crossing, "state": "STARTED"},
                {"transfer_id": "t2", "agreement_id": "b"},
            ),
            (
                "transfer.started",
                {**domestic, "state": "STARTED"},
                {"transfer_id": "t3", "agreement_id": "a"},
            ),
            (
                "transfer.started",
                {**crossing, "state": "STARTED"},
                {"transfer_id": "t1", "agreement_id": "a"},
            ),
            ("negotiation.finalized", {**crossing}, {"agreement_id": "a", "process_id": "n"}),
            # a later entry without jurisdictions keeps those known
            (
                "transfer.completed",
                {"role": "provider", "state": "COMPLETED"},
                {"transfer_id": "t1", "agreement_id": "a"},
            ),
        ],
    )
    rows = export_report(entries)
    assert [(r["agreement_id"], r["transfer_id"]) for r in rows] == [("a", "t1"), ("b", "t2")]
    assert rows[0]["provider_jurisdiction"] == "CN-SH" and rows[0]["consumer_jurisdiction"] == "DE"
    assert rows[0]["last_state"] == "COMPLETED"
    grouped = report_json(rows)
    assert [a["agreement_id"] for a in grouped["agreements"]] == ["a", "b"]
    assert grouped["agreements"][0]["transfers"][0]["jurisdictions"]["consumer"] == DE
    table = list(csv.DictReader(io.StringIO(report_csv(rows))))
    assert tuple(table[0]) == CSV_COLUMNS
    assert [
        (t["agreement_id"], t["transfer_id"], t["provider_jurisdiction"], t["consumer_jurisdiction"])
        for t in table
    ] == [("a", "t1", "CN-SH", "DE"), ("b", "t2", "CN-SH", "DE")]
    assert export_report([]) == [] and report_csv([]) == ",".join(CSV_COLUMNS) + "\n"
