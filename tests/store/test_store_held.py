"""Held facts, payments and retired agreements in the store, on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa
from store_testlib import NOW, OpenStore

from connector.store import (
    AgreementRow,
    DuplicateKey,
    HeldFact,
    Payment,
    ReferenceViolation,
    Store,
    migrations,
)
from connector.store import schema as tables

EUR = "http://dbpedia.org/resource/Euro"
STATE = "https://w3id.org/idsa/code/STATE"
EVENT = "http://www.w3.org/ns/odrl/2/event"


def agreement(agreement_id: str = "urn:agreement:1") -> AgreementRow:
    return AgreementRow(
        id=agreement_id,
        provider_id="p",
        consumer_id="c",
        target="urn:asset:x",
        policy={"@id": agreement_id},
        signed_at=NOW,
    )


def payment(n: int, amount: str, agreement_id: str = "urn:agreement:1", paid: int = 0) -> Payment:
    return Payment(
        id=f"urn:payment:{n}",
        agreement_id=agreement_id,
        amount=Decimal(amount),
        currency=EUR,
        paid_at=NOW + timedelta(hours=paid),
        recorded_at=NOW,
        reference=f"inv-{n}",
    )


async def test_held_facts_set_replace_unset_and_expiry(store: Store) -> None:
    later = NOW + timedelta(days=1)
    async with store.transaction() as tx:
        await tx.held_facts.set(HeldFact(name=STATE, values=("urn:s:a", 3), set_at=NOW))
        await tx.held_facts.set(HeldFact(name=EVENT, values=("urn:e:fair",), set_at=NOW, until=later))
    async with store.transaction() as tx:
        await tx.held_facts.set(HeldFact(name=STATE, values=("urn:s:b",), set_at=later))
    async with store.transaction(readonly=True) as tx:
        assert await tx.held_facts.list(NOW) == [
            HeldFact(name=EVENT, values=("urn:e:fair",), set_at=NOW, until=later),
            HeldFact(name=STATE, values=("urn:s:b",), set_at=later),
        ]
        assert [f.name for f in await tx.held_facts.list(later)] == [STATE]
        assert len(await tx.held_facts.list()) == 2
    async with store.transaction() as tx:
        assert await tx.held_facts.unset(STATE) is True
        assert await tx.held_facts.unset(STATE) is False
        assert [f.name for f in await tx.held_facts.list()] == [EVENT]


async def test_payments_keep_exact_amounts_by_agreement(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.agreements.add(agreement("urn:agreement:1"))
        await tx.agreements.add(agreement("urn:agreement:2"))
        await tx.payments.add(payment(1, "0.1", paid=2))
        await tx.payments.add(payment(2, "123456789012345678901234.567890", paid=1))
        await tx.payments.add(payment(3, "10.00", "urn:agreement:2"))
    async with store.transaction(readonly=True) as tx:
        mine = await tx.payments.list(agreement_id="urn:agreement:1")
        assert [p.id for p in mine] == ["urn:payment:2", "urn:payment:1"]  # by paid_at
        assert mine[0].amount == Decimal("123456789012345678901234.567890")
        assert mine[1].amount + Decimal("0.2") == Decimal("0.3")
        assert str((await tx.payments.list(agreement_id="urn:agreement:2"))[0].amount) == "10.00"
        assert len(await tx.payments.list()) == 3
        assert mine[1] == payment(1, "0.1", paid=2)


async def test_a_payment_needs_its_agreement_and_a_fresh_id(store: Store) -> None:
    with pytest.raises(ReferenceViolation):
        async with store.transaction() as tx:
            await tx.payments.add(payment(1, "5", "urn:agreement:none"))
    async with store.transaction() as tx:
        await tx.agreements.add(agreement())
        await tx.payments.add(payment(1, "5"))
    with pytest.raises(DuplicateKey):
        async with store.transaction() as tx:
            await tx.payments.add(payment(1, "6"))


async def test_retire_once(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.agreements.add(agreement())
        assert await tx.agreements.retire("urn:agreement:none", "x", NOW) is None
    async with store.transaction() as tx:
        first = await tx.agreements.retire("urn:agreement:1", "contract ended", NOW)
    assert first == replace(agreement(), retired_at=NOW, retired_reason="contract ended")
    async with store.transaction() as tx:
        again = await tx.agreements.retire("urn:agreement:1", "other", NOW + timedelta(hours=1))
    assert again == first
    async with store.transaction(readonly=True) as tx:
        assert (await tx.agreements.list())[0].retired_reason == "contract ended"


async def test_upgrade_from_version_2_keeps_agreements(
    open_store: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await open_store()
    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:2])
    monkeypatch.setattr(migrations, "LATEST", 2)
    assert await store.migrate() == 2
    async with store.transaction() as tx:
        columns = {
            c["name"] for c in await tx.connection.run_sync(lambda c: sa.inspect(c).get_columns("agreements"))
        }
        assert "retired_at" not in columns
        values = {c: getattr(agreement(), c) for c in columns}
        await tx.execute(sa.insert(tables.agreements).values(values))
    monkeypatch.undo()
    assert await store.migrate() == migrations.LATEST
    async with store.transaction() as tx:
        assert await tx.agreements.get("urn:agreement:1") == agreement()
        retired = await tx.agreements.retire("urn:agreement:1", "why", NOW)
        assert retired is not None and retired.retired_at == NOW
        await tx.payments.add(payment(1, "1"))
        await tx.held_facts.set(HeldFact(name=STATE, values=("urn:s:a",), set_at=NOW))
