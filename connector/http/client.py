"""The outbound DSP client: every call carries the sender's DAT, over TLS that trusts only the
data-space CA (plain HTTP only when the configuration says so, for loopback tests).

Every destination is someone else's word (a peer URL, a callbackAddress), so every call goes
through the control plane's `OutboundPolicy` (`[dsp] peer_allow`, see
`connector.http.outbound`): the URL is checked and its addresses pinned right before the call,
and the connection can reach no other address. A refused destination is never contacted.

Outcomes are classified for the outbox: 2xx delivered; a refused destination, a redirect (never
followed) and 4xx refused (permanent: retrying cannot help); 5xx, timeouts, connection errors and
a name that does not resolve transient (retry with backoff).

A peer answers 401 (not 404) only when the DAT is genuine but predates a change of what the
authority attests about this participant (connector.http.dsp): the call is repeated once, at
once, with a fresh DAT (`renew`), so a jurisdiction or group change costs no failed message.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from connector.http.outbound import (
    GuardedResolver,
    OutboundPolicy,
    OutboundRefused,
    Resolve,
    ResolvedTarget,
    check_url,
    guarded_session,
)
from connector.protocol import wirecheck

TokenSource = Callable[[], Awaitable[str]]
# A fresh DAT instead of the one given (which a peer refused as stale).
TokenRenewal = Callable[[str], Awaitable[str]]
MAX_RESPONSE_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class Delivery:
    ok: bool
    permanent: bool
    status: int | None
    body: Any
    reason: str
    refused: bool = False  # the outbound policy refused the destination: nothing was sent
    next_url: str | None = None  # a 2xx answer's Link rel="next" (DSP catalog pagination)


class DspClient:
    def __init__(
        self,
        token: TokenSource,
        *,
        ssl_context: ssl.SSLContext | None,
        policy: OutboundPolicy,
        timeout: float = 10.0,
        resolve: Resolve | None = None,
        renew: TokenRenewal | None = None,
    ) -> None:
        self._token = token
        self._renew = renew
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else False
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._policy = policy
        self._resolve = resolve
        self._resolver = GuardedResolver(policy, resolve=resolve)
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:  # made on first use: a session belongs to a running loop
            self._session = guarded_session(self._resolver)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def check(self, url: str) -> ResolvedTarget:
        """The destination as the policy allows it (its addresses pinned for the call that
        follows); the OutboundRefused of the reason otherwise."""
        target = await check_url(url, self._policy, resolve=self._resolve)
        self._resolver.pin(target)
        return target

    @staticmethod
    def _headers(token: str) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }

    async def request(self, method: str, url: str, payload: Any = None) -> Delivery:
        try:
            target = await self.check(url)
        except OutboundRefused as exc:
            if not exc.permanent:  # a name that does not resolve now: worth another try
                return Delivery(False, False, None, None, exc.reason)
            return Delivery(False, True, None, None, f"destination refused: {exc.reason}", refused=True)
        try:
            token = await self._token()
        except Exception as exc:  # no DAT: transient, the authority may come back
            return Delivery(False, False, None, None, f"no DAT to send with: {exc}")
        wirecheck.check(payload, "sent")
        data = None if payload is None else json.dumps(payload).encode()
        d = await self._send(method, target, data, token)
        if d.status == 401 and self._renew is not None:
            try:
                token = await self._renew(token)
            except Exception as exc:
                return Delivery(False, False, None, None, f"no fresh DAT to send with: {exc}")
            d = await self._send(method, target, data, token)
        return d

    async def _send(self, method: str, target: ResolvedTarget, data: bytes | None, token: str) -> Delivery:
        headers = self._headers(token)
        try:
            async with self._http().request(
                method,
                target.url,
                data=data,
                headers=headers,
                ssl=self._ssl,
                timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                if 300 <= resp.status < 400:
                    return Delivery(
                        False,
                        True,
                        resp.status,
                        None,
                        f"{resp.status}: the peer redirects, and redirects are not followed",
                    )
                # read(n) returns what has arrived (up to n): read to the end, within the limit
                chunks: list[bytes] = []
                size = 0
                async for chunk in resp.content.iter_chunked(1 << 16):
                    size += len(chunk)
                    if size > MAX_RESPONSE_BYTES:
                        return Delivery(False, False, resp.status, None, "response too large")
                    chunks.append(chunk)
                raw = b"".join(chunks)
                body: Any = None
                if raw:
                    try:
                        body = json.loads(raw)
                    except ValueError:
                        body = raw.decode("utf-8", "replace")[:500]
                if 200 <= resp.status < 300:
                    following = resp.links.get("next")
                    return Delivery(
                        True,
                        False,
                        resp.status,
                        body,
                        "",
                        next_url=str(following["url"]) if following is not None else None,
                    )
                reason = _reason(body) or resp.reason or ""
                return Delivery(
                    False, 400 <= resp.status < 500, resp.status, body, f"{resp.status} {reason}".strip()
                )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return Delivery(False, False, None, None, f"{type(exc).__name__}: {exc}"[:300])

    async def post(self, url: str, payload: Any) -> Delivery:
        return await self.request("POST", url, payload)

    async def get(self, url: str) -> Delivery:
        return await self.request("GET", url)


def _reason(body: Any) -> str:
    if isinstance(body, dict):
        reason = body.get("reason")
        if isinstance(reason, list):
            return "; ".join(str(r) for r in reason)[:500]
        if isinstance(reason, str):
            return reason[:500]
    return ""
