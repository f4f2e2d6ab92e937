"""HttpData-PUSH, consumer side: the endpoint a provider pushes a transfer's data to.

    PUT  /{transfer_id}            Authorization: Bearer <secret>, X-Receipt-Seq: <n>
         -> body streamed to a temp file beside the target path, hashed; renamed into place
            only when complete                     200 {"bytes": n, "sha256": hex}
    POST /{transfer_id}/receipts   {"receipts": [jws, ...]}
         -> on_receipts(target, receipts, [(seq, bytes, digest), ...])
                                                   200 {"verified": true} | 400 {"error": ...}

The consumer puts a fresh secret in the DataAddress it sends (`new_push_secret`) and keeps only
its SHA-256. An unknown transfer and a wrong or missing secret both answer 401, so a caller
without the secret cannot tell which transfers exist. A body that does not arrive complete
(connection lost, Content-Length unmet, over `max_bytes`) leaves no file and is not recorded.
A target with a modification (the consumer's duty to modify its copy at rest) gets the bytes
modified before they reach the disk (the receipts still cover the bytes as they came); data that
cannot be modified answers 422 with the reason and leaves no file.
A storage fault (a full disk or vault, a read-only file system, the store unavailable) answers
503 with a ``Retry-After`` (connector.http.errors), leaves no file and records nothing: the
provider pushes again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import re
import secrets
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from aiohttp import web

from connector.faults import StoreUnavailable, from_os_error
from connector.http.errors import storage_fault
from connector.http.limits import (
    DEFAULT_LIMITS,
    BodyTooSlow,
    LimitError,
    Limits,
    one_header,
    read_chunk,
    read_json,
)
from connector.usage.modify import (
    REFUSED_AT_REST,
    Modification,
    ModificationError,
    Transformer,
    choose_media_type,
)
from connector.wireformat import RECEIPT_CHAIN_HEADER, RECEIPT_SEQ_HEADER

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

WRITE_SIZE = 256 * 1024  # bytes gathered before one write (in a worker thread)
MAX_RECEIPTS_BODY = 1024 * 1024
MAX_RECEIPTS = 10_000
MAX_RECEIPT_LENGTH = 16 * 1024
_MAX_SEQ = 2**63 - 1
_NO_TARGET = hashlib.sha256(b"no such transfer").hexdigest()  # compared against for unknown ids


@dataclass(frozen=True, slots=True)
class PushTarget:
    transfer_id: str  # the consumer's transfer id (the URL path segment)
    token_sha256: str  # hex SHA-256 of the bearer secret the consumer put in its DataAddress
    path: Path  # where to store the received bytes (parent dirs created)
    # the consumer's duty to modify its copy at rest: done before a byte reaches the disk
    modification: Modification | None = None


Resolve = Callable[[str], Awaitable[PushTarget | None]]
# (target, receipts, responses received [(seq, nbytes, digest)], responses the provider declares
# broke off [(seq, nbytes, digest)]) -> None if verified, else the reason
OnReceipts = Callable[
    [PushTarget, list[str], list[tuple[int, int, bytes]], list[tuple[int, int, bytes]]], Awaitable[str | None]
]

# transfer id -> {(chain, seq): (nbytes, digest)} of the complete uploads received (for the control plane:
# read it, and drop a transfer's entry once it is finished)
RESPONSES = web.AppKey("push_responses", dict)


def new_push_secret() -> tuple[str, str]:
    """A bearer secret for the DataAddress, and its SHA-256 (hex) to store."""
    secret = secrets.token_urlsafe(32)
    return secret, hashlib.sha256(secret.encode()).hexdigest()


def _error(status: int, reason: str) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'} if status == 401 else {}
    return web.json_response({"error": reason}, status=status, headers=headers)


_CHAIN = re.compile(r"[A-Za-z0-9_-]{0,64}")


def _parse_seq(value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip()
    if not value.isascii() or not value.isdigit() or len(value) > 19:
        return None
    seq = int(value)
    return seq if 0 < seq <= _MAX_SEQ else None


# --- file work, run in worker threads -----------------------------------------------------


def _open_temp(path: Path) -> tuple[BinaryIO, Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    return os.fdopen(fd, "wb"), Path(name)


def _write(f: BinaryIO, h: hashlib._Hash, data: bytes, modify: Transformer | None = None) -> None:
    h.update(data)  # hashlib releases the GIL for large buffers; the receipts cover what came
    f.write(modify.feed(data) if modify is not None else data)


def _commit(f: BinaryIO, tmp: Path, path: Path, modify: Transformer | None = None) -> None:
    if modify is not None:
        f.write(modify.finish())
    f.flush()
    os.fsync(f.fileno())
    f.close()
    os.replace(tmp, path)  # atomic: `path` is either the old file or the complete new one


def _discard(f: BinaryIO, tmp: Path) -> None:
    with contextlib.suppress(OSError):
        f.close()
    with contextlib.suppress(OSError):
        tmp.unlink()


def _discard_opened(fut: asyncio.Future[tuple[BinaryIO, Path]]) -> None:
    if not fut.cancelled() and fut.exception() is None:
        _discard(*fut.result())


class _TooLarge(Exception):
    pass


class _Broken(Exception):
    pass


def _failed(raw: object, got: dict[int, tuple[int, bytes]]) -> list[tuple[int, int, bytes]] | str:
    """The responses the provider declares broke off: [[seq, bytes, sha256 hex], ...]. A seq
    received complete here cannot also have broken off."""
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > MAX_RECEIPTS:
        return "'failed' must be a list of [seq, bytes, sha256 hex]"
    out: list[tuple[int, int, bytes]] = []
    for item in raw:
        if not (
            isinstance(item, list)
            and len(item) == 3
            and type(item[0]) is int
            and type(item[1]) is int
            and item[0] > 0
            and item[1] >= 0
            and isinstance(item[2], str)
            and len(item[2]) == 64
        ):
            return "'failed' must be a list of [seq, bytes, sha256 hex]"
        try:
            digest = bytes.fromhex(item[2])
        except ValueError:
            return "'failed' must be a list of [seq, bytes, sha256 hex]"
        if item[0] in got:
            return f"response {item[0]} was received complete; it did not break off"
        out.append((item[0], item[1], digest))
    return sorted(out)


def push_receiver(
    resolve: Resolve,
    on_receipts: OnReceipts,
    *,
    max_bytes: int | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> web.Application:
    """The push endpoint as an aiohttp (sub-)application; mount it with `add_subapp`.

    `resolve(transfer_id)` finds the transfer's target (None: unknown); `on_receipts` verifies
    the provider's receipts against the uploads recorded for the transfer. `max_bytes` caps one
    upload (413). `limits` bound the receipts' JSON body; an upload that pauses longer than the
    body timeout is refused (408).
    """
    # transfer -> {(chain, seq): (nbytes, digest)}: each provider process signs its own chain
    responses: dict[str, dict[tuple[str, int], tuple[int, bytes]]] = {}
    in_flight: set[tuple[str, str, int]] = set()  # (transfer, chain, seq)

    async def authorize(request: web.Request) -> PushTarget | web.Response:
        transfer_id = request.match_info["transfer_id"]
        scheme, _, secret = one_header(request, "Authorization").partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret:
            return _error(401, "missing bearer token")
        presented = hashlib.sha256(secret.encode("utf-8", "replace")).hexdigest()
        target = await resolve(transfer_id)
        expected = target.token_sha256.lower() if target is not None else _NO_TARGET
        if (
            not hmac.compare_digest(presented, expected)
            or target is None
            or target.transfer_id != transfer_id
        ):
            return _error(401, "unknown transfer or invalid token")
        return target

    async def receive(
        request: web.Request, target: PushTarget, seq: tuple[str, int], length: int | None
    ) -> tuple[int, bytes]:
        """Stream the body to a temp file, rename it into place and record it; (bytes, digest).

        Raises _TooLarge / _Broken / OSError. On any failure, cancellation included, the temp
        file goes; file work already running in a worker thread is let finish first (a thread
        cannot be stopped), and a commit that completes is recorded.
        """
        loop = asyncio.get_running_loop()
        opening = loop.run_in_executor(None, _open_temp, target.path)
        try:
            f, tmp = await asyncio.shield(opening)
        except asyncio.CancelledError:
            opening.add_done_callback(_discard_opened)
            raise
        h = hashlib.sha256()
        n = 0
        pending: asyncio.Future[None] | None = None  # the worker thread's current job
        modify = None
        if target.modification is not None:
            try:
                modify = target.modification.start(
                    choose_media_type(request.headers.get("Content-Type"), name=target.path.name)
                )
            except ModificationError:
                _discard(f, tmp)
                raise
        state = "writing"  # -> "committing" -> "committed"

        def committed(fut: asyncio.Future[None]) -> None:
            if fut.cancelled() or fut.exception() is not None:
                _discard(f, tmp)
            else:
                responses.setdefault(target.transfer_id, {})[seq] = (n, h.digest())

        try:
            buf = bytearray()
            while True:
                try:
                    chunk = await read_chunk(request.content, limits)
                except (asyncio.CancelledError, BodyTooSlow):
                    raise
                except Exception as exc:  # connection lost, bad chunked framing, ...
                    raise _Broken(f"the upload broke off ({type(exc).__name__})") from None
                if chunk:
                    n += len(chunk)
                    if max_bytes is not None and n > max_bytes:
                        raise _TooLarge
                    buf += chunk
                if buf and (len(buf) >= WRITE_SIZE or not chunk):
                    pending = loop.run_in_executor(None, _write, f, h, bytes(buf), modify)
                    buf.clear()
                    await asyncio.shield(pending)
                if not chunk:
                    break
            if length is not None and n != length:
                raise _Broken(f"the upload was truncated ({n} of {length} bytes)")
            state = "committing"
            pending = loop.run_in_executor(None, _commit, f, tmp, target.path, modify)
            await asyncio.shield(pending)
            state = "committed"
            committed(pending)
            return n, h.digest()
        finally:
            # cancelled while a worker thread writes or commits: clean up (or record a commit
            # that completes) once the thread is done
            if state == "writing":
                if pending is not None and not pending.done():
                    pending.add_done_callback(lambda _: _discard(f, tmp))
                else:
                    _discard(f, tmp)
            elif state == "committing" and pending is not None:
                if pending.done():
                    committed(pending)
                else:
                    pending.add_done_callback(committed)

    async def put_data(request: web.Request) -> web.Response:
        target = await authorize(request)
        if isinstance(target, web.Response):
            return target
        seq = _parse_seq(request.headers.get(RECEIPT_SEQ_HEADER))
        if seq is None:
            return _error(400, f"{RECEIPT_SEQ_HEADER} must be a positive integer")
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            # the receipts hash the bytes on the wire: they must be stored as they came
            return _error(415, "Content-Encoding is not supported (send the bytes as they are)")
        length = request.content_length
        if max_bytes is not None and length is not None and length > max_bytes:
            return _error(413, f"the data exceeds the limit of {max_bytes} bytes")
        chain = request.headers.get(RECEIPT_CHAIN_HEADER, "")
        if not _CHAIN.fullmatch(chain):
            return _error(400, f"{RECEIPT_CHAIN_HEADER} must be at most 64 letters, digits, - or _")
        key = (target.transfer_id, chain, seq)
        if (chain, seq) in responses.get(target.transfer_id, {}) or key in in_flight:
            return _error(409, f"response {seq} was already received")
        in_flight.add(key)
        try:
            nbytes, digest = await receive(request, target, (chain, seq), length)
        except _TooLarge:
            return _error(413, f"the data exceeds the limit of {max_bytes} bytes")
        except BodyTooSlow as exc:
            log.info("push to %s: %s", target.transfer_id, exc.reason)
            return _error(exc.status, exc.reason)
        except _Broken as exc:
            log.info("push to %s: %s", target.transfer_id, exc)
            return _error(400, str(exc))
        except ModificationError as exc:  # nothing kept: a copy is stored modified or not at all
            log.info("push to %s: %s", target.transfer_id, exc.reason)
            return _error(422, f"{REFUSED_AT_REST}: {exc.reason}")
        except OSError as exc:
            fault = from_os_error(exc, "the vault", target.path.parent)
            if fault is not None:
                raise fault from exc
            log.exception("push to %s: the data could not be stored", target.transfer_id)
            return _error(500, "the data could not be stored")
        finally:
            in_flight.discard(key)
        return web.json_response({"bytes": nbytes, "sha256": digest.hex()})

    async def post_receipts(request: web.Request) -> web.Response:
        target = await authorize(request)
        if isinstance(target, web.Response):
            return target
        try:
            doc = await read_json(request, max_bytes=MAX_RECEIPTS_BODY, limits=limits)
        except LimitError as exc:
            return _error(exc.status, exc.reason)
        receipts = doc.get("receipts") if isinstance(doc, dict) else None
        if not isinstance(receipts, list) or not all(isinstance(r, str) and r for r in receipts):
            return _error(400, 'the body must be {"receipts": [<receipt>, ...]}')
        if len(receipts) > MAX_RECEIPTS or any(len(r) > MAX_RECEIPT_LENGTH for r in receipts):
            return _error(400, "too many or too long receipts")
        chain = doc.get("chain", "")
        if not isinstance(chain, str) or not _CHAIN.fullmatch(chain):
            return _error(400, "'chain' must be at most 64 letters, digits, - or _")
        got = {seq: v for (c, seq), v in responses.get(target.transfer_id, {}).items() if c == chain}
        received = [(seq, n, d) for seq, (n, d) in sorted(got.items())]
        failed = _failed(doc.get("failed"), got)
        if isinstance(failed, str):
            return _error(400, failed)
        try:
            reason = await on_receipts(target, receipts, received, failed)
        except StoreUnavailable:
            raise
        except Exception:
            log.exception("push to %s: checking the receipts failed", target.transfer_id)
            return _error(500, "the receipts could not be checked")
        if reason is not None:
            log.info("push to %s: receipts refused: %s", target.transfer_id, reason)
            return _error(400, reason)
        return web.json_response({"verified": True})

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except StoreUnavailable as exc:
            fault = storage_fault(exc, where=f"push {request.method} {request.path}")
            response = _error(fault.status, fault.reason)
            response.headers.update(fault.headers)
            return response

    app = web.Application(middlewares=[errors])
    app[RESPONSES] = responses
    app.router.add_put("/{transfer_id}", put_data)
    app.router.add_post("/{transfer_id}/receipts", post_receipts)
    return app
