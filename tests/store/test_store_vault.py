"""The consumer's vault index (vault_items): upsert keeps uses, due is what is due and not yet
reported, in order of due time; deletion and uses counted atomically."""

from __future__ import annotations

from datetime import timedelta

from store_testlib import NOW

from connector.store import Store
from connector.store.vault import VaultRow


def row(
    item_id: str, *, agreement: str = "urn:a", due_in: timedelta | None = None, path: str = "/v/f"
) -> VaultRow:
    return VaultRow(
        id=item_id,
        path=path,
        agreement_id=agreement,
        transfer_id="urn:t",
        provider_id="P",
        provider_address="https://p.example/dsp",
        sha256="00" * 32,
        delete_at=NOW + due_in if due_in is not None else None,
        registered_at=NOW,
    )


async def test_vault_rows_due_deleted_and_used(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.vault.save(row("b" * 24, due_in=timedelta(hours=2)))
        await tx.vault.save(row("a" * 24, due_in=timedelta(hours=1)))
        await tx.vault.save(row("c" * 24))  # no delete duty
        await tx.vault.save(row("d" * 24, agreement="urn:other", due_in=timedelta(hours=1)))
    async with store.transaction(readonly=True) as tx:
        assert await tx.vault.due(NOW) == []
        assert [r.id for r in await tx.vault.due(NOW + timedelta(hours=1))] == ["a" * 24, "d" * 24]
        assert [r.id for r in await tx.vault.due(NOW + timedelta(days=1))] == ["a" * 24, "d" * 24, "b" * 24]
        assert [r.id for r in await tx.vault.all()] == ["a" * 24, "b" * 24, "c" * 24, "d" * 24]
        got = await tx.vault.get("a" * 24)
        assert got == row("a" * 24, due_in=timedelta(hours=1))
        assert await tx.vault.get("e" * 24) is None
    async with store.transaction() as tx:
        assert await tx.vault.add_use("a" * 24) == 1
        assert await tx.vault.add_use("a" * 24) == 2
        assert await tx.vault.add_use("c" * 24) == 1
        assert await tx.vault.agreement_uses("urn:a") == 3
        assert await tx.vault.agreement_uses("urn:none") == 0
        await tx.vault.mark_deleted("a" * 24, NOW + timedelta(hours=1))
        await tx.vault.mark_deleted("a" * 24, NOW + timedelta(hours=5))  # the first time stays
        assert await tx.vault.add_use("a" * 24) is None  # a deleted copy is not used
        await tx.vault.mark_notice_sent("a" * 24)
    async with store.transaction(readonly=True) as tx:
        a = await tx.vault.get("a" * 24)
        assert a is not None and a.uses == 2 and a.notice_sent
        assert a.deleted_at == NOW + timedelta(hours=1)
        # reported: no longer due; deleted but not reported: still due (the notice is retried)
        assert [r.id for r in await tx.vault.due(NOW + timedelta(days=1))] == ["d" * 24, "b" * 24]


async def test_registered_again_keeps_uses_and_import_keeps_the_store(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.vault.save(row("a" * 24, due_in=timedelta(hours=1)))
        await tx.vault.add_use("a" * 24)
        await tx.vault.mark_deleted("a" * 24, NOW)
        # the same copy again (a new pull to the same path): new file and duty, uses kept
        await tx.vault.save(row("a" * 24, due_in=timedelta(hours=3), path="/v/g"))
        assert not await tx.vault.add_if_absent(row("a" * 24, path="/old"))
        assert await tx.vault.add_if_absent(row("f" * 24))
    async with store.transaction(readonly=True) as tx:
        a = await tx.vault.get("a" * 24)
        assert a is not None and a.uses == 1 and a.path == "/v/g" and a.deleted_at is None
        assert a.delete_at == NOW + timedelta(hours=3)
        assert await tx.vault.get("f" * 24) is not None
