"""The broker's Prometheus metrics: its own instruments, in the process's one registry
(connector.metrics.REGISTRY, no-ops with CONNECTOR_METRICS=off), and ``GET /metrics``.

* ``connector_http_requests_total{app="broker",route,status}`` (connector.http.observe): every
  request of the broker's port.
* ``connector_broker_searches_total{kind}``: searches answered: ``search`` (``GET /search``),
  ``page`` (the HTML page with ``?q=``), ``sparql``, ``catalog`` (the DSP catalog of catalogs).
* ``connector_broker_crawls_total{outcome}``: crawls of connectors' catalogs ended: ``crawled``,
  ``failed`` (refused, unreachable, too slow: retried with backoff), ``dropped`` (the
  registration went meanwhile), ``unstored`` (a store fault).
* ``connector_broker_registrations{state}``: registered connectors, ``available`` or
  ``unavailable`` (not renewed within the ttl), read from the store at scrape time.

The broker has no management API and its port is public, so ``/metrics`` is served only with a
configured key (``[broker] metrics_key_file``, connector.broker.config): ``Authorization:
Bearer KEY`` or ``X-Api-Key: KEY``; none (or a repeated header): 401, a wrong one: 403. Without
the key the route is not added at all (404): metrics are never public by default.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.exposition import generate_latest

from connector.http.limits import one_header, same_secret
from connector.metrics import REGISTRY, Counter, Gauge

SEARCHES = Counter("connector_broker_searches", "searches answered, by kind", ["kind"], registry=REGISTRY)
CRAWLS = Counter(
    "connector_broker_crawls",
    "crawls of connectors' catalogs ended, by outcome",
    ["outcome"],
    registry=REGISTRY,
)
REGISTRATIONS = Gauge(
    "connector_broker_registrations",
    "registered connectors by availability (at scrape time)",
    ["state"],
    registry=REGISTRY,
)

Counts = Callable[[], Awaitable[tuple[int, int]]]  # (available, unavailable) registrations now


def presented_key(request: web.Request) -> str:
    """The key a scrape sends: ``Authorization: Bearer KEY`` or ``X-Api-Key: KEY`` ("" for
    none, for a repeated header, or for both headers at once)."""
    bearer = one_header(request, "Authorization")
    api_key = one_header(request, "X-Api-Key")
    if bearer and api_key:
        return ""
    if bearer:
        return bearer[7:].strip() if bearer[:7].lower() == "bearer " else ""
    return api_key.strip()


def metrics_route(key: str, registrations: Counts) -> web.RouteDef:
    """``GET /metrics`` behind ``key``: the registrations gauge read, then the registry."""
    expected = key.encode()

    async def scrape(request: web.Request) -> web.Response:
        given = presented_key(request)
        if not given:
            raise web.HTTPUnauthorized(
                reason="the metrics key is required: Authorization: Bearer <key> (or X-Api-Key)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not same_secret(given, expected):
            raise web.HTTPForbidden(reason="wrong metrics key")
        available, unavailable = await registrations()
        REGISTRATIONS.labels("available").set(available)
        REGISTRATIONS.labels("unavailable").set(unavailable)
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return web.get("/metrics", scrape)
