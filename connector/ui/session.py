"""The dashboards' sessions: logged in with a secret (the management API key, or the authority's
admin token), a random id in a cookie, a CSRF token per session, messages shown once on the
session's next page; failed logins rate-limited per client address.

One `Sessions` holds the rules; where the sessions live is its backend:

* `StoreSessions`: the connector's store (table ``ui_sessions``, connector.store.ui_sessions),
  so that a connector's replicas behind a load balancer share them (a login on one is known on
  the next, a logout ends it on all, a restart keeps it). The row holds the HMAC-SHA256 of the
  id under the management API key, never the id (a new key ends every session); the messages
  shown once are in the row too, as a form posted to one replica is usually followed by its
  page from another.
* `MemorySessions`: one process's memory (the authority, which has no such store).

The rate limit on failed logins stays per process on either backend: behind a load balancer
an address gets `MAX_FAILURES` tries per replica within `WINDOW`.

The cookie is HttpOnly, SameSite=Strict, scoped to ``/ui``, and Secure when the page is served
over TLS. The secret itself is never stored in the session nor rendered.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from aiohttp import web

from connector.store import Store
from connector.store.ui_sessions import UiSessionRow

COOKIE = "connector_ui"
LIFETIME = 8 * 3600.0  # seconds a session lives after login
MAX_SESSIONS = 1000  # the ones ending first are dropped beyond this
MAX_FLASH = 20  # messages kept for a session's next page (the oldest dropped first)
MAX_FAILURES = 5  # failed logins from one address within WINDOW, then refused until it passes
WINDOW = 60.0
MAX_CLIENTS = 10_000  # addresses remembered for the rate limit (the oldest forgotten first)


@dataclass(frozen=True, slots=True)
class Session:
    sid: str  # the cookie's value: kept by the browser, only its hash by a backend
    csrf: str
    expires: float  # seconds since the epoch


@dataclass(frozen=True, slots=True)
class Kept:
    """A session as a backend keeps it: under the hash of its id."""

    key: str
    csrf: str
    expires: float


class TooManyAttempts(Exception):
    """Failed logins from this address exceeded the limit: wait `retry_after` seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many failed logins; try again in {retry_after:.0f} s")
        self.retry_after = retry_after


class SessionBackend(Protocol):
    """Where sessions live, each under `session_key` of its id."""

    async def add(self, kept: Kept, now: float) -> None:
        """Keep a new session, dropping the ended ones (and the ones ending first beyond
        `MAX_SESSIONS`)."""

    async def find(self, key: str) -> Kept | None: ...

    async def remove(self, key: str) -> None: ...

    async def add_flash(self, key: str, message: str) -> None: ...

    async def take_flash(self, key: str) -> list[str]: ...


def session_key(sid: str, pepper: bytes = b"") -> str:
    """What a backend keys a session by: HMAC-SHA256 of its id under ``pepper`` (the secret
    logged in with: a new management API key leaves every older session's row unreachable,
    on every replica). The id is 256 random bits, so a leaked table opens no session. Bytes a
    cookie cannot hold (non-UTF-8) are kept as they came (surrogateescape), never an error."""
    return hmac.new(pepper, sid.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()


@dataclass
class MemorySessions:
    """Sessions in this process's memory."""

    _kept: dict[str, Kept] = field(default_factory=dict)
    _flash: dict[str, list[str]] = field(default_factory=dict)

    async def add(self, kept: Kept, now: float) -> None:
        for key in [k for k, s in self._kept.items() if s.expires <= now]:
            await self.remove(key)
        while len(self._kept) >= MAX_SESSIONS:
            await self.remove(min(self._kept.values(), key=lambda s: s.expires).key)
        self._kept[kept.key] = kept

    async def find(self, key: str) -> Kept | None:
        return self._kept.get(key)

    async def remove(self, key: str) -> None:
        self._kept.pop(key, None)
        self._flash.pop(key, None)

    async def add_flash(self, key: str, message: str) -> None:
        if key in self._kept:
            self._flash[key] = [*self._flash.get(key, []), message][-MAX_FLASH:]

    async def take_flash(self, key: str) -> list[str]:
        return self._flash.pop(key, [])


def _time(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


@dataclass
class StoreSessions:
    """Sessions in the connector's store, shared by its replicas."""

    store: Store

    async def add(self, kept: Kept, now: float) -> None:
        row = UiSessionRow(kept.key, kept.csrf, _time(kept.expires), _time(now))
        async with self.store.transaction() as tx:
            await tx.ui_sessions.prune(_time(now), MAX_SESSIONS - 1)
            await tx.ui_sessions.add(row)

    async def find(self, key: str) -> Kept | None:
        async with self.store.transaction(readonly=True) as tx:
            row = await tx.ui_sessions.get(key)
        return None if row is None else Kept(key, row.csrf, row.expires_at.timestamp())

    async def remove(self, key: str) -> None:
        async with self.store.transaction() as tx:
            await tx.ui_sessions.delete(key)

    async def add_flash(self, key: str, message: str) -> None:
        async with self.store.transaction() as tx:
            row = await tx.ui_sessions.get(key, for_update=True)
            if row is not None:
                await tx.ui_sessions.set_flash(key, (*row.flash, message)[-MAX_FLASH:])

    async def take_flash(self, key: str) -> list[str]:
        # a read first: most pages have no message, and a read takes no writer lock
        async with self.store.transaction(readonly=True) as tx:
            row = await tx.ui_sessions.get(key)
        if row is None or not row.flash:
            return []
        async with self.store.transaction() as tx:
            row = await tx.ui_sessions.get(key, for_update=True)
            if row is None or not row.flash:
                return []
            await tx.ui_sessions.set_flash(key, ())
        return list(row.flash)


@dataclass
class _Failures:
    first: float
    count: int = 0


@dataclass
class Sessions:
    """The dashboards' session rules over a `backend`. `check` says whether a secret is the
    right one (in constant time); `clock`: seconds since the epoch."""

    check: Callable[[str], bool]
    backend: SessionBackend = field(default_factory=MemorySessions)
    pepper: bytes = b""  # keys the sessions' rows (session_key): the secret logged in with
    clock: Callable[[], float] = time.time
    lifetime: float = LIFETIME
    _failures: dict[str, _Failures] = field(default_factory=dict)

    def _key(self, sid: str) -> str:
        return session_key(sid, self.pepper)

    async def login(self, secret: str, client: str) -> Session | None:
        """A new session if `secret` is right; None if not; `TooManyAttempts` while `client`
        has failed too often (the secret is then not even checked)."""
        now = self.clock()
        failures = self._failures.get(client)
        if failures is not None and now - failures.first >= WINDOW:
            del self._failures[client]
            failures = None
        if failures is not None and failures.count >= MAX_FAILURES:
            raise TooManyAttempts(WINDOW - (now - failures.first))
        if not secret or not self.check(secret):
            if failures is None:
                if len(self._failures) >= MAX_CLIENTS:
                    self._failures.pop(next(iter(self._failures)))
                failures = self._failures[client] = _Failures(now)
            failures.count += 1
            return None
        self._failures.pop(client, None)
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), now + self.lifetime)
        await self.backend.add(Kept(self._key(session.sid), session.csrf, session.expires), now)
        return session

    async def get(self, sid: str | None) -> Session | None:
        """The live session of a cookie's id (an ended one is removed)."""
        if not sid:
            return None
        key = self._key(sid)
        kept = await self.backend.find(key)
        if kept is None:
            return None
        if self.clock() >= kept.expires:
            await self.backend.remove(key)
            return None
        return Session(sid, kept.csrf, kept.expires)

    async def logout(self, session: Session) -> None:
        await self.backend.remove(self._key(session.sid))

    async def flash(self, session: Session, message: str) -> None:
        """A message shown once, on the session's next page."""
        await self.backend.add_flash(self._key(session.sid), message)

    async def take_flash(self, session: Session) -> list[str]:
        return await self.backend.take_flash(self._key(session.sid))


def csrf_ok(session: Session, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(
        session.csrf.encode(), str(given).encode("utf-8", "surrogateescape")
    )


def secret_checker(expected: str) -> Callable[[str], bool]:
    """A `Sessions.check` comparing with `expected` in constant time."""
    want = expected.encode()
    return lambda given: hmac.compare_digest(given.encode("utf-8", "surrogateescape"), want)


def set_cookie(response: web.StreamResponse, request: web.Request, session: Session, path: str) -> None:
    # no max_age: a browser session cookie; the server ends it at `expires` anyway
    response.set_cookie(
        COOKIE, session.sid, path=path, httponly=True, samesite="Strict", secure=request.secure
    )


def clear_cookie(response: web.StreamResponse, path: str) -> None:
    response.del_cookie(COOKIE, path=path)
