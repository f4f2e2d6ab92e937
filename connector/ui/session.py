"""The dashboard's sessions: logged in with a secret (the management API key, or the authority's
admin token), kept as a random id in process memory; a CSRF token per session; failed logins
rate-limited per client address.

The cookie is HttpOnly, SameSite=Strict, scoped to ``/ui``, and Secure when the page is served
over TLS. The secret itself is never stored in the session nor rendered.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

COOKIE = "connector_ui"
LIFETIME = 8 * 3600.0  # seconds a session lives after login
MAX_SESSIONS = 1000  # the oldest are dropped beyond this
MAX_FAILURES = 5  # failed logins from one address within WINDOW, then refused until it passes
WINDOW = 60.0
MAX_CLIENTS = 10_000  # addresses remembered for the rate limit (the oldest forgotten first)


@dataclass(frozen=True, slots=True)
class Session:
    sid: str
    csrf: str
    expires: float


class TooManyAttempts(Exception):
    """Failed logins from this address exceeded the limit: wait `retry_after` seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many failed logins; try again in {retry_after:.0f} s")
        self.retry_after = retry_after


@dataclass
class _Failures:
    first: float
    count: int = 0


@dataclass
class Sessions:
    """Sessions of one process. `check` says whether a secret is the right one (in constant time)."""

    check: Callable[[str], bool]
    clock: Callable[[], float] = time.monotonic
    lifetime: float = LIFETIME
    _sessions: dict[str, Session] = field(default_factory=dict)
    _failures: dict[str, _Failures] = field(default_factory=dict)
    _flash: dict[str, list[str]] = field(default_factory=dict)

    def login(self, secret: str, client: str) -> Session | None:
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
        if len(self._sessions) >= MAX_SESSIONS:
            oldest = next(iter(self._sessions))
            self._sessions.pop(oldest)
            self._flash.pop(oldest, None)
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), now + self.lifetime)
        self._sessions[session.sid] = session
        return session

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        session = self._sessions.get(sid)
        if session is None:
            return None
        if self.clock() >= session.expires:
            self.logout(sid)
            return None
        return session

    def logout(self, sid: str) -> None:
        self._sessions.pop(sid, None)
        self._flash.pop(sid, None)

    def flash(self, session: Session, message: str) -> None:
        """A message shown once, on the session's next page."""
        self._flash.setdefault(session.sid, []).append(message)

    def take_flash(self, session: Session) -> list[str]:
        return self._flash.pop(session.sid, [])


def csrf_ok(session: Session, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(session.csrf.encode(), str(given).encode())


def secret_checker(expected: str) -> Callable[[str], bool]:
    """A `Sessions.check` comparing with `expected` in constant time."""
    want = expected.encode()
    return lambda given: hmac.compare_digest(given.encode(), want)


def set_cookie(response: web.StreamResponse, request: web.Request, session: Session, path: str) -> None:
    # no max_age: a browser session cookie; the server ends it at `expires` anyway
    response.set_cookie(
        COOKIE, session.sid, path=path, httponly=True, samesite="Strict", secure=request.secure
    )


def clear_cookie(response: web.StreamResponse, path: str) -> None:
    response.del_cookie(COOKIE, path=path)
