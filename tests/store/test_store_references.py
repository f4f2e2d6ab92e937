"""Referential integrity of the store's deletes (issue 9): an asset listed by an offer or
targeted by an agreement, and a policy used by an offer, cannot be deleted; the refusal names
what refers to them and deletes nothing. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest
from store_testlib import NOW

from connector.store import (
    AgreementRow,
    AssetRow,
    OfferRow,
    PolicyRow,
    ReferenceViolation,
    StillReferenced,
    Store,
)
from connector.store.repositories import REFERRERS_NAMED


def asset(asset_id: str) -> AssetRow:
    return AssetRow(id=asset_id, created_at=NOW, data_address={"type": "http", "url": "https://u/"})


def offer(offer_id: str, selector: dict[str, object], policy: str = "urn:policy:p") -> OfferRow:
    return OfferRow(
        id=offer_id,
        asset_selector=selector,
        access_policy_id=policy,
        contract_policy_id=policy,
        created_at=NOW,
    )


def agreement(agreement_id: str, target: str) -> AgreementRow:
    return AgreementRow(
        id=agreement_id,
        negotiation_id=None,
        provider_id="p",
        consumer_id="c",
        target=target,
        policy={"@type": "Agreement"},
        signed_at=NOW,
    )


async def seed(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.policies.add(PolicyRow(id="urn:policy:p", body="{}", created_at=NOW))
        await tx.policies.add(PolicyRow(id="urn:policy:free", body="{}", created_at=NOW))
        for a in (
            "urn:asset:listed",
            "urn:asset:agreed",
            "urn:asset:free",
            "urn:asset:listed2",
            "urn:asset:a%20b",
        ):
            await tx.assets.add(asset(a))
        await tx.offers.add(offer("urn:offer:one", {"assetIds": ["urn:asset:x", "urn:asset:listed"]}))
        await tx.offers.add(offer("urn:offer:two", {"assetIds": ["urn:asset:listed"]}))
        await tx.offers.add(offer("urn:offer:all", {"all": True}))
        # an id that only contains another one must not count as listing it
        await tx.offers.add(offer("urn:offer:near", {"assetIds": ["urn:asset:listed22"]}))
        await tx.agreements.add(agreement("urn:agreement:1", "urn:asset:agreed"))


async def test_an_asset_listed_by_offers_is_not_deleted(store: Store) -> None:
    await seed(store)
    with pytest.raises(StillReferenced) as caught:
        async with store.transaction() as tx:
            await tx.assets.delete("urn:asset:listed")
    assert caught.value.referrers == {"offer": ("urn:offer:one", "urn:offer:two"), "agreement": ()}
    assert "urn:offer:one" in str(caught.value) and not caught.value.more
    assert isinstance(caught.value, ReferenceViolation)
    assert await store.get_asset("urn:asset:listed") is not None


async def test_an_asset_under_an_agreement_is_not_deleted(store: Store) -> None:
    await seed(store)
    with pytest.raises(StillReferenced) as caught:
        async with store.transaction() as tx:
            await tx.assets.delete("urn:asset:agreed")
    assert caught.value.referrers == {"offer": (), "agreement": ("urn:agreement:1",)}
    assert await store.get_asset("urn:asset:agreed") is not None


async def test_a_free_asset_is_deleted_and_all_assets_offers_do_not_hold_it(store: Store) -> None:
    await seed(store)
    async with store.transaction() as tx:
        assert await tx.assets.delete("urn:asset:free") is True
        assert await tx.assets.delete("urn:asset:listed2") is True  # only a longer id is listed
        assert await tx.assets.delete("urn:asset:a%20b") is True
        assert await tx.assets.delete("urn:asset:free") is False
    assert await store.get_asset("urn:asset:free") is None


async def test_a_policy_used_by_an_offer_is_not_deleted(store: Store) -> None:
    await seed(store)
    with pytest.raises(StillReferenced) as caught:
        async with store.transaction() as tx:
            await tx.policies.delete("urn:policy:p")
    assert caught.value.referrers["offer"] == (
        "urn:offer:all",
        "urn:offer:near",
        "urn:offer:one",
        "urn:offer:two",
    )
    async with store.transaction() as tx:
        assert await tx.policies.get("urn:policy:p") is not None
        assert await tx.policies.delete("urn:policy:free") is True


async def test_many_referrers_are_named_up_to_a_bound(store: Store) -> None:
    await seed(store)
    async with store.transaction() as tx:
        for i in range(REFERRERS_NAMED + 2):
            await tx.offers.add(offer(f"urn:offer:m{i:02d}", {"assetIds": ["urn:asset:free"]}))
    with pytest.raises(StillReferenced) as caught:
        async with store.transaction() as tx:
            await tx.assets.delete("urn:asset:free")
    assert len(caught.value.referrers["offer"]) == REFERRERS_NAMED and caught.value.more


async def test_a_delete_racing_a_new_offer_never_leaves_the_offer_without_its_asset(
    store: Store, open_store: object
) -> None:
    """Two stores (two connection pools, as two replicas): an offer added while its asset is
    being deleted (share-locking it first, as the management API does) either holds the delete
    back or finds the asset gone; never do both commit."""
    other: Store = await open_store()  # type: ignore[operator]
    await seed(store)
    for i in range(8):
        target = f"urn:asset:race{i}"
        async with store.transaction() as tx:
            await tx.assets.add(asset(target))

        async def delete(target: str = target) -> bool:
            try:
                async with store.transaction() as tx:
                    return await tx.assets.delete(target)
            except StillReferenced:
                return False

        async def add_offer(target: str = target, i: int = i) -> bool:
            async with other.transaction() as tx:
                if not await tx.assets.lock([target]):
                    return False
                await tx.offers.add(offer(f"urn:offer:race{i}", {"assetIds": [target]}))
                return True

        deleted, offered = await asyncio.gather(delete(), add_offer())
        assert deleted != offered
        assert (await store.get_asset(target) is None) == deleted
