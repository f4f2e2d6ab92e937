"""HttpData-PUSH: the provider's push client against the consumer's receiver, on loopback sockets."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import socket
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from dataplane_testlib import PROVIDER, FakeClock

from connector.assets import DataRoots
from connector.dataplane.modified import REFUSED, ModifiedSource
from connector.dataplane.push import PushResult, push
from connector.dataplane.receipts import Coverage, ReceiptChain, ReceiptError, ReceiptVerifier
from connector.dataplane.receiver import RESPONSES, PushTarget, new_push_secret, push_receiver
from connector.dataplane.sources import FileSource, SourceResponse, error_response
from connector.http.outbound import OutboundPolicy
from connector.identity.jose import VerificationKey
from connector.identity.keys import SigningKey
from connector.usage.modify import REFUSED_AT_REST, Drop, Modification, Replace, Selector

LOOPBACK_OK = OutboundPolicy.from_config(["127.0.0.1/32"])
PROVIDER_PID = "urn:uuid:provider-process-1"  # the chain is the provider's: its transfer id
CONSUMER_PID = "consumer-process-1"  # the receiver's path segment: the consumer's transfer id
AGREEMENT = "urn:agreement:1"


def file_source(path: Path, *args: Any, **kwargs: Any) -> FileSource:
    """A file source confined to the file's own folder (its data root)."""
    return FileSource(path, *args, roots=DataRoots.build([path.parent]), **kwargs)


async def allowed() -> str | None:
    return None


async def wait_until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


class LoopbackServer:
    """An app on a loopback port; `handler_cancellation` as aiohttp's runner takes it (False, the
    production default: a handler whose client went away sees its reads fail; True, as aiohttp's
    TestServer runs: the handler is cancelled)."""

    def __init__(self, app: web.Application, *, handler_cancellation: bool = False) -> None:
        self.runner = web.AppRunner(app, handler_cancellation=handler_cancellation)
        self.port = 0

    async def start(self) -> None:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.port = self.runner.addresses[0][1]

    async def close(self) -> None:
        await self.runner.cleanup()

    def make_url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


class Consumer:
    """A running receiver mounted at /push, with the consumer's receipt verification."""

    def __init__(
        self,
        root: Path,
        provider_key: SigningKey,
        *,
        max_bytes: int | None = None,
        refuse: str | None = None,
        handler_cancellation: bool = False,
    ) -> None:
        self.secret, digest = new_push_secret()
        self.target = PushTarget(CONSUMER_PID, digest, root / "inbox" / "data.bin")
        self.key = VerificationKey(kid=provider_key.kid, alg=provider_key.alg, key=provider_key.public_key)
        self.refuse = refuse
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.done = 0
        self.coverage: list[Coverage] = []
        self.sub = push_receiver(self.resolve, self.on_receipts, max_bytes=max_bytes)

        @web.middleware
        async def record(request: web.Request, handler: Any) -> web.StreamResponse:
            self.requests.append((request.method, request.path, dict(request.headers)))
            try:
                return await handler(request)  # type: ignore[no-any-return]
            finally:
                self.done += 1

        self.root = web.Application(middlewares=[record])
        self.root.add_subapp("/push", self.sub)
        self.server = LoopbackServer(self.root, handler_cancellation=handler_cancellation)

    async def resolve(self, transfer_id: str) -> PushTarget | None:
        return self.target if transfer_id == CONSUMER_PID else None

    async def on_receipts(
        self,
        target: PushTarget,
        receipts: list[str],
        responses: list[tuple[int, int, bytes]],
        failed: list[tuple[int, int, bytes]],
    ) -> str | None:
        if self.refuse is not None:
            return self.refuse
        v = ReceiptVerifier(self.key, transfer_id=PROVIDER_PID, agreement_id=AGREEMENT, issuer=PROVIDER)
        import jwt

        try:
            named = jwt.decode(receipts[0], options={"verify_signature": False}).get("chain", "")
        except (jwt.PyJWTError, IndexError):
            named = ""  # the verifier says what is wrong with it
        for seq, nbytes, digest in [*responses, *failed]:
            v.add(seq, nbytes, digest, named)
        try:
            self.coverage.append(v.verify(receipts))
        except ReceiptError as exc:
            return str(exc)
        return None

    @property
    def url(self) -> str:
        return self.server.make_url(f"/push/{CONSUMER_PID}")

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret}"}

    @property
    def recorded(self) -> dict[int, tuple[int, bytes]]:
        """The responses of the unnamed chain, by seq."""
        got = self.sub[RESPONSES].get(CONSUMER_PID, {})
        return {seq: v for (chain, seq), v in got.items() if chain == ""}

    async def idle(self) -> None:
        await wait_until(lambda: self.done == len(self.requests))


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate("EdDSA")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def chain(key: SigningKey) -> ReceiptChain:
    return ReceiptChain(PROVIDER_PID, AGREEMENT, key, PROVIDER, interval=3600)


@pytest.fixture(params=[False, True], ids=["reads-fail", "handler-cancelled"])
def handler_cancellation(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
async def consumer(tmp_path: Path, key: SigningKey) -> AsyncIterator[Consumer]:
    c = Consumer(tmp_path, key)
    await c.server.start()
    try:
        yield c
    finally:
        await c.server.close()


@pytest.fixture
async def consumer_either(
    tmp_path: Path, key: SigningKey, handler_cancellation: bool
) -> AsyncIterator[Consumer]:
    """A consumer under both of aiohttp's ways of treating a handler whose client went away."""
    c = Consumer(tmp_path, key, handler_cancellation=handler_cancellation)
    await c.server.start()
    try:
        yield c
    finally:
        await c.server.close()


async def run_push(
    source: Any, consumer: Consumer, chain: ReceiptChain, clock: FakeClock, **kw: Any
) -> PushResult:
    args: dict[str, Any] = {
        "destination": consumer.url,
        "authorization": f"Bearer {consumer.secret}",
        "policy": LOOPBACK_OK,
        "chain": chain,
        "still_allowed": allowed,
        "clock": clock,
        **kw,
    }
    return await push(source, **args)


def write_random(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


class MemorySource:
    """Chunks from memory; `length` is what it announces (None: no Content-Length)."""

    def __init__(self, chunks: list[bytes], length: int | None = -1) -> None:
        self.chunks = chunks
        self.length = sum(map(len, chunks)) if length == -1 else length
        self.opened = 0

    async def open(self, range_header: str | None = None) -> SourceResponse:
        self.opened += 1
        headers = {} if self.length is None else {"Content-Length": str(self.length)}

        async def gen() -> AsyncIterator[bytes]:
            for c in self.chunks:
                await asyncio.sleep(0)
                yield c

        return SourceResponse(200, headers, gen())


class RepeatSource:
    """`count` times the same block: a large body that costs no memory."""

    def __init__(self, block: bytes, count: int) -> None:
        self.block, self.count = block, count

    async def open(self, range_header: str | None = None) -> SourceResponse:
        async def gen() -> AsyncIterator[bytes]:
            for _ in range(self.count):
                yield self.block

        return SourceResponse(200, {"Content-Length": str(len(self.block) * self.count)}, gen())


class ErrorSource:
    def __init__(self) -> None:
        self.opened = 0

    async def open(self, range_header: str | None = None) -> SourceResponse:
        self.opened += 1
        return error_response(404, "the data is not available")


async def start_app(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> TestServer:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


# --- push -> receiver ---------------------------------------------------------------------


async def test_push_file_delivers_and_receipts_verify(
    tmp_path: Path, consumer: Consumer, chain: ReceiptChain, clock: FakeClock
) -> None:
    data = write_random(tmp_path / "src.bin", 3 * 1024 * 1024 + 17)
    r = await run_push(file_source(tmp_path / "src.bin"), consumer, chain, clock, content_type="text/csv")
    assert r.ok, r.reason
    assert (r.status, r.bytes, r.sha256, r.seq, r.reason) == (
        200,
        len(data),
        hashlib.sha256(data).hexdigest(),
        1,
        "",
    )
    assert consumer.target.path.read_bytes() == data
    assert leftovers(consumer.target.path.parent) == ["data.bin"]  # no temp file left behind
    assert consumer.recorded == {1: (len(data), hashlib.sha256(data).digest())}
    assert r.receipts == chain.receipts and len(r.receipts) == 1
    assert consumer.coverage == [Coverage(seq_to=1, bytes=len(data), receipts=1)]
    (m1, p1, h1), (m2, p2, h2) = consumer.requests
    assert (m1, p1, m2, p2) == ("PUT", f"/push/{CONSUMER_PID}", "POST", f"/push/{CONSUMER_PID}/receipts")
    assert h1["Content-Length"] == str(len(data)) and h1["Content-Type"] == "text/csv"
    assert h1["X-Receipt-Seq"] == "1" and h1["Authorization"] == f"Bearer {consumer.secret}"
    assert h2["Authorization"] == f"Bearer {consumer.secret}" and "Cookie" not in h2

    # a second push in the same transfer: the chain continues, the receipts cover both
    clock.advance(5)
    data2 = write_random(tmp_path / "src.bin", 1000)
    r2 = await run_push(file_source(tmp_path / "src.bin"), consumer, chain, clock)
    assert r2.ok and r2.seq == 2 and len(r2.receipts) == 2
    assert consumer.target.path.read_bytes() == data2
    assert consumer.coverage[-1] == Coverage(seq_to=2, bytes=len(data) + len(data2), receipts=2)


async def test_push_without_content_length_is_chunked(
    consumer: Consumer, chain: ReceiptChain, clock: FakeClock
) -> None:
    chunks = [os.urandom(n) for n in (1, 70_000, 0, 300_000, 5)]
    r = await run_push(MemorySource(chunks, length=None), consumer, chain, clock)
    assert r.ok, r.reason
    data = b"".join(chunks)
    assert consumer.target.path.read_bytes() == data and r.bytes == len(data)
    headers = consumer.requests[0][2]
    assert headers.get("Transfer-Encoding") == "chunked" and "Content-Length" not in headers
    assert consumer.coverage[0].bytes == len(data)


async def test_push_64_mib_in_bounded_memory(
    tmp_path: Path, consumer: Consumer, chain: ReceiptChain, clock: FakeClock
) -> None:
    path = tmp_path / "big.bin"
    size = 64 * 1024 * 1024
    h = hashlib.sha256()
    with path.open("wb") as f:
        block = os.urandom(1024 * 1024)
        for i in range(64):
            chunk = block[i:] + block[:i]
            h.update(chunk)
            f.write(chunk)
    tracemalloc.start()
    try:
        r = await run_push(file_source(path), consumer, chain, clock)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"64 MiB pushed: tracemalloc peak {peak / 2**20:.2f} MiB (sender and receiver)")
    assert r.ok, r.reason
    assert r.bytes == size and r.sha256 == h.hexdigest()
    assert consumer.recorded == {1: (size, h.digest())}
    assert consumer.coverage[0].bytes == size
    assert peak < 6 * 1024 * 1024


# --- SSRF, redirects ----------------------------------------------------------------------


async def test_loopback_destination_refused_without_allow_list(
    consumer: Consumer, chain: ReceiptChain, clock: FakeClock
) -> None:
    src = MemorySource([b"x"])
    r = await run_push(src, consumer, chain, clock, policy=OutboundPolicy())
    assert not r.ok and r.status is None and r.reason.startswith("destination refused")
    assert "loopback" in r.reason
    assert consumer.requests == [] and src.opened == 0
    assert (r.seq, r.bytes, chain.next_seq, r.receipts) == (0, 0, 1, [])


@pytest.mark.parametrize(
    "destination",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/x",
        "http://10.0.0.7/x",
        "http://[::ffff:127.0.0.1]/x",
        "file:///etc/passwd",
        "http://user:pw@example.org/x",
    ],
)
async def test_internal_destinations_refused(destination: str, chain: ReceiptChain, clock: FakeClock) -> None:
    src = MemorySource([b"x"])
    r = await push(
        src,
        destination=destination,
        authorization="Bearer s",
        policy=LOOPBACK_OK,
        chain=chain,
        still_allowed=allowed,
        clock=clock,
    )
    assert not r.ok and r.reason.startswith("destination refused") and src.opened == 0
    if "169.254" in destination:
        assert "link-local" in r.reason


async def test_names_are_checked_and_pinned(
    consumer: Consumer, chain: ReceiptChain, clock: FakeClock
) -> None:
    lookups: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"] if len(lookups) == 1 else ["203.0.113.9"]  # a rebinding attempt

    port = consumer.server.port
    destination = f"http://consumer.test:{port}/push/{CONSUMER_PID}"
    r = await run_push(
        MemorySource([b"data"]),
        consumer,
        chain,
        clock,
        destination=destination,
        policy=OutboundPolicy(),
        resolve=resolve,
    )
    assert not r.ok and "consumer.test resolves to 127.0.0.1, a loopback address" in r.reason
    assert consumer.requests == []
    lookups.clear()
    r = await run_push(
        MemorySource([b"data"]),
        consumer,
        chain,
        clock,
        destination=destination,
        policy=OutboundPolicy.from_config(["consumer.test"]),
        resolve=resolve,
    )
    assert r.ok, r.reason
    assert lookups == ["consumer.test"]  # checked once; the PUT and the receipts went to the pinned address
    assert [m for m, _, _ in consumer.requests] == ["PUT", "POST"]


async def test_redirect_not_followed(consumer: Consumer, chain: ReceiptChain, clock: FakeClock) -> None:
    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(consumer.url)

    server = await start_app(redirect)
    try:
        r = await run_push(
            MemorySource([b"secret data"]), consumer, chain, clock, destination=str(server.make_url("/in/1"))
        )
    finally:
        await server.close()
    assert not r.ok and r.status == 302
    assert r.reason == "the destination redirected; redirects are not followed"
    assert consumer.requests == []
    assert chain.chained_to == r.seq == 1


# --- aborts and failures ------------------------------------------------------------------


@pytest.mark.parametrize("announce", [True, False])
async def test_still_allowed_cuts_the_upload_off(
    tmp_path: Path, consumer_either: Consumer, chain: ReceiptChain, clock: FakeClock, announce: bool
) -> None:
    consumer = consumer_either
    data = write_random(tmp_path / "src.bin", 4 * 1024 * 1024)
    calls = 0

    async def still_allowed() -> str | None:
        nonlocal calls
        calls += 1
        if calls == 1:
            return None
        # the receiver is busy with the body (a temp file exists) when the transfer is suspended
        await wait_until(lambda: bool(leftovers(consumer.target.path.parent)))
        return "the transfer is SUSPENDED"

    chunk = 64 * 1024
    source: Any = file_source(tmp_path / "src.bin", chunk_size=chunk)
    if not announce:  # the chunked case: the destination must not see a complete body either
        source = MemorySource([data[i : i + chunk] for i in range(0, len(data), chunk)], length=None)
    r = await run_push(source, consumer, chain, clock, still_allowed=still_allowed)
    assert not r.ok and r.reason == "the transfer is SUSPENDED"
    assert r.bytes == chunk and r.sha256 == hashlib.sha256(data[:chunk]).hexdigest()
    assert chain.chained_to == r.seq == 1 and r.receipts == chain.receipts and len(r.receipts) == 1
    await consumer.idle()
    assert [m for m, _, _ in consumer.requests] == ["PUT"]  # and no receipts after an abort
    await wait_until(lambda: not leftovers(consumer.target.path.parent))  # the temp file went
    assert not consumer.target.path.exists()
    assert consumer.recorded == {}
    # resumed: the next push declares the response that broke off, so the consumer can follow
    # the chain over it (without it, the receipts cannot be verified)
    again = await run_push(file_source(tmp_path / "src.bin", chunk_size=chunk), consumer, chain, clock)
    assert not again.ok and "refused the receipts" in again.reason and "not received" in again.reason
    third = await run_push(
        file_source(tmp_path / "src.bin", chunk_size=chunk),
        consumer,
        chain,
        clock,
        failed=[(r.seq, r.bytes, r.sha256)],
    )
    assert third.ok, third.reason
    assert consumer.target.path.read_bytes() == data and consumer.coverage[-1].seq_to == 3


async def test_destination_error_status(consumer: Consumer, chain: ReceiptChain, clock: FakeClock) -> None:
    posts = 0

    async def failing(request: web.Request) -> web.StreamResponse:
        nonlocal posts
        if request.method == "POST":
            posts += 1
        await request.read()
        return web.Response(status=500, text="boom:\n   disk full " + "x" * 500)

    server = await start_app(failing)
    try:
        r = await run_push(
            MemorySource([b"a" * 1000]), consumer, chain, clock, destination=str(server.make_url("/in/1"))
        )
    finally:
        await server.close()
    assert not r.ok and r.status == 500
    assert r.reason.startswith("the destination refused the data: 500 boom: disk full xxx")
    assert len(r.reason) <= len("the destination refused the data: 500 ") + 200
    assert posts == 0 and chain.chained_to == 1 and r.bytes == 1000


async def test_receipts_refused(
    tmp_path: Path, key: SigningKey, chain: ReceiptChain, clock: FakeClock
) -> None:
    c = Consumer(tmp_path, key, refuse="chain head mismatch at response 1")
    await c.server.start()
    try:
        r = await run_push(MemorySource([b"payload"]), c, chain, clock)
    finally:
        await c.server.close()
    assert not r.ok and r.status == 200
    assert r.reason.startswith("the destination refused the receipts: 400 ")
    assert "chain head mismatch at response 1" in r.reason
    assert c.target.path.read_bytes() == b"payload"  # the data arrived; the evidence was refused


async def test_destination_refusing_early(
    tmp_path: Path, key: SigningKey, chain: ReceiptChain, clock: FakeClock
) -> None:
    """The receiver answers 413 before the body is sent: the push stops and says so."""
    c = Consumer(tmp_path, key, max_bytes=1000)
    await c.server.start()
    try:
        write_random(tmp_path / "src.bin", 8 * 1024 * 1024)
        r = await run_push(file_source(tmp_path / "src.bin"), c, chain, clock)
        await c.idle()
    finally:
        await c.server.close()
    assert not r.ok and r.status == 413
    assert r.reason.startswith("the destination refused the data: 413 ")
    assert "exceeds the limit of 1000 bytes" in r.reason
    assert r.bytes < 8 * 1024 * 1024 and chain.chained_to == 1
    assert not c.target.path.exists() and c.recorded == {}


async def test_unreachable_destination(chain: ReceiptChain, clock: FakeClock) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    r = await push(
        MemorySource([b"x" * 10]),
        destination=f"http://127.0.0.1:{port}/in",
        authorization=None,
        policy=LOOPBACK_OK,
        chain=chain,
        still_allowed=allowed,
        clock=clock,
    )
    assert not r.ok and r.status is None and "unreachable" in r.reason
    assert chain.chained_to == r.seq == 1 and r.bytes == 0


async def test_stalled_destination_times_out(chain: ReceiptChain, clock: FakeClock) -> None:
    hold: list[asyncio.StreamWriter] = []

    async def never_reads(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        hold.append(writer)  # keep the connection open, read nothing more

    server = await asyncio.start_server(never_reads, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        t0 = time.monotonic()
        r = await push(
            RepeatSource(b"\0" * 256 * 1024, 1024),
            destination=f"http://127.0.0.1:{port}/in",
            authorization=None,
            policy=LOOPBACK_OK,
            chain=chain,
            still_allowed=allowed,
            clock=clock,
            read_timeout=0.5,
        )
        elapsed = time.monotonic() - t0
    finally:
        for w in hold:
            w.close()
        server.close()
        await server.wait_closed()
    assert not r.ok and "stalled" in r.reason and elapsed < 10
    assert 0 < r.bytes < 256 * 1024 * 1024 and chain.chained_to == 1


async def test_source_error_and_short_source(
    consumer: Consumer, chain: ReceiptChain, clock: FakeClock
) -> None:
    src = ErrorSource()
    r = await run_push(src, consumer, chain, clock)
    assert not r.ok and r.reason == "the data is not available" and src.opened == 1
    assert r.seq == 0 and consumer.requests == [] and chain.next_seq == 1

    r = await run_push(MemorySource([b"a" * 500], length=1000), consumer, chain, clock, read_timeout=30)
    assert not r.ok and r.reason == "the data source ended early" and r.bytes == 500
    await consumer.idle()
    assert not consumer.target.path.exists() and consumer.recorded == {}
    assert chain.chained_to == 1


class BrokenSource:
    """Announces 1 MiB, sends one chunk, then fails as a disk or an upstream might."""

    async def open(self, range_header: str | None = None) -> SourceResponse:
        async def gen() -> AsyncIterator[bytes]:
            yield b"a" * 1000
            raise OSError("I/O error")

        return SourceResponse(200, {"Content-Length": str(1024 * 1024)}, gen())


async def test_source_failing_midway(consumer: Consumer, chain: ReceiptChain, clock: FakeClock) -> None:
    r = await run_push(BrokenSource(), consumer, chain, clock)
    assert not r.ok and r.reason == "the data source failed (OSError)"
    assert r.bytes == 1000 and chain.chained_to == r.seq == 1
    await consumer.idle()
    await wait_until(lambda: not leftovers(consumer.target.path.parent))
    assert consumer.recorded == {}


async def test_empty_source_and_bad_authorization(
    tmp_path: Path, consumer: Consumer, chain: ReceiptChain, clock: FakeClock
) -> None:
    (tmp_path / "empty.bin").write_bytes(b"")
    r = await run_push(file_source(tmp_path / "empty.bin"), consumer, chain, clock)
    assert r.ok, r.reason
    assert r.bytes == 0 and r.sha256 == hashlib.sha256(b"").hexdigest()
    assert consumer.target.path.read_bytes() == b"" and consumer.coverage[0].seq_to == 1
    n = len(consumer.requests)
    r = await run_push(MemorySource([b"x"]), consumer, chain, clock, authorization="Bearer a\r\nX-Evil: 1")
    assert not r.ok and "authorization" in r.reason and r.seq == 0 and len(consumer.requests) == n


async def test_cancelled_push_still_completes_the_chain(chain: ReceiptChain, clock: FakeClock) -> None:
    hold: list[asyncio.StreamWriter] = []

    async def never_reads(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        hold.append(writer)

    server = await asyncio.start_server(never_reads, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    task = asyncio.create_task(
        push(
            RepeatSource(b"\0" * 256 * 1024, 1024),
            destination=f"http://127.0.0.1:{port}/in",
            authorization=None,
            policy=LOOPBACK_OK,
            chain=chain,
            still_allowed=allowed,
            clock=clock,
        )
    )
    try:
        await wait_until(lambda: bool(hold))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        for w in hold:
            w.close()
        server.close()
        await server.wait_closed()
    assert chain.chained_to == 1 and chain.next_seq == 2  # what was sent is on the chain
    assert len(chain.receipts) == 1


# --- the receiver on its own --------------------------------------------------------------


async def test_receiver_auth_and_headers(consumer: Consumer) -> None:
    url = consumer.url
    good = {**consumer.auth, "X-Receipt-Seq": "1"}
    async with aiohttp.ClientSession() as s:
        bodies = set()
        for headers, u in [
            ({"X-Receipt-Seq": "1", "Authorization": "Bearer wrong"}, url),
            (good, url.replace(CONSUMER_PID, "someone-else")),
            (
                {"X-Receipt-Seq": "1", "Authorization": "Bearer wrong"},
                url.replace(CONSUMER_PID, "someone-else"),
            ),
        ]:
            async with s.put(u, data=b"x", headers=headers) as r:
                assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
                bodies.add((await r.json())["error"])
        assert bodies == {"unknown transfer or invalid token"}  # indistinguishable
        for headers in (
            {"X-Receipt-Seq": "1"},
            {"X-Receipt-Seq": "1", "Authorization": "Basic abc"},
            {"X-Receipt-Seq": "1", "Authorization": "Bearer "},
        ):
            async with s.put(url, data=b"x", headers=headers) as r:
                assert r.status == 401
        for seq in (None, "", "0", "-1", "abc", "1.5", "١", "9" * 30):
            headers = dict(consumer.auth)
            if seq is not None:
                headers["X-Receipt-Seq"] = seq
            async with s.put(url, data=b"x", headers=headers) as r:
                assert r.status == 400, seq
                assert "X-Receipt-Seq" in (await r.json())["error"]
        async with s.put(url, data=b"x", headers={**good, "Content-Encoding": "gzip"}) as r:
            assert r.status == 415
        async with s.put(url, data=b"hello", headers=good) as r:
            assert r.status == 200
            assert await r.json() == {"bytes": 5, "sha256": hashlib.sha256(b"hello").hexdigest()}
        async with s.put(url, data=b"again", headers=good) as r:
            assert r.status == 409  # a response is received once
        async with s.get(url, headers=good) as r:
            assert r.status == 405
    assert consumer.target.path.read_bytes() == b"hello"
    assert consumer.recorded == {1: (5, hashlib.sha256(b"hello").digest())}


async def test_receiver_max_bytes(tmp_path: Path, key: SigningKey) -> None:
    c = Consumer(tmp_path, key, max_bytes=1000)
    await c.server.start()
    try:
        async with aiohttp.ClientSession() as s:
            headers = {**c.auth, "X-Receipt-Seq": "1"}
            async with s.put(c.url, data=b"x" * 1001, headers=headers) as r:
                assert r.status == 413

            async def chunked() -> AsyncIterator[bytes]:
                for _ in range(20):
                    yield b"y" * 100

            async with s.put(c.url, data=chunked(), headers=headers) as r:
                assert r.status == 413
            async with s.put(c.url, data=b"z" * 1000, headers=headers) as r:
                assert r.status == 200
        await c.idle()
        assert c.target.path.read_bytes() == b"z" * 1000 and leftovers(c.target.path.parent) == ["data.bin"]
    finally:
        await c.server.close()


@pytest.mark.parametrize("chunked", [False, True])
async def test_receiver_truncated_upload_leaves_nothing(
    consumer_either: Consumer, chunked: bool, handler_cancellation: bool, caplog: pytest.LogCaptureFixture
) -> None:
    consumer = consumer_either
    caplog.set_level("INFO", logger="connector.dataplane.receiver")
    host, port = "127.0.0.1", consumer.server.port
    _, writer = await asyncio.open_connection(host, port)
    framing = "Transfer-Encoding: chunked" if chunked else "Content-Length: 1000000"
    writer.write(
        (
            f"PUT /push/{CONSUMER_PID} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {consumer.secret}\r\nX-Receipt-Seq: 1\r\n"
            f"{framing}\r\n\r\n"
        ).encode()
    )
    part = os.urandom(600_000)
    writer.write(b"%x\r\n" % len(part) + part + b"\r\n" if chunked else part)
    await writer.drain()
    await wait_until(
        lambda: (
            any(p.name.endswith(".part") for p in consumer.target.path.parent.glob("*"))
            if consumer.target.path.parent.exists()
            else False
        )
    )
    writer.close()  # before the body is complete
    await writer.wait_closed()
    await consumer.idle()
    await wait_until(lambda: not leftovers(consumer.target.path.parent))
    assert not consumer.target.path.exists()
    assert consumer.recorded == {}
    if not handler_cancellation:  # the handler ran on and saw its read fail
        assert "the upload broke off (ConnectionResetError)" in caplog.text


async def test_receiver_receipts_endpoint(consumer: Consumer, chain: ReceiptChain) -> None:
    url = consumer.url + "/receipts"
    async with aiohttp.ClientSession() as s:
        async with s.put(consumer.url, data=b"abc", headers={**consumer.auth, "X-Receipt-Seq": "1"}) as r:
            assert r.status == 200
        async with s.post(url, json={"receipts": []}, headers={"Authorization": "Bearer nope"}) as r:
            assert r.status == 401
        for body in (
            b"not json",
            b"[1]",
            b'{"receipts": "x"}',
            b'{"receipts": [1]}',
            b'{"receipts": [""]}',
            b"{}",
            b"\xff\xfe",
            b"[" * 100_000,
        ):
            async with s.post(url, data=body, headers=consumer.auth) as r:
                assert r.status == 400, body[:20]
                assert "error" in await r.json()
        huge = b'{"receipts": ["' + b"a" * 2_000_000 + b'"]}'
        async with s.post(url, data=io.BytesIO(huge), headers=consumer.auth) as r:
            assert r.status == 413  # by its Content-Length

        async def chunked() -> AsyncIterator[bytes]:
            for i in range(0, len(huge), 65536):
                yield huge[i : i + 65536]

        async with s.post(url, data=chunked(), headers=consumer.auth) as r:
            assert r.status == 413  # as it streams in
        # receipts that do not cover what was received: on_receipts says why
        async with s.post(url, json={"receipts": []}, headers=consumer.auth) as r:
            assert r.status == 400
            assert (await r.json())["error"] == "responses [1] are not covered by any receipt"
        async with s.post(url, json={"receipts": ["a.b.c"]}, headers=consumer.auth) as r:
            assert r.status == 400 and "receipt" in (await r.json())["error"]
        # the right receipts verify
        seq = chain.begin()
        chain.complete(seq, 3, hashlib.sha256(b"abc").digest(), 0.0)
        chain.flush(0.0)
        async with s.post(url, json={"receipts": chain.receipts}, headers=consumer.auth) as r:
            assert r.status == 200 and await r.json() == {"verified": True}
    assert consumer.coverage == [Coverage(seq_to=1, bytes=3, receipts=1)]


def test_new_push_secret() -> None:
    a, ha = new_push_secret()
    b, _ = new_push_secret()
    assert a != b and len(a) >= 40 and ha == hashlib.sha256(a.encode()).hexdigest()


async def test_each_provider_process_pushes_on_its_own_chain(
    tmp_path: Path, consumer: Consumer, key: SigningKey, clock: FakeClock
) -> None:
    """Two provider processes (or one, restarted) push in one transfer: each names its chain, so
    both start at response 1 and both sets of receipts verify."""
    data = write_random(tmp_path / "src.bin", 200_000)
    for name in ("replica-a", "replica-b"):
        chain = ReceiptChain(PROVIDER_PID, AGREEMENT, key, PROVIDER, interval=3600, chain_id=name)
        r = await run_push(file_source(tmp_path / "src.bin"), consumer, chain, clock)
        assert r.ok and r.seq == 1, r.reason
        assert consumer.coverage[-1].seq_to == 1
    got = consumer.sub[RESPONSES][CONSUMER_PID]
    assert set(got) == {("replica-a", 1), ("replica-b", 1)}
    assert consumer.target.path.read_bytes() == data


async def test_push_of_data_modified_in_transit(
    tmp_path: Path, consumer: Consumer, chain: ReceiptChain, clock: FakeClock
) -> None:
    """A push goes through the same ModifiedSource as a pull: the consumer gets the modified
    bytes, chunked, with their media type, and the receipt covers exactly them; data that
    cannot be modified is not pushed at all."""
    rows = [f'{i},"Zoë\n{i}",z{i}@example.org\n' for i in range(30_000)]
    (tmp_path / "people.csv").write_text("id,name,email\n" + "".join(rows), encoding="utf-8")
    m = Modification((Drop(Selector.parse("email")), Replace(Selector.parse("name"), "-")))
    expected = ("id,name\n" + "".join(f"{i},-\n" for i in range(30_000))).encode()
    r = await run_push(ModifiedSource(file_source(tmp_path / "people.csv"), m), consumer, chain, clock)
    assert r.ok, r.reason
    assert consumer.target.path.read_bytes() == expected
    assert (r.bytes, r.sha256) == (len(expected), hashlib.sha256(expected).hexdigest())
    assert consumer.coverage == [Coverage(seq_to=1, bytes=len(expected), receipts=1)]
    (_, _, put), _ = consumer.requests
    assert "Content-Length" not in put and put["Content-Type"] == "text/csv"

    (tmp_path / "people.bin").write_bytes(b"id,email\n1,x\n")
    refused = await run_push(ModifiedSource(file_source(tmp_path / "people.bin"), m), consumer, chain, clock)
    assert not refused.ok and refused.seq == 0 and refused.reason.startswith(REFUSED)


async def test_receiver_modifies_a_copy_at_rest_before_it_reaches_the_disk(
    tmp_path: Path, consumer: Consumer, chain: ReceiptChain, clock: FakeClock
) -> None:
    """The consumer's duty to modify at rest: the receiver writes the modified bytes; the
    receipts still cover the bytes as they came; what cannot be modified leaves no file."""
    m = Modification((Replace(Selector.parse("$[*].email"), "hidden"),))
    consumer.target = PushTarget(CONSUMER_PID, consumer.target.token_sha256, consumer.target.path, m)
    sent = json.dumps([{"email": f"p{i}@x.org", "n": "é"} for i in range(20_000)]).encode()
    (tmp_path / "people.json").write_bytes(sent)
    r = await run_push(file_source(tmp_path / "people.json"), consumer, chain, clock)
    assert r.ok, r.reason
    stored = ("[" + ",".join('{"email":"hidden","n":"é"}' for _ in range(20_000)) + "]").encode()
    assert consumer.target.path.read_bytes() == stored
    assert consumer.recorded == {1: (len(sent), hashlib.sha256(sent).digest())}

    consumer.target.path.unlink()
    (tmp_path / "people.bin").write_bytes(sent)
    r2 = await run_push(file_source(tmp_path / "people.bin"), consumer, chain, clock)
    assert not r2.ok and r2.status == 422 and REFUSED_AT_REST in r2.reason
    assert leftovers(consumer.target.path.parent) == []
