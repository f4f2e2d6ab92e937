"""The vault's index in the store: an older version's JSON records imported once on start;
registering the same copy again keeps its uses."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from connector.consumer import Vault, agreement_duties
from connector.consumer.vault import IMPORTED_SUFFIX, item_id
from connector.store import Store

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def record(path: str, agreement_id: str, **fields: object) -> dict[str, object]:
    """A record as the JSON vault wrote it (the JSON vault of earlier versions)."""
    return {
        "path": path,
        "agreement_id": agreement_id,
        "transfer_id": "urn:t",
        "provider_id": "P",
        "provider_address": "https://p.example/dsp",
        "sha256": "ab" * 32,
        "delete_at": "2026-11-24T00:00:00+00:00",
        "registered_at": NOW.isoformat(),
        "deleted_at": None,
        "notice_sent": False,
        "uses": 2,
        **fields,
    }


async def test_old_json_records_are_imported_once(store: Store, tmp_path: Path) -> None:
    records = tmp_path / "vault-records"
    records.mkdir()
    kept = item_id("urn:a", "/v/a")
    (records / f"{kept}.json").write_text(json.dumps(record("/v/a", "urn:a")))
    sent = item_id("urn:b", "/v/b")
    (records / f"{sent}.json").write_text(
        json.dumps(record("/v/b", "urn:b", deleted_at="2026-11-24T00:00:01+00:00", notice_sent=True))
    )
    (records / "damaged.json").write_text("{")
    vault = Vault(store, records_dir=records)
    assert await vault.open() == 2
    assert await vault.open() == 0  # once per process
    a, b = await vault.get(kept), await vault.get(sent)
    assert a is not None and a.uses == 2 and a.delete_at == "2026-11-24T00:00:00+00:00"
    assert b is not None and b.notice_sent and b.deleted_at == "2026-11-24T00:00:01+00:00"
    assert [i.id for i in await vault.due(datetime(2026, 11, 24, tzinfo=UTC))] == [kept]
    assert sorted(p.name for p in records.iterdir()) == sorted(
        ["damaged.json", f"{kept}.json{IMPORTED_SUFFIX}", f"{sent}.json{IMPORTED_SUFFIX}"]
    )
    # a restart: nothing left to import, the store keeps what changed since
    await vault.count_use(a)
    again = Vault(store, records_dir=records)
    assert await again.open() == 0
    assert (await again.get(kept)).uses == 3  # type: ignore[union-attr]
    # a record written again by an older version is imported without undoing the store's state
    (records / f"{kept}.json").write_text(json.dumps(record("/v/a", "urn:a", uses=0)))
    assert await Vault(store, records_dir=records).open() == 1
    assert (await again.get(kept)).uses == 3  # type: ignore[union-attr]


async def test_registered_again_keeps_uses(store: Store, tmp_path: Path) -> None:
    f = tmp_path / "copy.csv"
    f.write_text("a\n")
    vault = Vault(store)
    policy = {
        "permission": [
            {
                "action": "use",
                "duty": [
                    {
                        "action": "delete",
                        "constraint": [
                            {"leftOperand": "elapsedTime", "operator": "gteq", "rightOperand": "PT1H"}
                        ],
                    }
                ],
            }
        ]
    }
    first = await vault.register(
        f,
        agreement_id="urn:a",
        duties=agreement_duties(policy, NOW),
        transfer_id="urn:t1",
        provider_id="P",
        provider_address="x",
        now=NOW,
    )
    assert first.delete_at == (NOW + timedelta(hours=1)).isoformat()
    used = await vault.count_use(first)
    assert used is not None and used.uses == 1
    f.write_text("b\n")
    later = NOW + timedelta(minutes=5)
    again = await vault.register(
        f,
        agreement_id="urn:a",
        duties=agreement_duties(policy, later),
        transfer_id="urn:t2",
        provider_id="P",
        provider_address="x",
        now=later,
    )
    assert again.id == first.id and again.uses == 1 and again.sha256 != first.sha256
    assert again.transfer_id == "urn:t2" and [i.id for i in await vault.items()] == [first.id]
    assert await vault.agreement_uses("urn:a") == 1
    assert await vault.get("not-an-id") is None
