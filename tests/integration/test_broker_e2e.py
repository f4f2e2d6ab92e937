"""Authority, broker, two providers and a consumer as real processes over TLS: the providers
register at the broker on start and renew on a heartbeat; the consumer finds a dataset by
keyword, by filter and by SPARQL, reads the provider's catalog through the link and negotiates;
a participant trying to overwrite another's registration is refused; a stopped connector becomes
unavailable; a data product certificate verifies offline and a duplicate is flagged; the CLI
unregisters. The federated catalog: the broker crawls a provider's live catalog as itself (DAT,
mutual TLS), so a dataset missing from the provider's self-description is found, by keyword and
by policy template; a consumer's connector reads the broker's catalog of catalogs with its DSP
client (`connector catalog BROKER_URL`); a provider that stops answering is retried with backoff.
Two broker replicas on one PostgreSQL answer the same search (CONNECTOR_TEST_PG)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dataspace_testlib import Connector, DataSpace, cli, free_port, fresh_dat, negotiate

from connector.devspace import process_env
from connector.http.tls import client_context

pytestmark = pytest.mark.integration
HEARTBEAT = 1.0
TTL = 4.0


CRAWL_BACKOFF, CRAWL_BACKOFF_CAP = 0.5, 8.0


class BrokerProcess:
    """A broker process; ``directory``: the participant folder of a broker already made (a
    replica), ``store``: its [store] url, ``settings``: more [broker] keys (TOML lines; by
    default "server" mode: searches come from `connector search --ca`, without a client
    certificate), ``scheme``: of its URL (http for tls_mode "proxy" and "none")."""

    def __init__(
        self,
        space: DataSpace,
        *,
        name: str = "broker",
        directory: Path | None = None,
        store: str | None = None,
        settings: str = 'tls_mode = "server"',
        scheme: str = "https",
    ) -> None:
        d = directory or space.root / name
        if directory is None:
            cli("init", d, "--name", name, "--tls-host", "127.0.0.1")
            reg = cli(
                "authority", "register", space.authority.directory, d / "participant.csr", "--role", "broker"
            )
            cli(
                "authority",
                "issue-tls",
                space.authority.directory,
                d / "tls.csr",
                "--participant",
                reg["participant_id"],
            )
        self.directory = d
        self.port = free_port()
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.config = space.root / f"{name}-{self.port}.toml"
        self.config.write_text(f"""
[broker]
participant_dir = "{d}"
authority_url = "{space.authority.url}"
port = {self.port}
validation = "off"
ttl = {TTL}
sparql_max_rows = 1000
sync_interval = 1
crawl_interval = 2
crawl_timeout = 10
crawl_backoff = {CRAWL_BACKOFF}
crawl_backoff_cap = {CRAWL_BACKOFF_CAP}
catalog_page_size = 1
# every participant of this loopback data space is on 127.0.0.1: crawls may go there
peer_allow = ["127.0.0.1"]
{settings}
[store]
{f'url = "{store}"' if store else ""}
""")
        self.log: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "connector", "broker", "serve", str(self.config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=process_env(),
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        err = self.proc.stderr
        threading.Thread(
            target=lambda: self.log.extend(line.decode(errors="replace").rstrip() for line in err),
            daemon=True,
        ).start()
        line = self.proc.stdout.readline().decode()
        if "broker ready" not in line:
            self.proc.wait(5)
            raise RuntimeError(f"the broker did not start: {line}\n" + "\n".join(self.log))

    @property
    def ca(self) -> Path:
        return self.directory / "ca.crt"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)


@pytest.fixture(scope="module")
def space(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DataSpace]:
    ds = DataSpace(tmp_path_factory.mktemp("broker"), tls=True)
    try:
        yield ds
    finally:
        ds.close()


@pytest.fixture(scope="module")
def broker(space: DataSpace) -> Iterator[BrokerProcess]:
    b = BrokerProcess(space)
    try:
        yield b
    finally:
        b.stop()


def provider(space: DataSpace, broker: BrokerProcess, name: str) -> Connector:
    c = space.connector(name, roles=("provider",), start=False)
    with c.config.open("a") as f:
        f.write(f'\n[broker]\nurl = "{broker.url}"\nheartbeat = {HEARTBEAT}\n')
    c.start()
    return c


def offer(c: Connector, asset_id: str, title: str, description: str, keywords: list[str]) -> str:
    data = c.data_dir / f"{asset_id.rsplit(':', 1)[-1]}.csv"
    data.write_text("a,b\n1,2\n")
    status, body = c.api(
        "POST",
        "/api/assets",
        {
            "id": asset_id,
            "title": title,
            "description": description,
            "keywords": keywords,
            "dataAddress": {"type": "file", "path": str(data)},
        },
    )
    assert status == 201, body
    status, access = c.api("POST", "/api/policies", {"template": "allow-usage", "params": {}})
    assert status == 201, access
    status, contract = c.api("POST", "/api/policies", {"template": "n-times-usage", "params": {"max": "5"}})
    assert status == 201, contract
    status, off = c.api(
        "POST",
        "/api/offers",
        {"assetIds": [asset_id], "accessPolicyId": access["id"], "contractPolicyId": contract["id"]},
    )
    assert status == 201, off
    return f"{off['id']}:{asset_id}"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "connector", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=process_env(),
    )


def search(broker: BrokerProcess, text: str, *extra: str) -> dict[str, Any]:
    r = run_cli("search", broker.url, text, "--ca", str(broker.ca), *extra)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def eventually(check: Callable[[], Any], what: str, seconds: float = 30.0) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(0.3)


def https(
    broker: BrokerProcess, method: str, path: str, *, as_: Connector | None = None, **kwargs: Any
) -> tuple[int, Any]:
    """A call to the broker; ``as_``: presenting that connector's TLS certificate (its DAT is
    bound to it)."""
    context = (
        client_context(broker.ca)
        if as_ is None
        else client_context(as_.directory / "ca.crt", as_.directory / "tls.crt", as_.directory / "tls.key")
    )

    async def call() -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, broker.url + path, ssl=context, **kwargs) as resp,
        ):
            raw = await resp.read()
            try:
                return resp.status, json.loads(raw)
            except ValueError:
                return resp.status, raw.decode()

    return asyncio.run(call())


def dat_of(c: Connector, space: DataSpace) -> str:
    return fresh_dat(space, c)


def test_broker_in_a_data_space(space: DataSpace, broker: BrokerProcess) -> None:
    alice = provider(space, broker, "alice")
    bob = provider(space, broker, "bob")
    consumer = space.connector("consumer", roles=("consumer",))
    weather = offer(
        alice,
        "urn:asset:weather",
        "Weather observations Hamburg",
        "Hourly temperature and rainfall",
        ["climate", "rain"],
    )
    offer(bob, "urn:asset:traffic", "Traffic counts", "Vehicles per hour on motorways", ["mobility"])

    # both register on start; the datasets appear with the next heartbeat
    found = eventually(lambda: search(broker, "rainfall")["results"], "alice's dataset found")
    assert [(r["dataset"], r["endpoint"], r["participant"]) for r in found] == [
        ("urn:asset:weather", alice.dsp_url, alice.participant_id)
    ]
    eventually(lambda: search(broker, "motorways")["results"], "bob's dataset found")
    assert search(broker, "rain", "--filter", "format=HttpData-PULL")["total"] == 1
    assert search(broker, "rain", "--filter", "format=no-such-format")["total"] == 0

    # SPARQL over all descriptions
    query = (
        "PREFIX dcat: <http://www.w3.org/ns/dcat#> PREFIX dct: <http://purl.org/dc/terms/> "
        "SELECT ?d ?t WHERE { ?d a dcat:Dataset ; dct:title ?t } ORDER BY ?d"
    )
    status, body = https(broker, "GET", "/sparql?" + urllib.parse.urlencode({"query": query}))
    assert status == 200, body
    assert [b["d"]["value"] for b in body["results"]["bindings"]] == [
        "urn:asset:traffic",
        "urn:asset:weather",
    ]
    status, body = https(
        broker, "POST", "/sparql", data="CLEAR ALL", headers={"Content-Type": "application/sparql-update"}
    )
    assert status == 400 and "read-only" in body["error"]

    # the consumer follows the link to the provider's catalog and negotiates
    status, catalog = consumer.api("POST", "/api/catalog", {"peerUrl": found[0]["endpoint"]})
    assert status == 200, catalog
    assert [d["id"] for d in catalog["datasets"]] == ["urn:asset:weather"]
    assert negotiate(consumer, alice, weather)["state"] == "FINALIZED"

    # bob cannot register alice's description nor remove her entry (his own description at her
    # connector IRI: tests/broker)
    status, alices = https(broker, "GET", "/registrations")
    entry = next(r for r in alices["registrations"] if r["participant"] == alice.participant_id)
    alice_description = asyncio.run(_fetch(alice.dsp_url + "/", alice))
    bob_dat = dat_of(bob, space)
    status, body = https(
        broker,
        "POST",
        "/registrations",
        data=alice_description,
        as_=bob,
        headers={"Authorization": f"Bearer {bob_dat}", "Content-Type": "text/turtle"},
    )
    assert status == 403 and "not about the token's subject" in body["error"], body
    status, body = https(
        broker,
        "DELETE",
        f"/registrations/{entry['id']}",
        as_=bob,
        headers={"Authorization": f"Bearer {bob_dat}"},
    )
    assert status == 403 and "another participant" in body["error"], body
    # the DAT with a certificate it is not bound to is refused ("server" mode: with none, the
    # DAT alone; "mutual" refuses that at the handshake: tests/integration/test_broker_tls_modes.py)
    status, body = https(
        broker,
        "DELETE",
        f"/registrations/{entry['id']}",
        as_=alice,
        headers={"Authorization": f"Bearer {bob_dat}"},
    )
    assert status == 401 and "not the one its token is bound to" in body["error"], body
    assert search(broker, "rainfall")["total"] == 1

    # a data product certificate verifies offline; the same content by bob is flagged
    product = {
        "datasetId": "urn:asset:weather",
        "title": "Weather observations Hamburg",
        "license": "https://creativecommons.org/licenses/by/4.0/",
        "contentSha256": "0f" * 32,
    }
    status, first = https(
        broker,
        "POST",
        "/products",
        json=product,
        as_=alice,
        headers={"Authorization": f"Bearer {dat_of(alice, space)}"},
    )
    assert status == 201 and first["duplicateOf"] == [], first
    saved = space.root / "product.cert"
    saved.write_text(first["certificate"])
    r = run_cli("broker", "verify", str(saved), "--ca", str(alice.directory / "ca.crt"))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["sub"] == alice.participant_id
    saved.write_text(first["certificate"][:-4] + "AAAA")
    r = run_cli("broker", "verify", str(saved), "--ca", str(alice.directory / "ca.crt"))
    assert r.returncode != 0 and "does not verify" in r.stderr
    status, second = https(
        broker, "POST", "/products", json=product, as_=bob, headers={"Authorization": f"Bearer {bob_dat}"}
    )
    assert status == 201 and [d["id"] for d in second["duplicateOf"]] == [first["id"]], second

    # the CLI registers a running connector by hand (its heartbeat does the same)
    r = run_cli("broker", "register", str(bob.config))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["participant"] == bob.participant_id

    # a stopped connector becomes unavailable: out of default search, listed with all=true
    bob.stop()
    eventually(lambda: search(broker, "motorways")["total"] == 0, "bob unavailable")
    stale = search(broker, "motorways", "--all")["results"]
    assert [(r["dataset"], r["available"]) for r in stale] == [("urn:asset:traffic", False)]

    # the CLI unregisters alice (her heartbeat is stopped first, or it registers her again)
    alice.stop()
    r = run_cli("broker", "unregister", str(alice.config))
    assert r.returncode == 0, r.stderr
    assert search(broker, "rainfall", "--all")["total"] == 0
    assert not [line for line in broker.log if "Traceback" in line], broker.log


async def _fetch(url: str, c: Connector) -> bytes:
    cert, key, ca = c.directory / "tls.crt", c.directory / "tls.key", c.directory / "ca.crt"
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers={"Accept": "text/turtle"}, ssl=client_context(ca, cert, key)) as resp,
    ):
        assert resp.status == 200
        return await resp.read()


def description_without_datasets(c: Connector) -> bytes:
    """A self-description as another IDS connector may write it: the connector and its
    endpoint, no datasets (they are in its live catalog only)."""
    return f"""
@prefix ids: <https://w3id.org/idsa/core/> .
@prefix dspace: <https://w3id.org/dspace/2025/1/> .
<{c.dsp_url}/> a ids:BaseConnector ; ids:title "carol's connector" ;
    dspace:participantId "{c.participant_id}" ; ids:hasDefaultEndpoint <{c.dsp_url}/#dsp> .
<{c.dsp_url}/#dsp> a ids:ConnectorEndpoint ; ids:accessURL <{c.dsp_url}> .
""".encode()


class Heartbeat:
    """Registers a description every second until stopped (another IDS connector's heartbeat)."""

    def __init__(self, broker: BrokerProcess, c: Connector, dat: str, body: bytes) -> None:
        self.stopped = threading.Event()
        self.answers: list[int] = []

        def beat() -> None:
            while not self.stopped.is_set():
                status, _ = https(
                    broker,
                    "POST",
                    "/registrations",
                    data=body,
                    as_=c,
                    headers={"Authorization": f"Bearer {dat}", "Content-Type": "text/turtle"},
                )
                self.answers.append(status)
                self.stopped.wait(1.0)

        self.thread = threading.Thread(target=beat, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(30)


def crawl_of(broker: BrokerProcess, endpoint: str) -> dict[str, Any] | None:
    status, body = https(broker, "GET", "/crawls")
    assert status == 200, body
    return next((c for c in body["crawls"] if c["endpoint"] == endpoint), None)


def test_federated_catalog(space: DataSpace, broker: BrokerProcess) -> None:
    # the broker answers /health and /ready (its store) as a connector does, without a key
    assert https(broker, "GET", "/health") == (200, {"status": "live"})
    assert https(broker, "GET", "/ready") == (200, {"status": "ready", "checks": {"store": "ok"}})
    carol = space.connector("carol", roles=("provider",))
    reader = space.connector("reader", roles=("consumer",))
    offer(
        carol,
        "urn:asset:plankton",
        "Plankton counts North Sea",
        "Weekly plankton samples per station",
        ["ocean", "biology"],
    )
    offer(carol, "urn:asset:krill", "Krill biomass", "Acoustic surveys", ["ocean"])
    beat = Heartbeat(broker, carol, dat_of(carol, space), description_without_datasets(carol))
    try:
        # only in carol's live catalog: found once the broker has crawled it as itself
        found = eventually(lambda: search(broker, "plankton")["results"], "the crawled dataset")
        assert [(r["dataset"], r["participant"], r["endpoint"], r["source"]) for r in found] == [
            ("urn:asset:plankton", carol.participant_id, carol.dsp_url, "catalog")
        ]
        assert 201 in beat.answers or 200 in beat.answers
        # her offer's contract policy is n-times-usage
        assert search(broker, "plankton", "--filter", "template=n-times-usage")["total"] == 1
        assert search(broker, "", "--filter", "template=purpose-restricted")["total"] == 0
        eventually(
            lambda: (
                (c := crawl_of(broker, carol.dsp_url)) is not None
                and c["state"] == "crawled"
                and c["datasets"] == 2
            ),
            "both datasets crawled",
        )

        # the consumer's connector reads the broker's catalog of catalogs with its DSP client,
        # every page (a page holds one dataset: this broker's page size), joined again
        status, catalog = reader.api("POST", "/api/catalog", {"peerUrl": broker.url})
        assert status == 200 and catalog["pages"] == 2, catalog
        assert [(c["participantId"], len(c["dataset"])) for c in catalog["dsp"]["catalog"]] == [
            (carol.participant_id, 2)
        ]
        status, everything = reader.api("POST", "/api/catalog/all", {"peerUrl": broker.url})
        assert status == 200 and everything["pages"] == 2, everything
        r = run_cli("catalog", broker.url, "--config", str(reader.config), "--json")
        assert r.returncode == 0, r.stderr
        listed = json.loads(r.stdout)
        assert listed["catalogs"] == 1
        assert sorted((d["id"], d["provider"], d["endpoint"]) for d in listed["datasets"]) == [
            ("urn:asset:krill", carol.participant_id, carol.dsp_url),
            ("urn:asset:plankton", carol.participant_id, carol.dsp_url),
        ]

        # carol stops answering (her registration is still renewed): retried with backoff
        carol.stop()
        failing = eventually(
            lambda: (c := crawl_of(broker, carol.dsp_url)) is not None and c["failures"] >= 3 and c,
            "three failed crawls",
        )
        assert failing["state"] == "failing" and failing["error"]
        # the backoff of each retry, as the broker logged it: within [step/2, step] of its
        # exponential step, so never shorter than the one before (below the cap)
        pattern = re.compile(
            rf"crawl of {re.escape(carol.dsp_url)} failed \((\d+) in a row; "
            r"next try in ([0-9.]+) s\)"
        )
        waits = {int(m.group(1)): float(m.group(2)) for m in map(pattern.search, broker.log) if m}
        assert {1, 2, 3} <= set(waits), broker.log[-20:]
        for n in (1, 2, 3):
            step = min(CRAWL_BACKOFF_CAP, CRAWL_BACKOFF * 2 ** (n - 1))
            assert step / 2 - 0.05 <= waits[n] <= step + 0.05, waits
        assert waits[1] <= waits[2] <= waits[3]
        # the last good crawl stays searchable meanwhile
        assert search(broker, "plankton")["total"] == 1
    finally:
        beat.stop()
    assert not [line for line in broker.log if "Traceback" in line], broker.log


PG_URL = os.environ.get("CONNECTOR_TEST_PG")


@pytest.mark.skipif(
    not PG_URL, reason="CONNECTOR_TEST_PG not set: two broker replicas need a PostgreSQL server"
)
def test_two_replicas_on_one_postgresql_answer_the_same_search(space: DataSpace) -> None:
    assert PG_URL is not None
    schema = f"test_broker_e2e_{uuid.uuid4().hex[:12]}"
    dsn = sa.make_url(PG_URL).set(drivername="postgresql").render_as_string(hide_password=False)

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE SCHEMA "{schema}"'))
    store = sa.make_url(PG_URL).update_query_dict({"schema": schema}).render_as_string(hide_password=False)
    first = BrokerProcess(space, name="replica", store=store)
    second = BrokerProcess(space, name="replica", directory=first.directory, store=store)
    try:
        dave = space.connector("dave", roles=("provider",), start=False)
        with dave.config.open("a") as f:
            f.write(f'\n[broker]\nurl = "{first.url}"\nheartbeat = {HEARTBEAT}\n')
        dave.start()
        offer(dave, "urn:asset:tides", "Tide gauge readings", "Sea level every ten minutes", ["ocean"])
        found = eventually(lambda: search(second, "tide*")["results"], "found at the replica")
        answers = [search(b, "tide*", "--all") for b in (first, second)]
        assert answers[0] == answers[1]
        assert "urn:asset:tides" in [r["dataset"] for r in answers[0]["results"]]
        assert found
        # the SPARQL index of the replica that did not register it is kept in step
        query = (
            'PREFIX dct: <http://purl.org/dc/terms/> SELECT ?d WHERE { ?d dct:title "Tide gauge readings" }'
        )
        for b in (first, second):
            eventually(
                lambda b=b: https(b, "GET", "/sparql?" + urllib.parse.urlencode({"query": query}))[1][
                    "results"
                ]["bindings"],
                f"SPARQL at {b.url}",
            )
        dave.stop()
    finally:
        first.stop()
        second.stop()
        asyncio.run(admin(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
