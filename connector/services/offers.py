"""Offers: assets (listed, or all) under an access and a contract policy. Every change refreshes
the catalog."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from connector.services.errors import Conflict, InvalidInput
from connector.services.records import RemovableRecords, fresh_id, reference
from connector.store import DuplicateKey, OfferRow, Store
from connector.wireformat import Clock


class Offers(RemovableRecords[OfferRow]):
    def __init__(self, store: Store, clock: Clock, catalog_changed: Callable[[], None]) -> None:
        super().__init__(store, lambda tx: tx.offers, "offer")
        self._clock = clock
        self._catalog_changed = catalog_changed

    async def add(
        self,
        *,
        offer_id: str | None,
        asset_ids: Sequence[str],
        all_assets: bool,
        access_policy_id: str,
        contract_policy_id: str,
    ) -> OfferRow:
        """`InvalidInput` if a policy or a listed asset does not exist; `Conflict` if the id
        is taken."""
        assets = list(dict.fromkeys(reference(a, "asset") for a in asset_ids))
        access = reference(access_policy_id, "policy")
        contract = reference(contract_policy_id, "policy")
        selector = {"all": True} if all_assets else {"assetIds": assets}
        row = OfferRow(
            id=fresh_id(offer_id, "offer"),
            access_policy_id=access,
            contract_policy_id=contract,
            created_at=self._clock(),
            asset_selector=selector,
        )
        async with self.store.transaction() as tx:
            for pid in (access, contract):
                if await tx.policies.get(pid) is None:
                    raise InvalidInput(f"no policy {pid}")
            if assets:
                # share-locked: an asset cannot be deleted while this offer is being added
                known = set(await tx.assets.lock(assets))
                missing = [a for a in assets if a not in known]
                if missing:
                    raise InvalidInput(f"no asset {', '.join(missing)}")
            try:
                await tx.offers.add(row)
            except DuplicateKey as exc:
                raise Conflict(f"offer {row.id} exists") from exc
        self._catalog_changed()
        return row

    async def delete(self, key: str) -> None:
        await super().delete(key)
        self._catalog_changed()
