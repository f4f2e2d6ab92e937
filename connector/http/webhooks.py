"""Sending webhook events (connector.runtime.webhooks builds them; the outbox delivers them).

Each delivery is an HTTP POST of the event's JSON with

* ``X-Connector-Event``: the event type (``negotiation.state``, ``transfer.state``,
  ``agreement.signed``);
* ``X-Connector-Delivery``: the event's id, the same on every retry (receivers de-duplicate);
* ``X-Connector-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">`` with the
  webhook's secret: the receiver recomputes it, compares in constant time, and refuses an old
  ``t`` (a replay).

The destination goes through the same outbound-address policy as every other call
(connector.http.outbound: ``[[webhooks]] allow`` names the private addresses a hook may reach);
https is verified against the system's CAs; redirects are not followed; a 4xx is final, a 5xx
or a network error is retried by the outbox with backoff.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
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


class WebhookClient:
    """POSTs signed events to the hooks' URLs through one outbound policy."""

    def __init__(
        self,
        policy: OutboundPolicy,
        secrets: Mapping[str, bytes],
        *,
        clock: Callable[[], float],
        timeout: float = 10.0,
        resolve: Resolve | None = None,
    ) -> None:
        self._policy = policy
        self._secrets = dict(secrets)  # destination URL -> its HMAC secret
        self._clock = clock
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._resolve = resolve
        self._resolver = GuardedResolver(policy, resolve=resolve)
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = guarded_session(self._resolver)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(self, url: str, event: Mapping[str, Any], delivery_id: str) -> Delivery:
        secret = self._secrets.get(url)
        if secret is None:  # a hook removed from the config since: nothing to sign with
            return Delivery(False, True, None, None, "no webhook of this URL is configured")
        try:
            target = await check_url(url, self._policy, resolve=self._resolve)
        except OutboundRefused as exc:
            return Delivery(
                False, exc.permanent, None, None, f"destination refused: {exc.reason}", refused=exc.permanent
            )
        self._resolver.pin(target)
        body = json.dumps(event, separators=(",", ":"), sort_keys=True).encode()
        headers = {
            "Content-Type": "application/json",
            EVENT_HEADER: str(event.get("type")),
            DELIVERY_HEADER: delivery_id,
            SIGNATURE_HEADER: signature(secret, int(self._clock()), body),
        }
        try:
            async with self._http().post(
                target.url, data=body, headers=headers, timeout=self._timeout, allow_redirects=False
            ) as resp:
                await resp.read()
                if 200 <= resp.status < 300:
                    return Delivery(True, False, resp.status, None, "")
                final = 400 <= resp.status < 500 and resp.status not in (408, 429)
                return Delivery(False, final, resp.status, None, f"{resp.status} {resp.reason or ''}".strip())
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return Delivery(False, False, None, None, f"{type(exc).__name__}: {exc}"[:300])
