"""Streaming sources: Range on local files; small files from memory, fresh within a second of
a change; the HTTP upstream behind the SSRF guard."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from connector.assets import DataRoots
from connector.dataplane.sources import (
    ByteRange,
    FileSource,
    HttpSource,
    RangeNotSatisfiable,
    SmallFileCache,
    SourceResponse,
    UpstreamSettings,
    parse_range,
)
from connector.http.outbound import OutboundPolicy

LOOPBACK_OK = OutboundPolicy.from_config(["127.0.0.1/32"])
SECRET = "upstream-api-key-s3cr3t"


def file_source(path: Path, *args: Any, **kwargs: Any) -> FileSource:
    """A file source confined to the file's own folder (its data root)."""
    return FileSource(path, *args, roots=DataRoots.build([path.parent]), **kwargs)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-9", ByteRange(0, 9)),
        ("bytes=10-", ByteRange(10, 99)),
        ("bytes=-10", ByteRange(90, 99)),
        ("bytes=-1000", ByteRange(0, 99)),
        ("bytes=90-1000", ByteRange(90, 99)),
        ("bytes=99-99", ByteRange(99, 99)),
        ("BYTES = 5 - 6", ByteRange(5, 6)),
        ("bytes=9-3", None),  # invalid: ignored, whole body
        ("bytes=0-1,5-6", None),  # multi-range: ignored
        ("items=0-1", None),
        ("bytes=-", None),
        ("bytes=abc", None),
    ],
)
def test_parse_range(header: str | None, expected: ByteRange | None) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize(
    ("header", "size"),
    [("bytes=100-", 100), ("bytes=100-200", 100), ("bytes=-0", 100), ("bytes=0-", 0), ("bytes=-5", 0)],
)
def test_parse_range_unsatisfiable(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, size)


async def body_of(resp: SourceResponse) -> bytes:
    try:
        return b"".join([c async for c in resp.chunks])
    finally:
        await resp.close()


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(range(256)) * 4000)  # 1,024,000 bytes: several chunks
    return path


async def test_file_source_whole_and_ranges(data_file: Path) -> None:
    data = data_file.read_bytes()
    size = len(data)
    src = file_source(data_file, "application/x-test", chunk_size=100_000)
    whole = await src.open(None)
    assert whole.status == 200 and whole.headers["Content-Length"] == str(size)
    assert whole.headers["Accept-Ranges"] == "bytes" and "ETag" in whole.headers
    assert await body_of(whole) == data
    for header, (a, b) in [
        ("bytes=1000-250999", (1000, 250999)),
        ("bytes=1000000-", (1000000, size - 1)),
        ("bytes=-123", (size - 123, size - 1)),
        ("bytes=0-0", (0, 0)),
    ]:
        r = await src.open(header)
        assert r.status == 206, header
        assert r.headers["Content-Range"] == f"bytes {a}-{b}/{size}"
        assert r.headers["Content-Length"] == str(b - a + 1)
        assert await body_of(r) == data[a : b + 1]
    bad = await src.open(f"bytes={size}-")
    assert bad.status == 416 and bad.headers["Content-Range"] == f"bytes */{size}"
    assert await body_of(bad) == b""
    missing = await file_source(data_file.with_name("nope")).open(None)
    assert missing.status == 404


# --- small files from memory ----------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def write_at(path: Path, data: bytes, mtime: float) -> None:
    """Write `data` and set the file's mtime (seconds ago: older than the racy window)."""
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache(clock: Clock) -> SmallFileCache:
    return SmallFileCache(max_file=1000, max_bytes=2500, clock=clock)


async def test_small_file_served_from_memory_with_ranges(tmp_path: Path, cache: SmallFileCache) -> None:
    path = tmp_path / "small.bin"
    data = bytes(range(200))
    write_at(path, data, time.time() - 60)
    src = file_source(path, "text/plain", cache=cache)
    whole = await src.open(None)
    assert (whole.status, whole.body, await body_of(whole)) == (200, data, data)
    st = path.stat()
    assert whole.headers == {
        "Content-Type": "text/plain",
        "Accept-Ranges": "bytes",
        "ETag": f'"{st.st_mtime_ns:x}-{st.st_size:x}"',
        "Content-Length": "200",
    }
    # the same headers as the streaming path gives
    assert (await file_source(path, "text/plain", cache=None).open(None)).headers == whole.headers
    part = await src.open("bytes=10-19")
    assert (part.status, part.body, part.headers["Content-Range"]) == (206, data[10:20], "bytes 10-19/200")
    assert part.headers["Content-Length"] == "10" and await body_of(part) == data[10:20]
    bad = await src.open("bytes=500-")
    assert bad.status == 416 and bad.headers["Content-Range"] == "bytes */200" and bad.body is None
    assert cache.loads == 1 and len(cache) == 1 and cache.bytes == 200


async def test_changed_file_is_served_fresh_after_revalidation(
    tmp_path: Path, cache: SmallFileCache, clock: Clock
) -> None:
    path = tmp_path / "small.bin"
    write_at(path, b"a" * 100, time.time() - 60)
    src = file_source(path, cache=cache)
    first = await src.open(None)
    assert first.body == b"a" * 100
    write_at(path, b"b" * 100, time.time() - 30)  # same size, another mtime
    clock.now += 0.5
    assert (await src.open(None)).body == b"a" * 100  # within a second of the last check
    clock.now += 0.6
    fresh = await src.open(None)
    assert fresh.body == b"b" * 100 and fresh.headers["ETag"] != first.headers["ETag"]
    assert cache.loads == 2
    clock.now += 1.1
    assert (await src.open(None)).body == b"b" * 100  # unchanged: one stat, no read
    assert cache.loads == 3 and cache.bytes == 100
    # replaced by a larger file: streamed from disk from then on
    write_at(path, b"c" * 5000, time.time() - 20)
    clock.now += 1.1
    big = await src.open(None)
    assert big.body is None and await body_of(big) == b"c" * 5000
    assert cache.bytes == 0
    # deleted: 404 after the next check
    path.unlink()
    clock.now += 1.1
    assert (await src.open(None)).status == 404
    assert len(cache) == 0


async def test_recently_modified_file_is_not_kept(tmp_path: Path, cache: SmallFileCache) -> None:
    """A file written within the last second could change again within the same mtime tick and
    with the same size, invisibly to the check: it is read afresh until it has settled."""
    path = tmp_path / "small.bin"
    path.write_bytes(b"x" * 10)
    src = file_source(path, cache=cache)
    assert (await src.open(None)).body == b"x" * 10
    path.write_bytes(b"y" * 10)
    assert (await src.open(None)).body == b"y" * 10
    assert cache.loads == 2 and cache.bytes == 0


async def test_concurrent_misses_share_one_load(tmp_path: Path, cache: SmallFileCache) -> None:
    path = tmp_path / "small.bin"
    write_at(path, b"z" * 300, time.time() - 60)
    rs = await asyncio.gather(*(file_source(path, cache=cache).open(None) for _ in range(20)))
    assert all(r.body == b"z" * 300 for r in rs)
    assert cache.loads == 1


async def test_cache_memory_is_bounded(tmp_path: Path, cache: SmallFileCache) -> None:
    for i in range(5):
        write_at(tmp_path / f"{i}.bin", bytes([i]) * 1000, time.time() - 60)
        assert (await file_source(tmp_path / f"{i}.bin", cache=cache).open(None)).body == bytes([i]) * 1000
    assert cache.bytes <= 2500 and len(cache) == 2  # least recently used out
    assert (await file_source(tmp_path / "0.bin", cache=cache).open(None)).body == bytes([0]) * 1000


# --- HTTP upstream ------------------------------------------------------------------------


@pytest.fixture
async def upstream() -> AsyncIterator[TestServer]:
    state: dict[str, object] = {"written": 0, "seen_headers": []}

    async def data(request: web.Request) -> web.StreamResponse:
        state["seen_headers"].append(dict(request.headers))  # type: ignore[union-attr]
        if request.headers.get("X-Api-Key") != SECRET:
            return web.Response(status=401, text=f"need key; got {request.headers.get('X-Api-Key')}")
        headers = {
            "Set-Cookie": "sess=internal",
            "X-Internal-Node": "db-7",
            "ETag": '"v1"',
            "WWW-Authenticate": "Basic realm=internal",
            "Content-Type": "text/csv",
        }
        if "Range" in request.headers:
            return web.Response(status=206, body=b"bc", headers={**headers, "Content-Range": "bytes 1-2/4"})
        return web.Response(body=b"a,b\n1,2\n", headers=headers)

    async def big(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_length = 64 * 1024 * 1024
        await resp.prepare(request)
        chunk = b"x" * 65536
        for _ in range(1024):
            await resp.write(chunk)
            state["written"] = int(state["written"]) + len(chunk)  # type: ignore[call-overload]
        return resp

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.Response(text="late")

    async def fail(request: web.Request) -> web.Response:
        return web.Response(status=500, text="Traceback: secret internals")

    async def to_private(request: web.Request) -> web.Response:
        raise web.HTTPFound("http://10.0.0.1/data")

    async def to_same(request: web.Request) -> web.Response:
        raise web.HTTPFound("/data")

    async def loop_redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    app = web.Application()
    for path, handler in [
        ("/data", data),
        ("/big", big),
        ("/slow", slow),
        ("/fail", fail),
        ("/to-private", to_private),
        ("/to-same", to_same),
        ("/loop", loop_redirect),
    ]:
        app.router.add_get(path, handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    server.state = state  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        await server.close()


def source(server: TestServer, path: str, policy: OutboundPolicy = LOOPBACK_OK, **kw: object) -> HttpSource:
    return HttpSource(str(server.make_url(path)), policy, headers={"X-Api-Key": SECRET}, **kw)  # type: ignore[arg-type]


async def test_upstream_allowed_by_allow_list_credentials_stay_provider_side(upstream: TestServer) -> None:
    r = await source(upstream, "/data").open(None)
    assert r.status == 200
    assert await body_of(r) == b"a,b\n1,2\n"
    assert r.headers == {"Content-Type": "text/csv", "Content-Length": "8", "ETag": '"v1"'}
    assert SECRET not in repr(r.headers)
    ranged = await source(upstream, "/data").open("bytes=1-2")
    assert ranged.status == 206 and ranged.headers["Content-Range"] == "bytes 1-2/4"
    assert await body_of(ranged) == b"bc"


async def test_upstream_loopback_refused_by_default(upstream: TestServer) -> None:
    r = await source(upstream, "/data", OutboundPolicy()).open(None)
    assert r.status == 502 and r.reason is not None and "loopback" in r.reason
    assert upstream.state["seen_headers"] == []  # type: ignore[attr-defined]


async def test_upstream_errors_map_to_502(upstream: TestServer) -> None:
    r = await source(upstream, "/fail").open(None)
    assert r.status == 502 and r.reason == "upstream answered 500"
    r = await source(upstream, "/slow", settings=UpstreamSettings(read_timeout=0.2)).open(None)
    assert r.status == 502 and r.reason == "upstream timed out"
    closed = HttpSource("http://127.0.0.1:9/", LOOPBACK_OK)  # discard port: nothing listens
    r = await closed.open(None)
    assert r.status == 502 and r.reason is not None and "unreachable" in r.reason


async def test_upstream_redirects_checked(upstream: TestServer) -> None:
    r = await source(upstream, "/to-private").open(None)
    assert r.status == 502 and r.reason is not None
    assert "redirect refused" in r.reason and "private" in r.reason
    r = await source(upstream, "/to-same").open(None)
    assert r.status == 200 and await body_of(r) == b"a,b\n1,2\n"
    r = await source(upstream, "/loop").open(None)
    assert r.status == 502 and r.reason is not None and "too many redirects" in r.reason


async def test_upstream_redirect_to_other_origin_drops_credentials(upstream: TestServer) -> None:
    # "localhost" is another origin than 127.0.0.1: the API key must not follow the redirect
    app = web.Application()

    async def hop(request: web.Request) -> web.Response:
        raise web.HTTPFound(str(upstream.make_url("/data")))

    app.router.add_get("/hop", hop)
    front = TestServer(app, host="127.0.0.1")
    await front.start_server()
    try:
        policy = OutboundPolicy.from_config(["localhost", "127.0.0.1"])
        src = HttpSource(f"http://localhost:{front.port}/hop", policy, headers={"X-Api-Key": SECRET})
        r = await src.open(None)
        assert r.status == 502 and r.reason == "upstream answered 401"
        seen = upstream.state["seen_headers"]  # type: ignore[attr-defined]
        assert seen and "X-Api-Key" not in seen[-1]
    finally:
        await front.close()


async def test_upstream_streams_with_backpressure(upstream: TestServer) -> None:
    r = await source(upstream, "/big").open(None)
    assert r.status == 200 and r.headers["Content-Length"] == str(64 * 1024 * 1024)
    first = await anext(r.chunks)
    assert first
    await asyncio.sleep(0.3)  # a slow consumer: upstream must stall, not buffer 64 MiB for it
    written = int(upstream.state["written"])  # type: ignore[attr-defined]
    assert written < 16 * 1024 * 1024, written
    await r.close()
