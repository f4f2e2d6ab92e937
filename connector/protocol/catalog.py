"""The DSP Catalog (and single Dataset) response for one requester: only the offers whose access
policy permits the requester, only the datasets with at least one such offer, one page at a time.

``CatalogBuilder`` is built once from the provider's datasets (sorted, offers pre-rendered in the
catalog form, access policies compiled by the caller); a request then costs one compiled
decision per offer it looks at and no RDF, JSON-LD or database work.

Pagination is by key (the dataset id), so pages stay stable when datasets are added or removed
between requests. The cursor is opaque to clients; the Link header values follow the DSP HTTPS
binding (``<url>; rel="next"`` and ``rel="previous"``).
"""

from __future__ import annotations

import base64
import binascii
import json
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

from connector.protocol.decide import KnownOffer, Requester, access_decision
from connector.protocol.errors import ProtocolError
from connector.protocol.messages import PULL, Catalog, DataService, Dataset, Distribution

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 10_000


@dataclass(frozen=True)
class CatalogDistribution:
    format: str  # HttpData-PULL | HttpData-PUSH
    service_id: str | None = None  # the DataService serving it (default: the catalog's service)


@dataclass(frozen=True)
class CatalogDataset:
    """A dataset as the provider offers it: metadata, distributions and offers (ODRL Offer dicts
    in the DSP form, each with its compiled access policy)."""

    id: str
    offers: tuple[KnownOffer, ...]
    distributions: tuple[CatalogDistribution, ...] = (CatalogDistribution(PULL),)
    title: str | None = None
    description: str | None = None
    keywords: tuple[str, ...] = ()


@dataclass(frozen=True)
class CatalogPage:
    wire: dict[str, Any]  # the response body, compacted JSON-LD, valid against catalog-schema
    next_cursor: str | None = None
    previous_cursor: str | None = None
    links: list[str] = field(default_factory=list)  # Link header values

    @property
    def catalog(self) -> Catalog:
        """The body as a model (parsed on demand: the edge sends ``wire`` as it is)."""
        return Catalog.parse(self.wire)


@dataclass(frozen=True)
class _Prepared:
    dataset: CatalogDataset
    offers: tuple[tuple[KnownOffer, dict[str, Any]], ...]  # with the catalog form of the offer
    distributions: tuple[tuple[str, str], ...]  # (format, service id)
    # the dataset's JSON when every offer is visible, rendered once: a catalog of 10,000
    # datasets then costs one compiled decision per offer, not a model per dataset
    rendered: dict[str, Any]


class CatalogBuilder:
    """Builds Catalog and Dataset responses from a fixed set of datasets (rebuild on change)."""

    def __init__(
        self,
        *,
        catalog_id: str,
        participant_id: str,
        service: DataService,
        datasets: Sequence[CatalogDataset],
        services: Sequence[DataService] = (),
    ) -> None:
        self.catalog_id = catalog_id
        self.participant_id = participant_id
        self.service = service
        self.services = {s.id: s for s in (service, *services)}
        prepared = []
        for d in sorted(datasets, key=lambda d: d.id):
            offers = tuple((o, _catalog_offer(o)) for o in d.offers)
            dists = tuple((x.format, x.service_id or service.id) for x in d.distributions)
            for fmt, sid in dists:
                if sid not in self.services:
                    raise ValueError(f"dataset {d.id}: distribution {fmt} names unknown service {sid}")
            if not dists:
                raise ValueError(f"dataset {d.id} has no distribution")
            prepared.append(_Prepared(d, offers, dists, {}))
        ids = [p.dataset.id for p in prepared]
        if len(set(ids)) != len(ids):
            raise ValueError("dataset ids must be unique")
        self._datasets = prepared
        self._ids = ids
        self._by_id = {p.dataset.id: p for p in prepared}

    # ------------------------------------------------------------------ responses

    def catalog(
        self,
        requester: Requester,
        now: datetime,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
        base_url: str | None = None,
    ) -> CatalogPage:
        """One page of the catalog as ``requester`` may see it. ``base_url`` is the URL the Link
        header values point to (the cursor goes into its ``cursor`` query parameter)."""
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ProtocolError(400, "400", [f"page size must be 1..{MAX_PAGE_SIZE}"])
        direction, key = _decode(cursor)
        if direction == "before":
            end = bisect_left(self._ids, key)
            found = list(self._visible(range(end - 1, -1, -1), requester, now, page_size + 1))
            has_previous = len(found) > page_size
            page = list(reversed(found[:page_size]))
            has_next = end < len(self._ids)  # the page we came from
        else:
            start = bisect_right(self._ids, key) if direction == "after" else 0
            found = list(self._visible(range(start, len(self._ids)), requester, now, page_size + 1))
            has_next = len(found) > page_size
            page = found[:page_size]
            has_previous = direction == "after" and any(
                True for _ in self._visible(range(start - 1, -1, -1), requester, now, 1)
            )
        datasets = [self._dataset_wire(p, offers) for p, offers in page]
        used = {sid for p, _ in page for _, sid in p.distributions} | {self.service.id}
        wire = Catalog(
            id=self.catalog_id,
            participant_id=self.participant_id,
            service=[self.services[s] for s in sorted(used, key=lambda s: s != self.service.id)],
            dataset=None,
        ).to_wire()
        if datasets:
            wire["dataset"] = datasets
        next_cursor = _encode("after", page[-1][0].dataset.id) if has_next and page else None
        previous_cursor = _encode("before", page[0][0].dataset.id) if has_previous and page else None
        if direction == "before" and not page and has_next:
            next_cursor = _encode("after", "")  # nothing visible before: back to the first page
        links = []
        if base_url is not None:
            if next_cursor:
                links.append(f'<{_with_cursor(base_url, next_cursor)}>; rel="next"')
            if previous_cursor:
                links.append(f'<{_with_cursor(base_url, previous_cursor)}>; rel="previous"')
        return CatalogPage(wire, next_cursor, previous_cursor, links)

    def dataset(self, dataset_id: str, requester: Requester, now: datetime) -> Dataset:
        """The single-dataset response; 404 when unknown or when no offer is for ``requester``
        (an invisible dataset is indistinguishable from a missing one)."""
        p = self._by_id.get(dataset_id)
        offers = self._permitted(p, requester, now) if p is not None else []
        if p is None or not offers:
            raise ProtocolError(404, "404", [f"no dataset {dataset_id}"])
        return self._dataset_json(p, offers, inline=True)

    # ------------------------------------------------------------------ internals

    def _permitted(self, p: _Prepared, requester: Requester, now: datetime) -> list[dict[str, Any]]:
        return [rendered for o, rendered in p.offers if access_decision(o, requester, now).permit]

    def _visible(
        self, indexes: range, requester: Requester, now: datetime, limit: int
    ) -> Iterator[tuple[_Prepared, list[dict[str, Any]]]]:
        n = 0
        for i in indexes:
            p = self._datasets[i]
            offers = self._permitted(p, requester, now)
            if offers:
                yield p, offers
                n += 1
                if n >= limit:
                    return

    def _dataset_wire(self, p: _Prepared, offers: list[dict[str, Any]]) -> dict[str, Any]:
        if len(offers) == len(p.offers):
            if not p.rendered:
                p.rendered.update(self._dataset_json(p, offers, inline=False).to_json())
            return p.rendered
        return self._dataset_json(p, offers, inline=False).to_json()

    def _dataset_json(self, p: _Prepared, offers: list[dict[str, Any]], *, inline: bool) -> Dataset:
        d = p.dataset
        return Dataset(
            id=d.id,
            title=d.title,
            description=d.description,
            keyword=list(d.keywords) or None,
            has_policy=offers,
            distribution=[
                Distribution(format=fmt, access_service=self.services[sid] if inline else sid)
                for fmt, sid in p.distributions
            ],
        )


def _catalog_offer(o: KnownOffer) -> dict[str, Any]:
    """The offer as a dataset lists it: no target (the dataset is the target)."""
    rendered = {k: v for k, v in json.loads(json.dumps(o.offer)).items() if k != "target"}
    if o.offer.get("target") not in (None, o.target):
        raise ValueError(f"offer {o.id} names target {o.offer.get('target')}, not its dataset {o.target}")
    if rendered.get("@type") != "Offer" or not isinstance(rendered.get("@id"), str):
        raise ValueError(f"offer {o.id!r} must have @type Offer and an @id")
    return rendered


def _encode(direction: str, key: str) -> str:
    raw = json.dumps([direction, key], separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _decode(cursor: str | None) -> tuple[str, str]:
    if not cursor:
        return "start", ""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        direction, key = json.loads(raw)
        if direction in ("after", "before") and isinstance(key, str):
            return direction, key
    except (ValueError, TypeError, binascii.Error):
        pass
    raise ProtocolError(400, "400", ["the catalog cursor is not valid (take it from a Link header)"])


def _with_cursor(base_url: str, cursor: str) -> str:
    return f"{base_url}{'&' if '?' in base_url else '?'}cursor={quote(cursor)}"
