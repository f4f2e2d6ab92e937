"""Sending webhook events (connector.runtime.webhooks builds them; the outbox delivers them).

Each delivery is an HTTP POST of the event's JSON with

* ``X-Connector-Event``: the event type (``negotiation.state``, ``transfer.state``,
  ``agreement.signed``);
* ``X-Connector-Delivery``: the event's id, the same on every retry (receivers de-duplicate);
* ``X-Connector-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">`` with the
  webhook's secret: the receiver recomputes it, compares in constant time, and refuses an old
  ``t`` (a replay).

Each hook has its own outbound-address policy (connector.http.outbound, built from its own
``[[webhooks]] allow``), its own pinning resolver and its own connection pool: a delivery is sent
as the hook its outbox row names, checked against that hook's policy only, so one hook's allowed
private address is never reachable through another hook's URL (nor through a kept-alive
connection another hook opened). The URL is checked and its addresses pinned right before each
delivery (a DNS answer that changes after the check is never used); https is verified against
the system's CAs. Redirects are not followed (an event goes to its configured URL or nowhere): a
3xx is final, as is a 4xx (but 408 and 429) and a destination the policy refuses; a 5xx, 408,
429 or a network error is retried by the outbox with backoff.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from connector.http.client import Delivery
from connector.http.outbound import (
    GuardedResolver,
    OutboundPolicy,
    OutboundRefused,
    Resolve,
    check_url,
    guarded_session,
)

EVENT_HEADER = "X-Connector-Event"
DELIVERY_HEADER = "X-Connector-Delivery"
SIGNATURE_HEADER = "X-Connector-Signature"


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(
    secret: bytes, header: str, body: bytes, *, now: float, tolerance: float = 300.0
) -> bool:
    """What a receiver does: the signature over the body at its time, that time recent."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - t) > tolerance:
        return False
    return hmac.compare_digest(signature(secret, t, body), header)


@dataclass(frozen=True)
class WebhookTarget:
    """One configured hook as the client sends to it: its URL, HMAC key and address policy."""

    url: str
    secret: bytes
    policy: OutboundPolicy


class _Route:
    """A hook's own resolver and session: what it pinned and connected to is never another's."""

    def __init__(self, target: WebhookTarget, resolve: Resolve | None) -> None:
        self.target = target
        self.resolver = GuardedResolver(target.policy, resolve=resolve)
        self._session: aiohttp.ClientSession | None = None

    def http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = guarded_session(self.resolver)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class WebhookClient:
    """POSTs signed events to the hooks' URLs, each hook through its own outbound policy."""

    def __init__(
        self,
        hooks: Mapping[str, WebhookTarget],
        *,
        clock: Callable[[], float],
        timeout: float = 10.0,
        resolve: Resolve | None = None,
    ) -> None:
        self._routes = {name: _Route(target, resolve) for name, target in hooks.items()}
        self._clock = clock
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._resolve = resolve

    async def close(self) -> None:
        for route in self._routes.values():
            await route.close()

    def _route(self, hook: str, url: str) -> _Route | None:
        """The hook a row was written for: by its name, its URL unchanged since; else (the
        hooks were reordered in the config) the one hook of that URL, if exactly one."""
        route = self._routes.get(hook)
        if route is not None and route.target.url == url:
            return route
        same = [r for r in self._routes.values() if r.target.url == url]
        return same[0] if len(same) == 1 else None

    async def send(self, hook: str, url: str, event: Mapping[str, Any], delivery_id: str) -> Delivery:
        route = self._route(hook, url)
        if route is None:  # a hook removed from the config since: nothing to sign with
            return Delivery(False, True, None, None, "no webhook of this URL is configured")
        policy = route.target.policy
        try:
            target = await check_url(url, policy, resolve=self._resolve)
        except OutboundRefused as exc:
            return Delivery(
                False, exc.permanent, None, None, f"destination refused: {exc.reason}", refused=exc.permanent
            )
        route.resolver.pin(target)
        body = json.dumps(event, separators=(",", ":"), sort_keys=True).encode()
        headers = {
            "Content-Type": "application/json",
            EVENT_HEADER: str(event.get("type")),
            DELIVERY_HEADER: delivery_id,
            SIGNATURE_HEADER: signature(route.target.secret, int(self._clock()), body),
        }
        try:
            async with route.http().post(
                target.url, data=body, headers=headers, timeout=self._timeout, allow_redirects=False
            ) as resp:
                await resp.read()
                if 200 <= resp.status < 300:
                    return Delivery(True, False, resp.status, None, "")
                if 300 <= resp.status < 400:
                    return Delivery(
                        False, True, resp.status, None, f"{resp.status}: redirects are not followed"
                    )
                final = 400 <= resp.status < 500 and resp.status not in (408, 429)
                return Delivery(False, final, resp.status, None, f"{resp.status} {resp.reason or ''}".strip())
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return Delivery(False, False, None, None, f"{type(exc).__name__}: {exc}"[:300])
