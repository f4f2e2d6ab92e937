"""The outbound DSP client: every call carries the sender's DAT, over TLS that trusts only the
data-space CA (plain HTTP only when the configuration says so, for loopback tests).

Outcomes are classified for the outbox: 2xx delivered; 4xx refused (permanent: the
counter-party will not take this message, retrying cannot help); 5xx, timeouts and connection
errors transient (retry with backoff). Redirects are never followed.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from connector.protocol import wirecheck

TokenSource = Callable[[], Awaitable[str]]
MAX_RESPONSE_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class Delivery:
    ok: bool
    permanent: bool
    status: int | None
    body: Any
    reason: str


class DspClient:
    def __init__(self, session: aiohttp.ClientSession, token: TokenSource, *,
                 ssl_context: ssl.SSLContext | None, timeout: float = 10.0) -> None:
        self._session = session
        self._token = token
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else False
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self._token()}",
                "Content-Type": "application/json", "Accept": "application/json"}

    async def request(self, method: str, url: str, payload: Any = None) -> Delivery:
        try:
            headers = await self._headers()
        except Exception as exc:  # no DAT: transient, the authority may come back
            return Delivery(False, False, None, None, f"no DAT to send with: {exc}")
        wirecheck.check(payload, "sent")
        data = None if payload is None else json.dumps(payload).encode()
        try:
            async with self._session.request(method, url, data=data, headers=headers,
                                             ssl=self._ssl, timeout=self._timeout,
                                             allow_redirects=False) as resp:
                raw = await resp.content.read(MAX_RESPONSE_BYTES + 1)
                if len(raw) > MAX_RESPONSE_BYTES:
                    return Delivery(False, False, resp.status, None, "response too large")
                body: Any = None
                if raw:
                    try:
                        body = json.loads(raw)
                    except ValueError:
                        body = raw.decode("utf-8", "replace")[:500]
                if 200 <= resp.status < 300:
                    return Delivery(True, False, resp.status, body, "")
                reason = _reason(body) or resp.reason or ""
                return Delivery(False, 400 <= resp.status < 500, resp.status, body,
                                f"{resp.status} {reason}".strip())
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
