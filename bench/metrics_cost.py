"""What the metrics cost one data-plane request, in process (no sockets, no client noise): the
CPU time of an aiohttp app's request handling with no counting, with the counting middleware
built on prometheus-client's own instruments (the baseline: what connector.metrics used before
issue 13's last step, a lock per update), and with connector.metrics' instruments (the
production middleware, connector.http.observe.http_middleware); then a decision plus its use
count with each. The end-to-end figure is ``bench/dataplane.py --metrics``.

    .venv/bin/python bench/metrics_cost.py [--rounds 80] [--requests 4000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import timeit
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import prometheus_client as pc
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from connector import metrics
from connector.http import observe

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
BODY = b"x" * 1024
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


async def handler(request: web.Request) -> web.Response:
    return web.Response(body=BODY)


def prometheus_client_middleware(app_name: str) -> Any:
    """The production counting middleware on prometheus-client's instruments: the baseline."""
    registry = pc.CollectorRegistry()
    requests = pc.Counter("r", "r", ["app", "route", "status"], registry=registry)
    seconds = pc.Histogram("s", "s", ["app"], registry=registry, buckets=BUCKETS)
    return observe.http_middleware(app_name, requests, seconds)


def app_with(middleware: Any | None) -> web.Application:
    app = web.Application()
    app.router.add_get("/data/{transfer_id}", handler)
    if middleware is not None:
        app.middlewares.append(middleware)
    app.freeze()
    return app


async def cpu_per_request(app: web.Application, n: int) -> float:
    """Microseconds of process CPU per request through the app's handling."""
    request = make_mocked_request("GET", "/data/abc", app=app)
    handle = app._handle
    t0 = time.process_time()
    for _ in range(n):
        await handle(request)
    return (time.process_time() - t0) / n * 1e6


async def requests_part(rounds: int, n: int) -> None:
    apps = {
        "no counting": app_with(None),
        "prometheus-client (baseline)": app_with(prometheus_client_middleware("dataplane")),
        "connector.metrics": app_with(observe.http_middleware("dataplane")),
    }
    samples: dict[str, list[float]] = {name: [] for name in apps}
    for _ in range(rounds):  # interleaved, so drifts of the machine hit all three alike
        for name, app in apps.items():
            samples[name].append(await cpu_per_request(app, n))
    base = min(samples["no counting"])
    print(f"## one request's handling, CPU per request ({rounds} interleaved rounds of {n})")
    for name, values in samples.items():
        print(
            f"{name:30} min {min(values):6.2f} us (+{min(values) - base:5.2f})  "
            f"median {statistics.median(values):6.2f} us"
        )


def decisions_part() -> None:
    registry = pc.CollectorRegistry()
    permitted = pc.Counter("d", "d", ["result", "reason"], registry=registry).labels("permit", "none")
    uses = pc.Counter("u", "u", ["where"], registry=registry).labels("dataplane")

    def baseline() -> None:
        permitted.inc()
        uses.inc()

    def ours() -> None:
        metrics.decision(True)
        metrics.DATAPLANE_USES.inc()

    print("## a permitted decision and its use count")
    for name, f in (("prometheus-client (baseline)", baseline), ("connector.metrics", ours)):
        t = min(timeit.repeat(f, number=200_000, repeat=5)) / 200_000 * 1e6
        print(f"{name:30} {t:.3f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=80)
    parser.add_argument("--requests", type=int, default=4000)
    args = parser.parse_args()
    if not metrics.ENABLED:
        sys.exit("CONNECTOR_METRICS=off: nothing to measure")
    print(f"# bench/metrics_cost.py  {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    asyncio.run(requests_part(args.rounds, args.requests))
    decisions_part()


if __name__ == "__main__":
    main()
