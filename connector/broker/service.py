"""The broker's core: registration decisions, the store and the SPARQL index kept in step.

The HTTP edge (connector.broker.app) authenticates the caller and hands the verified subject in;
everything decided about a description happens here: parse, coerce, read (description.py),
ownership, IDS shape validation (per ``validation``: ``off``; ``lenient``, which indexes and
lists the violations; ``strict``, which refuses a description that does not conform), store,
index.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rdflib import Graph

from connector.broker import products
from connector.broker import store as regstore
from connector.broker.description import (
    DescriptionRefused,
    coerce,
    describe,
    owner_problem,
    parse_description,
)
from connector.broker.sparql import SparqlIndex
from connector.broker.store import Registration, SearchPage, SearchQuery
from connector.identity.client import ParticipantIdentity
from connector.store import Store

Validation = Literal["off", "lenient", "strict"]
MAX_VIOLATIONS = 50
SYNC_WINDOW = 60.0  # seconds of registration changes each index sync reads back


class ProductsOff(Exception):
    """The broker has no participant key to sign data product certificates with."""

    status = 503
    reason = "this broker issues no data product certificates (it has no participant key)"


class NotYours(Exception):
    """The description is not about the registering participant."""

    status = 403

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    validation: Validation = "lenient"
    ttl: float = 300.0  # seconds a registration stays available without a renewal
    max_triples: int = 200_000
    max_datasets: int = 20_000
    infomodel_dir: Path | None = None


@dataclass(frozen=True, slots=True)
class Registered:
    registration: Registration
    created: bool
    coerced: tuple[str, ...] = ()


def violation_lines(report: str) -> list[str]:
    """The SHACL report's messages, one line per (focus node, message), at most MAX_VIOLATIONS."""
    out: list[str] = []
    focus = ""
    for line in report.splitlines():
        text = line.strip()
        if text.startswith("Focus Node:"):
            focus = text[len("Focus Node:") :].strip()
        elif text.startswith("Message:"):
            entry = f"{focus}: {text[len('Message:') :].strip()}" if focus else text
            if entry not in out:
                out.append(entry)
    return out[:MAX_VIOLATIONS]


def _ntriples(g: Graph) -> str:
    lines = g.serialize(format="nt", encoding="utf-8").decode("utf-8").splitlines()
    return "\n".join(sorted(line for line in lines if line.strip())) + "\n"


@dataclass
class Broker:
    store: Store
    index: SparqlIndex
    settings: BrokerSettings = field(default_factory=BrokerSettings)
    clock: Callable[[], float] = time.time
    signer: ParticipantIdentity | None = None  # signs data product certificates
    _synced_at: float = field(default=0.0, init=False)
    _seen: dict[int, float] = field(default_factory=dict, init=False)  # change seq -> when

    async def start(self) -> None:
        """Create the tables if need be and rebuild the SPARQL index from the store."""
        await regstore.create_schema(self.store)
        await self.rebuild()

    async def rebuild(self) -> None:
        self._synced_at = self.clock()
        self._seen.clear()
        entries = await regstore.all_ntriples(self.store)
        await asyncio.to_thread(self.index.rebuild, entries)

    async def sync(self) -> int:
        """Apply the changes other replicas made since the last sync to the SPARQL index
        (replicas share the store, each has its own index); the number applied.

        Changes are read back ``SYNC_WINDOW`` seconds (a transaction commits well within it
        after its ``at``) and applied once each (their seq remembered for the window); a replica
        that has not synced for longer than the window rebuilds the index instead."""
        now = self.clock()
        if now - self._synced_at > SYNC_WINDOW / 2:
            await self.rebuild()
            return -1
        found = await regstore.changes_since(self.store, self._synced_at - SYNC_WINDOW)
        self._synced_at = now
        applied = 0
        for change in found:
            if change.seq in self._seen:
                continue
            self._seen[change.seq] = now
            applied += 1
            if change.ntriples is None:
                self.index.remove(change.registration_id)
            else:
                await asyncio.to_thread(self.index.replace, change.registration_id, change.ntriples)
        for seq in [s for s, at in self._seen.items() if at < now - 2 * SYNC_WINDOW]:
            del self._seen[seq]
        return applied

    async def _violations(self, g: Graph) -> list[str]:
        if self.settings.validation == "off":
            return []
        from connector.selfdescription import validate_ids

        # pyshacl takes about a second for a small description: off the event loop
        conforms, report = await asyncio.to_thread(validate_ids, g, self.settings.infomodel_dir)
        found = [] if conforms else (violation_lines(report) or ["does not conform (no message)"])
        if found and self.settings.validation == "strict":
            raise DescriptionRefused(
                ["strict mode: the description does not conform to the IDS Information Model shapes", *found]
            )
        return found

    async def register(self, subject: str, body: bytes, content_type: str) -> Registered:
        g = await asyncio.to_thread(
            parse_description, body, content_type, max_triples=self.settings.max_triples
        )
        coerced = coerce(g)
        described = describe(g, max_datasets=self.settings.max_datasets)
        problem = owner_problem(described, subject)
        if problem is not None:
            raise NotYours(problem)
        ntriples = _ntriples(g)
        same = await regstore.renew_unchanged(
            self.store, described.connector, subject, ntriples, self.clock()
        )
        if same is not None:  # a heartbeat: validated and indexed already
            return Registered(same, False, tuple(coerced))
        violations = await self._violations(g)
        reg, created = await regstore.save(
            self.store, described, owner=subject, ntriples=ntriples, violations=violations, now=self.clock()
        )
        await self.reindex(reg.id)
        return Registered(reg, created, tuple(coerced))

    async def reindex(self, reg_id: str) -> None:
        """The registration's graph in the SPARQL index anew (its description and its crawled
        catalog, as the store has them)."""
        ntriples = await regstore.ntriples_of(self.store, reg_id)
        if ntriples is None:
            self.index.remove(reg_id)
        else:
            await asyncio.to_thread(self.index.replace, reg_id, ntriples)

    async def crawls(self) -> list[regstore.CrawlStatus]:
        return await regstore.crawl_statuses(self.store)

    async def crawled_page(self, after: tuple[str, str] | None, limit: int) -> list[regstore.CatalogEntry]:
        return await regstore.crawled_page(
            self.store, after=after, limit=limit, now=self.clock(), ttl=self.settings.ttl
        )

    async def unregister(self, subject: str, reg_id: str) -> None:
        await regstore.delete(self.store, reg_id, subject, self.clock())
        self.index.remove(reg_id)

    async def get(self, reg_id: str) -> Registration | None:
        return await regstore.get(self.store, reg_id)

    async def registrations(self) -> list[Registration]:
        return await regstore.list_registrations(self.store)

    async def availability(self) -> tuple[int, int]:
        """(available, unavailable) registrations now."""
        return await regstore.count_registrations(self.store, now=self.clock(), ttl=self.settings.ttl)

    async def search(self, query: SearchQuery) -> SearchPage:
        return await regstore.search(self.store, query, now=self.clock(), ttl=self.settings.ttl)

    async def register_product(self, subject: str, product: products.ProductIn) -> products.Registered:
        if self.signer is None:
            raise ProductsOff()
        return await products.issue(self.store, self.signer, subject, product, self.clock())

    async def product_certificate(self, product_id: str) -> str | None:
        return await products.certificate_of(self.store, product_id)
