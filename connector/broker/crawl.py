"""The federated catalog: the broker reads each registered, available connector's DSP catalog as
itself and indexes its datasets, distributions and offers (store and SPARQL index).

The broker is a plain DSP consumer here: it sends a ``CatalogRequestMessage`` with its own DAT
over mutual TLS with its own certificate (connector.http.client.DspClient, whose destinations
pass the outbound-address policy, ``[broker] peer_allow``), so it indexes only what the provider
shows the broker; a consumer still gets its own view from the provider. Every page is followed
(DSP pagination: the ``Link: <...>; rel="next"`` header), and only within the endpoint it
crawls: a next page elsewhere would let one connector pass another's catalog off as its own.
The catalog must be the registrant's (its ``participantId`` is the registration's owner).

Scheduling lives in the store (``broker_crawls``): a crawl is due after a (re-)registration and
every ``interval`` after a good one. A replica claims a due crawl with a lease (one conditional
UPDATE), so replicas sharing a store never crawl one connector at once. At most ``concurrency``
crawls run at once; each has its own timeout (all its pages), so a slow connector never holds up
the others. A failed crawl is retried after an exponential backoff with jitter, capped
(:func:`backoff_delay`); the last good crawl stays indexed meanwhile.

What is read of a catalog (:func:`read_catalog`): the datasets' ``@id``, title, description,
keywords, publisher, themes, licenses, distribution formats and offers; each offer's policy
template (connector.broker.templates) becomes a ``template`` search filter term. The SPARQL
index gets the catalog as triples in DCAT, DCT and ODRL terms (:func:`catalog_triples`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import pyoxigraph as ox
from rdflib import RDF

from connector.broker import store as regstore
from connector.broker.description import MAX_TEXT, DatasetEntry
from connector.broker.metrics import CRAWLS
from connector.broker.templates import offer_template
from connector.http.client import Delivery
from connector.http.outbound import same_endpoint
from connector.odrl.terms import expand_term
from connector.protocol.messages import CatalogRequestMessage
from connector.store import Store, StoreError, StoreUnavailable
from connector.vocab import DCAT, DCT, DSPACE, ODRL

log = logging.getLogger("connector.broker.crawl")

__all__ = [
    "CatalogClient",
    "CrawlFailed",
    "CrawlSettings",
    "Crawled",
    "Crawler",
    "backoff_delay",
    "catalog_triples",
    "read_catalog",
]


class CatalogClient(Protocol):
    """What the crawler needs of connector.http.client.DspClient."""

    async def post(self, url: str, payload: Any) -> Delivery: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class CrawlSettings:
    interval: float = 300.0  # s between good crawls of one connector
    concurrency: int = 8  # crawls at once
    timeout: float = 60.0  # s for one connector's crawl, every page
    page_size: int = 1000  # datasets asked for per page (?pageSize=, as this project serves)
    backoff: float = 5.0  # s before the first retry of a failed crawl; doubles per failure
    backoff_cap: float = 900.0  # s at most between retries
    max_datasets: int = 20_000  # of one connector's catalog
    max_pages: int = 1000
    tick: float = 1.0  # s between looks for due crawls


class CrawlFailed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def backoff_delay(failures: int, base: float, cap: float, rand: Callable[[], float]) -> float:
    """Seconds before retry number ``failures``: half of min(cap, base * 2^(failures-1)) plus a
    random part of the other half ("equal jitter": replicas and connectors spread out, and the
    wait never shrinks below half the exponential step, so a failing connector is never
    hammered)."""
    step = min(cap, base * 2.0 ** min(max(failures - 1, 0), 30))
    return step / 2 + rand() * step / 2


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True)
class Crawled:
    head: dict[str, Any]  # the catalog without datasets: @id, @type, participantId, service
    entries: tuple[DatasetEntry, ...]
    wire: dict[str, dict[str, Any]]  # dataset id -> the dataset as the catalog listed it
    pages: int = 1


def _items(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    return [] if value is None else [value]


def _text(value: Any) -> str:
    for v in _items(value):
        if isinstance(v, Mapping):
            v = v.get("@value")
        if isinstance(v, str) and v.strip():
            return v.strip()[:MAX_TEXT]
    return ""


def _strings(value: Any) -> list[str]:
    out = []
    for v in _items(value):
        if isinstance(v, Mapping):
            v = v.get("@id", v.get("@value"))
        if isinstance(v, str) and v.strip():
            out.append(v.strip()[:2000])
    return out


# the keys of a DSP catalog's terms: the DSP context defines some, the rest come prefixed
_KEYS = {
    "title": ("dct:title", "title"),
    "description": ("dct:description", "description"),
    "keyword": ("dcat:keyword", "keyword"),
    "publisher": ("dct:publisher", "publisher"),
    "theme": ("dcat:theme", "theme"),
    "license": ("dct:license", "license"),
    "format": ("format", "dct:format"),
    "distribution": ("distribution", "dcat:distribution"),
    "hasPolicy": ("hasPolicy", "odrl:hasPolicy"),
}


def _get(node: Mapping[str, Any], term: str) -> Any:
    for key in _KEYS[term]:
        if key in node:
            return node[key]
    return None


def _distributions(d: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [x for x in _items(_get(d, "distribution")) if isinstance(x, Mapping)]


def _offers(d: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [o for o in _items(_get(d, "hasPolicy")) if isinstance(o, Mapping)]


def _entry(d: Mapping[str, Any]) -> DatasetEntry:
    formats = [f for x in _distributions(d) for f in _strings(_get(x, "format"))]
    publisher = _strings(_get(d, "publisher"))
    return DatasetEntry(
        id=str(d["@id"]),
        title=_text(_get(d, "title")) or str(d["@id"]),
        description=_text(_get(d, "description")),
        keywords=tuple(sorted({k[:256] for k in _strings(_get(d, "keyword"))})),
        publisher=publisher[0] if publisher else "",
        themes=tuple(sorted(set(_strings(_get(d, "theme"))))),
        licenses=tuple(sorted(set(_strings(_get(d, "license"))))),
        formats=tuple(sorted(set(formats))),
        templates=tuple(sorted({offer_template(o) for o in _offers(d)})),
    )


def read_catalog(pages: list[Any], *, participant: str, max_datasets: int) -> Crawled:
    """The crawl of one connector from its catalog's pages (DSP compact JSON-LD); CrawlFailed
    if a page is not a catalog, or the catalog is not ``participant``'s, or is too large."""
    head: dict[str, Any] = {}
    entries: list[DatasetEntry] = []
    wire: dict[str, dict[str, Any]] = {}
    for body in pages:
        if not isinstance(body, dict) or body.get("@type") not in ("Catalog", "dcat:Catalog"):
            raise CrawlFailed("the answer is not a DSP catalog")
        if body.get("participantId") != participant:
            raise CrawlFailed(
                f"the catalog is participant {str(body.get('participantId'))[:200]}"
                f"'s, not the registrant's ({participant})"
            )
        if not head:
            head = {k: v for k, v in body.items() if k in ("@id", "@type", "participantId", "service")}
        for d in _items(body.get("dataset")):
            if not isinstance(d, dict) or not isinstance(d.get("@id"), str) or d["@id"] in wire:
                continue
            if len(wire) >= max_datasets:
                raise CrawlFailed(
                    f"the catalog has more than {max_datasets} datasets (broker.crawl_max_datasets)"
                )
            entries.append(_entry(d))
            wire[d["@id"]] = d
    return Crawled(head, tuple(entries), wire, len(pages))


def _node(value: Any) -> ox.NamedNode | None:
    if isinstance(value, Mapping):
        value = value.get("@id")
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return ox.NamedNode(expand_term(value))
    except ValueError:
        return None


def _object(value: Any) -> ox.NamedNode | ox.Literal | None:
    if isinstance(value, Mapping) and "@id" in value:
        return _node(value)
    if isinstance(value, Mapping):
        value = value.get("@value")
    if isinstance(value, bool | int | float | str):
        return ox.Literal(str(value).lower() if isinstance(value, bool) else str(value))
    return None


def _nn(term: Any) -> ox.NamedNode:
    return ox.NamedNode(str(term))


def _rule_triples(
    subject: ox.NamedNode | ox.BlankNode, node: Mapping[str, Any], out: list[ox.Triple]
) -> None:
    for kind in ("permission", "prohibition", "obligation", "duty"):
        for rule in _items(node.get(kind)):
            if not isinstance(rule, Mapping):
                continue
            r = ox.BlankNode()
            out.append(ox.Triple(subject, _nn(ODRL[kind]), r))
            for a in _items(rule.get("action")):
                action = _node(a.get("rdf:value", a) if isinstance(a, Mapping) else a)
                if action is not None:
                    out.append(ox.Triple(r, _nn(ODRL.action), action))
            for c in _items(rule.get("constraint")):
                if not isinstance(c, Mapping):
                    continue
                left, op, right = (
                    _node(c.get("leftOperand")),
                    _node(c.get("operator")),
                    _object(c.get("rightOperand")),
                )
                if left is None or op is None:
                    continue
                b = ox.BlankNode()
                out += [
                    ox.Triple(r, _nn(ODRL.constraint), b),
                    ox.Triple(b, _nn(ODRL.leftOperand), left),
                    ox.Triple(b, _nn(ODRL.operator), op),
                ]
                if right is not None:
                    out.append(ox.Triple(b, _nn(ODRL.rightOperand), right))
            _rule_triples(r, rule, out)


def catalog_triples(crawled: Crawled, fallback_id: str) -> str:
    """The crawled catalog as sorted N-Triples: the catalog (dcat:Catalog, its participant and
    datasets), each dataset (dcat:Dataset, title, description, keywords, publisher, themes,
    licenses), its distributions (dct:format) and offers (odrl:Offer with their rules and
    constraints). Ids that are not IRIs are left out of the graph (they stay searchable)."""
    out: list[ox.Triple] = []
    catalog = _node(crawled.head.get("@id")) or ox.NamedNode(fallback_id)
    out.append(ox.Triple(catalog, _nn(RDF.type), _nn(DCAT.Catalog)))
    participant = crawled.head.get("participantId")
    if isinstance(participant, str):
        out.append(ox.Triple(catalog, _nn(DSPACE.participantId), ox.Literal(participant)))
    for entry in crawled.entries:
        d = _node(entry.id)
        if d is None:
            continue
        wire = crawled.wire[entry.id]
        out += [
            ox.Triple(catalog, _nn(DCAT.dataset), d),
            ox.Triple(d, _nn(RDF.type), _nn(DCAT.Dataset)),
            ox.Triple(d, _nn(DCT.title), ox.Literal(entry.title)),
        ]
        if entry.description:
            out.append(ox.Triple(d, _nn(DCT.description), ox.Literal(entry.description)))
        out += [ox.Triple(d, _nn(DCAT.keyword), ox.Literal(k)) for k in entry.keywords]
        for predicate, values in (
            (DCT.publisher, [entry.publisher] if entry.publisher else []),
            (DCAT.theme, entry.themes),
            (DCT.license, entry.licenses),
        ):
            for value in values:
                term = _node(value)
                out.append(ox.Triple(d, _nn(predicate), term or ox.Literal(value)))
        for x in _distributions(wire):
            b = ox.BlankNode()
            out += [
                ox.Triple(d, _nn(DCAT.distribution), b),
                ox.Triple(b, _nn(RDF.type), _nn(DCAT.Distribution)),
            ]
            out += [ox.Triple(b, _nn(DCT["format"]), ox.Literal(f)) for f in _strings(_get(x, "format"))]
        for o in _offers(wire):
            offer = _node(o.get("@id"))
            if offer is None:
                continue
            out += [
                ox.Triple(d, _nn(ODRL.hasPolicy), offer),
                ox.Triple(offer, _nn(RDF.type), _nn(ODRL.Offer)),
            ]
            _rule_triples(offer, o, out)
    text = ox.serialize(out, format=ox.RdfFormat.N_TRIPLES)
    assert text is not None
    return "\n".join(sorted(set(text.decode("utf-8").splitlines()))) + "\n"


# --------------------------------------------------------------------------- crawling


@dataclass
class Crawler:
    store: Store
    client: CatalogClient
    settings: CrawlSettings
    ttl: float  # registrations not renewed within this are unavailable: not crawled
    indexed: Callable[[str], Awaitable[None]]  # the registration's crawl is stored
    clock: Callable[[], float] = time.time
    rand: Callable[[], float] = random.random
    _tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict, init=False)
    _slots: asyncio.Semaphore | None = field(default=None, init=False)

    async def run(self) -> None:
        """Crawl what is due, forever (cancel to stop)."""
        try:
            while True:
                try:
                    await self.tick()
                except (StoreUnavailable, StoreError) as exc:
                    log.warning("crawls cannot be scheduled now: %s", exc)
                await asyncio.sleep(self.settings.tick)
        finally:
            await self.close()

    async def tick(self) -> int:
        """Start the due crawls not running yet; how many were started."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.settings.concurrency)
        due = await regstore.due_crawls(
            self.store, now=self.clock(), ttl=self.ttl, limit=self.settings.concurrency * 2
        )
        started = 0
        for d in due:
            if d.registration_id in self._tasks:
                continue
            task = asyncio.create_task(self._crawl(d, self._slots))
            self._tasks[d.registration_id] = task
            task.add_done_callback(self._ended(d.registration_id))
            started += 1
        return started

    @property
    def running(self) -> int:
        """Crawls started and not ended yet."""
        return len(self._tasks)

    def _ended(self, reg_id: str) -> Callable[[asyncio.Task[None]], None]:
        def forget(_: asyncio.Task[None]) -> None:
            self._tasks.pop(reg_id, None)

        return forget

    async def wait(self) -> None:
        """Until the crawls running now have ended (tests, the benchmark)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def _crawl(self, due: regstore.DueCrawl, slots: asyncio.Semaphore) -> None:
        s = self.settings
        try:
            async with slots:
                # the lease outlasts the crawl's own timeout: no other replica takes it meanwhile
                if not await regstore.claim_crawl(
                    self.store, due.registration_id, now=self.clock(), lease=s.timeout + 30.0
                ):
                    return
                try:
                    async with asyncio.timeout(s.timeout):
                        crawled = await self.fetch(due.endpoint, due.owner)
                except (CrawlFailed, TimeoutError) as exc:
                    reason = (
                        exc.reason
                        if isinstance(exc, CrawlFailed)
                        else f"no complete catalog within {s.timeout:g} s"
                    )
                    failures = due.failures + 1
                    delay = backoff_delay(failures, s.backoff, s.backoff_cap, self.rand)
                    log.warning(
                        "crawl of %s failed (%d in a row; next try in %.1f s): %s",
                        due.endpoint,
                        failures,
                        delay,
                        reason,
                    )
                    await regstore.crawl_failed(
                        self.store,
                        due.registration_id,
                        error=reason,
                        failures=failures,
                        next_at=self.clock() + delay,
                    )
                    CRAWLS.labels("failed").inc()
                    return
                triples = await asyncio.to_thread(
                    catalog_triples, crawled, f"urn:connector-broker:catalog:{due.registration_id}"
                )
                now = self.clock()
                if await regstore.save_crawl(
                    self.store,
                    due.registration_id,
                    head=crawled.head,
                    items=crawled.entries,
                    wire=crawled.wire,
                    ntriples=triples,
                    pages=crawled.pages,
                    now=now,
                    next_at=now + s.interval,
                ):
                    log.info(
                        "crawled %s: %d datasets in %d pages",
                        due.endpoint,
                        len(crawled.entries),
                        crawled.pages,
                    )
                    CRAWLS.labels("crawled").inc()
                    await self.indexed(due.registration_id)
                else:
                    CRAWLS.labels("dropped").inc()
        except (StoreUnavailable, StoreError) as exc:
            CRAWLS.labels("unstored").inc()
            log.warning("the crawl of %s cannot be stored: %s", due.endpoint, exc)

    async def fetch(self, endpoint: str, participant: str) -> Crawled:
        """Every page of the catalog at ``endpoint`` (a DSP base URL)."""
        first = f"{endpoint.rstrip('/')}/catalog/request"
        url: str | None = f"{first}?pageSize={self.settings.page_size}"
        message = CatalogRequestMessage().to_wire()
        pages: list[Any] = []
        while url is not None:
            if len(pages) >= self.settings.max_pages:
                raise CrawlFailed(f"more than {self.settings.max_pages} pages")
            d = await self.client.post(url, message)
            if not d.ok:
                raise CrawlFailed(f"the catalog request was answered {d.reason}")
            pages.append(d.body)
            url = d.next_url
            if url is not None and not same_endpoint(url, first):
                raise CrawlFailed(f"the next page is not at the endpoint crawled ({url[:200]}): not followed")
            if url is not None and "pageSize" not in parse_qs(urlsplit(url).query):
                # a connector's next link carries only its cursor: keep asking for big pages
                url = f"{url}{'&' if '?' in url else '?'}pageSize={self.settings.page_size}"
        return await asyncio.to_thread(
            read_catalog, pages, participant=participant, max_datasets=self.settings.max_datasets
        )
