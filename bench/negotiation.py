"""Benchmarks of the control plane (issue 4), real processes on loopback.

1. Complete negotiations per second between a consumer and a provider connector process
   (request -> agreement -> verification -> finalization, every message over real HTTP with DATs,
   persisted with its outbox row), at 1, 10 and 100 concurrent negotiations, on SQLite and on
   PostgreSQL; p50/p99 latency of one negotiation (start at the consumer's management API to
   FINALIZED at the consumer). Baseline in the same run: the bare round trip of one DSP call
   (an authenticated catalog request of a one-offer catalog) on the same processes.
2. Catalog request latency with 10, 1,000 and 10,000 offers: the whole catalog in one response,
   and one page of 50.

Run: python bench/negotiation.py [--tls] [--quick] [--store sqlite|postgresql] [--no-catalog]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from connector.devspace import Connector, DataSpace, offer_asset
from connector.identity.client import DatClient, ParticipantIdentity
from connector.store import Store
from connector.store.rows import AssetRow, OfferRow, PolicyRow

# The connector processes run as in production: no schema checks on the measured path
# (DataSpace without wire_schemas).


def cpu_seconds(c: Connector) -> float:
    """User + system CPU time the connector process has used (all its threads): a figure that
    a loaded machine disturbs far less than the wall-clock rate."""
    assert c.proc is not None
    fields = Path(f"/proc/{c.proc.pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


async def negotiations(
    consumer: Connector, provider: Connector, offer: str, total: int, concurrency: int
) -> dict[str, float]:
    headers = {"X-Api-Key": consumer.api_key, "Content-Type": "application/json"}
    latencies: list[float] = []
    states: list[str] = []
    queue = list(range(total))

    async with aiohttp.ClientSession(headers=headers) as http:

        async def one() -> None:
            t0 = time.perf_counter()
            async with http.post(
                consumer.api_url + "/api/negotiations", json={"peerUrl": provider.dsp_url, "offerId": offer}
            ) as r:
                n = await r.json()
                assert r.status == 201, n
            while n["state"] not in ("FINALIZED", "TERMINATED"):
                async with http.get(
                    consumer.api_url + f"/api/negotiations/{n['id']}?waitFor=FINALIZED,TERMINATED&timeout=30"
                ) as r:
                    n = await r.json()
            latencies.append(time.perf_counter() - t0)
            states.append(n["state"])

        async def worker() -> None:
            while queue:
                queue.pop()
                await one()

        t0 = time.perf_counter()
        cpu0 = cpu_seconds(consumer), cpu_seconds(provider)
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
        cpu = cpu_seconds(consumer) - cpu0[0], cpu_seconds(provider) - cpu0[1]
    assert states.count("FINALIZED") == total, states[:5]
    return {
        "rate": total / wall,
        "p50": pct(latencies, 50) * 1000,
        "p99": pct(latencies, 99) * 1000,
        "cpu_consumer": cpu[0] / total * 1000,
        "cpu_provider": cpu[1] / total * 1000,
    }


async def dsp_token(consumer: Connector, authority_url: str) -> str:
    async with aiohttp.ClientSession() as http:
        client = await DatClient.discover(http, authority_url, ParticipantIdentity.load(consumer.directory))
        return await client.token()


def tls_for(consumer: Connector) -> Any:
    """The consumer's own TLS client context (its DAT is bound to its certificate)."""
    if not consumer.tls:
        return False
    from connector.http.tls import client_context

    d = consumer.directory
    return client_context(d / "ca.crt", d / "tls.crt", d / "tls.key")


async def catalog_latency(
    url: str, token: str, rounds: int, page_size: int | None, ssl: Any = False
) -> dict[str, float]:
    body = {"@context": ["https://w3id.org/dspace/2025/1/context.jsonld"], "@type": "CatalogRequestMessage"}
    q = f"?pageSize={page_size}" if page_size else ""
    times = []
    size = 0
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        for i in range(rounds + 1):
            t0 = time.perf_counter()
            async with http.post(url + "/catalog/request" + q, json=body, ssl=ssl) as r:
                data = await r.read()
                assert r.status == 200, data[:300]
            if i:  # the first request warms the provider's compiled catalog
                times.append(time.perf_counter() - t0)
            size = len(json.loads(data).get("dataset", []))
    return {"p50": pct(times, 50) * 1000, "p99": pct(times, 99) * 1000, "datasets": size}


async def seed_offers(store_url: str, count: int, data_file: Path) -> None:
    """Assets (all on ``data_file``, in the provider's data root) and one offer over all of
    them, written straight into the provider's store."""
    store = await Store.open(store_url)
    await store.migrate()
    now = datetime.now(UTC)
    policy = {
        "@context": [
            "https://w3id.org/dspace/2025/1/context.jsonld",
            "https://w3id.org/dspace/2025/1/odrl-profile.jsonld",
        ],
        "@type": "Offer",
        "@id": "urn:policy:open",
        "permission": [{"action": "use"}],
    }
    async with store.transaction() as tx:
        await tx.policies.add(PolicyRow(id="urn:policy:open", body=json.dumps(policy), created_at=now))
        for i in range(count):
            await tx.assets.add(
                AssetRow(
                    id=f"urn:asset:{i:05d}",
                    created_at=now,
                    title=f"Dataset {i}",
                    data_address={"type": "file", "path": str(data_file)},
                )
            )
        await tx.offers.add(
            OfferRow(
                id="urn:offer:all",
                access_policy_id="urn:policy:open",
                contract_policy_id="urn:policy:open",
                created_at=now,
                asset_selector={"all": True},
            )
        )
    await store.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tls", action="store_true", help="DSP over mutual TLS (default: plain HTTP)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--store",
        choices=("sqlite", "postgresql"),
        action="append",
        help="measure this store only (repeatable; default: both)",
    )
    ap.add_argument("--no-catalog", action="store_true", help="skip the catalog latency part")
    args = ap.parse_args()
    pg = os.environ.get("CONNECTOR_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
    print(
        f"# bench/negotiation.py  {datetime.now(UTC):%Y-%m-%d %H:%M} UTC  python "
        f"{platform.python_version()}  cores={os.cpu_count()}  dsp={'TLS' if args.tls else 'plain HTTP'}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        ds = DataSpace(Path(tmp), tls=args.tls)
        try:
            for store_name in args.store or ("sqlite", "postgresql"):
                schema = f"bench_{uuid.uuid4().hex[:8]}"
                store = None if store_name == "sqlite" else f"{pg}?schema={schema}"
                provider = ds.connector(f"p{store_name}", roles=("provider",), store=store)
                cstore = None if store_name == "sqlite" else f"{pg}?schema={schema}c"
                consumer = ds.connector(f"c{store_name}", roles=("consumer",), store=cstore)
                offer = offer_asset(
                    provider,
                    asset_id="urn:asset:bench",
                    contract={"template": "n-times-usage", "params": {"max": "100"}},
                )
                token = asyncio.run(dsp_token(consumer, ds.authority.url))
                ssl = tls_for(consumer)
                base = asyncio.run(catalog_latency(provider.dsp_url, token, 200, None, ssl))
                print(
                    f"\n## {store_name}: negotiations (baseline: one authenticated DSP call, "
                    f"p50 {base['p50']:.2f} ms)"
                )
                asyncio.run(negotiations(consumer, provider, offer, 20, 10))  # warm-up
                for conc, total in ((1, 30), (10, 200), (100, 600)):
                    if args.quick:
                        total = max(conc, total // 5)
                    r = asyncio.run(negotiations(consumer, provider, offer, total, conc))
                    print(
                        f"concurrency {conc:>3}: {r['rate']:7.1f} negotiations/s  "
                        f"p50 {r['p50']:7.1f} ms  p99 {r['p99']:7.1f} ms  ({total} negotiations)"
                        f"  CPU/negotiation: consumer {r['cpu_consumer']:5.1f} ms, "
                        f"provider {r['cpu_provider']:5.1f} ms"
                    )
                provider.stop()
                consumer.stop()

            if args.no_catalog:
                return
            print("\n## Catalog request latency (SQLite provider, one offer per dataset)")
            for count in (10, 1000, 10000):
                schema_dir = Path(tmp) / f"cat{count}"
                schema_dir.mkdir()
                provider = ds.connector(f"cat{count}", roles=("provider",), start=False)
                data_file = provider.data_dir / "dataset.bin"
                data_file.write_bytes(b"")
                asyncio.run(seed_offers(f"sqlite:///{provider.directory / 'connector.db'}", count, data_file))
                provider.start()
                full = asyncio.run(catalog_latency(provider.dsp_url, token, 20, count, ssl))
                page = asyncio.run(catalog_latency(provider.dsp_url, token, 50, 50, ssl))
                print(
                    f"{count:>6} offers: whole catalog p50 {full['p50']:7.1f} ms p99 {full['p99']:7.1f} ms "
                    f"({full['datasets']} datasets); page of 50 p50 {page['p50']:6.1f} ms "
                    f"p99 {page['p99']:6.1f} ms"
                )
                provider.stop()
        finally:
            ds.close()


if __name__ == "__main__":
    main()
