"""Streaming data sources: a local file (with HTTP Range) and the provider's HTTP upstream.

A source's `open(range_header)` returns a `SourceResponse`: the status and the headers to send
the consumer, and an async iterator of body chunks. Nothing is read ahead: a chunk is read only
when the caller asks for the next one, and the data plane asks only after the consumer took the
previous one (aiohttp's `StreamResponse.write` waits for the socket to drain), so memory stays
at about one chunk per response whatever the size of the data.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

import aiohttp

from connector.dataplane.ssrf import (
    GuardedResolver,
    Resolve,
    ResolvedTarget,
    SsrfPolicy,
    SsrfRefused,
    check_redirect,
    check_url,
    guarded_connector,
)

CHUNK_SIZE = 256 * 1024

# Upstream response headers the consumer may see; everything else (Set-Cookie, auth challenges,
# internal routing headers, ...) stays provider-side.
SAFE_RESPONSE_HEADERS = (
    "Content-Type", "Content-Length", "Content-Range", "Content-Encoding", "ETag",
    "Last-Modified", "Accept-Ranges", "Content-Language", "Content-Disposition",
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


class DataSource(Protocol):
    async def open(self, range_header: str | None = None) -> SourceResponse: ...


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover


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


@dataclass(frozen=True, slots=True)
class FileSource:
    """A local file, read in `chunk_size` pieces in a worker thread (the loop never blocks)."""

    path: Path
    content_type: str = "application/octet-stream"
    chunk_size: int = CHUNK_SIZE

    async def open(self, range_header: str | None = None) -> SourceResponse:
        loop = asyncio.get_running_loop()
        try:
            f: BinaryIO = await loop.run_in_executor(None, open, self.path, "rb")
        except OSError:
            return error_response(404, "the data is not available")
        try:
            st = os.fstat(f.fileno())
            size = st.st_size
            etag = f'"{st.st_mtime_ns:x}-{size:x}"'
            headers = {"Content-Type": self.content_type, "Accept-Ranges": "bytes", "ETag": etag}
            try:
                rng = parse_range(range_header, size)
            except RangeNotSatisfiable:
                f.close()
                return error_response(416, "range not satisfiable",
                                      {**headers, "Content-Range": f"bytes */{size}"})
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

        return SourceResponse(status, headers, self._chunks(f, start, length), close)

    async def _chunks(self, f: BinaryIO, start: int, length: int) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        fd = f.fileno()
        offset, remaining = start, length
        try:
            while remaining > 0:
                # pread: no shared file position, so concurrent readers of one fd are safe
                chunk = await loop.run_in_executor(
                    None, os.pread, fd, min(self.chunk_size, remaining), offset)
                if not chunk:
                    break  # the file shrank: stop short, the consumer sees a short body
                offset += len(chunk)
                remaining -= len(chunk)
                yield chunk
        finally:
            f.close()


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
    policy: SsrfPolicy
    headers: Mapping[str, str] = field(default_factory=dict)
    settings: UpstreamSettings = field(default_factory=UpstreamSettings)
    resolve: Resolve | None = None  # for tests; default: loop.getaddrinfo

    async def open(self, range_header: str | None = None) -> SourceResponse:
        try:
            target = await check_url(self.url, self.policy, resolve=self.resolve)
        except SsrfRefused as exc:
            return error_response(502, f"upstream refused: {exc.reason}")
        resolver = GuardedResolver(self.policy, resolve=self.resolve)
        resolver.pin(target)
        timeout = aiohttp.ClientTimeout(
            total=None, connect=self.settings.connect_timeout,
            sock_connect=self.settings.connect_timeout, sock_read=self.settings.read_timeout)
        session = aiohttp.ClientSession(
            connector=guarded_connector(resolver), timeout=timeout, trust_env=False,
            auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar())
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
        return SourceResponse(response.status, headers, self._chunks(response, session), close,
                              reason="range not satisfiable" if response.status == 416 else None)

    async def _request(
        self, session: aiohttp.ClientSession, resolver: GuardedResolver, target: ResolvedTarget,
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
                current = await check_redirect(current, location, hops, self.policy,
                                               resolve=self.resolve)
            except SsrfRefused as exc:
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
