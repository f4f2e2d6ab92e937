"""A connector's registration at its broker (``[broker] url``): its self-description is
registered on start and again every ``heartbeat`` seconds, which renews the entry (the broker
marks an entry not renewed within its ttl unavailable). A failed attempt is logged and retried
sooner (``retry`` seconds), never given up: the broker may start after the connector."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable

import aiohttp

from connector.broker.client import BrokerRefused, register

log = logging.getLogger("connector.broker")

Describe = Callable[[str | None], Awaitable[tuple[bytes, str] | None]]
TURTLE = "text/turtle"


async def heartbeat(
    session: aiohttp.ClientSession,
    broker_url: str,
    describe: Describe,
    token: Callable[[], Awaitable[str]],
    *,
    every: float,
    retry: float = 2.0,
    ssl_context: ssl.SSLContext | None = None,
) -> None:
    """Register, then renew every ``every`` seconds, until cancelled."""
    registered = False
    while True:
        wait = every
        try:
            found = await describe(TURTLE)
            if found is None:  # cannot happen for Turtle; fail loudly rather than loop silently
                raise RuntimeError("the self-description cannot be serialized as Turtle")
            body, media = found
            entry = await register(session, broker_url, await token(), body, media, ssl_context=ssl_context)
            if not registered:
                log.info(
                    "registered at the broker %s as %s (%s datasets)",
                    broker_url,
                    entry.get("id"),
                    entry.get("datasets"),
                )
                for violation in entry.get("violations") or ():
                    log.info("the broker lists a violation of the IDS shapes: %s", violation)
                registered = True
        except BrokerRefused as exc:
            log.warning("the broker %s refused the registration: %s", broker_url, exc.reason)
            wait = min(every, retry * 5)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning("the broker %s cannot be reached: %s", broker_url, str(exc) or type(exc).__name__)
            wait = min(every, retry)
        await asyncio.sleep(wait)
