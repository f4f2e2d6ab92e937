"""The provider's catalog: every dataset with its offers and compiled access policies
(``build_catalog``), and the cache the DSP catalog and negotiation paths read (``CatalogCache``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from connector.odrl.compile import Decider, compile_policy
from connector.odrl.parse import PolicyError, load_policy
from connector.odrl.wire import wire_rules
from connector.protocol.catalog import CatalogBuilder, CatalogDataset, CatalogDistribution
from connector.protocol.decide import KnownOffer
from connector.protocol.messages import PULL, PUSH, DataService
from connector.store import Store
from connector.store.rows import AssetRow
from connector.usage.pipeline import both, catalog_decider

CATALOG_TTL = 10.0  # seconds a built catalog serves before it is rebuilt (other replicas' changes)


@dataclass(frozen=True)
class CatalogSnapshot:
    builder: CatalogBuilder
    offers: tuple[KnownOffer, ...]


def offer_for_catalog(offer_id: str, contract_policy: Mapping[str, Any], target: str) -> dict[str, Any]:
    """The DSP-form ODRL Offer a consumer sees: the contract policy's rules under the offer id."""
    return {"@id": offer_id, "@type": "Offer", "target": target, **wire_rules(contract_policy)}


async def build_catalog(store: Store, *, participant_id: str, dsp_url: str) -> CatalogSnapshot:
    """Every dataset with its offers and compiled access policies: two queries, compiled once."""
    offers, assets = await store.load_catalog()
    by_asset: dict[str, list[KnownOffer]] = {}
    compiled: dict[str, Decider] = {}
    for co in offers:
        access_id = co.access_policy.id
        if access_id not in compiled:
            compiled[access_id] = compile_policy(load_policy(co.access_policy.document()))
        contract = co.contract_policy.document()
        # who may see and negotiate the offer: its access policy, and its contract policy as
        # far as the requester's attested attributes decide it (connector.odrl.stage)
        access = both(compiled[access_id], catalog_decider(contract))
        for asset_id in _selected(co.offer.asset_selector, assets):
            known = KnownOffer(
                offer_for_catalog(f"{co.offer.id}:{asset_id}", contract, asset_id), asset_id, access
            )
            by_asset.setdefault(asset_id, []).append(known)
    datasets = []
    for asset in assets:
        if asset.id not in by_asset:
            continue
        fmt = [PUSH] if asset.properties.get("push_only") else [PULL, PUSH]
        datasets.append(
            CatalogDataset(
                id=asset.id,
                offers=tuple(by_asset[asset.id]),
                distributions=tuple(CatalogDistribution(f) for f in fmt),
                title=asset.title,
                description=asset.description,
                keywords=tuple(asset.keywords),
            )
        )
    service = DataService.model_validate({"@id": f"{dsp_url}#dsp", "endpointURL": dsp_url})
    builder = CatalogBuilder(
        catalog_id=f"{dsp_url}#catalog", participant_id=participant_id, service=service, datasets=datasets
    )
    return CatalogSnapshot(builder, tuple(o for d in datasets for o in d.offers))


def _selected(selector: Any, assets: Sequence[AssetRow]) -> list[str]:
    ids = {a.id for a in assets}
    if isinstance(selector, dict) and isinstance(selector.get("assetIds"), list):
        return [a for a in selector["assetIds"] if a in ids]
    if isinstance(selector, dict) and selector.get("all") is True:
        return sorted(ids)
    return []


class CatalogCache:
    """The compiled catalog; rebuilt after a local change, and at least every ``CATALOG_TTL``
    seconds so changes made through another replica show up."""

    def __init__(self, store: Store, *, participant_id: str, dsp_url: str) -> None:
        self.store = store
        self.participant_id = participant_id
        self.dsp_url = dsp_url
        self._snapshot: CatalogSnapshot | None = None
        self._built_at = 0.0
        self._lock = asyncio.Lock()

    @property
    def current(self) -> CatalogSnapshot | None:
        """The last snapshot built, without rebuilding (None: none yet, or changed since)."""
        return self._snapshot

    async def get(self) -> CatalogSnapshot:
        snap = self._snapshot
        loop = asyncio.get_running_loop()
        if snap is not None and loop.time() - self._built_at < CATALOG_TTL:
            return snap
        async with self._lock:
            if self._snapshot is None or loop.time() - self._built_at >= CATALOG_TTL:
                self._snapshot = await build_catalog(
                    self.store, participant_id=self.participant_id, dsp_url=self.dsp_url
                )
                self._built_at = loop.time()
            return self._snapshot

    def changed(self) -> None:
        self._snapshot = None


def policy_problems(document: Any) -> list[str]:
    """Every problem of a policy document (strict: unknown terms included); empty if valid."""
    try:
        load_policy(document, strict=True)
    except PolicyError as exc:
        return [str(p) for p in exc.problems]
    return []
