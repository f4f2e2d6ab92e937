"""The request limits against real processes on loopback: an authority and two connectors
(provider, consumer) over TLS, every one configured with short timeouts (``[limits]``).

- hostile bodies, headers and query parameters: a 4xx with a reason (the DSP ones with the DSP
  error body of their area), nothing stored;
- slow clients on every listening port (DSP with its push endpoint, management, data plane,
  authority): connections that send nothing, send their headers a byte at a time or idle after a
  request are closed by the server while normal clients are served; bodies that do not arrive
  get 408;
- SIGTERM with long waits, a stream, slow clients and slow bodies in flight: every process
  exits within its shutdown grace (a generous bound: a hang detector), its state as it was.

The shutdown test ends the processes: it runs last.
"""

from __future__ import annotations

import asyncio
import copy
import json
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from dataspace_testlib import Connector, DataSpace, negotiate, offer_asset
from dsp_schema import EXAMPLES, assert_valid
from limits_testlib import (
    closed_by_server,
    connector_with_limits,
    open_raw,
    raw_request,
    restart_authority_with_limits,
)

from connector.http.tls import client_context
from connector.identity.client import DatClient, ParticipantIdentity
from connector.store import Store

pytestmark = pytest.mark.integration

GRACE = 3
LIMITS = {"header_timeout": 1, "idle_timeout": 2, "body_timeout": 2, "shutdown_grace": GRACE}
GIVE_UP = 30  # seconds: far beyond every timeout above, a hang detector
SLOW_CLIENTS = 6  # of each kind, per port
DEEP = b"[" * 10_000 + b"]" * 10_000
PID = "urn:uuid:7b1b7c5e-0000-4000-8000-000000000000"
NEG_ERROR, XFER_ERROR = "contract-negotiation-error-schema", "transfer-error-schema"
DSP_POSTS = [
    ("/catalog/request", "catalog-error-schema"),
    ("/negotiations/request", NEG_ERROR),
    ("/negotiations/offers", NEG_ERROR),
    *(
        (f"/negotiations/{PID}/{m}", NEG_ERROR)
        for m in ("request", "offers", "events", "agreement", "agreement/verification", "termination")
    ),
    ("/transfers/request", XFER_ERROR),
    *((f"/transfers/{PID}/{m}", XFER_ERROR) for m in ("start", "completion", "termination", "suspension")),
    (f"/transfers/{PID}/token", None),  # not DSP: the pull's token refresh
    ("/notices", None),  # not DSP: deletion notices
]
# management POSTs that read no body: they answer on the id alone
NO_BODY = {"/api/negotiations/{id}/accept", "/api/transfers/{id}/refresh"}
CONTENT = b"0123456789abcdef" * (2 * 1024 * 1024)  # 32 MiB: a stream that fills every buffer


@dataclass
class Port:
    port: int
    tls: ssl.SSLContext | None
    normal: bytes  # a request any client may make (HTTP/1.1, Connection: close)


@dataclass
class Space:
    ds: DataSpace
    provider: Connector
    consumer: Connector
    token: str  # the consumer's DAT: DSP calls to the provider come from the consumer
    dsp_tls: ssl.SSLContext  # the consumer's TLS client certificate (the DAT is bound to it)
    ports: dict[str, Port]


def get(path: str, headers: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Connection: close\r\n\r\n".encode()


def dat(c: Connector, authority_url: str) -> str:
    async def token() -> str:
        async with aiohttp.ClientSession() as http:
            client = await DatClient.discover(http, authority_url, ParticipantIdentity.load(c.directory))
            return await client.token()

    return asyncio.run(token())


@pytest.fixture(scope="module")
def space(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Space]:
    ds = DataSpace(tmp_path_factory.mktemp("limits"), tls=True)
    try:
        restart_authority_with_limits(ds, **LIMITS)
        p = connector_with_limits(ds, "lprov", roles=("provider",), **LIMITS)
        c = connector_with_limits(ds, "lcons", roles=("consumer",), **LIMITS)
        d = p.directory
        ports = {
            "dsp": Port(
                p.dsp_port,
                client_context(d / "ca.crt", d / "tls.crt", d / "tls.key"),
                get("/.well-known/dspace-version"),
            ),
            "management": Port(p.mgmt_port, None, get("/api/assets", f"X-Api-Key: {p.api_key}\r\n")),
            "dataplane": Port(p.data_port, client_context(d / "ca.crt"), get("/keys")),
            "authority": Port(ds.authority.port, None, get("/health")),
        }
        cd = c.directory
        yield Space(
            ds,
            p,
            c,
            dat(c, ds.authority.url),
            client_context(cd / "ca.crt", cd / "tls.crt", cd / "tls.key"),
            ports,
        )
    finally:
        ds.close()


def dsp(space: Space, path: str, body: bytes | AsyncIterator[bytes]) -> tuple[int, Any]:
    async def go() -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
            http.post(
                space.provider.dsp_url + path,
                data=body,
                ssl=space.dsp_tls,
                headers={"Authorization": f"Bearer {space.token}", "Content-Type": "application/json"},
            ) as r,
        ):
            return r.status, await r.json(content_type=None)

    return asyncio.run(go())


def api(c: Connector, path: str, body: bytes | AsyncIterator[bytes]) -> tuple[int, Any]:
    async def go() -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
            http.post(
                c.api_url + path,
                data=body,
                headers={"X-Api-Key": c.api_key, "Content-Type": "application/json"},
            ) as r,
        ):
            return r.status, await r.json(content_type=None)

    return asyncio.run(go())


def reason_of(body: Any) -> str:
    return " ".join(body["reason"]) if "reason" in body else body["error"]


def example(area: str, name: str, space: Space) -> dict[str, Any]:
    body = json.loads((EXAMPLES / area / f"{name}.json").read_text())
    if "callbackAddress" in body:
        body["callbackAddress"] = space.consumer.dsp_url
    return body


def with_constraint(message: dict[str, Any], constraint: Any) -> dict[str, Any]:
    message = copy.deepcopy(message)
    message["offer"]["permission"] = [{"action": "use", "constraint": [constraint]}]
    return message


def nested_and(levels: int) -> dict[str, Any]:
    c: dict[str, Any] = {"leftOperand": "count", "operator": "lteq", "rightOperand": 5}
    for _ in range(levels):
        c = {"and": [c]}
    return c


def counts(c: Connector) -> dict[str, int]:
    out = {}
    for what in ("assets", "policies", "offers", "negotiations", "agreements", "transfers"):
        status, rows = c.api("GET", f"/api/{what}?limit=500")
        assert status == 200, rows
        out[what] = len(rows)
    return out


# ------------------------------------------------------------------ JSON bodies


@pytest.mark.parametrize(("path", "schema"), DSP_POSTS)
def test_json_nested_10000_deep_on_every_dsp_post_is_a_400_with_the_dsp_error_body(
    space: Space, path: str, schema: str | None
) -> None:
    status, body = dsp(space, path, DEEP)
    assert status == 400, body
    assert "limits.json_depth" in reason_of(body)
    if schema is not None:
        assert_valid(body, schema)


def test_json_nested_10000_deep_on_every_management_post_is_a_4xx_with_a_reason(space: Space) -> None:
    target = space.provider
    status, doc = target.api("GET", "/api/openapi.json")
    assert status == 200
    posts = [p for p, ops in doc["paths"].items() if "post" in ops]
    assert len(posts) >= 15, posts
    before = counts(target)
    for path in posts:
        status, body = api(target, path.replace("{id}", PID), DEEP)
        assert 400 <= status < 500 and body.get("error"), (path, status, body)
        if path not in NO_BODY:
            assert status == 400 and "limits.json_depth" in body["error"], (path, body)
    assert counts(target) == before


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999"])
def test_a_non_finite_number_in_a_policy_is_refused_and_nothing_is_stored(
    space: Space, number: bytes
) -> None:
    target = space.provider
    before = counts(target)
    policy = (
        b'{"policy": {"permission": [{"action": "use", "constraint": [{"leftOperand": '
        b'"count", "operator": "lteq", "rightOperand": ' + number + b"}]}]}}"
    )
    status, body = api(target, "/api/policies", policy)
    assert status == 400 and "finite" in body["error"], body
    request = with_constraint(
        example("negotiation", "contract-request-message_initial", space),
        {"leftOperand": "count", "operator": "lteq", "rightOperand": 12345},
    )
    status, body = dsp(space, "/negotiations/request", json.dumps(request).encode().replace(b"12345", number))
    assert status == 400 and "finite" in reason_of(body), body
    assert_valid(body, NEG_ERROR)
    assert counts(target) == before


def test_a_policy_with_and_nested_400_deep_is_refused_naming_the_limit(space: Space) -> None:
    target = space.provider
    before = counts(target)
    deep = {"policy": {"permission": [{"action": "use", "constraint": [nested_and(400)]}]}}
    status, body = target.api("POST", "/api/policies", deep)
    assert status == 400 and "limits.json_depth" in body["error"], body
    message = with_constraint(
        example("negotiation", "contract-request-message_initial", space), nested_and(400)
    )
    status, body = dsp(space, "/negotiations/request", json.dumps(message).encode())
    assert status == 400 and "limits.json_depth" in reason_of(body), body
    assert_valid(body, NEG_ERROR)
    assert counts(target) == before
    # the deepest nesting within the limit is an ordinary policy
    ok = {"policy": {"permission": [{"action": "use", "constraint": [nested_and(29)]}]}}
    status, body = target.api("POST", "/api/policies", ok)
    assert status == 201, body


# ------------------------------------------------------------------ sizes


async def chunks(total: int) -> AsyncIterator[bytes]:
    """A body without Content-Length (chunked), larger than any limit."""
    piece = b"[" + b"0," * 32_767 + b"0]"
    sent = 0
    while sent < total:
        yield piece
        sent += len(piece)


def test_oversized_bodies_are_413(space: Space) -> None:
    target = space.provider
    before = counts(target)
    big = b'{"id": "urn:asset:big", "title": "' + b"a" * (4 * 1024 * 1024) + b'"}'
    for body in (big, chunks(5 * 1024 * 1024)):
        status, answer = api(target, "/api/assets", body)
        assert status == 413 and "limits.management_body_bytes" in answer["error"], answer
    for body in (big[: 2 * 1024 * 1024 + 10], chunks(3 * 1024 * 1024)):
        status, answer = dsp(space, "/negotiations/request", body)
        assert status == 413 and "limits.dsp_body_bytes" in reason_of(answer), answer
        assert_valid(answer, NEG_ERROR)
    assert counts(target) == before


@pytest.mark.parametrize(
    "headers",
    [
        b"X-Filler: " + b"a" * 9000 + b"\r\n",
        b"".join(b"X-Filler-%d: 1\r\n" % i for i in range(101)),
    ],
    ids=["one-long-header", "101-headers"],
)
def test_oversized_headers_are_refused_on_every_port(space: Space, headers: bytes) -> None:
    for p in space.ports.values():
        request = p.normal.replace(b"Connection: close\r\n", headers + b"Connection: close\r\n")
        status, body = asyncio.run(raw_request(p.port, request, p.tls))
        assert status in (400, 431) and body, body  # with the reason


# ------------------------------------------------------------------ numeric query parameters


@pytest.mark.parametrize("value", ["abc", "nan", "NaN", "inf", "-inf", "-1", "1e3", "61", "0x1"])
def test_a_negotiation_wait_with_a_bad_timeout_is_a_400(space: Space, value: str) -> None:
    status, body = space.consumer.api(
        "GET", f"/api/negotiations/{PID}?waitFor=FINALIZED&timeout={value}", timeout=15
    )
    assert status == 400 and "timeout" in json.dumps(body), body


def test_bad_numbers_in_other_query_parameters_are_400(space: Space) -> None:
    consumer = space.consumer
    for query in ("wait=nan", "wait=abc", "wait=-1", "wait=31", "wait=1&wait=2"):
        status, body = consumer.api("GET", f"/api/transfers/{PID}/pull?{query}", timeout=15)
        assert status == 400 and "wait" in json.dumps(body), (query, body)
    for query in (
        "limit=abc",
        "limit=nan",
        "limit=0",
        "limit=501",
        "limit=1e2",
        "offset=-1",
        "offset=abc",
        "limit=5&limit=6",
    ):
        status, body = consumer.api("GET", f"/api/assets?{query}")
        assert status == 400 and query.split("=")[0] in json.dumps(body), (query, body)
    catalog = json.dumps(example("catalog", "catalog-request-message", space)).encode()
    for value in ("nan", "abc", "0", "10001", "-5", "1.5"):
        status, body = dsp(space, f"/catalog/request?pageSize={value}", catalog)
        assert status == 400 and "pageSize" in reason_of(body), (value, body)
        assert_valid(body, "catalog-error-schema")
    status, body = dsp(space, "/catalog/request?pageSize=10", catalog)
    assert status == 200, body


# ------------------------------------------------------------------ slow clients


PARTIAL_HEADERS = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"s" * 200


async def slow_clients(p: Port, n: int = SLOW_CLIENTS) -> list[Any]:
    """Connections that never complete a request, each kept as long as the server lets it."""
    keeps = []
    for _ in range(n):
        # connects and sends nothing (over TLS: not even a handshake)
        keeps.append(closed_by_server(*await open_raw(p.port), give_up=GIVE_UP))
        # sends its headers a byte at a time
        keeps.append(
            closed_by_server(*await open_raw(p.port, p.tls), trickle=PARTIAL_HEADERS, give_up=GIVE_UP)
        )
        # completes one request, keeps the connection and idles
        reader, writer = await open_raw(p.port, p.tls)
        writer.write(p.normal.replace(b"Connection: close", b"Connection: keep-alive"))
        keeps.append(closed_by_server(reader, writer, give_up=GIVE_UP))
        if p.tls is not None:  # completes the handshake, then sends nothing
            keeps.append(closed_by_server(*await open_raw(p.port, p.tls), give_up=GIVE_UP))
    return keeps


@pytest.mark.parametrize("name", ["dsp", "management", "dataplane", "authority"])
def test_slow_and_idle_connections_are_closed_while_other_clients_are_served(space: Space, name: str) -> None:
    p = space.ports[name]

    async def go() -> tuple[list[bool], list[int]]:
        slow = asyncio.gather(*await slow_clients(p))
        served = [(await raw_request(p.port, p.normal, p.tls))[0] for _ in range(5)]
        return list(await slow), served

    closed, served = asyncio.run(go())
    assert served == [200] * 5
    assert all(closed), f"{closed.count(False)} of {len(closed)} slow connections still open"


def partial_post(path: str, headers: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: 1000\r\n{headers}Connection: close\r\n\r\n"
    ).encode() + b'{"a": '


def admin_token(space: Space) -> str:
    return (space.ds.authority.directory / "admin.token").read_text().strip()


def test_bodies_that_do_not_arrive_in_time_get_408(space: Space) -> None:
    p = space.provider

    async def go() -> list[tuple[int, bytes]]:
        return list(
            await asyncio.gather(
                raw_request(p.mgmt_port, partial_post("/api/assets", f"X-Api-Key: {p.api_key}\r\n")),
                raw_request(
                    p.dsp_port,
                    partial_post("/catalog/request", f"Authorization: Bearer {space.token}\r\n"),
                    space.dsp_tls,
                ),
                raw_request(
                    space.ds.authority.port,
                    partial_post("/admin/revocations", f"Authorization: Bearer {admin_token(space)}\r\n"),
                ),
            )
        )

    (mgmt, mgmt_body), (dsp_status, dsp_body), (auth, auth_body) = asyncio.run(go())
    assert mgmt == 408 and "limits.body_timeout" in json.loads(mgmt_body)["error"]
    assert dsp_status == 408 and "limits.body_timeout" in json.loads(dsp_body)["reason"][0]
    assert_valid(json.loads(dsp_body), "catalog-error-schema")
    assert auth == 408 and "limits.body_timeout" in json.loads(auth_body)["error_description"]


# ------------------------------------------------------------------ shutdown (runs last)


def states(c: Connector) -> dict[str, dict[str, str]]:
    out = {}
    for what in ("negotiations", "transfers"):
        status, rows = c.api("GET", f"/api/{what}?limit=500")
        assert status == 200, rows
        out[what] = {r["id"]: r["internalState"] for r in rows}
    return out


def stored_states(c: Connector) -> dict[str, dict[str, str]]:
    async def read() -> dict[str, dict[str, str]]:
        store = await Store.open(f"sqlite:///{c.directory / 'connector.db'}")
        try:
            async with store.transaction(readonly=True) as tx:
                return {
                    "negotiations": {r.id: r.state for r in await tx.negotiations.list(limit=None)},
                    "transfers": {r.id: r.state for r in await tx.transfers.list(limit=None)},
                }
        finally:
            await store.close()

    return asyncio.run(read())


def test_sigterm_ends_every_process_within_the_grace_whatever_is_in_flight(space: Space) -> None:
    p, c = space.provider, space.consumer
    offer = offer_asset(
        p,
        asset_id="urn:asset:limits-stream",
        content=CONTENT,
        contract={"template": "allow-usage", "params": {}},
    )
    n = negotiate(c, p, offer)
    assert n["state"] == "FINALIZED", n
    status, t = c.api("POST", "/api/transfers", {"agreementId": n["agreementId"]})
    assert status == 201, t
    for _ in range(200):
        status, t = c.api("GET", f"/api/transfers/{t['id']}")
        if t["state"] == "STARTED":
            break
        asyncio.run(asyncio.sleep(0.1))
    assert t["state"] == "STARTED", t
    provider_nid = next(iter(states(p)["negotiations"]))
    before = {"provider": states(p), "consumer": states(c)}
    processes = {"provider": p.proc, "consumer": c.proc, "authority": space.ds.authority.proc}
    assert all(proc is not None and proc.poll() is None for proc in processes.values())
    key = "X-Api-Key: {}\r\n"

    async def in_flight_then_sigterm() -> dict[str, int | None]:
        work: list[Any] = []
        # long waits: a FINALIZED negotiation never becomes TERMINATED
        for conn, nid in ((c, n["id"]), (p, provider_nid)):
            for _ in range(3):
                work.append(
                    raw_request(
                        conn.mgmt_port,
                        get(
                            f"/api/negotiations/{nid}?waitFor=TERMINATED&timeout=60", key.format(conn.api_key)
                        ),
                    )
                )
        # a stream the client does not read
        reader, writer = await open_raw(p.data_port, space.ports["dataplane"].tls)
        path = t["endpoint"].split(str(p.data_port), 1)[1]
        writer.write(get(path, f"Authorization: Bearer {t['endpointProperties']['authorization']}\r\n"))
        assert (await reader.readexactly(12)).startswith(b"HTTP/1.1 200")
        # slow bodies, trickled so that they stay within the body timeout's reach
        body = b'{"reason": "' + b" " * 200
        for port, request, tls in (
            (c.mgmt_port, partial_post(f"/api/transfers/{t['id']}/suspend", key.format(c.api_key)), None),
            (
                space.ds.authority.port,
                partial_post("/admin/revocations", f"Authorization: Bearer {admin_token(space)}\r\n"),
                None,
            ),
        ):
            r, w = await open_raw(port, tls)
            w.write(request)
            work.append(closed_by_server(r, w, trickle=body, every=0.05, give_up=GIVE_UP))
        # slow clients on every port
        for port in space.ports.values():
            work.extend(await slow_clients(port, 2))
        running = asyncio.gather(*work, return_exceptions=True)
        await asyncio.sleep(0.3)
        for proc in processes.values():
            proc.send_signal(signal.SIGTERM)

        def exit_code(proc: subprocess.Popen[bytes]) -> int | None:
            try:
                return proc.wait(GRACE + 5)
            except subprocess.TimeoutExpired:
                return None

        codes = await asyncio.gather(*(asyncio.to_thread(exit_code, proc) for proc in processes.values()))
        writer.close()
        running.cancel()
        return dict(zip(processes, codes, strict=True))

    try:
        codes = asyncio.run(in_flight_then_sigterm())
    finally:
        for proc in processes.values():  # nothing left running whatever happened
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert None not in codes.values(), f"still running after SIGTERM + {GRACE + 5} s: {codes}"
    # every change is one transaction: the state is what it was before the signal
    assert stored_states(p) == before["provider"]
    assert stored_states(c) == before["consumer"]
