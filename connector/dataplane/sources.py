"""Streaming data sources: a local file (with HTTP Range) and the provider's HTTP upstream.

A source's `open(range_header)` returns a `SourceResponse`: the status and the headers to send
the consumer, and an async iterator of body chunks. Nothing is read ahead: a chunk is read only
when the caller asks for the next one, and the data plane asks only after the consumer took the
previous one (aiohttp's `StreamResponse.write` waits for the socket to drain), so memory stays
at about one chunk per response whatever the size of the data.

Small files (<= 64 KiB) are the exception: they are served from `SMALL_FILES`, an in-memory
cache revalidated at most every second (see `SmallFileCache`), because opening a file in a
worker thread costs more than the rest of a small response.

A file is opened only through its `DataRoots` (connector.assets): inside a data root, never a
protected file, no symlink followed out of the root. That check runs at every open from disk and
at every revalidation of a cached file, so a file replaced by a symlink out of its root is
refused (403) at most one revalidation interval after the change, and its bytes were never read.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

import aiohttp

from connector.assets import DataRoots, PathRefused
from connector.http.outbound import (
    GuardedResolver,
    OutboundPolicy,
    OutboundRefused,
    Resolve,
    ResolvedTarget,
    check_redirect,
    check_url,
    guarded_connector,
)
from connector.usage.modify import media_type_of

log = logging.getLogger(__name__)
CHUNK_SIZE = 256 * 1024

# Upstream response headers the consumer may see; everything else (Set-Cookie, auth challenges,
# internal routing headers, ...) stays provider-side.
SAFE_RESPONSE_HEADERS = (
    "Content-Type",
    "Content-Length",
    "Content-Range",
    "Content-Encoding",
    "ETag",
    "Last-Modified",
    "Accept-Ranges",
    "Content-Language",
    "Content-Disposition",
)
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


async def _no_close() -> None:
    return None


@dataclass(slots=True)
class SourceResponse:
    """What a source answers: status, headers for the consumer, and the body chunks."""

    status: int
    headers: dict[str, str]
    chunks: AsyncIterator[bytes]
    close: Callable[[], Awaitable[None]] = _no_close
    reason: str | None = None  # for an error status: why (safe to show the consumer)
    body: bytes | None = None  # the whole body, when the source has it in memory (= `chunks`)
    region: FileRegion | None = None  # a file region the server may send with sendfile (= `chunks`)


class DataSource(Protocol):
    async def open(self, range_header: str | None = None) -> SourceResponse: ...


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover


async def _one(body: bytes) -> AsyncIterator[bytes]:
    if body:
        yield body


def error_response(status: int, reason: str, headers: Mapping[str, str] | None = None) -> SourceResponse:
    return SourceResponse(status, dict(headers or {}), _empty(), reason=reason)


# --- Range --------------------------------------------------------------------------------


class RangeNotSatisfiable(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(f"range not satisfiable (size {size})")
        self.size = size


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """One byte range of a resource of `size` bytes (RFC 9110 section 14).

    None means "send the whole representation": no header, a syntactically invalid one, or a
    multi-range request (a server may ignore Range; multipart/byteranges is not supported).
    Raises RangeNotSatisfiable for a valid range that selects no byte.
    """
    if header is None:
        return None
    m = _RANGE.match(header)
    if m is None:
        return None
    first, last = m.group(1), m.group(2)
    if not first and not last:
        return None
    if not first:  # suffix: the last n bytes
        n = int(last)
        if n == 0 or size == 0:
            raise RangeNotSatisfiable(size)
        return ByteRange(max(0, size - n), size - 1)
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None  # invalid syntax: ignored
    if start >= size:
        raise RangeNotSatisfiable(size)
    return ByteRange(start, min(end, size - 1))


# --- local file ---------------------------------------------------------------------------


def _etag(mtime_ns: int, size: int) -> str:
    return f'"{mtime_ns:x}-{size:x}"'


@dataclass(slots=True)
class CachedFile:
    """What `SmallFileCache` knows of a file: its identity and, if small, its bytes."""

    ino: int
    mtime_ns: int
    size: int
    data: bytes | None  # None: too large to keep (streamed from disk)
    checked: float  # when its identity was last compared with the file's (cache clock)
    etag: str = field(init=False)

    def __post_init__(self) -> None:
        self.etag = _etag(self.mtime_ns, self.size)

    def same_file(self, st: os.stat_result) -> bool:
        return (st.st_ino, st.st_mtime_ns, st.st_size) == (self.ino, self.mtime_ns, self.size)


Opener = Callable[[str], int]  # path -> a read-only descriptor (DataRoots.open)


def _probe(
    opener: Opener, path: str, known: CachedFile | None, limit: int
) -> tuple[os.stat_result, bytes | None, os.stat_result | None]:
    """Open ``path`` with ``opener`` (blocking): its identity, and if it is not the ``known``
    file and at most ``limit`` bytes, its content (read up to ``limit + 1`` bytes) and its
    identity after the read."""
    fd = opener(path)
    try:
        before = os.fstat(fd)
        if (
            (known is not None and known.same_file(before))
            or before.st_size > limit
            or not stat.S_ISREG(before.st_mode)
        ):
            return before, None, None
        chunks = []
        left = limit + 1
        while left > 0:
            chunk = os.read(fd, left)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return before, b"".join(chunks), os.fstat(fd)
    finally:
        os.close(fd)


class SmallFileCache:
    """Small files in memory, keyed by path and checked against the file's (inode, mtime, size).

    A hit within `revalidate` seconds of the last check costs a dict lookup; after that, one
    `stat` (in a worker thread, shared by concurrent requests) confirms the entry or reloads it.
    So a changed file is served fresh at most `revalidate` seconds after the change. A file
    modified less than `racy` seconds ago is read but not kept: a second write within the same
    mtime tick and of the same size would be invisible to the check (as git's "racily clean").
    Files over `max_file` bytes are only remembered as large (their requests stream from disk);
    kept bytes are bounded by `max_bytes`, least recently used first out.
    """

    def __init__(
        self,
        *,
        max_file: int = 64 * 1024,
        max_bytes: int = 64 << 20,
        revalidate: float = 1.0,
        racy: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_file = max_file
        self.max_bytes = max_bytes
        self.revalidate = revalidate
        self.racy = racy
        self._clock = clock
        self._wall = wall_clock
        # keyed by the path's string: hashing and comparing a str is a C call, a Path's is not
        self._entries: OrderedDict[str, CachedFile] = OrderedDict()
        self._loading: dict[str, asyncio.Task[CachedFile]] = {}
        self.bytes = 0
        self.loads = 0  # stats and reads done (for tests and metrics)

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0

    async def get(self, path: str | os.PathLike[str], opener: Opener) -> CachedFile:
        """The file as it is now (give or take `revalidate` seconds), opened with ``opener``
        (which confines it to its data roots; one process serves under one set of roots).
        Raises OSError if it cannot be read, PathRefused if it may not be."""
        path = os.fspath(path)
        entry = self._entries.get(path)
        if entry is not None and self._clock() - entry.checked < self.revalidate:
            if entry.data is not None:
                self._entries.move_to_end(path)
            return entry
        loop = asyncio.get_running_loop()
        task = self._loading.get(path)
        if task is None or task.get_loop() is not loop:  # (a load of a loop since closed)
            task = self._loading[path] = loop.create_task(self._load(path, entry, opener))
            task.add_done_callback(
                lambda t: self._loading.pop(path, None) if self._loading.get(path) is t else None
            )
        # shielded: a cancelled request must not cancel a load other requests wait for
        return await asyncio.shield(task)

    async def _load(self, path: str, old: CachedFile | None, opener: Opener) -> CachedFile:
        loop = asyncio.get_running_loop()
        self.loads += 1
        checked = self._clock()
        try:
            st, data, after = await loop.run_in_executor(None, _probe, opener, path, old, self.max_file)
        except (OSError, PathRefused):
            self._forget(path)
            raise
        if old is not None and old.same_file(st):
            old.checked = checked
            return old
        self._forget(path)
        if data is None or after is None:  # large, or not a regular file: streamed from disk
            return self._keep(path, CachedFile(st.st_ino, st.st_mtime_ns, st.st_size, None, checked))
        entry = CachedFile(st.st_ino, st.st_mtime_ns, st.st_size, data, checked)
        if len(data) > self.max_file:  # grew past the limit meanwhile: stream it
            entry.data = None
            return self._keep(path, entry)
        stable = entry.same_file(after) and len(data) == st.st_size
        if not stable or self._wall() - st.st_mtime_ns / 1e9 < self.racy:
            entry.checked = float("-inf")  # served this once, not kept: the next request looks again
            return entry
        return self._keep(path, entry)

    def _forget(self, path: str) -> None:
        old = self._entries.pop(path, None)
        if old is not None and old.data is not None:
            self.bytes -= len(old.data)

    def _keep(self, path: str, entry: CachedFile) -> CachedFile:
        self._entries[path] = entry
        if entry.data is not None:
            self.bytes += len(entry.data)
            while self.bytes > self.max_bytes and self._entries:
                _, evicted = self._entries.popitem(last=False)
                if evicted.data is not None:
                    self.bytes -= len(evicted.data)
        if len(self._entries) > 100_000:  # paths of large files are cheap, but not unbounded
            self.clear()
        return entry


SMALL_FILES = SmallFileCache()


NOT_AVAILABLE = "the data is not available"
ASSET_GONE = "the asset of this agreement no longer exists"


@dataclass(frozen=True, slots=True)
class UnavailableSource:
    """Answers every request with one refusal: the agreement's asset is gone, or its data
    address cannot be served (the data plane then refuses with a reason, not a 500)."""

    status: int
    reason: str

    async def open(self, range_header: str | None = None) -> SourceResponse:
        return error_response(self.status, self.reason)


def _refused(exc: PathRefused) -> SourceResponse:
    log.warning("file asset refused: %s", exc)  # the operator's detail, with the paths
    return error_response(403, exc.reason)


@dataclass(frozen=True, slots=True)
class FileSource:
    """A local file inside the data roots `roots`, read in `chunk_size` pieces in a worker
    thread (the loop never blocks); a small one from `cache` (None: always from disk)."""

    path: Path
    content_type: str | None = None  # None: from the file name's extension, else octet-stream
    chunk_size: int = CHUNK_SIZE
    cache: SmallFileCache | None = SMALL_FILES
    roots: DataRoots = field(kw_only=True)

    def media_type(self) -> str:
        return self.content_type or media_type_of(self.path.name) or "application/octet-stream"

    async def open(self, range_header: str | None = None) -> SourceResponse:
        if self.cache is not None:
            try:
                cached = await self.cache.get(self.path, self.roots.open)
            except PathRefused as exc:
                return _refused(exc)
            except OSError:
                return error_response(404, NOT_AVAILABLE)
            if cached.data is not None:
                return self._from_memory(cached.data, cached.etag, range_header)
        return await self._from_disk(range_header)

    def _from_memory(self, data: bytes, etag: str, range_header: str | None) -> SourceResponse:
        size = len(data)
        headers = {"Content-Type": self.media_type(), "Accept-Ranges": "bytes", "ETag": etag}
        try:
            rng = parse_range(range_header, size)
        except RangeNotSatisfiable:
            return error_response(
                416, "range not satisfiable", {**headers, "Content-Range": f"bytes */{size}"}
            )
        if rng is None:
            body, status = data, 200
        else:
            body, status = data[rng.start : rng.end + 1], 206
            headers["Content-Range"] = rng.content_range(size)
        headers["Content-Length"] = str(len(body))
        return SourceResponse(status, headers, _one(body), body=body)

    async def _from_disk(self, range_header: str | None) -> SourceResponse:
        loop = asyncio.get_running_loop()
        try:
            fd = await loop.run_in_executor(None, self.roots.open, os.fspath(self.path))
        except PathRefused as exc:
            return _refused(exc)
        except OSError:
            return error_response(404, NOT_AVAILABLE)
        f: BinaryIO = os.fdopen(fd, "rb")
        try:
            st = os.fstat(f.fileno())
            size = st.st_size
            etag = _etag(st.st_mtime_ns, size)
            headers = {"Content-Type": self.media_type(), "Accept-Ranges": "bytes", "ETag": etag}
            try:
                rng = parse_range(range_header, size)
            except RangeNotSatisfiable:
                f.close()
                return error_response(
                    416, "range not satisfiable", {**headers, "Content-Range": f"bytes */{size}"}
                )
        except BaseException:
            f.close()
            raise
        if rng is None:
            start, length, status = 0, size, 200
        else:
            start, length, status = rng.start, rng.length, 206
            headers["Content-Range"] = rng.content_range(size)
        headers["Content-Length"] = str(length)

        async def close() -> None:
            f.close()

        region = FileRegion(f, start, length, _version(st), rng is None) if length >= SENDFILE_MIN else None
        return SourceResponse(status, headers, self._chunks(f, start, length), close, region=region)

    async def _chunks(self, f: BinaryIO, start: int, length: int) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        fd = f.fileno()
        offset, remaining = start, length
        try:
            while remaining > 0:
                # pread: no shared file position, so concurrent readers of one fd are safe
                chunk = await loop.run_in_executor(
                    None, os.pread, fd, min(self.chunk_size, remaining), offset
                )
                if not chunk:
                    break  # the file shrank: stop short, the consumer sees a short body
                offset += len(chunk)
                remaining -= len(chunk)
                yield chunk
        finally:
            f.close()


# --- large files: sendfile and known digests -------------------------------------------------

SENDFILE_MIN = 1 << 20  # regions from this size go out with sendfile (zero copy)


@dataclass(frozen=True, slots=True)
class FileRegion:
    """Bytes ``offset .. offset+count`` of an open file; ``key`` names the file's version
    (device, inode, mtime_ns, size), ``whole`` says the region is the whole file."""

    file: BinaryIO
    offset: int
    count: int
    key: tuple[int, int, int, int]
    whole: bool

    def unchanged(self) -> bool:
        """The file is still the version ``key`` names (checked after a send)."""
        try:
            return _version(os.fstat(self.file.fileno())) == self.key
        except OSError:
            return False


def _version(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


def hash_region(
    fd: int, offset: int, count: int, block: int = 4 << 20, stop: threading.Event | None = None
) -> bytes | None:
    """SHA-256 of ``count`` bytes of ``fd`` from ``offset`` (blocking: run it in a thread;
    hashlib releases the GIL, so it runs beside the event loop). None if ``stop`` was set
    before the end (the send it was for broke off)."""
    import hashlib

    h = hashlib.sha256()
    while count > 0:
        if stop is not None and stop.is_set():
            return None
        chunk = os.pread(fd, min(block, count), offset)
        if not chunk:
            break
        h.update(chunk)
        offset += len(chunk)
        count -= len(chunk)
    return h.digest()


class FileDigests:
    """SHA-256 of whole files by version, so a file served again is not hashed again (its
    receipt still covers exactly its bytes: a changed file is another version)."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._digests: OrderedDict[tuple[int, int, int, int], bytes] = OrderedDict()
        self._max = max_entries

    def get(self, key: tuple[int, int, int, int]) -> bytes | None:
        digest = self._digests.get(key)
        if digest is not None:
            self._digests.move_to_end(key)
        return digest

    def put(self, key: tuple[int, int, int, int], digest: bytes) -> None:
        self._digests[key] = digest
        self._digests.move_to_end(key)
        while len(self._digests) > self._max:
            self._digests.popitem(last=False)


FILE_DIGESTS = FileDigests()


# --- HTTP upstream ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    connect_timeout: float = 10.0
    read_timeout: float = 30.0  # between two reads of the upstream body, and for the headers
    chunk_size: int = 64 * 1024


@dataclass(slots=True)
class HttpSource:
    """The provider's internal API behind the data plane.

    `headers` are the provider-side request headers (API keys, ...): they go upstream only, and
    not even there after a redirect to another origin. The consumer gets the body and the
    `SAFE_RESPONSE_HEADERS`. Any upstream failure before the body becomes 502 with a reason
    that names the failure but none of the upstream's internals.
    """

    url: str
    policy: OutboundPolicy
    headers: Mapping[str, str] = field(default_factory=dict)
    settings: UpstreamSettings = field(default_factory=UpstreamSettings)
    resolve: Resolve | None = None  # for tests; default: loop.getaddrinfo

    async def open(self, range_header: str | None = None) -> SourceResponse:
        try:
            target = await check_url(self.url, self.policy, resolve=self.resolve)
        except OutboundRefused as exc:
            return error_response(502, f"upstream refused: {exc.reason}")
        resolver = GuardedResolver(self.policy, resolve=self.resolve)
        resolver.pin(target)
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=self.settings.connect_timeout,
            sock_connect=self.settings.connect_timeout,
            sock_read=self.settings.read_timeout,
        )
        session = aiohttp.ClientSession(
            connector=guarded_connector(resolver),
            timeout=timeout,
            trust_env=False,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        try:
            response = await self._request(session, resolver, target, range_header)
        except BaseException:
            await session.close()
            raise
        if isinstance(response, SourceResponse):
            await session.close()
            return response

        async def close() -> None:
            response.release()
            await session.close()

        if response.status >= 400 and response.status != 416:
            status = response.status
            await close()
            return error_response(502, f"upstream answered {status}")
        headers = {k: response.headers[k] for k in SAFE_RESPONSE_HEADERS if k in response.headers}
        return SourceResponse(
            response.status,
            headers,
            self._chunks(response, session),
            close,
            reason="range not satisfiable" if response.status == 416 else None,
        )

    async def _request(
        self,
        session: aiohttp.ClientSession,
        resolver: GuardedResolver,
        target: ResolvedTarget,
        range_header: str | None,
    ) -> aiohttp.ClientResponse | SourceResponse:
        origin = target.url.origin()
        current = target
        hops = 0
        while True:
            headers = dict(self.headers) if current.url.origin() == origin else {}
            headers["Accept-Encoding"] = "identity"
            if range_header is not None:
                headers["Range"] = range_header
            try:
                response = await session.get(current.url, headers=headers, allow_redirects=False)
            except TimeoutError:
                return error_response(502, "upstream timed out")
            except aiohttp.ClientError as exc:
                return error_response(502, f"upstream unreachable ({type(exc).__name__})")
            except OSError:
                return error_response(502, "upstream unreachable")
            if response.status not in _REDIRECTS:
                return response
            location = response.headers.get("Location")
            response.release()
            if not location:
                return error_response(502, "upstream redirect without a location")
            hops += 1
            try:
                current = await check_redirect(current, location, hops, self.policy, resolve=self.resolve)
            except OutboundRefused as exc:
                return error_response(502, f"upstream {exc.reason}")
            resolver.pin(current)

    async def _chunks(
        self, response: aiohttp.ClientResponse, session: aiohttp.ClientSession
    ) -> AsyncIterator[bytes]:
        try:
            # aiohttp pauses reading the socket when its buffer is full, so upstream is read
            # only as fast as the consumer takes chunks
            async for chunk in response.content.iter_chunked(self.settings.chunk_size):
                yield chunk
        finally:
            response.release()
            await session.close()
