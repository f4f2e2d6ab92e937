"""Usage receipts kept by transfer and chain: duplicates ignored, each chain in order."""

from __future__ import annotations

from store_testlib import NOW

from connector.store import Store


async def test_receipts_by_transfer_and_chain(store: Store) -> None:
    assert await store.list_receipts("t1") == []
    assert await store.add_receipt("t1", "b", 1, 2, "b1", NOW)
    assert await store.add_receipt("t1", "a", 3, 3, "a3", NOW)
    assert await store.add_receipt("t1", "a", 1, 2, "a1", NOW)
    assert await store.add_receipt("t2", "a", 1, 1, "other", NOW)
    assert not await store.add_receipt("t1", "a", 1, 2, "a1 again", NOW)  # kept once
    assert await store.list_receipts("t1") == ["a1", "a3", "b1"]
    assert await store.list_receipts("t2") == ["other"]
