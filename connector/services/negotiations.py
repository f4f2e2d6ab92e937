"""Contract negotiations, as the management API drives them: open one on a peer's offer (or on
terms of one's own), list, wait for a state, and the local commands (terminate, accept,
counter-offer). The control plane runs the protocol; this module picks the offer and turns plain
rules into what goes on the wire."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from typing import Any

from connector.odrl.parse import PolicyError
from connector.odrl.plain import policy_document as plain_policy_document
from connector.odrl.wire import wire_rules
from connector.protocol import negotiation as neg
from connector.protocol.messages import check_policy
from connector.protocol.negotiation import NegotiationState
from connector.runtime import ControlPlane, policy_problems
from connector.services.catalog import PeerCatalog, merge_pages
from connector.services.errors import InvalidInput, NotFound, translated
from connector.services.records import Page, Records, wire_state_query
from connector.store import NegotiationRow

RULES = ("permission", "prohibition", "obligation")


def terms_on_the_wire(terms: dict[str, Any]) -> dict[str, Any]:
    """Plain rules a consumer asks for, as they go in a DSP message: full IRIs for every term
    the DSP contexts do not define (connector.odrl.wire), so the provider reads
    ``idsc:SECURITY_LEVEL`` as the IDS operand. `InvalidInput` with the problems otherwise."""
    rules = {k: v for k, v in terms.items() if k in RULES}
    doc = plain_policy_document(rules, "urn:uuid:terms")
    problems = policy_problems(doc)
    if problems:
        raise InvalidInput("the terms cannot be read", problems)
    try:
        wire = wire_rules(doc)
        with translated():
            check_policy(
                {"@id": "urn:uuid:terms", "@type": "Offer", **wire}, "Offer", target=False, where="terms"
            )
    except (PolicyError, ValueError) as exc:
        raise InvalidInput(f"the terms cannot be read: {exc}") from exc
    return wire


def pick_offer(catalog: dict[str, Any], offer_id: str, dataset_id: str | None) -> dict[str, Any]:
    """The offer `offer_id` of a DSP catalog (of dataset `dataset_id`, if given), with its
    dataset as target. `offer_id` is the catalog's offer id, or the provider's own offer id
    (what `offer add` printed): a connector shows an offer over several assets as one offer
    per dataset, ``OFFER:ASSET``. `NotFound` if the catalog has none; `InvalidInput` if the
    provider's offer id names offers on several datasets and no `dataset_id` says which."""
    exact: list[dict[str, Any]] = []
    by_offer: list[dict[str, Any]] = []
    for d in catalog.get("dataset", []) or []:
        if not isinstance(d, dict) or (dataset_id and d.get("@id") != dataset_id):
            continue
        for o in d.get("hasPolicy", []) or []:
            if not isinstance(o, dict):
                continue
            if o.get("@id") == offer_id:
                exact.append({**o, "target": d.get("@id")})
            elif o.get("@id") == f"{offer_id}:{d.get('@id')}":  # connector.runtime.catalog
                by_offer.append({**o, "target": d.get("@id")})
    if exact:
        return exact[0]
    if len(by_offer) == 1:
        return by_offer[0]
    if by_offer:
        datasets = ", ".join(sorted(str(o["target"]) for o in by_offer))
        raise InvalidInput(
            f"offer {offer_id} covers several datasets ({datasets}): say which "
            "one (datasetId), or give the catalog's offer id"
        )
    raise NotFound(f"the peer offers no {offer_id} to this connector")


def _names_offer(page: dict[str, Any], offer_id: str, dataset_id: str | None) -> bool:
    """Whether a catalog page holds the offer under its catalog id (of dataset `dataset_id`)."""
    return any(
        isinstance(o, dict) and o.get("@id") == offer_id
        for d in page.get("dataset") or []
        if isinstance(d, dict) and (not dataset_id or d.get("@id") == dataset_id)
        for o in d.get("hasPolicy") or []
    )


class Negotiations(Records[NegotiationRow]):
    def __init__(self, cp: ControlPlane, catalog: PeerCatalog) -> None:
        super().__init__(cp.store, lambda tx: tx.negotiations, "negotiation")
        self._cp = cp
        self._catalog = catalog

    async def start(
        self,
        *,
        peer_url: str,
        offer_id: str,
        dataset_id: str | None = None,
        terms: dict[str, Any] | None = None,
    ) -> NegotiationRow:
        """Consumer: negotiate the peer's offer `offer_id`, or ask for `terms` (plain rules, a
        counter-offer) on its dataset `dataset_id`."""
        # the offer may be on any page: read them until its catalog id shows (terms need only
        # the first page's participant; the provider's own offer id needs them all)
        read: list[dict[str, Any]] = []
        async for page in self._catalog.pages(peer_url):
            read.append(page)
            if terms is not None or _names_offer(page, offer_id, dataset_id):
                break
        dsp = merge_pages(read)
        if terms is not None:
            offer = {"@id": offer_id, "@type": "Offer", "target": dataset_id, **terms_on_the_wire(terms)}
        else:
            offer = pick_offer(dsp, offer_id, dataset_id)
        with translated():
            started = await self._cp.request_offer(
                provider_url=peer_url.rstrip("/"), provider_id=str(dsp.get("participantId")), offer=offer
            )
        return await self.get(started.id)

    async def list_in(self, state: str | None, page: Page) -> list[NegotiationRow]:
        """A page of negotiations, in DSP state `state` if given (selected before paging)."""
        wire = wire_state_query(state, neg.SENDING) if state is not None else None
        async with self.store.transaction(readonly=True) as tx:
            return await tx.negotiations.list(
                wire_state=wire, newest_first=page.newest_first, limit=page.limit, offset=page.offset
            )

    async def wait(
        self, negotiation_id: str, states: Collection[NegotiationState], timeout: float
    ) -> NegotiationRow:
        """The negotiation once its (internal) state is one of `states`, or at the timeout."""
        row = await self._cp.wait_for(negotiation_id, {s.value for s in states}, timeout)
        if row is None:
            raise NotFound(f"no such {self.noun}")
        return row

    async def _command(self, negotiation_id: str, command: Any) -> NegotiationRow:
        with translated():
            n = await self._cp.command(negotiation_id, command)
        return await self.get(n.id)

    async def terminate(self, negotiation_id: str, reason: str) -> NegotiationRow:
        return await self._command(negotiation_id, neg.Terminate(reason))

    async def accept(self, negotiation_id: str) -> NegotiationRow:
        return await self._command(negotiation_id, neg.Accept())

    async def counter_offer(self, negotiation_id: str, terms: dict[str, Any]) -> NegotiationRow:
        """Consumer: answer the provider's offer with other terms, for the same target."""
        current = (await self.get(negotiation_id)).offer or {}
        offer = {
            "@id": f"urn:uuid:{uuid.uuid4()}",
            "@type": "Offer",
            "target": current.get("target"),
            **terms_on_the_wire(terms),
        }
        return await self._command(negotiation_id, neg.CounterOffer(offer))
