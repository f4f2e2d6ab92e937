"""Request limits: the one place where every listening port and every JSON edge gets its bounds.

`Limits` holds the values (the ``[limits]`` section of the connector's configuration; the
authority reads the same section with ``--limits``). What enforces them:

- `load_json` parses a request body and refuses, each with its own `LimitError` subclass:
  malformed JSON; numbers that are not finite doubles (``NaN``, ``Infinity``, ``-Infinity``,
  ``1e999`` and integers beyond the double range: Python would parse them to ``inf``/``nan`` or
  an unbounded int, and they break every later comparison, hash and serialisation); nesting
  deeper than ``json_depth`` (checked iteratively after the parse, so recursive code that walks
  the document later, the ODRL parser, JSON-LD, pydantic, never sees a deeper one; input so deep
  that the C parser itself recurses out is refused the same way); strings longer than
  ``json_string_chars`` or that are not storable text (NUL, unpaired surrogates); arrays and
  objects with more than ``json_items`` entries.
- `read_body` reads a whole request body within ``body_timeout`` and a byte budget (413).
- `query_number` / `query_int` parse numeric query parameters: finite, in range, given once.
- `start_site` starts an aiohttp site with the header limits (line and field size, count), a
  keep-alive idle timeout and a header-read timeout that aiohttp lacks: a connection that does
  not complete its request headers within ``header_timeout`` of connecting (or of the first byte
  of a later request) is closed; over TLS the handshake has the same bound.
- `stop_sites` ends serving within ``shutdown_grace``: requests in flight get a third of it to
  finish, then their handlers are cancelled (long waits, streams); `ShutdownWatchdog` ends the
  process if an orderly stop still hangs (state stays consistent: every change is one database
  transaction).

Every refusal carries the HTTP status the edges answer (400; 413 for size, 408 for a slow body)
and a reason that names the limit's configuration key.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import re
import signal
import ssl
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger(__name__)

KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True, slots=True)
class Limits:
    """Request limits; the field names are the keys of the ``[limits]`` configuration section."""

    dsp_body_bytes: int = 2 * MIB  # one DSP message
    management_body_bytes: int = 4 * MIB  # one management API request
    authority_body_bytes: int = 64 * KIB  # one token or admin request at the authority
    json_depth: int = 64  # nested arrays/objects in one JSON body
    json_string_chars: int = 64 * KIB  # characters in one JSON string (keys too)
    json_items: int = 10_000  # entries in one JSON array or object
    header_line_bytes: int = 8190  # the request line and each header line
    header_field_bytes: int = 8190  # one header's value
    header_count: int = 100  # headers in one request
    header_timeout: float = 10.0  # seconds from connecting (or a request's first byte) to its
    #                               complete headers; also the TLS handshake's bound
    body_timeout: float = 30.0  # seconds to receive a whole JSON body (the longest pause in a
    #                             streamed upload)
    idle_timeout: float = 60.0  # seconds a keep-alive connection may stay idle between requests
    shutdown_grace: float = 10.0  # seconds from SIGTERM to the process's exit


DEFAULT_LIMITS = Limits()
# an application's limits, for edges that reach them through the request (`request.config_dict`)
LIMITS = web.AppKey("limits", Limits)


def limits_of(request: web.BaseRequest) -> Limits:
    found = request.config_dict.get(LIMITS) if isinstance(request, web.Request) else None
    return found if found is not None else DEFAULT_LIMITS


# --- typed refusals --------------------------------------------------------------------------


class LimitError(Exception):
    """A request refused by a limit or as malformed; ``status`` is what the edges answer."""

    status = 400

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BodyTooLarge(LimitError):
    status = 413


class BodyTooSlow(LimitError):
    status = 408


class BodyBroken(LimitError):
    """The body did not arrive complete (framing error, connection lost)."""


class NotJson(LimitError):
    pass


class JsonTooDeep(LimitError):
    pass


class NonFiniteNumber(LimitError):
    pass


class StringTooLong(LimitError):
    pass


class InvalidText(LimitError):
    """A JSON string that cannot be stored as text: a NUL character or an unpaired surrogate."""


class TooManyItems(LimitError):
    pass


class InvalidQueryNumber(LimitError):
    pass


# --- JSON --------------------------------------------------------------------------------------


def _refuse_constant(name: str) -> Any:
    raise NonFiniteNumber(f"{name} is not a finite number: JSON numbers must be finite")


_DOUBLE_MAX = sys.float_info.max


def _not_finite() -> NonFiniteNumber:
    # float("1e999") is inf, and an integer beyond the double range overflows float(): both
    # break every later comparison and serialisation
    return NonFiniteNumber("a number is beyond the range of a double: JSON numbers must be finite")


def _check_text(s: str, limits: Limits) -> None:
    if len(s) > limits.json_string_chars:
        raise StringTooLong(
            f"a JSON string is longer than {limits.json_string_chars} characters (limits.json_string_chars)"
        )
    if "\x00" in s:
        raise InvalidText("a JSON string contains a NUL character")
    if not s.isascii():
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidText("a JSON string contains an unpaired surrogate (not Unicode text)") from None


def _too_deep(limits: Limits) -> JsonTooDeep:
    return JsonTooDeep(f"JSON nested deeper than {limits.json_depth} levels (limits.json_depth)")


def _check_scalar(value: Any, limits: Limits, texts: bool) -> None:
    t = type(value)
    if t is str:
        if texts:
            _check_text(value, limits)
    elif t is float:
        if value - value != 0.0:  # inf - inf and nan - nan are nan
            raise _not_finite()
    elif t is int and not -_DOUBLE_MAX <= value <= _DOUBLE_MAX:
        raise _not_finite()


def check_json(doc: Any, limits: Limits, *, texts: bool = True) -> None:
    """Check a parsed document against the limits, level by level (no recursion). ``texts=False``
    skips the checks of strings (for a body that cannot hold an offending one)."""
    level = [doc]
    depth = 0
    while level:
        below: list[Any] = []
        for node in level:
            t = type(node)
            if t is dict:
                if texts:
                    for key in node:
                        _check_text(key, limits)
                values: Any = node.values()
            elif t is list:
                values = node
            else:
                _check_scalar(node, limits, texts)
                continue
            if len(node) > limits.json_items:
                raise TooManyItems(
                    f"a JSON array or object has more than {limits.json_items} entries (limits.json_items)"
                )
            for v in values:
                tv = type(v)
                if tv is dict or tv is list:
                    below.append(v)
                elif tv is not str or texts:
                    _check_scalar(v, limits, texts)
        depth += 1
        if below and depth >= limits.json_depth:
            raise _too_deep(limits)
        level = below


def load_json(raw: bytes | str, limits: Limits) -> Any:
    """Parse a request body; raise a `LimitError` subclass for anything the limits refuse."""
    try:
        doc = json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise _too_deep(limits) from None
    except LimitError:
        raise
    except (ValueError, UnicodeDecodeError) as exc:
        raise NotJson(f"the body is not JSON: {exc}"[:200]) from None
    # A string can be too long only in a body longer than the limit; NUL and unpaired
    # surrogates only come from \u escapes (the decoder refuses them as raw bytes).
    texts = isinstance(raw, str) or len(raw) > limits.json_string_chars or b"\\u" in raw
    check_json(doc, limits, texts=texts)
    return doc


# --- bodies ------------------------------------------------------------------------------------


async def read_body(request: web.BaseRequest, *, max_bytes: int, timeout: float, key: str = "") -> bytes:
    """The whole body, at most ``max_bytes`` of it (``key``: the limit's configuration key, for
    the reason), received within ``timeout`` seconds."""
    too_large = BodyTooLarge(f"the body size exceeds {max_bytes} bytes" + (f" ({key})" if key else ""))
    if request.content_length is not None and request.content_length > max_bytes:
        raise too_large
    raw = bytearray()
    try:
        async with asyncio.timeout(timeout):
            while chunk := await request.content.readany():
                raw += chunk
                if len(raw) > max_bytes:
                    raise too_large
    except TimeoutError:
        raise BodyTooSlow(f"the body did not arrive within {timeout:g} s (limits.body_timeout)") from None
    except (web.RequestPayloadError, ConnectionError) as exc:
        raise BodyBroken(f"the body broke off ({type(exc).__name__})") from None
    return bytes(raw)


async def read_json(request: web.BaseRequest, *, max_bytes: int, limits: Limits, key: str = "") -> Any:
    raw = await read_body(request, max_bytes=max_bytes, timeout=limits.body_timeout, key=key)
    return load_json(raw, limits)


async def read_chunk(content: Any, limits: Limits) -> bytes:
    """The next chunk of a streamed upload (b"" at its end); a pause longer than
    ``body_timeout`` is refused (`BodyTooSlow`)."""
    try:
        async with asyncio.timeout(limits.body_timeout):
            chunk: bytes = await content.readany()
            return chunk
    except TimeoutError:
        raise BodyTooSlow(
            f"the upload paused for more than {limits.body_timeout:g} s (limits.body_timeout)"
        ) from None


# --- query parameters --------------------------------------------------------------------------

_DECIMAL = re.compile(r"[+-]?(?:[0-9]{1,15}(?:\.[0-9]{0,15})?|\.[0-9]{1,15})", re.ASCII)
_INTEGER = re.compile(r"[+-]?[0-9]{1,15}", re.ASCII)


def _one(query: Mapping[str, str], name: str) -> str | None:
    getall = getattr(query, "getall", None)
    values = list(getall(name, [])) if getall is not None else ([query[name]] if name in query else [])
    if len(values) > 1:
        raise InvalidQueryNumber(f"give {name} once")
    return values[0] if values else None


def query_number(
    query: Mapping[str, str], name: str, default: float, *, minimum: float, maximum: float
) -> float:
    """A decimal query parameter in [minimum, maximum] (``default`` when absent)."""
    text = _one(query, name)
    if text is None:
        return default
    if not _DECIMAL.fullmatch(text):
        raise InvalidQueryNumber(
            f"{name} must be a number from {minimum:g} to {maximum:g}, not {text[:20]!r}"
        )
    value = float(text)
    if not minimum <= value <= maximum:
        raise InvalidQueryNumber(f"{name} must be a number from {minimum:g} to {maximum:g}")
    return value


def query_int(query: Mapping[str, str], name: str, default: int, *, minimum: int, maximum: int) -> int:
    """An integer query parameter in [minimum, maximum] (``default`` when absent)."""
    text = _one(query, name)
    if text is None:
        return default
    if not _INTEGER.fullmatch(text):
        raise InvalidQueryNumber(f"{name} must be an integer from {minimum} to {maximum}, not {text[:20]!r}")
    value = int(text)
    if not minimum <= value <= maximum:
        raise InvalidQueryNumber(f"{name} must be an integer from {minimum} to {maximum}")
    return value


# --- serving -----------------------------------------------------------------------------------


class LimitedRequestHandler(RequestHandler):
    """aiohttp's protocol with a header-read timeout.

    The timer runs from the connection's start, and from the first byte of each later request,
    until a request's headers are complete; when it fires while no request is being handled the
    connection is closed. Between requests aiohttp's keep-alive timer (``idle_timeout``) closes
    an idle connection.
    """

    __slots__ = ("_header_timeout", "_header_timer")

    def __init__(self, manager: Any, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._header_timer: asyncio.TimerHandle | None = None

    def _arm_header_timer(self) -> None:
        self._header_timer = self._loop.call_later(self._header_timeout, self._headers_late)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self._request_in_progress or self._messages or self._force_close:
            return  # a request is being handled: the idle timer looks after what follows
        log.debug(
            "closing a connection from %s: no complete request headers within %g s",
            self.peername,
            self._header_timeout,
        )
        self.force_close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        super().data_received(data)
        if self._request_count != before:
            self._disarm_header_timer()  # a request's headers are complete
        elif data and self._header_timer is None and self._waiter is not None:
            self._arm_header_timer()  # the first bytes of a request after an idle gap

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def log_exception(self, *args: Any, **kw: Any) -> None:
        exc = kw.get("exc_info")
        if isinstance(exc, HttpProcessingError) and exc.code < 500:
            # a malformed or oversized request (answered 400 with the reason): the client's
            # fault, logged without a traceback so that it cannot flood the log
            log.info("refused a request from %s: %s", self.peername, exc.message[:200])
            return
        super().log_exception(*args, **kw)


def handler_settings(limits: Limits) -> dict[str, Any]:
    """The RequestHandler settings the limits call for (aiohttp keyword arguments)."""
    return {
        "keepalive_timeout": limits.idle_timeout,
        "max_line_size": limits.header_line_bytes,
        "max_field_size": limits.header_field_bytes,
        "max_headers": limits.header_count,
        "lingering_time": min(10.0, limits.body_timeout),
        "access_log": None,
    }


class LimitedSite(web.TCPSite):
    """A TCP site whose connections are `LimitedRequestHandler` protocols."""

    __slots__ = ("_limits",)

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        limits: Limits,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(runner, host, port, ssl_context=ssl_context, reuse_address=True)
        self._limits = limits

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        settings = handler_settings(self._limits)
        header_timeout = self._limits.header_timeout

        def protocol() -> LimitedRequestHandler:
            return LimitedRequestHandler(server, loop=loop, header_timeout=header_timeout, **settings)

        self._server = await loop.create_server(
            protocol,
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            ssl_handshake_timeout=header_timeout if self._ssl_context is not None else None,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port


@dataclass(frozen=True, slots=True)
class Listening:
    runner: web.AppRunner
    url: str  # http(s)://host:port with the bound port


async def start_site(
    app: web.Application, host: str, port: int, *, limits: Limits, ssl_context: ssl.SSLContext | None = None
) -> Listening:
    """Serve ``app`` on host:port with the limits (port 0: any free port)."""
    # aiohttp waits this long for in-flight requests to finish, then as long again for their
    # cancelled handlers: a third of the grace each leaves a third for the rest of the stop
    runner = web.AppRunner(app, shutdown_timeout=limits.shutdown_grace / 3, **handler_settings(limits))
    await runner.setup()
    site = LimitedSite(runner, host, port, limits=limits, ssl_context=ssl_context)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return Listening(runner, f"{'https' if ssl_context else 'http'}://{host}:{site.port}")


async def until_signalled() -> None:
    """Return when SIGTERM or SIGINT arrives (a process serving until it is told to stop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):  # no signal handlers on this platform
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def stop_sites(runners: Sequence[web.BaseRunner], limits: Limits) -> None:
    """Stop serving: no new connections, in-flight requests finished or cancelled, within
    ``shutdown_grace``; connections still open then are closed."""
    servers = [r.server for r in runners if r.server is not None]
    try:
        async with asyncio.timeout(limits.shutdown_grace):
            await asyncio.gather(*(r.cleanup() for r in runners))
    except TimeoutError:
        log.warning("requests still in flight after %g s: closing their connections", limits.shutdown_grace)
        for server in servers:
            for connection in server.connections:
                connection.force_close()


class ShutdownWatchdog:
    """Ends the process if an orderly stop has not ended it ``seconds`` after it began.

    The last resort behind `stop_sites`: a handler or worker thread that ignores cancellation
    cannot keep the process alive. Exiting this way loses nothing committed; an open database
    transaction is rolled back as after a crash.
    """

    def __init__(self, seconds: float) -> None:
        self._timer = threading.Timer(seconds, self._expire, args=(seconds,))
        self._timer.daemon = True

    @staticmethod
    def _expire(seconds: float) -> None:
        with contextlib.suppress(Exception):
            sys.stderr.write(f"shutdown did not finish within {seconds:g} s: exiting now\n")
            sys.stderr.flush()
        os._exit(1)

    def start(self) -> ShutdownWatchdog:
        self._timer.start()
        return self

    def cancel(self) -> None:
        self._timer.cancel()


WATCHDOG_MARGIN = 3.0  # seconds beyond the grace before the watchdog ends the process


# ------------------------------------------------------------------ credentials


def one_header(request: web.Request, name: str) -> str:
    """The value of a header that must come once (a credential): "" when it is absent or
    repeated. With two ``Authorization`` or ``X-Api-Key`` headers, which one a proxy, a log or
    this edge reads would decide who the caller is, so the request counts as carrying none."""
    values = request.headers.getall(name, [])
    return values[0] if len(values) == 1 else ""


def same_secret(given: str, expected: bytes) -> bool:
    """Whether a presented credential is ``expected``, in constant time. Any text a header can
    hold compares (bytes that were not UTF-8 are kept as they came, never an error); an empty
    one never matches. Every key check of the HTTP edges goes through it."""
    return bool(given) and hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected)
