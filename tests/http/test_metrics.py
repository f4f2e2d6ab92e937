"""The process's metrics (connector.metrics, connector.http.observe): requests counted by
route pattern and status, decision reasons in bounded classes, the text format served."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

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
