"""The federated crawl benchmark (issue 12), run by ``python bench/broker.py --crawl``.

A real authority; the broker's participant (its DAT, its TLS certificate); ``--servers``
catalog processes, each serving ``connectors / servers`` connectors' DSP catalog endpoints
(``/c<i>/catalog/request``) over mutual TLS, with the connector's own DSP edge
(connector.http.dsp: DAT check with the authority's keys, the TLS binding, DSP errors) and its
own catalog builder (connector.protocol.catalog: offers from the policy templates, pages with
Link headers). Connector 0 has ``--big`` datasets, the others ``--small``. The broker's
core (connector.broker.service) with the crawler (connector.broker.crawl) crawls them all
through the DspClient a broker uses; the time from the first crawl to the last stored, and as a
baseline in the same run, one catalog request of the big connector (every dataset in one page)
and one of a small one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from aiohttp import web

from connector.broker.crawl import Crawler, CrawlSettings
from connector.broker.service import Broker, BrokerSettings
from connector.broker.sparql import SparqlIndex
from connector.broker.store import SearchQuery
from connector.devspace import Authority, cli, free_port, process_env
from connector.http import dsp
from connector.http.client import DspClient
from connector.http.clientcert import ClientCertificates
from connector.http.limits import DEFAULT_LIMITS, LIMITS
from connector.http.outbound import OutboundPolicy
from connector.http.tls import client_context, server_context
from connector.identity.client import DatClient, ParticipantIdentity
from connector.identity.tokens import Claims
from connector.identity.verify import DatVerifier
from connector.odrl.templates import fill
from connector.protocol.catalog import MAX_PAGE_SIZE, CatalogBuilder, CatalogDataset
from connector.protocol.decide import KnownOffer, Requester
from connector.protocol.messages import CatalogRequestMessage, DataService
from connector.store import Store

PROTECTED = ("n-times-usage", {"max": "5"}), ("purpose-restricted", {"purpose": "dpv:ScientificResearch"})


def participant(i: int) -> str:
    return f"{i:04X}:keyid:CRAWL"


def builder(i: int, n: int, base: str, words: list[str]) -> CatalogBuilder:
    rng = random.Random(i)
    items = []
    for d in range(n):
        did = f"{base}/datasets/{d}"
        template, params = PROTECTED[d % 2]
        offer = fill(template, params, policy_id=f"{base}/offers/{d}")
        items.append(
            CatalogDataset(
                id=did,
                offers=(KnownOffer(offer, did),),
                title=" ".join(rng.sample(words, 3)),
                description=" ".join(rng.sample(words, 12)),
                keywords=tuple(rng.sample(words, 3)),
            )
        )
    return CatalogBuilder(
        catalog_id=f"{base}#catalog",
        participant_id=participant(i),
        service=DataService(id=f"{base}#dsp", endpoint_url=base),
        datasets=items,
    )


def catalog_endpoint(b: CatalogBuilder, base: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        CatalogRequestMessage.parse(await request.json())
        claims: Claims = request["claims"]
        page = b.catalog(
            Requester.of(claims.subject),
            datetime.now(UTC),
            page_size=min(MAX_PAGE_SIZE, int(request.query.get("pageSize", "50"))),
            cursor=request.query.get("cursor"),
            base_url=f"{base}/catalog/request",
        )
        resp = web.json_response(page.wire)
        if page.links:
            resp.headers["Link"] = ", ".join(page.links)
        return resp

    return handle


async def serve_catalogs(args: argparse.Namespace) -> None:
    """One catalog process: connectors FIRST .. FIRST+COUNT-1 on one port."""
    words = [f"term{n}" for n in range(5000)]
    root = web.Application()
    async with aiohttp.ClientSession() as session:
        verifier = await DatVerifier.from_authority(session, args.authority)
        for i in range(args.first, args.first + args.count):
            base = f"https://127.0.0.1:{args.port}/c{i}"
            sub = web.Application(
                middlewares=[
                    dsp.errors,
                    dsp.auth_middleware(verifier, client_certs=ClientCertificates("mutual")),
                ]
            )
            sub[LIMITS] = DEFAULT_LIMITS
            sub.router.add_post(
                "/catalog/request",
                catalog_endpoint(builder(i, args.big if i == 0 else args.small, base, words), base),
            )
            root.add_subapp(f"/c{i}", sub)
        tls = Path(args.tls_dir)
        ctx = server_context(tls / "tls.crt", tls / "tls.key", tls / "ca.crt", require_client_cert=True)
        runner = web.AppRunner(root, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", args.port, ssl_context=ctx).start()
        print("ready", flush=True)
        await asyncio.Event().wait()


def _participant(authority: Path, d: Path, name: str, role: str) -> None:
    cli("init", d, "--name", name, "--tls-host", "127.0.0.1")
    reg = cli("authority", "register", authority, d / "participant.csr", "--role", role)
    cli("authority", "issue-tls", authority, d / "tls.csr", "--participant", reg["participant_id"])


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def crawl_bench(args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench-crawl-"))
    cli("authority", "init", folder / "authority", "--name", "Bench data space")
    authority = Authority(folder / "authority", free_port())
    authority.start()
    servers: list[subprocess.Popen[bytes]] = []
    try:
        _participant(authority.directory, folder / "broker", "broker", "broker")
        _participant(authority.directory, folder / "catalogs", "catalogs", "provider")
        per = -(-args.connectors // args.servers)
        endpoints: list[str] = []
        for s in range(args.servers):
            first, count = s * per, min(per, args.connectors - s * per)
            port = free_port()
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "bench/broker.py",
                    "--serve-catalogs",
                    "--first",
                    str(first),
                    "--count",
                    str(count),
                    "--port",
                    str(port),
                    "--authority",
                    authority.url,
                    "--tls-dir",
                    str(folder / "catalogs"),
                    "--big",
                    str(args.big),
                    "--small",
                    str(args.small),
                ],
                stdout=subprocess.PIPE,
                env={**process_env(), "PYTHONPATH": os.getcwd()},
            )
            servers.append(proc)
            endpoints += [f"https://127.0.0.1:{port}/c{i}" for i in range(first, first + count)]
        for proc in servers:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != b"ready":
                raise SystemExit("a catalog process did not start")

        store = await Store.open(f"sqlite:///{folder / 'broker.db'}", sqlite_synchronous="NORMAL")
        broker = Broker(
            store, SparqlIndex(max_rows=1000, timeout=30), BrokerSettings(validation="off", ttl=3600)
        )
        await broker.start()
        for i, endpoint in enumerate(endpoints):
            body = (
                f"@prefix ids: <https://w3id.org/idsa/core/> .\n"
                f"@prefix dspace: <https://w3id.org/dspace/2025/1/> .\n"
                f"<{endpoint}/> a ids:BaseConnector ; dspace:participantId "
                f'"{participant(i)}" ; ids:hasDefaultEndpoint <{endpoint}#dsp> .\n'
                f"<{endpoint}#dsp> ids:accessURL <{endpoint}> .\n"
            ).encode()
            await broker.register(participant(i), body, "text/turtle")
        b = folder / "broker"
        async with aiohttp.ClientSession() as session:
            dat = await DatClient.discover(session, authority.url, ParticipantIdentity.load(b))
            client = DspClient(
                dat.token,
                renew=dat.renew,
                timeout=60,
                ssl_context=client_context(b / "ca.crt", b / "tls.crt", b / "tls.key"),
                policy=OutboundPolicy.from_config(["127.0.0.1"], schemes=("https",)),
            )
            await dat.token()
            message = CatalogRequestMessage().to_wire()
            tls = client_context(b / "ca.crt", b / "tls.crt", b / "tls.key")
            # baseline: one catalog request (the same DAT and TLS; a plain aiohttp session, as
            # the big catalog in one page is over the DspClient's 8 MiB answer limit)
            baseline = {}
            for name, endpoint, size in (
                ("big", endpoints[0], args.big),
                ("small", endpoints[1], args.small),
            ):
                times = []
                for _ in range(3):
                    t = time.perf_counter()
                    async with session.post(
                        f"{endpoint}/catalog/request?pageSize={size}",
                        json=message,
                        ssl=tls,
                        headers={"Authorization": f"Bearer {await dat.token()}"},
                    ) as resp:
                        body = json.loads(await resp.read())
                    times.append(time.perf_counter() - t)
                    assert resp.status == 200 and len(body["dataset"]) == size, body
                baseline[name] = statistics.median(times)
            crawler = Crawler(
                store,
                client,
                CrawlSettings(
                    concurrency=args.concurrency,
                    timeout=60,
                    page_size=args.page_size,
                    max_datasets=max(args.big, 20_000),
                    tick=0.05,
                ),
                ttl=3600,
                indexed=broker.reindex,
            )
            start = time.perf_counter()
            while True:
                started = await crawler.tick()
                if not started and not crawler.running:
                    break
                await asyncio.sleep(0.05)
            took = time.perf_counter() - start
            await client.close()
        statuses = await broker.crawls()
        failed = [s for s in statuses if s.failures]
        datasets = sum(s.datasets for s in statuses)
        pages = sum(s.pages for s in statuses)
        n_times = await broker.search(SearchQuery(filters={"template": ["n-times-usage"]}))
        print(
            f"{args.connectors} connectors in {args.servers} catalog processes "
            f"({per} per process), one with {args.big} datasets, {args.connectors - 1} with "
            f"{args.small}; page size {args.page_size}, {args.concurrency} crawls at once"
        )
        print(
            f"crawled {len(statuses) - len(failed)}/{len(statuses)} connectors, {datasets} "
            f"datasets, {pages} pages in {took:.1f} s ({datasets / took:.0f} datasets/s, "
            f"stored and indexed for search and SPARQL: {len(broker.index)} quads); "
            f"template=n-times-usage finds {n_times.total}"
        )
        print(
            f"baseline, one catalog request (median of 3): the {args.big}-dataset catalog in "
            f"one page {baseline['big']:.2f} s, a {args.small}-dataset one "
            f"{baseline['small'] * 1e3:.1f} ms"
        )
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"peak RSS: broker {rss:.0f} MiB; catalog processes "
            + ", ".join(f"{_rss_mib(p.pid):.0f}" for p in servers)
            + " MiB"
        )
        for s in failed:
            print(f"FAILED {s.endpoint}: {s.error}")
        await store.close()
    finally:
        for proc in servers:
            proc.terminate()
            proc.wait(10)
        authority.stop()
