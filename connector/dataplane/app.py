"""The provider's data plane as an aiohttp app: GET /data/{transfer_id} and its receipts.

    Authorization: Bearer <transfer token>
      -> TokenCache (one signature check per token)      401 if invalid
      -> lookup(transfer_id) -> TransferView               404 if unknown
      -> circumstances (attested facts of the token, stated facts of the request headers,
         facts the provider holds, payments)
      -> pep.decide (state, agreement, facts, count)        403 {"error": reason}
      -> source.open(Range) -> streamed body               200/206/416/502
         (a ModifiedSource: modified in transit, whole body, 200; 403 if it cannot be)
      -> the response's SHA-256 folded into the transfer's receipt chain (X-Receipt-Seq)

GET /data/{transfer_id}/receipts returns the transfer's signed receipts (pending responses are
receipted first), for the same token. Every response sent for a transfer under a valid token,
denies included, gets a sequence number and is covered by the chain.

Fail closed on storage faults: a use that cannot be counted, or a receipt of an earlier response
that could not be recorded (audit log or store) and still cannot, answers 503 with a
``Retry-After`` before any byte of data leaves (connector.http.errors); a stream whose transfer
can no longer be checked is cut off.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime

from aiohttp import web

from connector.dataplane.modified import ModifiedSource, refusal
from connector.dataplane.pep import (
    Circumstances,
    ConsumeUse,
    TransferView,
    decide,
    still_permitted,
)
from connector.dataplane.receipts import BodyHasher, ReceiptBook, ReceiptChain
from connector.dataplane.sources import FILE_DIGESTS, FileRegion, SourceResponse, hash_region
from connector.dataplane.uses import UseReservations
from connector.faults import StoreUnavailable
from connector.http.errors import storage_fault
from connector.http.limits import one_header
from connector.identity.errors import InvalidToken
from connector.identity.tokens import Claims
from connector.identity.verify import Verifier
from connector.metrics import BYTES_SERVED
from connector.odrl.parse import PolicyError
from connector.usage.modify import ModificationError
from connector.usage.pipeline import request_facts, stated_from_headers
from connector.wireformat import RECEIPT_CHAIN_HEADER, RECEIPT_SEQ_HEADER

log = logging.getLogger(__name__)

Lookup = Callable[[str], Awaitable[TransferView | None]]
# raises StoreUnavailable while what the data plane must record cannot be recorded
Ready = Callable[[], Awaitable[None]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# what holds for a data request beyond its token: (token claims, transfer, request headers, now)
CircumstancesOf = Callable[[Claims, TransferView, Mapping[str, str], datetime], Awaitable[Circumstances]]


async def token_and_headers(
    claims: Claims, transfer: TransferView, headers: Mapping[str, str], now: datetime
) -> Circumstances:
    """The circumstances a data plane without a store knows: the consumer's attested
    attributes in its transfer token and the facts its request states."""
    if not transfer.agreement.operands:  # nothing to decide on beyond time and count
        return Circumstances()
    return Circumstances(
        request_facts(claims.attributes.get("attested"), stated=stated_from_headers(headers))
    )


SENDFILE_SEGMENT = 32 << 20  # bytes sent between two checks of the transfer and the agreement
MAX_TOKEN_LENGTH = 4096

_SETTINGS = web.AppKey("dataplane_settings", dict)
RECEIPTS = web.AppKey("dataplane_receipts", ReceiptBook)


def _seq_headers(chain: ReceiptChain, seq: int) -> dict[str, str]:
    if chain.chain_id:
        return {RECEIPT_SEQ_HEADER: str(seq), RECEIPT_CHAIN_HEADER: chain.chain_id}
    return {RECEIPT_SEQ_HEADER: str(seq)}


def _json_bytes(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _unauthorized(reason: str, status: int = 401) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'} if status == 401 else {}
    return web.json_response({"error": reason}, status=status, headers=headers)


def create_app(
    *,
    verifier: Verifier,
    lookup: Lookup,
    consume: ConsumeUse,
    receipts: ReceiptBook,
    clock: Callable[[], float] = time.time,
    circumstances: CircumstancesOf | None = None,
    run_ticker: bool = True,
    shared_receipts: Callable[[str], Awaitable[list[str]]] | None = None,
    ready: Ready | None = None,
) -> web.Application:
    """The data plane app. `verifier` should be a `TokenCache` (the hot path verifies once).

    `lookup` maps a transfer id to its live view (state, compiled agreement, source); `consume`
    counts a use: `UseReservations(store)` (blocks of uses per replica, given back when idle and
    on shutdown: the app runs that), or `Store.consume_use` (one write per use). With
    `run_ticker`, receipts are signed at least every `receipts.interval` seconds while responses
    flow. `ready` is awaited before each data request is decided: it raises `StoreUnavailable`
    while an earlier receipt still cannot be recorded (503, no data).
    """

    async def authenticate(request: web.Request) -> Claims | web.Response:
        auth = one_header(request, "Authorization")  # two: none (connector.http.limits)
        scheme, _, token = auth.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return _unauthorized("missing bearer transfer token")
        if len(token) > MAX_TOKEN_LENGTH:
            return _unauthorized("transfer token too long")
        try:
            claims = await verifier.verify(token)
        except InvalidToken as exc:
            return _unauthorized(exc.description, exc.status if exc.status in (401, 503) else 401)
        if claims.attributes.get("transferId") != request.match_info["transfer_id"]:
            return web.json_response({"error": "the token is for another transfer"}, status=403)
        return claims

    async def send_json(
        request: web.Request,
        chain: ReceiptChain,
        status: int,
        body: dict[str, str],
        headers: dict[str, str] | None = None,
    ) -> web.StreamResponse:
        data = _json_bytes(body)
        seq = chain.begin()
        try:
            return web.Response(
                body=data,
                status=status,
                content_type="application/json",
                headers={**(headers or {}), **_seq_headers(chain, seq)},
            )
        finally:
            hasher = BodyHasher()
            hasher.update(data)
            chain.complete(seq, hasher.nbytes, hasher.digest(), clock())

    def send_body(chain: ReceiptChain, src: SourceResponse, body: bytes) -> web.Response:
        """A body the source holds in memory: one response, one write."""
        seq = chain.begin()
        try:
            return web.Response(
                body=body, status=src.status, headers={**src.headers, **_seq_headers(chain, seq)}
            )
        finally:
            BYTES_SERVED.inc(len(body))
            chain.complete(seq, len(body), hashlib.sha256(body).digest(), clock())

    circumstances_of = circumstances or token_and_headers

    async def still_allowed(
        transfer_id: str, circ: Circumstances, *, decide_again: bool = True
    ) -> str | None:
        """Between chunks: the transfer is still STARTED and the agreement still permits as of
        now (a time window closing mid-stream ends the stream). The lookup is cached and the
        control plane invalidates it on a state change, so a suspension or termination cuts a
        running stream off."""
        view = await lookup(transfer_id)
        if view is None:
            return "the transfer is gone"
        if not decide_again:  # just decided: only the state can have changed since
            return None if view.state == "STARTED" else f"the transfer is {view.state}"
        return still_permitted(view, now=datetime.fromtimestamp(clock(), UTC), circumstances=circ)

    async def may_go_on(transfer_id: str, circ: Circumstances) -> str | None:
        """`still_allowed` between chunks; a transfer that can no longer be checked (a storage
        fault) is cut off: fail closed."""
        try:
            return await still_allowed(transfer_id, circ)
        except StoreUnavailable as exc:
            return f"the transfer cannot be checked: {exc.reason}"

    async def stream(
        request: web.Request, chain: ReceiptChain, src: SourceResponse, transfer_id: str, circ: Circumstances
    ) -> web.StreamResponse:
        seq = chain.begin()
        hasher = BodyHasher()
        finished = False
        try:
            response = web.StreamResponse(
                status=src.status, headers={**src.headers, **_seq_headers(chain, seq)}
            )
            await response.prepare(request)
            chunks = aiter(src.chunks)
            stop: str | None
            while True:
                try:
                    chunk = await anext(chunks)
                except StopAsyncIteration:
                    break
                except ModificationError as exc:
                    stop = refusal(exc)  # the rest of the data cannot be modified: cut off
                else:
                    stop = await may_go_on(transfer_id, circ)
                if stop is not None:
                    # cut off: the consumer sees a truncated body (Content-Length unmet, or a
                    # chunked body without its last chunk)
                    log.info("stream of %s cut off: %s", transfer_id, stop)
                    if request.transport is not None:
                        request.transport.close()
                    return response
                await response.write(chunk)
                BYTES_SERVED.inc(len(chunk))
                hasher.update(chunk)
            await response.write_eof()
            finished = True
            return response
        finally:
            chain.complete(seq, hasher.nbytes, hasher.digest(), clock(), broken=not finished)
            await src.close()

    async def send_region(
        request: web.Request,
        chain: ReceiptChain,
        src: SourceResponse,
        region: FileRegion,
        transfer_id: str,
        circ: Circumstances,
    ) -> web.StreamResponse:
        """A large file region with sendfile (zero copy; over TLS asyncio copies it), in
        segments with the same checks between them as a stream. The receipt's SHA-256: known
        for a whole file already hashed (same version), else hashed in a worker thread while
        the bytes go out; for a response cut off, the hash of what left."""
        seq = chain.begin()
        loop = asyncio.get_running_loop()
        fd = region.file.fileno()
        known = FILE_DIGESTS.get(region.key) if region.whole else None
        stop_hashing = threading.Event()
        hashing = (
            None
            if known is not None
            else loop.run_in_executor(
                None, hash_region, fd, region.offset, region.count, 4 << 20, stop_hashing
            )
        )
        sent = 0
        try:
            response = web.StreamResponse(
                status=src.status, headers={**src.headers, **_seq_headers(chain, seq)}
            )
            await response.prepare(request)
            while sent < region.count:
                stop = await may_go_on(transfer_id, circ)
                transport = request.transport
                if stop is not None or transport is None or transport.is_closing():
                    log.info("stream of %s cut off: %s", transfer_id, stop or "the client left")
                    if transport is not None:
                        transport.close()
                    return response
                n = min(SENDFILE_SEGMENT, region.count - sent)
                await loop.sendfile(transport, region.file, region.offset + sent, n)
                BYTES_SERVED.inc(n)
                sent += n
            await response.write_eof()
            return response
        finally:
            digest: bytes | None = None
            if sent < region.count:
                stop_hashing.set()  # cut off: only the bytes that left are hashed, below
            if hashing is not None:
                with contextlib.suppress(Exception):
                    digest = await asyncio.shield(hashing)
            if sent == region.count:
                digest = known or digest
                if digest is not None and region.whole and region.unchanged():
                    FILE_DIGESTS.put(region.key, digest)
            else:
                digest = None
            if digest is None:  # cut off (or the hash failed): the bytes that left
                digest = await loop.run_in_executor(None, hash_region, fd, region.offset, sent)
            chain.complete(seq, sent, digest or b"", clock(), broken=sent < region.count)
            await src.close()

    async def get_data(request: web.Request) -> web.StreamResponse:
        claims = await authenticate(request)
        if isinstance(claims, web.Response):
            return claims
        transfer_id = request.match_info["transfer_id"]
        transfer = await lookup(transfer_id)
        if transfer is None:
            return web.json_response({"error": "unknown transfer"}, status=404)
        if claims.attributes.get("agreementId") != transfer.agreement_id:
            return web.json_response({"error": "the token is for another agreement"}, status=403)
        if ready is not None:
            await ready()
        chain = receipts.chain(transfer_id, transfer.agreement_id)
        now = clock()
        unperformable = (
            transfer.source.unperformable() if isinstance(transfer.source, ModifiedSource) else None
        )
        if unperformable is not None:  # refused before a use is counted
            return await send_json(request, chain, 403, {"error": unperformable})
        at = datetime.fromtimestamp(now, UTC)
        try:
            circ = await circumstances_of(claims, transfer, request.headers, at)
        except PolicyError as exc:  # a stated fact that is not a term or a value
            return await send_json(request, chain, 400, {"error": f"a stated fact cannot be read: {exc}"})
        decision = await decide(claims, transfer, now=at, circumstances=circ, consume=consume)
        if not decision.permit:
            return await send_json(request, chain, 403, {"error": decision.reason})
        src: SourceResponse = await transfer.source.open(request.headers.get("Range"))
        if src.status >= 400:
            await src.close()
            extra = {k: v for k, v in src.headers.items() if k == "Content-Range"}
            return await send_json(
                request, chain, src.status, {"error": src.reason or "the data is not available"}, extra
            )
        # the state again, now that the source is open: a suspension or termination meanwhile
        # (the control plane invalidates the lookup) is a deny while no byte has left
        try:
            stop = await still_allowed(transfer_id, circ, decide_again=False)
        except StoreUnavailable:
            await src.close()
            raise
        if stop is not None:
            await src.close()
            return await send_json(request, chain, 403, {"error": stop})
        if src.body is not None:
            await src.close()
            return send_body(chain, src, src.body)
        if src.region is not None:
            return await send_region(request, chain, src, src.region, transfer_id, circ)
        return await stream(request, chain, src, transfer_id, circ)

    async def get_receipts(request: web.Request) -> web.Response:
        claims = await authenticate(request)
        if isinstance(claims, web.Response):
            return claims
        transfer_id = request.match_info["transfer_id"]
        chain = receipts.chains.get(transfer_id)
        if shared_receipts is not None:
            # every replica's chains of the transfer, from the store (this one's flushed first)
            view = await lookup(transfer_id)
            if view is None or claims.attributes.get("agreementId") != view.agreement_id:
                return web.json_response({"receipts": [], "seq_to": 0})
            if chain is not None:
                chain.flush(clock())
            return web.json_response(
                {"receipts": await shared_receipts(transfer_id), "seq_to": chain.receipted_to if chain else 0}
            )
        if chain is None or claims.attributes.get("agreementId") != chain.agreement_id:
            return web.json_response({"receipts": [], "seq_to": 0})
        chain.flush(clock())
        return web.json_response({"receipts": chain.receipts, "seq_to": chain.receipted_to})

    async def ticker(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(receipts.run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def reservations(app: web.Application) -> AsyncIterator[None]:
        assert isinstance(consume, UseReservations)
        task = asyncio.create_task(consume.run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        try:
            await consume.close()
        except Exception:  # the store is gone: the held uses stay counted (never over-granted)
            log.exception("giving reserved uses back on shutdown failed")

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except StoreUnavailable as exc:
            # raised before a response began: no byte of data left
            fault = storage_fault(exc, where=f"data plane {request.method} {request.path}")
            return web.json_response({"error": fault.reason}, status=fault.status, headers=fault.headers)

    app = web.Application(middlewares=[errors])
    app[RECEIPTS] = receipts
    app.router.add_get("/data/{transfer_id}", get_data)
    app.router.add_get("/data/{transfer_id}/receipts", get_receipts)
    if run_ticker:
        app.cleanup_ctx.append(ticker)
    if isinstance(consume, UseReservations):
        app.cleanup_ctx.append(reservations)
    return app
