"""Calls to a broker: register, unregister, search. Used by a connector's heartbeat
(connector.serve) and by the CLI (`connector broker register|unregister`, `connector search`)."""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

__all__ = ["BrokerRefused", "register", "search", "unregister"]


class BrokerRefused(Exception):
    """The broker answered with an error; ``status`` and its reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"the broker answered {status}: {reason}")
        self.status = status
        self.reason = reason


async def _answer(resp: aiohttp.ClientResponse) -> Any:
    if resp.status == 204:
        return None
    try:
        body = await resp.json(content_type=None)
    except (ValueError, aiohttp.ContentTypeError):
        body = None
    if resp.status >= 400:
        reason = body.get("error") if isinstance(body, dict) else None
        problems = body.get("problems") if isinstance(body, dict) else None
        text = str(reason or resp.reason or "no reason given")
        if isinstance(problems, list) and problems:
            text += ": " + "; ".join(map(str, problems))
        raise BrokerRefused(resp.status, text)
    return body


async def register(
    session: aiohttp.ClientSession,
    broker_url: str,
    dat: str,
    description: bytes,
    media_type: str,
    *,
    ssl_context: ssl.SSLContext | None = None,
) -> dict[str, Any]:
    async with session.post(
        f"{broker_url.rstrip('/')}/registrations",
        data=description,
        headers={"Authorization": f"Bearer {dat}", "Content-Type": media_type},
        ssl=ssl_context if ssl_context is not None else True,
    ) as resp:
        body = await _answer(resp)
        return body if isinstance(body, dict) else {}


async def unregister(
    session: aiohttp.ClientSession,
    broker_url: str,
    dat: str,
    registration_id: str,
    *,
    ssl_context: ssl.SSLContext | None = None,
) -> None:
    async with session.delete(
        f"{broker_url.rstrip('/')}/registrations/{registration_id}",
        headers={"Authorization": f"Bearer {dat}"},
        ssl=ssl_context if ssl_context is not None else True,
    ) as resp:
        await _answer(resp)


async def search(
    session: aiohttp.ClientSession,
    broker_url: str,
    text: str,
    filters: Mapping[str, Sequence[str]] | None = None,
    *,
    sort: str = "relevance",
    limit: int = 20,
    offset: int = 0,
    include_unavailable: bool = False,
    ssl_context: ssl.SSLContext | None = None,
) -> dict[str, Any]:
    params: list[tuple[str, str]] = [
        ("q", text),
        ("sort", sort),
        ("limit", str(limit)),
        ("offset", str(offset)),
    ]
    params += [(k, v) for k, values in (filters or {}).items() for v in values]
    if include_unavailable:
        params.append(("all", "true"))
    async with session.get(
        f"{broker_url.rstrip('/')}/search",
        params=params,
        ssl=ssl_context if ssl_context is not None else True,
    ) as resp:
        body = await _answer(resp)
        return body if isinstance(body, dict) else {}
