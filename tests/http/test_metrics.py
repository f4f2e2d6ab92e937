"""The process's metrics (connector.metrics, connector.http.observe): requests counted by
route pattern and status, decision reasons in bounded classes, the text format served."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from connector import metrics
from connector.http import observe


def _sample(name: str, labels: dict[str, str]) -> float:
    value = metrics.REGISTRY.get_sample_value(name, labels)
    return value or 0.0


async def test_requests_are_counted_by_route_pattern_and_status() -> None:
    async def item(request: web.Request) -> web.Response:
        if request.match_info["id"] == "missing":
            raise web.HTTPNotFound()
        return web.json_response({})

    app = observe.count_requests(web.Application(), "test")
    app.router.add_get("/items/{id}", item)
    app.router.add_get(
        "/metrics",
        next(op for op in observe.operations(observe.Readiness({}), None) if op.path == "/metrics").handler,
    )
    labels = {"app": "test", "route": "/items/{id}"}
    before_ok = _sample("connector_http_requests_total", {**labels, "status": "200"})
    before_404 = _sample("connector_http_requests_total", {**labels, "status": "404"})
    async with TestClient(TestServer(app)) as client:
        for name in ("a", "b", "missing"):
            await client.get(f"/items/{name}")
        r = await client.get("/metrics")
        text = await r.text()
    assert _sample("connector_http_requests_total", {**labels, "status": "200"}) == before_ok + 2
    assert _sample("connector_http_requests_total", {**labels, "status": "404"}) == before_404 + 1
    assert 'route="/items/{id}"' in text and "/items/a" not in text  # no raw paths as labels


def test_decision_reasons_fall_into_few_classes() -> None:
    assert metrics.reason_class("the agreement's use limit of 3 is reached (count)") == "count"
    assert metrics.reason_class("purpose dpv:Marketing is not permitted") == "purpose"
    assert metrics.reason_class("the transfer token's signature is invalid") == "token"
    assert metrics.reason_class("something else entirely") == "other"
    before = _sample("connector_decisions_total", {"result": "deny", "reason": "purpose"})
    metrics.decision(False, "purpose not permitted")
    assert _sample("connector_decisions_total", {"result": "deny", "reason": "purpose"}) == before + 1


async def test_readiness_names_each_failed_check() -> None:
    async def fine() -> None:
        return None

    async def broken() -> None:
        raise RuntimeError("the authority answers 502")

    assert await observe.Readiness({"store": fine, "authority": broken}).run() == {
        "store": "ok",
        "authority": "the authority answers 502",
    }


def _families(registry: CollectorRegistry) -> dict[str, Metric]:
    """The registry's text format, parsed back (what a Prometheus server reads)."""
    text = generate_latest(registry).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def _values(family: Metric, sample: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples if s.name == sample}


def test_counters_and_gauges_export_each_label_child_in_the_text_format() -> None:
    registry = CollectorRegistry()
    requests = metrics.CounterFamily("t_requests", "requests", ["app", "status"], registry=registry)
    plain = metrics.CounterFamily("t_plain", "no labels", registry=registry)
    depth = metrics.GaugeFamily("t_depth", "depth", ["status"], registry=registry)
    ok = requests.labels("dsp", "200")
    ok.inc()
    ok.inc(2)
    requests.labels(app="dsp", status="404").inc()
    assert requests.labels("dsp", 200) is ok  # the same child; values are strings
    plain.inc(5)
    depth.labels("pending").set(7)
    depth.labels("dead").set(1)
    depth.clear()  # the gauges read at scrape time start over
    depth.labels("pending").set(3)
    families = _families(registry)
    assert families["t_requests"].type == "counter"
    assert _values(families["t_requests"], "t_requests_total") == {
        (("app", "dsp"), ("status", "200")): 3.0,
        (("app", "dsp"), ("status", "404")): 1.0,
    }
    assert set(_values(families["t_requests_created"], "t_requests_created")) == {
        (("app", "dsp"), ("status", "200")),
        (("app", "dsp"), ("status", "404")),
    }
    assert _values(families["t_plain"], "t_plain_total") == {(): 5.0}
    assert families["t_depth"].type == "gauge"
    assert _values(families["t_depth"], "t_depth") == {(("status", "pending"),): 3.0}
    with pytest.raises(ValueError):
        ok.inc(-1)  # a counter only goes up
    with pytest.raises(ValueError):
        requests.labels("dsp")  # one label value short
    with pytest.raises(ValueError):
        requests.inc()  # a labelled counter counts through its children
    with pytest.raises(ValueError):
        metrics.CounterFamily("t_plain", "the same name again", registry=registry)


def test_histograms_export_cumulative_buckets_sum_and_count() -> None:
    registry = CollectorRegistry()
    seconds = metrics.HistogramFamily(
        "t_seconds", "time", ["app"], registry=registry, buckets=(0.001, 0.01, 0.1)
    )
    dsp = seconds.labels("dsp")
    for value in (0.0005, 0.001, 0.005, 0.05, 0.05, 3.0):  # 0.001 is in its own bucket (le)
        dsp.observe(value)
    seconds.labels("dataplane")  # a child never observed: zeros
    families = _families(registry)
    family = families["t_seconds"]
    assert family.type == "histogram"
    buckets = {(dict(k)["app"], dict(k)["le"]): v for k, v in _values(family, "t_seconds_bucket").items()}
    assert {le: v for (app, le), v in buckets.items() if app == "dsp"} == {
        "0.001": 2.0,
        "0.01": 3.0,
        "0.1": 5.0,
        "+Inf": 6.0,
    }
    assert {le: v for (app, le), v in buckets.items() if app == "dataplane"} == {
        "0.001": 0.0,
        "0.01": 0.0,
        "0.1": 0.0,
        "+Inf": 0.0,
    }
    assert _values(family, "t_seconds_count") == {(("app", "dsp"),): 6.0, (("app", "dataplane"),): 0.0}
    sums = _values(family, "t_seconds_sum")
    assert sums[(("app", "dsp"),)] == pytest.approx(3.1065)
    assert set(_values(families["t_seconds_created"], "t_seconds_created")) == {
        (("app", "dsp"),),
        (("app", "dataplane"),),
    }
    with pytest.raises(ValueError):
        metrics.HistogramFamily("t_unsorted", "x", registry=registry, buckets=(0.1, 0.01))


def test_the_process_registry_keeps_its_names_and_labels() -> None:
    """What dashboards read: every instrument of connector.metrics, with its type and labels."""
    metrics.HTTP_SECONDS.labels("test").observe(0.002)
    families = _families(metrics.REGISTRY)
    expected = {
        "connector_http_requests": ("counter", {"app", "route", "status"}),
        "connector_http_request_seconds": ("histogram", {"app", "le"}),
        "connector_decisions": ("counter", {"result", "reason"}),
        "connector_transitions": ("counter", {"kind", "state"}),
        "connector_processes": ("gauge", {"kind", "state"}),
        "connector_bytes_served": ("counter", set()),
        "connector_uses": ("counter", {"where"}),
        "connector_outbox_messages": ("gauge", {"status"}),
        "connector_outbox_retries": ("counter", set()),
        "connector_outbox_dead": ("counter", set()),
        "connector_dat_refreshes": ("counter", {"result"}),
        "connector_store_transaction_seconds": ("histogram", {"mode", "le"}),
    }
    for name, (kind, labels) in expected.items():
        assert families[name].type == kind, name
        for sample in families[name].samples:
            if not sample.name.endswith(("_created", "_count", "_sum")):
                assert set(sample.labels) == labels, (name, sample)
    seconds = _values(families["connector_http_request_seconds"], "connector_http_request_seconds_bucket")
    assert seconds[(("app", "test"), ("le", "0.0025"))] >= 1


def test_metrics_off_counts_and_exports_nothing() -> None:
    """CONNECTOR_METRICS=off (a process of its own: the switch is read at import): no-op
    instruments, no counting middleware, an empty /metrics."""
    script = """
import asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.exposition import generate_latest
from connector import metrics
from connector.http import observe

metrics.decision(True)
metrics.decision(False, "purpose")
metrics.HTTP_REQUESTS.labels("x", "/y", "200").inc()
metrics.STORE_READ.observe(0.1)
metrics.PROCESSES.labels("negotiation", "FINALIZED").set(1)

async def main():
    app = observe.count_requests(web.Application(), "test")
    assert not app.middlewares, "no counting middleware"
    app.router.add_get("/", lambda request: web.Response(text="hi"))
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/")).status == 200

asyncio.run(main())
print(repr(generate_latest(metrics.REGISTRY)))
"""
    env = {**os.environ, "CONNECTOR_METRICS": "off", "PYTHONPATH": str(Path(__file__).parents[2])}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "b''"
