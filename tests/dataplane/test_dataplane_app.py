"""The data plane app end to end: token -> PEP -> source -> streamed response -> receipts."""

from __future__ import annotations

import asyncio
import hashlib
import os
import resource
import time
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from dataplane_testlib import CONSUMER, PROVIDER, Provider, agreement_doc, count_lteq, transfer

from connector.assets import DataRoots
from connector.dataplane.app import create_app
from connector.dataplane.modified import REFUSED, ModifiedSource
from connector.dataplane.pep import TransferView
from connector.dataplane.receipts import ReceiptBook, ReceiptError, ReceiptVerifier
from connector.dataplane.sources import FileSource, SmallFileCache
from connector.dataplane.uses import UseReservations
from connector.identity.jose import VerificationKey
from connector.store import Store
from connector.usage.modify import Drop, Hash, Modification, Selector


def file_source(path: Path, *args: Any, **kwargs: Any) -> FileSource:
    """A file source confined to the file's own folder (its data root)."""
    return FileSource(path, *args, roots=DataRoots.build([path.parent]), **kwargs)


class Plane:
    def __init__(self, provider: Provider, views: dict[str, TransferView], consume: Any) -> None:
        self.p = provider
        self.views = views
        self.book = ReceiptBook(provider.key, PROVIDER, clock=provider.clock)

        async def lookup(transfer_id: str) -> TransferView | None:
            return self.views.get(transfer_id)

        self.app = create_app(
            verifier=provider.cache,
            lookup=lookup,
            consume=consume,
            receipts=self.book,
            clock=provider.clock,
            run_ticker=False,
        )

    def verifier(self, transfer_id: str = "t1") -> ReceiptVerifier:
        k = self.p.key
        return ReceiptVerifier(
            VerificationKey(kid=k.kid, alg=k.alg, key=k.public_key),
            transfer_id=transfer_id,
            agreement_id="urn:agreement:1",
            issuer=PROVIDER,
        )


@pytest.fixture
async def store(sqlite_store: Store) -> Store:
    return sqlite_store


async def client_for(plane: Plane) -> TestClient:
    client = TestClient(TestServer(plane.app, host="127.0.0.1"))
    await client.start_server()
    return client


async def test_streams_and_receipts_cover_every_response(tmp_path: Path, store: Store) -> None:
    path = tmp_path / "d.bin"
    data = os.urandom(300_000)
    path.write_bytes(data)
    p = Provider()
    plane = Plane(
        p, {"t1": transfer(agreement_doc([count_lteq(5)]), source=file_source(path))}, store.consume_use
    )
    client = await client_for(plane)
    try:
        auth = {"Authorization": "Bearer " + p.token()}
        v = plane.verifier()
        r = await client.get("/data/t1", headers=auth)
        body = await r.read()
        assert r.status == 200 and body == data
        v.add_body(int(r.headers["X-Receipt-Seq"]), body)
        r = await client.get("/data/t1", headers={**auth, "Range": "bytes=-10"})
        body = await r.read()
        assert r.status == 206 and body == data[-10:]
        assert r.headers["Content-Range"] == "bytes 299990-299999/300000"
        v.add_body(int(r.headers["X-Receipt-Seq"]), body)
        r = await client.get("/data/t1", headers={**auth, "Range": "bytes=300000-"})
        body = await r.read()
        assert r.status == 416 and r.headers["Content-Range"] == "bytes */300000"
        v.add_body(int(r.headers["X-Receipt-Seq"]), body)
        for _ in range(3):  # uses 4 and 5, then a deny: denies are receipted too
            r = await client.get("/data/t1", headers=auth)
            v.add_body(int(r.headers["X-Receipt-Seq"]), await r.read())
        assert r.status == 403 and "use number 6" in (await r.json())["error"]
        p.clock.advance(0.5)
        rr = await client.get("/data/t1/receipts", headers=auth)
        receipts = (await rr.json())["receipts"]
        assert len(receipts) == 1
        assert v.verify(receipts).seq_to == 6
        # a consumer claiming it got something else is caught
        v2 = plane.verifier()
        v2.add_body(1, data[:-1] + b"?")
        for seq in range(2, 7):
            v2.add(seq, *v._responses[("", seq)])
        with pytest.raises(ReceiptError):
            v2.verify(receipts)
    finally:
        await client.close()


async def test_auth_errors_and_denies(tmp_path: Path) -> None:
    path = tmp_path / "d.bin"
    path.write_bytes(b"hello")
    p = Provider()
    views = {
        "t1": transfer(agreement_doc([]), source=file_source(path)),
        "t3": transfer(agreement_doc([]), source=file_source(path), state="SUSPENDED", transfer_id="t3"),
    }
    plane = Plane(p, views, _no_count)
    client = await client_for(plane)
    try:
        for headers in (
            {},
            {"Authorization": "Basic abc"},
            {"Authorization": "Bearer"},
            {"Authorization": "Bearer not.a.token"},
            {"Authorization": "Bearer " + "a" * 5000},
            {"Authorization": "Bearer ..."},
            {"Authorization": "Bearer \u00e9.\u00e9.\u00e9"},
        ):
            r = await client.get("/data/t1", headers=headers)
            assert r.status == 401, headers
            assert "error" in await r.json()
        r = await client.get("/data/t1", headers={"Authorization": "Bearer " + p.token("t2")})
        assert r.status == 403  # a token for another transfer
        r = await client.get("/data/t9", headers={"Authorization": "Bearer " + p.token("t9")})
        assert r.status == 404
        r = await client.get("/data/t3", headers={"Authorization": "Bearer " + p.token("t3")})
        assert r.status == 403 and (await r.json()) == {"error": "the transfer is SUSPENDED, not STARTED"}
        auth = {"Authorization": "Bearer " + p.token()}
        for headers in ({"Range": "bytes=zz"}, {"Range": "bytes=99999999999999999999-"}, {"X-Purpose": "é"}):
            r = await client.get("/data/t1", headers={**auth, **headers})
            assert r.status in (200, 206, 416), (headers, r.status)
        p.clock.advance(3600)  # the token expired
        r = await client.get("/data/t1", headers=auth)
        assert r.status == 401
    finally:
        await client.close()


async def _no_count(*args: Any) -> tuple[bool, int]:
    raise AssertionError("no count constraint: the counter is not touched")


async def test_concurrent_requests_through_the_app_count_exactly(tmp_path: Path, store: Store) -> None:
    path = tmp_path / "d.bin"
    path.write_bytes(b"payload")
    p = Provider()
    plane = Plane(
        p, {"t1": transfer(agreement_doc([count_lteq(10)]), source=file_source(path))}, store.consume_use
    )
    client = await client_for(plane)
    try:
        auth = {"Authorization": "Bearer " + p.token()}
        rs = await asyncio.gather(*(client.get("/data/t1", headers=auth) for _ in range(40)))
        statuses = sorted(r.status for r in rs)
        assert statuses == [200] * 10 + [403] * 30
        for r in rs:
            r.release()
    finally:
        await client.close()


async def test_reserved_uses_through_the_app_count_exactly_and_go_back_on_shutdown(
    tmp_path: Path, store: Store
) -> None:
    path = tmp_path / "d.bin"
    path.write_bytes(b"payload")
    p = Provider()
    views = {
        "t1": transfer(agreement_doc([count_lteq(10)]), source=file_source(path)),
        "t2": transfer(
            agreement_doc([count_lteq(1000)], uid="urn:agreement:2"),
            source=file_source(path),
            transfer_id="t2",
            agreement_id="urn:agreement:2",
        ),
    }
    uses = UseReservations(store)
    plane = Plane(p, views, uses)
    client = await client_for(plane)
    try:
        auth = {"Authorization": "Bearer " + p.token()}
        rs = await asyncio.gather(*(client.get("/data/t1", headers=auth) for _ in range(40)))
        assert sorted(r.status for r in rs) == [200] * 10 + [403] * 30
        for r in rs:
            r.release()
        auth2 = {"Authorization": "Bearer " + p.token("t2", "urn:agreement:2")}
        for _ in range(3):
            r = await client.get("/data/t2", headers=auth2)
            assert r.status == 200 and await r.read() == b"payload"
        assert await store.get_use_count("urn:agreement:2", CONSUMER, "urn:asset:weather") > 3
    finally:
        await client.close()  # the app's cleanup gives the unused reservations back
    assert await store.get_use_count("urn:agreement:1", CONSUMER, "urn:asset:weather") == 10
    assert await store.get_use_count("urn:agreement:2", CONSUMER, "urn:asset:weather") == 3


async def test_small_file_from_memory_with_ranges_and_receipts(tmp_path: Path) -> None:
    path = tmp_path / "small.bin"
    data = os.urandom(1024)
    path.write_bytes(data)
    old = time.time() - 60  # settled: kept in memory
    os.utime(path, (old, old))
    cache = SmallFileCache()
    p = Provider()
    plane = Plane(p, {"t1": transfer(agreement_doc([]), source=file_source(path, cache=cache))}, _no_count)
    client = await client_for(plane)
    try:
        auth = {"Authorization": "Bearer " + p.token()}
        v = plane.verifier()
        for headers, status, body in (
            ({}, 200, data),
            ({"Range": "bytes=100-199"}, 206, data[100:200]),
            ({"Range": "bytes=-1"}, 206, data[-1:]),
            ({}, 200, data),
        ):
            r = await client.get("/data/t1", headers={**auth, **headers})
            assert r.status == status and await r.read() == body
            assert r.headers["Content-Length"] == str(len(body)) and r.headers["Accept-Ranges"] == "bytes"
            assert r.headers["ETag"] and r.headers["Content-Type"] == "application/octet-stream"
            v.add_body(int(r.headers["X-Receipt-Seq"]), body)
        r = await client.get("/data/t1", headers={**auth, "Range": "bytes=5000-"})
        assert r.status == 416 and r.headers["Content-Range"] == "bytes */1024"
        v.add_body(int(r.headers["X-Receipt-Seq"]), await r.read())
        assert cache.loads == 1  # one read for all of them
        rr = await client.get("/data/t1/receipts", headers=auth)
        assert v.verify((await rr.json())["receipts"]).seq_to == 5
    finally:
        await client.close()


@pytest.mark.parametrize("size", [6, 300_000])  # from memory, streamed
async def test_suspended_while_the_source_opens_is_a_deny(tmp_path: Path, size: int) -> None:
    """The state is checked again after the source opened (and between the chunks of a
    stream): a suspension meanwhile is a 403 while no byte of the body has left."""
    path = tmp_path / "data.bin"
    path.write_bytes(b"s" * size)
    p = Provider()
    views = {"t1": transfer(agreement_doc([]), source=file_source(path))}
    plane = Plane(p, views, _no_count)
    suspended = transfer(agreement_doc([]), source=file_source(path), state="SUSPENDED")

    class Suspending:
        async def open(self, range_header: str | None = None) -> Any:
            plane.views["t1"] = suspended  # suspended while the source opens
            return await file_source(path).open(range_header)

    views["t1"] = transfer(agreement_doc([]), source=Suspending())
    client = await client_for(plane)
    try:
        r = await client.get("/data/t1", headers={"Authorization": "Bearer " + p.token()})
        assert r.status == 403 and await r.json() == {"error": "the transfer is SUSPENDED"}
        assert r.headers["X-Receipt-Seq"] == "1"
    finally:
        await client.close()


async def test_64_mib_streamed_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    size = 64 * 1024 * 1024
    h = hashlib.sha256()
    with path.open("wb") as f:
        block = os.urandom(1024 * 1024)
        for i in range(64):
            chunk = block[i:] + block[:i]
            h.update(chunk)
            f.write(chunk)
    p = Provider()
    plane = Plane(p, {"t1": transfer(agreement_doc([]), source=file_source(path))}, _no_count)
    client = await client_for(plane)
    try:
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        tracemalloc.start()
        r = await client.get("/data/t1", headers={"Authorization": "Bearer " + p.token()})
        got = hashlib.sha256()
        n = 0
        async for chunk in r.content.iter_chunked(256 * 1024):
            got.update(chunk)
            n += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rss_delta_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
        print(
            f"64 MiB streamed: tracemalloc peak {peak / 2**20:.2f} MiB, "
            f"maxrss delta {rss_delta_kib / 1024:.1f} MiB"
        )
        assert r.status == 200 and n == size and got.digest() == h.digest()
        assert peak < 16 * 1024 * 1024
        assert rss_delta_kib < 16 * 1024
        v = plane.verifier()
        v.add(int(r.headers["X-Receipt-Seq"]), n, got.digest())
        rr = await client.get("/data/t1/receipts", headers={"Authorization": "Bearer " + p.token()})
        assert v.verify((await rr.json())["receipts"]).bytes == size
    finally:
        await client.close()


async def test_ticker_issues_receipts_without_a_request(tmp_path: Path) -> None:
    path = tmp_path / "d.bin"
    path.write_bytes(b"x")
    p = Provider()
    plane = Plane(p, {"t1": transfer(agreement_doc([]), source=file_source(path))}, _no_count)
    book = ReceiptBook(p.key, PROVIDER, interval=0.05, clock=p.clock)

    async def lookup(transfer_id: str) -> TransferView | None:
        return plane.views.get(transfer_id)

    app = create_app(verifier=p.cache, lookup=lookup, consume=_no_count, receipts=book, clock=p.clock)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        r = await client.get("/data/t1", headers={"Authorization": "Bearer " + p.token()})
        assert r.status == 200 and await r.read() == b"x"
        await asyncio.sleep(0.02)  # the handler finishes after the client has the body
        assert book.chains["t1"].chained_to == 1 and not book.chains["t1"].receipts
        p.clock.advance(1)
        await asyncio.sleep(0.1)
        assert len(book.chains["t1"].receipts) == 1
    finally:
        await client.close()


async def test_a_window_closing_mid_stream_cuts_the_stream_off(tmp_path: Path) -> None:
    """The agreement is decided again between chunks: when its time window ends while data
    flows, the stream stops there, without anyone acting."""
    from dataplane_testlib import iso

    from connector.dataplane.sources import SourceResponse

    p = Provider()
    window = agreement_doc(
        [{"leftOperand": "dateTime", "operator": "lt", "rightOperand": iso(p.clock() + 10)}]
    )
    chunk = b"w" * 65536
    sent = 0

    class Ticking:
        """Ten chunks; the clock passes the window's end after the third."""

        async def open(self, range_header: str | None = None) -> Any:
            async def chunks() -> AsyncIterator[bytes]:
                nonlocal sent
                for i in range(10):
                    if i == 3:
                        p.clock.advance(30)
                    sent += 1
                    yield chunk

            return SourceResponse(200, {"Content-Length": str(10 * len(chunk))}, chunks())

    plane = Plane(p, {"t1": transfer(window, source=Ticking())}, _no_count)
    client = await client_for(plane)
    try:
        r = await client.get("/data/t1", headers={"Authorization": "Bearer " + p.token()})
        assert r.status == 200
        with pytest.raises(Exception):  # noqa: B017 - the body is cut off (payload error)
            await r.read()
        assert sent <= 4
        chain = plane.book.chains["t1"]
        assert chain.chained_to == 1  # the cut-off response is still covered, with what left
        # the next request is a deny with the engine's reason
        r = await client.get("/data/t1", headers={"Authorization": "Bearer " + p.token()})
        assert r.status == 403 and "dateTime" in (await r.json())["error"]
    finally:
        await client.close()


async def test_large_files_go_out_with_sendfile_and_their_receipts_hold(tmp_path: Path) -> None:
    """A large region is sent with sendfile; the receipt's SHA-256 is hashed beside it the first
    time, known the next time (same file version), recomputed when the file changes, and a
    range of it is hashed as such."""
    from connector.dataplane.sources import FILE_DIGESTS, SENDFILE_MIN

    path = tmp_path / "large.bin"
    first = os.urandom(3 * SENDFILE_MIN)
    path.write_bytes(first)
    p = Provider()
    plane = Plane(p, {"t1": transfer(agreement_doc([]), source=file_source(path))}, _no_count)
    client = await client_for(plane)
    auth = {"Authorization": "Bearer " + p.token()}
    try:
        v = plane.verifier()
        bodies = []
        for headers in ({}, {}, {"Range": f"bytes=5-{2 * SENDFILE_MIN + 4}"}):
            r = await client.get("/data/t1", headers={**auth, **headers})
            body = await r.read()
            bodies.append(body)
            v.add_body(int(r.headers["X-Receipt-Seq"]), body)
        assert bodies[0] == bodies[1] == first and bodies[2] == first[5 : 2 * SENDFILE_MIN + 5]
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))  # another version
        with path.open("r+b") as f:
            f.write(b"changed!")
        r = await client.get("/data/t1", headers=auth)
        changed = await r.read()
        assert changed[:8] == b"changed!" and changed[8:] == first[8:]
        v.add_body(int(r.headers["X-Receipt-Seq"]), changed)
        await asyncio.sleep(0.05)  # the handler completes the chain after the last byte
        rr = await client.get("/data/t1/receipts", headers=auth)
        assert v.verify((await rr.json())["receipts"]).seq_to == 4
        assert len(FILE_DIGESTS._digests) >= 2
    finally:
        await client.close()


# --------------------------------------------------------------------------- modified in transit

MODIFY = Modification((Drop(Selector.parse("email")), Hash(Selector.parse("name"))))


def modified_csv(rows: int) -> tuple[bytes, bytes]:
    """A CSV of ``rows`` rows and what MODIFY makes of it."""
    head, out = ["id,name,email\r\n"], ["id,name\r\n"]
    for i in range(rows):
        name = f"Zoë {i}, the {'x' * (i % 7)}"
        head.append(f'{i},"{name}",z{i}@example.org\r\n')
        out.append(f"{i},{hashlib.sha256(name.encode()).hexdigest()}\r\n")
    return "".join(head).encode(), "".join(out).encode()


@pytest.mark.parametrize("rows", [3, 40_000])  # from memory; from disk with sendfile regions
async def test_modified_in_transit_whole_body_no_ranges_receipt_over_the_bytes_sent(
    tmp_path: Path, rows: int
) -> None:
    path = tmp_path / "people.csv"
    data, expected = modified_csv(rows)
    path.write_bytes(data)
    old = time.time() - 60
    os.utime(path, (old, old))
    p = Provider()
    source = ModifiedSource(file_source(path, cache=SmallFileCache()), MODIFY)
    plane = Plane(p, {"t1": transfer(agreement_doc([]), source=source)}, _no_count)
    client = await client_for(plane)
    try:
        auth = {"Authorization": "Bearer " + p.token()}
        v = plane.verifier()
        for headers in ({}, {"Range": "bytes=0-9"}, {"Range": "bytes=999999999-"}):
            r = await client.get("/data/t1", headers={**auth, **headers})
            body = await r.read()
            assert r.status == 200 and body == expected  # a Range gets the whole modified body
            assert "Content-Length" not in r.headers and "Accept-Ranges" not in r.headers
            assert "ETag" not in r.headers and r.headers["Content-Type"] == "text/csv"
            v.add_body(int(r.headers["X-Receipt-Seq"]), body)
        rr = await client.get("/data/t1/receipts", headers=auth)
        assert v.verify((await rr.json())["receipts"]).seq_to == 3
    finally:
        await client.close()


async def test_data_that_cannot_be_modified_is_refused_never_sent(tmp_path: Path) -> None:
    p = Provider()
    (tmp_path / "blob.bin").write_bytes(b"id,email\n1,a@b\n")
    (tmp_path / "other.csv").write_bytes(b"id,phone\n1,555\n")
    views = {
        "t1": transfer(
            agreement_doc([count_lteq(100)]),
            source=ModifiedSource(file_source(tmp_path / "blob.bin"), MODIFY),
        ),
        "t2": transfer(
            agreement_doc([count_lteq(100)]),
            transfer_id="t2",
            source=ModifiedSource(file_source(tmp_path / "other.csv"), MODIFY),
        ),
        "t3": transfer(
            agreement_doc([count_lteq(100)]),
            transfer_id="t3",
            source=ModifiedSource(file_source(tmp_path / "other.csv"), Modification((), refusal="no way")),
        ),
    }
    counted: list[str] = []

    async def count(agreement_id: str, *args: Any) -> tuple[bool, int]:
        counted.append(agreement_id)
        return True, len(counted)

    plane = Plane(p, views, count)
    client = await client_for(plane)
    try:
        for tid, reason in (
            (
                "t1",
                "the data's media type is not known (declare the asset's "
                "contentType), so it cannot be modified",
            ),
            ("t2", "the CSV has no column 'email'"),
            ("t3", "no way"),
        ):
            r = await client.get(f"/data/{tid}", headers={"Authorization": "Bearer " + p.token(tid)})
            assert r.status == 403
            assert (await r.json())["error"] == f"{REFUSED}: {reason}"
        assert len(counted) == 2  # a refusal that depends on no data costs no use
    finally:
        await client.close()


async def test_a_modification_failing_mid_stream_cuts_the_response_off(tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    data, expected = modified_csv(40_000)
    path.write_bytes(data + b'1,"\xff",x\r\n')  # not UTF-8, far past the first chunk
    p = Provider()
    plane = Plane(
        p,
        {
            "t1": transfer(
                agreement_doc([]), source=ModifiedSource(file_source(path, chunk_size=64 * 1024), MODIFY)
            )
        },
        _no_count,
    )
    client = await client_for(plane)
    try:
        r = await client.get("/data/t1", headers={"Authorization": "Bearer " + p.token()})
        assert r.status == 200
        received = b""
        with pytest.raises(aiohttp.ClientPayloadError):
            async for chunk in r.content.iter_any():
                received += chunk
        assert received and expected.startswith(received)  # modified, then cut off
        assert b"@example.org" not in received
    finally:
        await client.close()
