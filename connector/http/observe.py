"""Health, readiness and metrics over HTTP: the aiohttp side of connector.metrics.

* ``GET /health``: live (the process answers); no key, no store: 200 ``{"status": "live"}``.
* ``GET /ready``: every readiness check (the store answers a query, the authority answers,
  the keys are loaded), each with a time limit; 200 when all pass, else 503 with each failed
  check's reason. No key: a load balancer or an orchestrator asks it.
* ``GET /metrics``: the process's registry in the Prometheus text format, the store-held gauges
  (processes and outbox messages by state) read first. Behind the management API key (a
  Prometheus scrape config sends it with ``http_headers``: ``X-Api-Key``).
* ``http_middleware(app)``: counts every request of an app by route pattern and status.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.exposition import generate_latest
from pydantic import BaseModel

from connector import metrics
from connector.http.routes import Operation
from connector.metrics import HTTP_REQUESTS, HTTP_SECONDS, OUTBOX, PROCESSES, REGISTRY
from connector.store import Store, schema

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Check = Callable[[], Awaitable[None]]  # raises (any exception) with the reason when not ready
CHECK_TIMEOUT = 3.0


def http_middleware(
    app_name: str, requests: Any = HTTP_REQUESTS, histogram: Any = HTTP_SECONDS
) -> Middleware:
    """An aiohttp middleware counting every request of ``app_name`` by route and status (the
    route's pattern, never the raw path: ids would make the label set unbounded). ``requests``
    and ``histogram``: other instruments of the same labels (bench/metrics_cost.py measures
    this middleware on prometheus-client's own)."""

    # the label children, looked up once (a labels() call builds a key: on the data plane's
    # 1 KiB requests that was measurable, bench/dataplane.py --metrics). What a request costs
    # here: this coroutine (a middleware layer), two clock reads, one dict lookup, one counter
    # increment, one histogram observation, about 1 us in all (the instruments are plain
    # attributes, connector.metrics); counting inside the handlers instead would save the
    # layer, about 0.3 us, for a count every handler would have to get right.
    seconds = histogram.labels(app_name)
    counters: dict[tuple[object, int], Any] = {}
    clock = time.perf_counter

    @web.middleware
    async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
        t0 = clock()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            resource = request.match_info.route.resource
            counter = counters.get((resource, status))
            if counter is None:
                route = resource.canonical if resource is not None else "unmatched"
                counter = counters[(resource, status)] = requests.labels(app_name, route, str(status))
            counter.inc()
            seconds.observe(clock() - t0)

    return count


def count_requests(app: web.Application, app_name: str) -> web.Application:
    """``app`` with the counting middleware outermost (so refusals of its own middlewares
    count too)."""
    if metrics.ENABLED:  # off: no middleware at all (what bench/dataplane.py --metrics compares)
        app.middlewares.insert(0, http_middleware(app_name))
    return app


async def store_gauges(store: Store) -> None:
    """Processes by kind and state and outbox messages by status, as the store holds them now."""
    async with store.transaction(readonly=True) as tx:
        rows = {
            kind: (await tx.execute(sa.select(table.c.state, sa.func.count()).group_by(table.c.state))).all()
            for kind, table in (("negotiation", schema.negotiations), ("transfer", schema.transfers))
        }
        outbox = (
            await tx.execute(
                sa.select(schema.outbox.c.status, sa.func.count()).group_by(schema.outbox.c.status)
            )
        ).all()
    PROCESSES.clear()
    for kind, counts in rows.items():
        for state, n in map(tuple, counts):
            PROCESSES.labels(kind, state).set(n)
    OUTBOX.clear()
    for status, n in map(tuple, outbox):
        OUTBOX.labels(status).set(n)


@dataclass(frozen=True)
class Readiness:
    checks: Mapping[str, Check]

    async def run(self) -> dict[str, str]:
        """Each check's result: "ok" or the reason it failed (all run at once, each bounded)."""

        async def one(check: Check) -> str:
            try:
                await asyncio.wait_for(check(), CHECK_TIMEOUT)
                return "ok"
            except TimeoutError:
                return f"no answer within {CHECK_TIMEOUT:g} s"
            except Exception as exc:  # any failure is "not ready", with its reason
                return str(exc) or type(exc).__name__

        names = list(self.checks)
        results = await asyncio.gather(*(one(self.checks[n]) for n in names))
        return dict(zip(names, results, strict=True))


class HealthView(BaseModel):
    status: str


class ReadyView(BaseModel):
    status: str
    checks: dict[str, str]


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "live"})


def ready_handler(readiness: Readiness) -> Handler:
    async def ready(request: web.Request) -> web.Response:
        checks = await readiness.run()
        ok = all(v == "ok" for v in checks.values())
        return web.json_response(
            {"status": "ready" if ok else "not ready", "checks": checks}, status=200 if ok else 503
        )

    return ready


def health_routes(readiness: Readiness, *, with_health: bool = True) -> list[web.RouteDef]:
    """/health and /ready for a process without the management API (the authority, the
    broker): the same answers, no key."""
    routes = [web.get("/ready", ready_handler(readiness))]
    return [web.get("/health", health), *routes] if with_health else routes


def operations(readiness: Readiness, store: Store | None) -> list[Operation]:
    """/health, /ready and /metrics as operations of the management API (in its OpenAPI
    document, under its error handling)."""
    ready = ready_handler(readiness)

    async def metrics(request: web.Request) -> web.Response:
        if store is not None:
            await store_gauges(store)
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return [
        Operation(
            "GET",
            "/health",
            health,
            "health",
            "Live: the process answers",
            "meta",
            response=HealthView,
            public=True,
            uses_store=False,
        ),
        Operation(
            "GET",
            "/ready",
            ready,
            "ready",
            "Ready: the store, the authority and the keys (503 names what is not)",
            "meta",
            response=ReadyView,
            public=True,
            uses_store=False,
            errors={503: "Not ready: the checks say why"},
        ),
        Operation(
            "GET",
            "/metrics",
            metrics,
            "metrics",
            "Prometheus metrics of this process",
            "meta",
            media_type=CONTENT_TYPE_LATEST.split(";")[0],
        ),
    ]
