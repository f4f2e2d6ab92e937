"""Benchmarks of the broker's index (issue 12), in one process, through the broker's core
(``connector.broker.service.Broker``: parse, read, store, index; no HTTP).

1. Loading: ``--descriptions`` synthetic connector self-descriptions (Turtle, each with
   ``--datasets`` datasets: title, description, keywords, a distribution with a format, a
   license) registered one after the other; registrations per second and datasets per second.
2. Keyword search (the store's full-text index: SQLite FTS5 or PostgreSQL tsvector/GIN) of one
   or two words drawn from the vocabulary, first page of 20: p50/p95 over ``--queries`` runs.
   Baseline in the same run: the same words as a plain SQL ``LIKE '%word%'`` scan over title,
   description and keywords (first 20 rows).
3. A typical SPARQL query (datasets with a keyword, their title and their connector's endpoint,
   LIMIT 20) over pyoxigraph: p50/p95.
4. Memory (peak RSS of the process) and the database's size on disk (SQLite).

5. ``--crawl``: the federated crawl of ``--connectors`` connectors' DSP catalogs served by
   catalog processes over mutual TLS (bench/broker_crawl.py).

Run: python bench/broker.py [--descriptions 1000] [--datasets 100] [--queries 500]
     [--store postgresql://...]   (default: a SQLite file in a temporary folder)
     python bench/broker.py --crawl [--connectors 100] [--servers 4] [--big 10000] [--small 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from bench import broker_crawl
from connector.broker.service import Broker, BrokerSettings
from connector.broker.sparql import SparqlIndex
from connector.broker.store import SearchQuery
from connector.store import Store

PREFIXES = """@prefix ids: <https://w3id.org/idsa/core/> .
@prefix dcat: <http://www.w3.org/ns/dcat#> .
@prefix dct: <http://purl.org/dc/terms/> .
@prefix dspace: <https://w3id.org/dspace/2025/1/> .
"""
LICENSES = [
    "https://creativecommons.org/licenses/by/4.0/",
    "https://creativecommons.org/publicdomain/zero/1.0/",
]
FORMATS = ["text/csv", "application/json", "application/parquet"]


def vocabulary(n: int, rng: random.Random) -> list[str]:
    syllables = [
        "ka",
        "lo",
        "mi",
        "ne",
        "ru",
        "sa",
        "te",
        "vo",
        "zu",
        "pi",
        "da",
        "fe",
        "go",
        "hu",
        "ji",
        "be",
        "co",
        "wy",
        "xe",
        "qu",
    ]
    words: set[str] = set()
    while len(words) < n:
        words.add("".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))))
    return sorted(words)


def description(i: int, datasets: int, words: list[str], rng: random.Random) -> tuple[str, bytes]:
    participant = f"{i:04X}:keyid:BENCH"
    base = f"https://c{i}.example/dsp"
    out = [
        PREFIXES,
        f'<{base}/> a ids:BaseConnector ; ids:title "Connector {i}" ; '
        f'dspace:participantId "{participant}" ; ids:hasDefaultEndpoint <{base}#dsp> ; '
        f"ids:resourceCatalog <{base}#catalog> .",
        f"<{base}#dsp> a ids:ConnectorEndpoint ; ids:accessURL <{base}> .",
        f"<{base}#catalog> a dcat:Catalog .",
    ]
    for d in range(datasets):
        title = " ".join(rng.sample(words, 3))
        text = " ".join(rng.sample(words, 12))
        keywords = " , ".join(f'"{w}"' for w in rng.sample(words, 3))
        node = f"<{base}/datasets/{d}>"
        out.append(
            f"<{base}#catalog> dcat:dataset {node} .\n{node} a dcat:Dataset ; "
            f'dct:title "{title}" ; dct:description "{text}" ; dcat:keyword {keywords} ; '
            f"dct:license <{rng.choice(LICENSES)}> ; dcat:distribution "
            f'[ a dcat:Distribution ; dct:format "{rng.choice(FORMATS)}" ] .'
        )
    return participant, "\n".join(out).encode()


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def ms(values: list[float]) -> str:
    return f"p50 {statistics.median(values) * 1e3:.2f} ms, p95 {pct(values, 95) * 1e3:.2f} ms"


async def main(args: argparse.Namespace) -> None:
    rng = random.Random(12)
    words = vocabulary(5000, rng)
    folder = Path(tempfile.mkdtemp(prefix="bench-broker-"))
    url = args.store or f"sqlite:///{folder / 'broker.db'}"
    store = await Store.open(url, sqlite_synchronous="NORMAL")
    if store.dialect == "postgresql":  # a clean slate
        async with store.transaction() as tx:
            for table in (
                "broker_crawls",
                "broker_dataset_terms",
                "broker_datasets",
                "broker_changes",
                "broker_descriptions",
                "broker_products",
                "broker_registrations",
            ):
                await tx.execute(sa.text(f"DROP TABLE IF EXISTS {table} CASCADE"))
    broker = Broker(
        store, SparqlIndex(max_rows=1000, timeout=30), BrokerSettings(validation="off", max_datasets=100_000)
    )
    await broker.start()
    print(
        f"python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores, "
        f"store {store.dialect}"
    )

    bodies = [description(i, args.datasets, words, rng) for i in range(args.descriptions)]
    start = time.perf_counter()
    for participant, body in bodies:
        await broker.register(participant, body, "text/turtle")
    took = time.perf_counter() - start
    total = args.descriptions * args.datasets
    print(
        f"loaded {args.descriptions} descriptions, {total} datasets in {took:.1f} s: "
        f"{args.descriptions / took:.1f} registrations/s, {total / took:.0f} datasets/s; "
        f"SPARQL index {len(broker.index)} quads"
    )

    queries = [" ".join(rng.sample(words, rng.choice((1, 1, 2)))) for _ in range(args.queries)]
    fts: list[float] = []
    hits = 0
    for q in queries:
        t = time.perf_counter()
        page = await broker.search(SearchQuery(text=q, limit=20))
        fts.append(time.perf_counter() - t)
        hits += page.total
    print(
        f"keyword search (full-text index, first 20, total counted): {ms(fts)}; "
        f"mean {hits / len(queries):.1f} hits/query"
    )

    like: list[float] = []
    for q in queries[: max(20, args.queries // 10)]:
        conds = " AND ".join(
            f"(title LIKE :w{n} OR description LIKE :w{n} OR keyword_text LIKE :w{n})"
            for n in range(len(q.split()))
        )
        stmt = sa.text(f"SELECT dataset_id FROM broker_datasets WHERE {conds} LIMIT 20")
        params = {f"w{n}": f"%{w}%" for n, w in enumerate(q.split())}
        t = time.perf_counter()
        async with store.transaction(readonly=True) as tx:
            (await tx.execute(stmt.bindparams(**params))).all()
        like.append(time.perf_counter() - t)
    print(f"baseline LIKE scan (same words, first 20, no count): {ms(like)}")

    sparql: list[float] = []
    for w in rng.sample(words, min(len(words), max(20, args.queries // 5))):
        query = (
            "PREFIX dcat: <http://www.w3.org/ns/dcat#> PREFIX dct: <http://purl.org/dc/terms/> "
            "PREFIX ids: <https://w3id.org/idsa/core/> SELECT ?d ?t ?url WHERE { "
            f'?d dcat:keyword "{w}" ; dct:title ?t . ?cat dcat:dataset ?d . '
            "?c ids:resourceCatalog ?cat ; ids:hasDefaultEndpoint/ids:accessURL ?url } "
            "LIMIT 20"
        )
        t = time.perf_counter()
        await broker.index.query(query)
        sparql.append(time.perf_counter() - t)
    print(f"SPARQL (datasets with a keyword + title + endpoint, LIMIT 20): {ms(sparql)}")

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    disk = sum(p.stat().st_size for p in folder.glob("broker.db*")) / 2**20
    print(f"peak RSS {rss:.0f} MiB" + (f", SQLite files {disk:.0f} MiB" if disk else ""))
    await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--descriptions", type=int, default=1000)
    parser.add_argument("--datasets", type=int, default=100)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--store", default=None)
    parser.add_argument("--crawl", action="store_true", help="the federated crawl benchmark")
    parser.add_argument("--connectors", type=int, default=100)
    parser.add_argument("--servers", type=int, default=4, help="catalog processes")
    parser.add_argument("--big", type=int, default=10_000)
    parser.add_argument("--small", type=int, default=20)
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    # one catalog process (started by --crawl)
    parser.add_argument("--serve-catalogs", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--authority", default="", help=argparse.SUPPRESS)
    parser.add_argument("--tls-dir", default="", help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    if parsed.serve_catalogs or parsed.crawl:
        asyncio.run(
            broker_crawl.serve_catalogs(parsed) if parsed.serve_catalogs else broker_crawl.crawl_bench(parsed)
        )
    else:
        asyncio.run(main(parsed))
    sys.exit(0)
