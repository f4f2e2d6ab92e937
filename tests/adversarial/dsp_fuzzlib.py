"""DSP fuzzing against a real provider connector: messages generated from the official JSON schemas
and malformed variants of them, sent with the DAT of a registered participant (the examiner), and
an oracle that judges every answer (used by tests/adversarial/test_dsp_fuzz.py and
bench/fuzz_dsp.py).

* Generation: the official schemas with every ``$ref`` inlined (a cycle, ODRL's nested logical
  constraints, is cut to an empty array), turned into Hypothesis strategies by schemathesis's JSON
  Schema engine (hypothesis-jsonschema 0.23 no longer runs on the installed Hypothesis). A
  generated message is sent as it is, or "aimed": its process ids, offer, agreement and callback
  patched to name the examiner's real processes, so that the accepting paths are reached too.
* The counter-party's side: ``FakePeer``, a DSP endpoint on loopback that acknowledges whatever
  the provider sends it (a valid ACK body) and answers ``GET`` with the state it last took, so
  that every process the provider runs with the examiner settles at once (no retries that could
  change a process while the fuzzer watches). It can be scripted per path.
* The oracle, for every answer: never 5xx; a 4xx carries a body valid against the DSP error schema
  of its area and changes nothing (every negotiation, transfer and agreement of the provider, as
  its management API shows them, is the same before and after); a 2xx only where DSP allows the
  message: valid against its schema, for a process the examiner is the counter-party of, a
  transition of the DSP tables below (written out independently of connector.protocol), an
  initial request only for an offer of the provider's catalog, a transfer only under a finalized
  agreement of the examiner; its ACK body valid.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import jsonschema_rs
import pytest
from aiohttp import web
from click.testing import CliRunner
from dsp_schema import PREFIX, SCHEMAS, _load, _registry, errors, example, schema_path
from hypothesis import strategies as st
from schemathesis.generation.jsonschema.builder import build
from schemathesis.generation.jsonschema.context import Alphabet

from connector.cli import main
from connector.devspace import Connector, DataSpace, offer_asset
from connector.identity.client import DatClient, ParticipantIdentity

CONTEXT = ["https://w3id.org/dspace/2025/1/context.jsonld"]
DSP_WIRE_SCHEMAS = SCHEMAS  # every DSP message the connector sends or returns is checked
_DROP = {"$id", "$schema", "definitions", "$comment", "title"}


# ----------------------------------------------------------------------------- schemas


def resolved_schema(name: str) -> Any:
    """The official schema ``name`` with every ``$ref`` inlined; a reference back into itself
    becomes ``false`` (so a recursive constraint list is generated empty)."""
    path = schema_path(name)
    base = PREFIX + path.relative_to(SCHEMAS).as_posix()

    def walk(node: Any, resolver: Any, seen: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [walk(x, resolver, seen) for x in node]
        if not isinstance(node, dict):
            return node
        rest = {k: walk(v, resolver, seen) for k, v in node.items() if k not in _DROP and k != "$ref"}
        if "$ref" not in node:
            return rest
        found = resolver.lookup(node["$ref"])
        uri = f"{base}|{node['$ref']}" if node["$ref"].startswith("#") else node["$ref"]
        inner = False if uri in seen else walk(found.contents, found.resolver, (*seen, uri))
        return {"allOf": [inner, rest]} if rest else inner

    return walk(_load(path), _registry().resolver(base), ())


_STRATEGIES: dict[str, st.SearchStrategy[Any]] = {}


def from_schema(name: str) -> st.SearchStrategy[Any]:
    """Values valid against the official schema ``name`` (printable ASCII keeps it quick)."""
    if name not in _STRATEGIES:
        _STRATEGIES[name] = build(
            resolved_schema(name),
            draft=jsonschema_rs.Draft201909,
            formats={},
            alphabet=Alphabet(codec="ascii"),
        )
    return _STRATEGIES[name]


# ----------------------------------------------------------------------------- the DSP tables

NEG, XFER = "negotiation", "transfer"
C, P = "CONSUMER", "PROVIDER"
NON_TERMINAL = {
    NEG: ("REQUESTED", "OFFERED", "ACCEPTED", "AGREED", "VERIFIED"),
    XFER: ("REQUESTED", "STARTED", "SUSPENDED"),
}
SPEC: dict[str, dict[tuple[str, str], str]] = {
    NEG: {
        ("REQUESTED", "offer"): "OFFERED",
        ("REQUESTED", "agreement"): "AGREED",
        ("OFFERED", "request"): "REQUESTED",
        ("OFFERED", "accepted"): "ACCEPTED",
        ("ACCEPTED", "agreement"): "AGREED",
        ("AGREED", "verification"): "VERIFIED",
        ("VERIFIED", "finalized"): "FINALIZED",
        **{(s, "termination"): "TERMINATED" for s in NON_TERMINAL[NEG]},
    },
    XFER: {
        ("REQUESTED", "start"): "STARTED",
        ("STARTED", "suspension"): "SUSPENDED",
        ("STARTED", "completion"): "COMPLETED",
        ("SUSPENDED", "start"): "STARTED",
        **{(s, "termination"): "TERMINATED" for s in NON_TERMINAL[XFER]},
    },
}
TERMINAL = ("FINALIZED", "TERMINATED", "COMPLETED")
SENT_BY = {
    "request": {C},
    "offer": {P},
    "accepted": {C},
    "agreement": {P},
    "verification": {C},
    "finalized": {P},
    "termination": {C, P},
    "start": {C, P},
    "suspension": {C, P},
    "completion": {C, P},
}
# internal sending state -> the DSP state its acknowledgement enters (what GET shows meanwhile)
SENDING = {
    "REQUESTING": "REQUESTED",
    "OFFERING": "OFFERED",
    "ACCEPTING": "ACCEPTED",
    "AGREEING": "AGREED",
    "VERIFYING": "VERIFIED",
    "FINALIZING": "FINALIZED",
    "TERMINATING": "TERMINATED",
    "STARTING": "STARTED",
    "SUSPENDING": "SUSPENDED",
    "COMPLETING": "COMPLETED",
}
KIND_OF = {
    "ContractRequestMessage": "request",
    "ContractOfferMessage": "offer",
    "ContractAgreementMessage": "agreement",
    "ContractAgreementVerificationMessage": "verification",
    "ContractNegotiationTerminationMessage": "termination",
    "TransferStartMessage": "start",
    "TransferSuspensionMessage": "suspension",
    "TransferCompletionMessage": "completion",
    "TransferTerminationMessage": "termination",
}
ACK_STATE = {
    "ContractAgreementMessage": "AGREED",
    "ContractNegotiationTerminationMessage": "TERMINATED",
    "ContractOfferMessage": "OFFERED",
    "ContractRequestMessage": "REQUESTED",
    "ContractAgreementVerificationMessage": "VERIFIED",
    "TransferStartMessage": "STARTED",
    "TransferCompletionMessage": "COMPLETED",
    "TransferSuspensionMessage": "SUSPENDED",
    "TransferTerminationMessage": "TERMINATED",
}


# what a DSP message says (everything else, unknown keys and the @context, means nothing to it)
CONTENT_KEYS = (
    "@type",
    "providerPid",
    "consumerPid",
    "offer",
    "agreement",
    "eventType",
    "code",
    "reason",
    "dataAddress",
    "callbackAddress",
    "agreementId",
    "format",
    "filter",
)


def content(body: dict[str, Any]) -> str:
    return json.dumps({k: body[k] for k in CONTENT_KEYS if k in body}, sort_keys=True)


def message_kind(body: dict[str, Any]) -> str:
    if body.get("@type") == "ContractNegotiationEventMessage":
        return "accepted" if body.get("eventType") == "ACCEPTED" else "finalized"
    return KIND_OF.get(str(body.get("@type")), "?")


# ----------------------------------------------------------------------------- endpoints


@dataclass(frozen=True)
class Endpoint:
    """A DSP POST endpoint: where, which schema, and what its ``{pid}`` names."""

    name: str
    path: str
    schema: str
    area: str  # catalog / negotiation / transfer: the error schema of its refusals
    target: str | None = None  # NEG / XFER: the path names an existing process of that kind

    @property
    def error_schema(self) -> str:
        return {"catalog": "catalog-error", NEG: "contract-negotiation-error", XFER: "transfer-error"}[
            self.area
        ]

    @property
    def ack_schema(self) -> str:
        return {
            "catalog": "catalog/catalog-schema",
            NEG: "negotiation/contract-negotiation-schema",
            XFER: "transfer/transfer-process-schema",
        }[self.area]


ENDPOINTS = (
    Endpoint("catalog-request", "/catalog/request", "catalog-request-message", "catalog"),
    Endpoint("negotiation-request-new", "/negotiations/request", "contract-request-message", NEG),
    Endpoint("negotiation-offer-new", "/negotiations/offers", "contract-offer-message", NEG),
    Endpoint("negotiation-request", "/negotiations/{pid}/request", "contract-request-message", NEG, NEG),
    Endpoint("negotiation-offer", "/negotiations/{pid}/offers", "contract-offer-message", NEG, NEG),
    Endpoint(
        "negotiation-event", "/negotiations/{pid}/events", "contract-negotiation-event-message", NEG, NEG
    ),
    Endpoint(
        "negotiation-agreement", "/negotiations/{pid}/agreement", "contract-agreement-message", NEG, NEG
    ),
    Endpoint(
        "negotiation-verification",
        "/negotiations/{pid}/agreement/verification",
        "contract-agreement-verification-message",
        NEG,
        NEG,
    ),
    Endpoint(
        "negotiation-termination",
        "/negotiations/{pid}/termination",
        "contract-negotiation-termination-message",
        NEG,
        NEG,
    ),
    Endpoint("transfer-request-new", "/transfers/request", "transfer-request-message", XFER),
    Endpoint("transfer-start", "/transfers/{pid}/start", "transfer-start-message", XFER, XFER),
    Endpoint("transfer-completion", "/transfers/{pid}/completion", "transfer-completion-message", XFER, XFER),
    Endpoint("transfer-suspension", "/transfers/{pid}/suspension", "transfer-suspension-message", XFER, XFER),
    Endpoint(
        "transfer-termination", "/transfers/{pid}/termination", "transfer-termination-message", XFER, XFER
    ),
)
BY_NAME = {e.name: e for e in ENDPOINTS}


# ----------------------------------------------------------------------------- the fake peer


class FakePeer:
    """A counter-party's DSP endpoint on loopback, in a thread of its own: every POST is recorded
    and acknowledged (200, the ACK body of the state the message leads to) unless ``script`` has
    an answer queued for its path; ``GET /negotiations/{pid}`` / ``/transfers/{pid}`` answer the
    state last acknowledged (or ``states[path]``)."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.script: dict[str, list[tuple[int, Any]]] = {}
        self.states: dict[str, dict[str, Any]] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.url = ""

    def start(self) -> FakePeer:
        self._thread.start()
        self.url = asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(10)
        return self

    async def _serve(self) -> str:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._post)
        app.router.add_get("/{tail:.*}", self._get)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}"

    def close(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @staticmethod
    def _process_path(path: str) -> str:
        parts = path.strip("/").split("/")
        return "/" + "/".join(parts[:2])

    async def _post(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.received.append((request.path, body))
        queued = self.script.get(request.path)
        if queued:
            status, answer = queued.pop(0)
            return web.json_response(answer, status=status)
        area = "ContractNegotiation" if request.path.startswith("/negotiations") else "TransferProcess"
        state = ACK_STATE.get(body.get("@type"), body.get("eventType", "REQUESTED"))
        ack = {
            "@context": CONTEXT,
            "@type": area,
            "providerPid": body.get("providerPid", ""),
            "consumerPid": body.get("consumerPid", ""),
            "state": state,
        }
        if request.path in ("/negotiations/request", "/transfers/request"):  # we are the provider
            ack["providerPid"] = f"urn:uuid:{uuid.uuid4()}"
            self.states[f"{request.path.rsplit('/', 1)[0]}/{ack['providerPid']}"] = ack
            return web.json_response(ack, status=201)
        self.states[self._process_path(request.path)] = ack
        return web.json_response(ack)

    async def _get(self, request: web.Request) -> web.Response:
        ack = self.states.get(request.path)
        if ack is None:
            return web.json_response(
                {
                    "@context": CONTEXT,
                    "@type": "ContractNegotiationError",
                    "providerPid": "",
                    "consumerPid": "",
                    "reason": ["unknown"],
                },
                status=404,
            )
        return web.json_response(ack)


# ----------------------------------------------------------------------------- the examiner


class Examiner:
    """A registered participant talking DSP to one connector with its own DAT (fetched from the
    authority and renewed every minute), over plain HTTP on loopback."""

    def __init__(self, directory: Path, participant_id: str, authority_url: str, dsp_url: str) -> None:
        self.directory = directory
        self.participant_id = participant_id
        self.authority_url = authority_url
        split = urlsplit(dsp_url)
        self.host, self.port = split.hostname or "127.0.0.1", split.port or 80
        self._token = ""
        self._token_at = -1e9
        self._conn: http.client.HTTPConnection | None = None

    def token(self) -> str:
        if time.monotonic() - self._token_at > 60:

            async def fetch() -> str:
                async with aiohttp.ClientSession() as session:
                    client = await DatClient.discover(
                        session, self.authority_url, ParticipantIdentity.load(self.directory)
                    )
                    return await client.token()

            self._token = asyncio.run(fetch())
            self._token_at = time.monotonic()
        return self._token

    def send(
        self, method: str, path: str, body: bytes | None, headers: list[tuple[str, str]] | None = None
    ) -> tuple[int, Any]:
        """One request; ``headers`` replace the examiner's Authorization (they may repeat)."""
        sent = headers if headers is not None else [("Authorization", f"Bearer {self.token()}")]
        for attempt in range(2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            try:
                self._conn.putrequest(method, path, skip_accept_encoding=True)
                for k, v in [
                    *sent,
                    ("Content-Type", "application/json"),
                    ("Content-Length", str(len(body or b""))),
                ]:
                    self._conn.putheader(k, v)
                self._conn.endheaders(body)
                resp = self._conn.getresponse()
                raw = resp.read()
                if resp.getheader("Connection", "").lower() == "close":
                    self._conn.close()
                    self._conn = None
                try:
                    return resp.status, json.loads(raw) if raw else None
                except ValueError:
                    return resp.status, raw.decode(errors="replace")
            except (http.client.HTTPException, OSError):
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def post(self, path: str, body: Any) -> tuple[int, Any]:
        return self.send("POST", path, json.dumps(body).encode())


# ----------------------------------------------------------------------------- the data space


def cli_here(*args: object) -> Any:
    """The ``connector`` command run in this process (no interpreter start-up per call)."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exit_code != 0:
        raise RuntimeError(f"connector {' '.join(map(str, args))}: {result.output}")
    return json.loads(result.output)


@dataclass
class DspSpace:
    """An authority, one connector (the provider under test; it also acts as a consumer), the
    registered examiner, the fake peer that stands for the examiner's own connector."""

    ds: DataSpace
    provider: Connector
    examiner: Examiner
    peer: FakePeer
    fuzzer: Fuzzer

    def close(self) -> None:
        self.peer.close()
        self.ds.close()


def start_space(root: Path, *, wire_schemas: Path | None = DSP_WIRE_SCHEMAS) -> DspSpace:
    ds = DataSpace(root, tls=False, wire_schemas=wire_schemas)
    try:
        provider = ds.connector("dspprov", roles=("provider", "consumer"))
        offer_asset(
            provider,
            asset_id="urn:asset:fuzz-a",
            contract={"template": "n-times-usage", "params": {"max": "5"}},
        )
        offer_asset(provider, asset_id="urn:asset:fuzz-b", contract={"template": "allow-usage", "params": {}})
        cli_here("init", root / "examiner", "--name", "Examiner")
        reg = cli_here(
            "authority",
            "register",
            ds.authority.directory,
            root / "examiner" / "participant.csr",
            "--role",
            "consumer",
            "--role",
            "provider",
        )
        peer = FakePeer().start()
    except BaseException:
        ds.close()
        raise
    examiner = Examiner(root / "examiner", reg["participant_id"], ds.authority.url, provider.dsp_url)
    fuzzer = Fuzzer(provider, examiner, peer)
    space = DspSpace(ds, provider, examiner, peer, fuzzer)
    try:
        fuzzer.prepare()
    except BaseException:
        space.close()
        raise
    return space


_SHARED: list[DspSpace] = []  # the one data space of this test process


@pytest.fixture(scope="session")
def dsp_space(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DspSpace]:
    """One data space for the DSP adversarial modules of a test process. Each module that imports
    this fixture gets a definition of its own; the first starts the space and closes it at the
    end of the session, the others share it."""
    if _SHARED:
        yield _SHARED[0]
        return
    space = start_space(tmp_path_factory.mktemp("dsp"))
    _SHARED.append(space)
    try:
        yield space
        space.ds.assert_wire_valid()
    finally:
        space.close()


# ----------------------------------------------------------------------------- the fuzzer


@dataclass
class Stats:
    """What a run sent and got (the figures of bench/RESULTS.md)."""

    sent: int = 0
    by_class: Counter[str] = field(default_factory=Counter)
    by_endpoint: Counter[str] = field(default_factory=Counter)
    accepted: int = 0
    server_errors: list[str] = field(default_factory=list)
    invalid_error_bodies: list[str] = field(default_factory=list)
    state_changes_after_refusal: list[str] = field(default_factory=list)
    illegitimate_acceptances: list[str] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)  # endpoint: first refusal reason

    @property
    def problems(self) -> list[str]:
        return [
            *self.server_errors,
            *self.invalid_error_bodies,
            *self.state_changes_after_refusal,
            *self.illegitimate_acceptances,
        ]


@dataclass
class Snapshot:
    negotiations: dict[str, dict[str, Any]]
    transfers: dict[str, dict[str, Any]]
    agreements: dict[str, dict[str, Any]]

    def process(self, kind: str, pid: str) -> dict[str, Any] | None:
        table = self.negotiations if kind == NEG else self.transfers
        return next((v for v in table.values() if v["id"] == pid), None)

    def diff(self, other: Snapshot) -> list[str]:
        out = []
        for name in ("negotiations", "transfers", "agreements"):
            mine, theirs = getattr(self, name), getattr(other, name)
            for key in sorted(set(mine) | set(theirs)):
                if mine.get(key) != theirs.get(key):
                    out.append(
                        f"{name} {key}: {json.dumps(mine.get(key))[:300]} -> "
                        f"{json.dumps(theirs.get(key))[:300]}"
                    )
        return out


class Fuzzer:
    """The provider under test, the examiner, the fake peer and what the examiner may legitimately
    do: the catalog's offers, its finalized agreement, the processes it is the counter-party of."""

    def __init__(self, provider: Connector, examiner: Examiner, peer: FakePeer) -> None:
        self.provider = provider
        self.examiner = examiner
        self.peer = peer
        self.stats = Stats()
        self.offers: list[dict[str, Any]] = []  # the catalog's offers, with their target
        self.agreement_id = ""  # a finalized agreement of the examiner
        self.accepted: dict[str, set[str]] = {}  # process id -> the message contents it took
        self._settled: Snapshot | None = None  # the state after the last exchange (quiet since)

    # -- setup ----------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Fetch the catalog; negotiate one agreement to FINALIZED and start one transfer under
        it (the examiner as consumer, the fake peer as its callback); open a few more processes
        in other states."""
        status, cat = self.examiner.post(
            "/catalog/request", {"@context": CONTEXT, "@type": "CatalogRequestMessage"}
        )
        assert status == 200, cat
        for d in cat.get("dataset", []):
            for o in d.get("hasPolicy", []):
                self.offers.append({**o, "target": d["@id"]})
        assert self.offers, "the provider offers nothing"
        offer = self.offers[0]
        finalized = self.negotiate(offer, finalize=True)
        self.agreement_id = finalized["agreementId"]
        assert self.agreement_id
        self.negotiate(offer)  # AGREED
        looser = {**offer, "permission": [{"action": "use"}]}
        self.negotiate(looser)  # TERMINATED by the provider: the terms are looser than its offer
        self.transfer()  # STARTED
        started = self.transfer()
        self.tell(
            started["id"],
            f"/transfers/{started['providerPid']}/suspension",
            {
                "@context": CONTEXT,
                "@type": "TransferSuspensionMessage",
                "providerPid": started["providerPid"],
                "consumerPid": started["consumerPid"],
            },
        )
        self.quiesce()

    def tell(self, pid: str, path: str, body: dict[str, Any]) -> Any:
        """A message the examiner sends on purpose to one of its processes: it must be taken."""
        status, ack = self.examiner.post(path, body)
        assert 200 <= status < 300, ack
        self.accepted.setdefault(pid, set()).add(content(body))
        return ack

    def negotiate(self, offer: dict[str, Any], *, finalize: bool = False) -> dict[str, Any]:
        cpid = f"urn:uuid:{uuid.uuid4()}"
        status, ack = self.examiner.post(
            "/negotiations/request",
            {
                "@context": CONTEXT,
                "@type": "ContractRequestMessage",
                "consumerPid": cpid,
                "offer": offer,
                "callbackAddress": self.peer.url,
            },
        )
        assert status == 201, ack
        self.quiesce()
        if finalize:
            self.tell(
                ack["providerPid"],
                f"/negotiations/{ack['providerPid']}/agreement/verification",
                {
                    "@context": CONTEXT,
                    "@type": "ContractAgreementVerificationMessage",
                    "providerPid": ack["providerPid"],
                    "consumerPid": cpid,
                },
            )
            self.quiesce()
        view = self.snapshot().process(NEG, ack["providerPid"])
        assert view is not None
        assert not finalize or view["state"] == "FINALIZED", view
        return view

    def transfer(self) -> dict[str, Any]:
        status, ack = self.examiner.post(
            "/transfers/request",
            {
                "@context": CONTEXT,
                "@type": "TransferRequestMessage",
                "consumerPid": f"urn:uuid:{uuid.uuid4()}",
                "agreementId": self.agreement_id,
                "format": "HttpData-PULL",
                "callbackAddress": self.peer.url,
            },
        )
        assert status == 201, ack
        self.quiesce()
        view = self.snapshot().process(XFER, ack["providerPid"])
        assert view is not None and view["state"] == "STARTED", view
        return view

    # -- observation ----------------------------------------------------------------------------

    def _all(self, path: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            status, page = self.provider.api("GET", f"{path}?limit=500&offset={len(out)}")
            assert status == 200, page
            out.extend(page)
            if len(page) < 500:
                return out

    def snapshot(self) -> Snapshot:
        return Snapshot(
            {n["id"]: n for n in self._all("/api/negotiations")},
            {t["id"]: t for t in self._all("/api/transfers")},
            {a["id"]: a for a in self._all("/api/agreements")},
        )

    def quiesce(self, timeout: float = 20) -> Snapshot:
        """Wait until no process of the provider has a message of its own in flight."""
        deadline = time.monotonic() + timeout
        while True:
            snap = self.snapshot()
            busy = [
                p
                for p in (*snap.negotiations.values(), *snap.transfers.values())
                if p["internalState"] in SENDING
            ]
            if not busy:
                return snap
            if time.monotonic() > deadline:
                raise AssertionError(f"the provider did not settle: {busy[:3]}")
            time.sleep(0.05)

    def forget(self) -> None:
        """Something else may have changed the provider: take a fresh snapshot before the next."""
        self._settled = None

    def ensure_live(self, kind: str) -> None:
        """At least one process of ``kind`` with the examiner that still takes messages: a new one
        (AGREED / STARTED) when every one has ended."""
        snap = self._settled or self.snapshot()
        if not any(p["state"] not in TERMINAL for p in self.targets(kind, snap)):
            if kind == NEG:
                self.negotiate(self.offers[0])
            else:
                self.transfer()
            self._settled = None

    def targets(self, kind: str, snap: Snapshot) -> list[dict[str, Any]]:
        """The provider's processes of ``kind`` whose counter-party is the examiner."""
        table = snap.negotiations if kind == NEG else snap.transfers
        return [
            p
            for p in sorted(table.values(), key=lambda p: p["createdAt"])
            if p["counterPartyId"] == self.examiner.participant_id
        ]

    # -- messages -------------------------------------------------------------------------------

    def aim(self, m: Message, snap: Snapshot) -> Message:
        """Patch a generated message to name a real process, offer and agreement of the examiner."""
        if m.mode != "aimed" or not isinstance(m.body, dict):
            return m
        body = dict(m.body)
        pick = m.pick
        pool = self.targets(m.endpoint.target, snap) if m.endpoint.target else []
        path = m.endpoint.path
        live = [p for p in pool if p["state"] not in TERMINAL]
        if live and pick % 4:
            pool = live  # mostly a process that still takes messages
        if pool:
            p = pool[pick % len(pool)]
            path = path.format(pid=p["id"])
            for key in ("providerPid", "consumerPid"):
                if key in body or p.get(key):
                    body[key] = p[key]
            if "offer" in body:
                body["offer"] = {**body["offer"], "target": p["offer"].get("target")}
            taken = sorted(
                c for c in self.accepted.get(p["id"], ()) if json.loads(c).get("@type") == body.get("@type")
            )
            if taken and pick % 8 == 5:  # again a message it took before (a re-delivery)
                body = {"@context": CONTEXT, **json.loads(taken[pick % len(taken)])}
        if "callbackAddress" in body:
            body["callbackAddress"] = self.peer.url
        if m.endpoint.name == "negotiation-request-new":  # the initial form
            body.pop("providerPid", None)
            body["callbackAddress"] = self.peer.url
            offer = self.offers[pick % len(self.offers)]
            same = pick % 3 == 0  # the offer's own terms: agreed; else the generated ones
            body["offer"] = {
                **(offer if same else body["offer"]),
                "@id": offer["@id"],
                "target": offer["target"],
            }
            if pick % 4 == 3:  # an offer id the provider does not know, for one of its datasets
                body["offer"]["@id"] = f"urn:offer:unknown-{uuid.uuid4()}"
            body["consumerPid"] = f"urn:uuid:{uuid.uuid4()}"
        if m.endpoint.name == "negotiation-offer-new":  # the provider connector as a consumer
            body.pop("consumerPid", None)
            body["callbackAddress"] = self.peer.url
            offer = self.offers[pick % len(self.offers)]
            if pick % 2:
                body["offer"] = {**offer, "@id": f"urn:uuid:{uuid.uuid4()}"}
            body["providerPid"] = f"urn:uuid:{uuid.uuid4()}"
        if m.endpoint.name == "transfer-request-new":
            body.update(
                agreementId=self.agreement_id,
                consumerPid=f"urn:uuid:{uuid.uuid4()}",
                format=("HttpData-PULL", "HttpData-PUSH", "ftp")[pick % 3],
            )
            if body["format"] == "HttpData-PULL":
                body.pop("dataAddress", None)
        return Message(m.endpoint, body, m.mode, pick, path, m.raw, m.headers, m.variant)

    # -- one exchange, judged -------------------------------------------------------------------

    def check(self, m: Message) -> list[str]:
        """Send ``m`` and judge the answer; the problems found (also kept in ``stats``)."""
        if m.mode == "aimed" and m.endpoint.target and m.pick % 4:
            self.ensure_live(m.endpoint.target)
        before = self._settled or self.snapshot()
        m = self.aim(m, before)
        if m.variant != "valid":
            m = malform(m)
        path = m.path if "{pid}" not in m.path else m.path.format(pid=f"urn:uuid:{uuid.uuid4()}")
        raw = m.raw if m.raw is not None else json.dumps(m.body).encode()
        headers = (
            None
            if m.headers is None
            else [(k, v.replace("{DAT}", self.examiner.token())) for k, v in m.headers]
        )
        status, answer = self.examiner.send("POST", path, raw, headers)
        ok = 200 <= status < 300
        after = self._settled = self.quiesce() if ok else self.snapshot()
        s = self.stats
        s.sent += 1
        s.by_class[f"{status // 100}xx"] += 1
        s.by_endpoint[f"{m.endpoint.name} {status}"] += 1
        where = f"{m.endpoint.name} [{m.variant}] POST {path[:120]} -> {status}"
        found: list[str] = []
        if status >= 500:
            s.server_errors.append(f"{where}: {json.dumps(answer)[:300]}")
            found.append(s.server_errors[-1])
        elif not ok:
            first = (answer.get("reason") or ["?"])[0] if isinstance(answer, dict) else "?"
            s.reasons[f"{m.endpoint.name} {status}: {str(first)[:90]}"] += 1
            problems = errors(answer, m.endpoint.error_schema)
            if problems:
                s.invalid_error_bodies.append(f"{where}: {problems[:2]} {json.dumps(answer)[:200]}")
                found.append(s.invalid_error_bodies[-1])
            changed = before.diff(after)
            if changed:
                s.state_changes_after_refusal.append(f"{where}: {changed[:3]}")
                found.append(s.state_changes_after_refusal[-1])
        else:
            s.accepted += 1
            why = self._illegitimate(m, path, answer, before, after)
            if why:
                s.illegitimate_acceptances.append(f"{where}: {why}; sent {raw[:300]!r}")
                found.append(s.illegitimate_acceptances[-1])
        return found

    def _illegitimate(
        self, m: Message, path: str, answer: Any, before: Snapshot, after: Snapshot
    ) -> str | None:
        """Why a 2xx answer to ``m`` breaks DSP (None: DSP allows it)."""
        e = m.endpoint
        if m.variant != "valid":
            return "a malformed message was accepted"
        body = m.body
        if errors(body, e.schema):
            return "a message not valid against its schema was accepted"
        if errors(answer, e.ack_schema):
            return f"the ACK body is not valid: {errors(answer, e.ack_schema)[:2]}"
        if e.area == "catalog":
            return None if before.diff(after) == [] else "a catalog request changed state"
        created = {
            k: set(getattr(after, k)) - set(getattr(before, k))
            for k in ("negotiations", "transfers", "agreements")
        }
        if e.target is None:
            return self._creation(e, body, answer, before, after, created)
        pid = path.split("/")[2]
        p = before.process(e.target, pid)
        if p is None or p["counterPartyId"] != self.examiner.participant_id:
            return "accepted for a process the examiner is not the counter-party of"
        if (body.get("providerPid"), body.get("consumerPid")) != (p["providerPid"], p["consumerPid"]):
            return "accepted with process ids of another process"
        if created["negotiations"] or created["transfers"]:
            return f"a message on an existing process created {created}"
        kind = message_kind(body)
        role = C if p["role"] == "provider" else P  # the examiner's role
        if role not in SENT_BY.get(kind, set()):
            return f"a {role.lower()} may not send {kind}"
        internal, wire = p["internalState"], p["state"]
        if wire in TERMINAL:  # DSP: terminal states are final; a re-delivery is refused too
            return f"{kind} taken by a process in the terminal state {wire}"
        sources = {internal} if internal not in SENDING else {SENDING[internal], wire}
        to = answer.get("state")
        key = content(body)
        if to == wire and key in self.accepted.get(pid, set()):
            return None  # a re-delivery of what it took before (the same content), answered again
        # only the provider starts a requested transfer; a consumer resumes only its own suspension
        allowed = {
            SPEC[e.target][(s, kind)]
            for s in sources
            if (s, kind) in SPEC[e.target]
            and not (e.target == XFER and kind == "start" and role == C and s == "REQUESTED")
        }
        if e.target == XFER and kind == "start" and role == C and P in (p.get("suspendedBy") or []):
            return "the consumer resumed a transfer the provider suspended"
        if to not in allowed:
            return f"{kind} from {sorted(sources)} led to {to} (DSP allows {sorted(allowed)})"
        self.accepted.setdefault(pid, set()).add(key)
        return None

    def _creation(
        self,
        e: Endpoint,
        body: dict[str, Any],
        answer: Any,
        before: Snapshot,
        after: Snapshot,
        created: dict[str, set[str]],
    ) -> str | None:
        mine = self.examiner.participant_id
        if e.name == "negotiation-request-new":
            offer = body.get("offer", {})
            if not any(
                o["@id"] == offer.get("@id") and o["target"] == offer.get("target") for o in self.offers
            ):
                return f"a negotiation was opened for offer {offer.get('@id')!r}, not in the catalog"
            pids = {(n["consumerPid"], n["counterPartyId"]) for n in before.negotiations.values()}
            if (body["consumerPid"], mine) in pids and not created["negotiations"]:
                return None  # a re-delivered initial request, answered again
            if len(created["negotiations"]) != 1:
                return f"an initial request created {len(created['negotiations'])} negotiations"
            return None
        if e.name == "negotiation-offer-new":
            return (
                None
                if len(created["negotiations"]) <= 1 and not created["agreements"]
                else (f"an initial offer created {created}")
            )
        if e.name == "transfer-request-new":
            if body.get("agreementId") != self.agreement_id:
                return f"a transfer under agreement {body.get('agreementId')!r} of no one's"
            if body.get("format") not in ("HttpData-PULL", "HttpData-PUSH"):
                return f"a transfer in format {body.get('format')!r}"
            if len(created["transfers"]) > 1 or created["negotiations"] or created["agreements"]:
                return f"a transfer request created {created}"
            return None
        return f"unexpected 2xx on {e.name}"


# ----------------------------------------------------------------------------- messages


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# name -> what it does to a schema-valid body (or the raw bytes sent instead); every one is refused
MALFORMATIONS = (
    "wrong-type",
    "other-dsp-type",
    "missing-field",
    "wrong-field-type",
    "unknown-pid",
    "huge-pid",
    "long-pid",
    "path-unsafe-pid",
    "huge-id",
    "not-json",
    "truncated-json",
    "bad-utf8",
    "empty-body",
    "array-body",
    "scalar-body",
    "nan-in-field",
    "nested-in-field",
    "no-context",
    "two-authorizations",
)


@dataclass(frozen=True)
class Message:
    endpoint: Endpoint
    body: Any
    mode: str  # raw (sent as generated) / aimed (patched to name real things) / malformed
    pick: int
    path: str
    raw: bytes | None = None  # sent instead of the JSON of ``body``
    headers: list[tuple[str, str]] | None = None  # instead of the examiner's Authorization
    variant: str = "valid"

    @staticmethod
    def valid(endpoint: Endpoint, body: Any, aimed: bool, pick: int) -> Message:
        return Message(endpoint, body, "aimed" if aimed else "raw", pick, endpoint.path)

    @staticmethod
    def malformed(endpoint: Endpoint, body: Any, how: str, pick: int) -> Message:
        """A message made malformed ``how`` once aimed at a real process (see ``malform``)."""
        return Message(endpoint, body, "aimed", pick, endpoint.path, variant=how)


# the official example of each endpoint's message, and the pick that aims it at an accepting path
OFFICIAL_EXAMPLES = {
    "catalog-request": ("catalog-request-message", 1),
    "negotiation-request-new": ("contract-request-message_initial", 0),
    "negotiation-offer-new": ("contract-offer-message_initial", 1),
    "negotiation-request": ("negotiation/contract-request-message", 1),
    "negotiation-offer": ("negotiation/contract-offer-message", 1),
    "negotiation-event": ("contract-negotiation-event-message", 1),
    "negotiation-agreement": ("negotiation/contract-agreement-message", 1),
    "negotiation-verification": ("contract-agreement-verification-message", 1),
    "negotiation-termination": ("contract-negotiation-termination-message", 1),
    "transfer-request-new": ("transfer-request-message", 0),
    "transfer-start": ("transfer-start-message", 1),
    "transfer-completion": ("transfer-completion-message", 1),
    "transfer-suspension": ("transfer-suspension-message", 1),
    "transfer-termination": ("transfer-termination-message", 1),
}


def official_message(endpoint: Endpoint) -> Message:
    """The official DSP example for ``endpoint``, aimed at the examiner's processes."""
    name, pick = OFFICIAL_EXAMPLES[endpoint.name]
    return Message.valid(endpoint, example(name), True, pick)


def valid_messages(endpoint: Endpoint) -> st.SearchStrategy[Message]:
    """Schema-valid messages for ``endpoint``, sent as generated or aimed at real processes."""
    return st.builds(
        Message.valid,
        st.just(endpoint),
        from_schema(endpoint.schema),
        st.integers(0, 3).map(bool),
        st.integers(0, 1 << 16),
    )


def malformed_messages(endpoint: Endpoint) -> st.SearchStrategy[Message]:
    """Every malformation of a schema-valid message for ``endpoint``."""
    return st.builds(
        Message.malformed,
        st.just(endpoint),
        from_schema(endpoint.schema),
        st.sampled_from(MALFORMATIONS),
        st.integers(0, 1 << 16),
    )


def malform(m: Message) -> Message:
    """``m`` (aimed) made malformed as its ``variant`` says: the body, the raw bytes, the path or
    the headers; whatever is sent must be refused."""
    how, pick = m.variant, m.pick
    b: Any = dict(m.body)
    raw: bytes | None = None
    headers = None
    path = m.path
    # the field an id malformation goes into: a process id, or the @type where there is none
    pid_keys = [k for k in ("consumerPid", "providerPid") if k in b] or ["@type"]
    key = pid_keys[pick % len(pid_keys)]
    if how == "wrong-type":
        b["@type"] = ("Nonsense", "dspace:" + str(b.get("@type")), "", 7)[pick % 4]
    elif how == "other-dsp-type":
        others = [t for t in (*KIND_OF, "CatalogRequestMessage", "TransferProcess") if t != b.get("@type")]
        b["@type"] = others[pick % len(others)]
    elif how == "missing-field":
        required = [
            k
            for k in (
                "@context",
                "@type",
                "consumerPid",
                "providerPid",
                "offer",
                "agreement",
                "agreementId",
                "format",
                "eventType",
            )
            if k in b
        ]
        b.pop(required[pick % len(required)])
    elif how == "wrong-field-type":
        fields = [
            k
            for k in (
                "@type",
                "consumerPid",
                "providerPid",
                "offer",
                "agreement",
                "agreementId",
                "format",
                "eventType",
                "callbackAddress",
                "filter",
                "reason",
                "dataAddress",
            )
            if k in b
        ]
        name = fields[pick % len(fields)]
        # a value of another JSON type; not null: in JSON-LD a null value is no value (absent)
        values: list[Any] = [[], {}, 12, True, 1.5, "text"]
        others = [v for v in values if type(v) is not type(b[name])]
        b[name] = others[pick % len(others)]
    elif how == "unknown-pid":
        if m.endpoint.target:  # the path names no process (the body still names the real one)
            parts = path.split("/")
            parts[2] = f"urn:uuid:{uuid.uuid4()}"
            path = "/".join(parts)
        elif m.endpoint.name == "negotiation-request-new":  # a counter-request of no negotiation
            b.pop("callbackAddress", None)
            b["providerPid"] = f"urn:uuid:{uuid.uuid4()}"
        elif m.endpoint.name == "transfer-request-new":
            b["agreementId"] = f"urn:uuid:{uuid.uuid4()}"
        elif m.endpoint.name == "negotiation-offer-new":  # a counter-offer of no negotiation
            b.pop("callbackAddress", None)
            b["consumerPid"] = f"urn:uuid:{uuid.uuid4()}"
        else:
            b["filter"] = [{"unknown": True}]
    elif how == "huge-pid":
        b[key] = "urn:uuid:" + "x" * 1_000_000
    elif how == "long-pid":
        b[key] = "urn:" + "a" * 300
    elif how == "path-unsafe-pid":
        b[key] = ("urn:a/b", "urn:a?b", "urn:a#b", "urn:a b", "urn:{a}", "..", "urn:a%2Fb")[pick % 7]
    elif how == "huge-id":
        huge = "urn:x:" + "y" * 10_000
        if isinstance(b.get("offer"), dict):
            b["offer"] = {**b["offer"], ("@id", "target")[pick % 2]: huge}
        elif isinstance(b.get("agreement"), dict):
            b["agreement"] = {**b["agreement"], "@id": huge}
        elif "agreementId" in b:
            b["agreementId"] = huge
        else:
            b[key] = huge
    elif how == "not-json":
        raw = (b"not json", b"<xml/>", b"{'a': 1}", b"@context")[pick % 4]
    elif how == "truncated-json":
        text = json.dumps(b).encode()
        raw = text[: 1 + pick % (len(text) - 1)]
    elif how == "bad-utf8":
        raw = b'{"@type": "\xff\xfe\xfa"}'
    elif how == "empty-body":
        raw = b""
    elif how == "array-body":
        raw = json.dumps([b, b][: 1 + pick % 2]).encode()
    elif how == "scalar-body":
        raw = (b"null", b"12", b'"text"', b"true", b"NaN", b"-Infinity", b"1e999")[pick % 7]
    elif how == "nan-in-field":
        text = json.dumps({**b, key: "__NAN__"}).encode()
        raw = text.replace(b'"__NAN__"', (b"NaN", b"Infinity", b"-Infinity", b"1e999")[pick % 4])
    elif how == "nested-in-field":
        text = json.dumps({**b, key: "__DEEP__"}).encode()
        raw = text.replace(b'"__DEEP__"', _deep(50 + pick % 400))
    elif how == "no-context":
        b["@context"] = ("https://w3id.org/dspace/2025/1/context.jsonld", [], ["urn:other"])[pick % 3]
    elif how == "two-authorizations":
        pair = [("Authorization", "Bearer {DAT}"), ("Authorization", "Bearer garbage")]
        headers = pair if pick % 2 else pair[::-1]
    else:
        raise ValueError(f"no malformation {how!r}")
    return Message(m.endpoint, b, m.mode, pick, path, raw, headers, how)
