"""Prometheus metrics of one process (prometheus-client), served on the management port at
``/metrics`` (connector.http.observe). Imports nothing of the connector or of aiohttp, so
any layer (the store, the data plane) may count.

One registry per process; every instrument is defined here, so the names are in one place:

* ``connector_http_requests_total{app,route,status}`` and ``connector_http_request_seconds``:
  every request on every port, by route pattern (never the raw path: ids would explode the
  label set).
* ``connector_decisions_total{result,reason}``: the data plane's usage decisions, by result
  and the class of the reason (expired, count, purpose, ...).
* ``connector_transitions_total{kind,state}``: negotiation and transfer states reached (the
  engine's after-commit hook); ``connector_processes{kind,state}``: processes by state now,
  read from the store at scrape time.
* ``connector_bytes_served_total``, ``connector_uses_total{where}``: data served by the data
  plane; uses counted (pull, push, local).
* ``connector_outbox_messages{status}`` (at scrape), ``connector_outbox_retries_total``,
  ``connector_outbox_dead_total``: the outbox's depth and trouble.
* ``connector_dat_refreshes_total{result}``: this connector's own DATs fetched.
* ``connector_store_transaction_seconds{mode}``: store latency, one observation a transaction.
"""

from __future__ import annotations

import os
import re
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client import Counter as _Counter
from prometheus_client import Gauge as _Gauge
from prometheus_client import Histogram as _Histogram

REGISTRY = CollectorRegistry(auto_describe=True)
# CONNECTOR_METRICS=off: every instrument a no-op (what the metrics cost is measured against
# it: bench/dataplane.py --metrics); /metrics then answers an empty registry
ENABLED = os.environ.get("CONNECTOR_METRICS", "on").lower() != "off"


class _Off:
    """An instrument that counts nothing (metrics off)."""

    def labels(self, *values: str) -> _Off:
        return self

    def inc(self, amount: float = 1) -> None:
        pass

    def observe(self, value: float) -> None:
        pass

    def set(self, value: float) -> None:
        pass

    def clear(self) -> None:
        pass


def _or_off(cls: Any) -> Any:
    """The instrument class, or (metrics off) a factory of no-op instruments."""
    return cls if ENABLED else (lambda *args, **kw: _Off())


Counter, Gauge, Histogram = _or_off(_Counter), _or_off(_Gauge), _or_off(_Histogram)


HTTP_REQUESTS = Counter(
    "connector_http_requests", "HTTP requests answered", ["app", "route", "status"], registry=REGISTRY
)
HTTP_SECONDS = Histogram(
    "connector_http_request_seconds",
    "HTTP request handling time",
    ["app"],
    registry=REGISTRY,
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)
DECISIONS = Counter(
    "connector_decisions", "usage decisions of the data plane", ["result", "reason"], registry=REGISTRY
)
TRANSITIONS = Counter("connector_transitions", "process states reached", ["kind", "state"], registry=REGISTRY)
PROCESSES = Gauge(
    "connector_processes", "processes by state (at scrape time)", ["kind", "state"], registry=REGISTRY
)
BYTES_SERVED = Counter("connector_bytes_served", "bytes of data served by the data plane", registry=REGISTRY)
USES = Counter("connector_uses", "uses counted under agreements", ["where"], registry=REGISTRY)
OUTBOX = Gauge(
    "connector_outbox_messages", "outbox messages by status (at scrape time)", ["status"], registry=REGISTRY
)
OUTBOX_RETRIES = Counter(
    "connector_outbox_retries", "deliveries that failed and wait for a retry", registry=REGISTRY
)
OUTBOX_DEAD = Counter("connector_outbox_dead", "messages given up on", registry=REGISTRY)
DAT_REFRESHES = Counter(
    "connector_dat_refreshes", "own DATs fetched from the authority", ["result"], registry=REGISTRY
)
STORE_SECONDS = Histogram(
    "connector_store_transaction_seconds",
    "store transaction time",
    ["mode"],
    registry=REGISTRY,
    buckets=(0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
)

_REASON_CLASSES = (
    ("expired", re.compile(r"expire|dateTime|elapsed|after|before|window", re.I)),
    ("count", re.compile(r"count|uses|limit|times", re.I)),
    ("purpose", re.compile(r"purpose", re.I)),
    ("spatial", re.compile(r"spatial|country|jurisdiction|location|border", re.I)),
    ("token", re.compile(r"token|signature|\bDAT\b|certificate", re.I)),
    ("retired", re.compile(r"retired|revoked|terminated|suspended", re.I)),
)


def reason_class(reason: str) -> str:
    """A bounded label for a decision's reason text (the text itself is in the audit log)."""
    for name, pattern in _REASON_CLASSES:
        if pattern.search(reason):
            return name
    return "other"


_PERMITTED = DECISIONS.labels("permit", "none")
DATAPLANE_USES = USES.labels("dataplane")
STORE_READ, STORE_WRITE = STORE_SECONDS.labels("read"), STORE_SECONDS.labels("write")


def decision(permit: bool, reason: str = "") -> None:
    if permit:
        _PERMITTED.inc()
    else:
        DECISIONS.labels("deny", reason_class(reason)).inc()
