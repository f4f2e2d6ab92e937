"""HttpData-PUSH, provider side: stream a source to the consumer's endpoint, then the receipts.

    check_url(destination) -> pinned, vetted addresses      refused: ok=False, nothing sent
    source.open() -> seq = chain.begin()
    PUT destination   Authorization, Content-Length (if known), X-Receipt-Seq: seq
        body: the source's chunks, hashed as they are sent; `still_allowed()` between chunks
    chain.complete(seq, bytes sent, their SHA-256)           always, exactly once
    2xx: chain.flush(); POST destination/receipts {"receipts": [...]}

Memory stays at about one chunk: a chunk is read from the source only when aiohttp asks for
the next one, and aiohttp asks only after the previous one went into a drained socket buffer.
A push never follows a redirect, never reads proxy settings from the environment and keeps no
cookies; the destination gets the Authorization value the consumer chose, and nothing else.

An abort (the transfer was suspended or terminated, the source broke, the destination stopped
reading) closes the connection before the body is complete: the destination sees a truncated
body (Content-Length unmet, or a chunked body without its last chunk) and must discard it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl as ssl_module
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import aiohttp
from yarl import URL

from connector.dataplane.modified import refusal as modification_refused
from connector.dataplane.receipts import BodyHasher, ReceiptChain
from connector.dataplane.sources import DataSource, SourceResponse
from connector.http.outbound import (
    GuardedResolver,
    OutboundPolicy,
    OutboundRefused,
    Resolve,
    ResolvedTarget,
    check_url,
    guarded_connector,
)
from connector.usage.modify import ModificationError
from connector.wireformat import RECEIPT_CHAIN_HEADER, RECEIPT_SEQ_HEADER

log = logging.getLogger(__name__)

MAX_REASON_BODY = 200  # characters of a refusing destination's body quoted in the reason
_DRAIN_GRACE = 5.0  # seconds to wait for aiohttp's cancelled body writer to let go of the body


@dataclass(frozen=True, slots=True)
class PushResult:
    ok: bool
    status: int | None  # the destination's HTTP status to the PUT (None if no response)
    bytes: int  # bytes actually sent
    sha256: str  # hex digest of the bytes sent
    seq: int  # the response's sequence number in the receipt chain (0: nothing was begun)
    receipts: list[str]  # the chain's signed receipts after the push (flushed)
    reason: str  # why it failed (safe to show the consumer), "" if ok


class _Abort(Exception):
    """Raised inside the body generator to break the upload off (aiohttp closes the connection)."""


@dataclass(slots=True)
class _Upload:
    """What the body generator did; shared between it (run by aiohttp's writer) and `push`."""

    hasher: BodyHasher = field(default_factory=BodyHasher)
    abort: str | None = None  # why the body was broken off
    finished: bool = False  # the whole source was handed to aiohttp
    completed: bool = False  # the chain has recorded the response
    idle: asyncio.Event = field(default_factory=asyncio.Event)  # the generator is not executing

    def __post_init__(self) -> None:
        self.idle.set()


def _short(body: bytes) -> str:
    text = " ".join(body.decode("utf-8", "replace").split())
    return text[:MAX_REASON_BODY]


def _content_length(src: SourceResponse) -> int | None:
    value = src.headers.get("Content-Length")
    if value is None or not value.isascii() or not value.isdigit():
        return None
    return int(value)


def _receipts_url(url: URL) -> URL:
    return url.with_path(url.raw_path.rstrip("/") + "/receipts", encoded=True, keep_query=True)


async def _refusal(response: aiohttp.ClientResponse) -> str:
    """`<status> <up to 200 characters of the body>` of a refusing destination."""
    try:
        body = _short(await response.content.read(4 * MAX_REASON_BODY))
    except (aiohttp.ClientError, OSError, TimeoutError):
        body = ""
    return f"{response.status} {body}".rstrip()


def _connection_failure(exc: BaseException, what: str) -> str:
    if isinstance(exc, TimeoutError):
        return f"{what} timed out"
    return f"{what} failed: the destination is unreachable or closed the connection ({type(exc).__name__})"


async def push(
    source: DataSource,
    *,
    destination: str,
    authorization: str | None,
    policy: OutboundPolicy,
    chain: ReceiptChain,
    still_allowed: Callable[[], Awaitable[str | None]],
    ssl: ssl_module.SSLContext | None = None,
    clock: Callable[[], float] = time.time,
    resolve: Resolve | None = None,
    connect_timeout: float = 10.0,
    read_timeout: float = 60.0,
    content_type: str | None = None,
    failed: Sequence[tuple[int, int, str]] = (),
) -> PushResult:
    """Stream `source` to `destination` (HTTP PUT), then POST the receipts next to it.

    `failed` declares earlier responses of this transfer that broke off ((seq, bytes, sha256
    hex) as the chain recorded them): the consumer kept nothing of them, and needs them to
    follow the chain; it logs them as the provider's claim, not as data it received.

    Never raises (but CancelledError): every failure is a `PushResult` with `ok=False` and a
    reason. `seq` is 0 when nothing was begun: the destination was refused, or the source
    answered an error and no byte was sent. Otherwise the chain records what was sent (in every
    case, exactly once), and `receipts` is flushed to cover it. `read_timeout` bounds both the
    wait for the destination's answer and any stall of the upload (no chunk taken for that long).
    """
    empty = BodyHasher().digest().hex()
    if authorization is not None and any(c in authorization for c in "\r\n\0"):
        return PushResult(
            False,
            None,
            0,
            empty,
            0,
            list(chain.receipts),
            "the authorization value is not a valid header value",
        )
    try:
        target = await check_url(destination, policy, resolve=resolve)
    except OutboundRefused as exc:
        return PushResult(
            False, None, 0, empty, 0, list(chain.receipts), f"destination refused: {exc.reason}"
        )
    try:
        src = await source.open(None)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("push to %s: the source failed to open", target.host)
        return PushResult(False, None, 0, empty, 0, list(chain.receipts), "the data source failed")
    if src.status >= 400:
        await src.close()
        return PushResult(
            False,
            None,
            0,
            empty,
            0,
            list(chain.receipts),
            src.reason or f"the data source answered {src.status}",
        )

    seq = chain.begin()
    upload = _Upload()
    status: int | None = None
    reason = ""
    try:
        status, reason = await _transfer(
            src,
            upload,
            target,
            seq=seq,
            authorization=authorization,
            policy=policy,
            chain=chain,
            still_allowed=still_allowed,
            ssl=ssl,
            clock=clock,
            resolve=resolve,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            content_type=content_type,
            failed=failed,
        )
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("push of response %d to %s failed", seq, target.host)
        reason = "the push failed (internal error)"
    finally:
        with contextlib.suppress(Exception):
            await src.close()
        if not upload.completed:  # `_transfer` failed before its PUT
            upload.completed = True
            chain.complete(seq, upload.hasher.nbytes, upload.hasher.digest(), clock())
        chain.flush(clock())
    ok = reason == ""
    if not ok:
        log.info("push of response %d to %s failed: %s", seq, target.host, reason)
    return PushResult(
        ok, status, upload.hasher.nbytes, upload.hasher.digest().hex(), seq, list(chain.receipts), reason
    )


async def _transfer(
    src: SourceResponse,
    upload: _Upload,
    target: ResolvedTarget,
    *,
    seq: int,
    authorization: str | None,
    policy: OutboundPolicy,
    chain: ReceiptChain,
    still_allowed: Callable[[], Awaitable[str | None]],
    ssl: ssl_module.SSLContext | None,
    clock: Callable[[], float],
    resolve: Resolve | None,
    connect_timeout: float,
    read_timeout: float,
    content_type: str | None,
    failed: Sequence[tuple[int, int, str]] = (),
) -> tuple[int | None, str]:
    """The PUT and, after a 2xx, the receipts POST: (PUT status, reason or "")."""
    loop = asyncio.get_running_loop()
    expected = _content_length(src)
    resolver = GuardedResolver(policy, resolve=resolve)
    resolver.pin(target)
    timeout = aiohttp.ClientTimeout(
        total=None, connect=connect_timeout, sock_connect=connect_timeout, sock_read=read_timeout
    )
    session = aiohttp.ClientSession(
        connector=guarded_connector(resolver),
        timeout=timeout,
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
    )
    auth = {"Authorization": authorization} if authorization else {}
    # unless given: the source's media type (a ModifiedSource's: what the data was read as)
    media = content_type or src.headers.get("Content-Type") or "application/octet-stream"
    headers = {**auth, "Content-Type": media, RECEIPT_SEQ_HEADER: str(seq)}
    if chain.chain_id:
        headers[RECEIPT_CHAIN_HEADER] = chain.chain_id
    if expected is not None:
        headers["Content-Length"] = str(expected)

    # the stall watchdog: every step of the body pushes the deadline on; once the body is out,
    # aiohttp's sock_read timeout bounds the wait for the answer
    watchdog = asyncio.timeout(None)
    watching = False

    def deadline(when: float | None) -> None:
        if watching:
            watchdog.reschedule(when)

    async def body() -> AsyncIterator[bytes]:
        upload.idle.clear()
        try:
            async for chunk in src.chunks:
                deadline(loop.time() + read_timeout)
                try:
                    stop = await still_allowed()
                except Exception:
                    log.exception("push of response %d: still_allowed failed", seq)
                    stop = "the transfer's state could not be checked"
                if stop is not None:
                    upload.abort = stop
                    raise _Abort(stop)
                if expected is not None and upload.hasher.nbytes + len(chunk) > expected:
                    upload.abort = "the data source sent more than it announced"
                    raise _Abort(upload.abort)
                upload.idle.set()
                yield chunk
                upload.idle.clear()
                upload.hasher.update(chunk)  # aiohttp took it: it is in the socket's buffer
                deadline(loop.time() + read_timeout)
            if expected is not None and upload.hasher.nbytes != expected:
                upload.abort = "the data source ended early"
                raise _Abort(upload.abort)
            upload.finished = True
            deadline(None)
        except _Abort:
            raise
        except ModificationError as exc:  # modified in transit: the rest cannot be
            upload.abort = modification_refused(exc)
            raise _Abort(upload.abort) from None
        except Exception as exc:  # the source broke (an HttpSource's upstream, a file read)
            log.info("push of response %d: the data source failed: %r", seq, exc)
            upload.abort = f"the data source failed ({type(exc).__name__})"
            raise _Abort(upload.abort) from None
        finally:
            upload.idle.set()

    gen = body()
    status: int | None = None
    refusal = ""
    try:
        try:
            async with watchdog:
                watching = True
                async with session.put(
                    target.url,
                    data=gen,
                    headers=headers,
                    allow_redirects=False,
                    ssl=ssl if ssl is not None else True,
                ) as response:
                    status = response.status
                    refusal = "" if 200 <= status < 300 else await _refusal(response)
                watching = False
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            if upload.abort is not None:
                return status, upload.abort
            if watchdog.expired():
                return status, f"the upload stalled: the destination took no data for {read_timeout:g}s"
            return status, _connection_failure(exc, "the upload")
        finally:
            watching = False
            await _settle(gen, upload, src)
            upload.completed = True
            chain.complete(seq, upload.hasher.nbytes, upload.hasher.digest(), clock())
        if status is None:  # pragma: no cover - aiohttp answers or raises
            return None, "the destination did not answer"
        if 300 <= status < 400:
            return status, "the destination redirected; redirects are not followed"
        if refusal:
            return status, f"the destination refused the data: {refusal}"
        if upload.abort is not None:
            return status, upload.abort
        if not upload.finished:
            return status, "the destination answered before it received the whole body"

        chain.flush(clock())
        try:
            async with session.post(
                _receipts_url(target.url),
                json={
                    "receipts": list(chain.receipts),
                    "failed": [list(f) for f in failed],
                    "chain": chain.chain_id,
                },
                headers=auth,
                allow_redirects=False,
                ssl=ssl if ssl is not None else True,
            ) as response:
                if not 200 <= response.status < 300:
                    return status, f"the destination refused the receipts: {await _refusal(response)}"
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return status, _connection_failure(exc, "delivering the receipts")
        return status, ""
    finally:
        await session.close()


async def _settle(gen: AsyncIterator[bytes], upload: _Upload, src: SourceResponse) -> None:
    """Make sure the body generator is done before its byte count is final.

    aiohttp runs the generator in its own writer task, which it cancels when the request ends;
    wait for that to let go of the generator, then close it (a generator suspended at `yield`
    still holds a chunk that was never confirmed sent, and is not counted).
    """
    if not upload.idle.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(upload.idle.wait(), _DRAIN_GRACE)
    for it in (gen, src.chunks):
        aclose = getattr(it, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
