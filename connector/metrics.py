"""Prometheus metrics of one process (our own lock-free instruments, exported through
prometheus-client), served on the management port at ``/metrics`` (connector.http.observe).
Imports nothing of the connector or of aiohttp, so any layer (the store, the data plane) may
count.

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
import time
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

REGISTRY = CollectorRegistry(auto_describe=True)
# CONNECTOR_METRICS=off: every instrument a no-op (what the metrics cost is measured against
# it: bench/dataplane.py --metrics); /metrics then answers an empty registry
ENABLED = os.environ.get("CONNECTOR_METRICS", "on").lower() != "off"

# The instruments are our own, not prometheus-client's: prometheus-client takes a lock on every
# inc() and observe() and walks a histogram's buckets one by one, which on the data plane's
# 1 KiB requests cost several per cent of the request rate (bench/dataplane.py --metrics). Ours
# are plain attributes updated in place (a histogram: one bisect, one list slot), exported at
# scrape time by one prometheus-client collector per registry, in the same text format. They
# are updated only on the event loop's thread (the connector counts nothing in a worker thread;
# store transactions observe their time in the coroutine, after the thread's work): `x += 1`
# is not atomic across threads, so an instrument updated from a worker thread would need a lock.


class _CounterChild:
    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value: float = 0
        self.created = time.time()

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        self.value += amount


class _GaugeChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: float = 0

    def set(self, value: float) -> None:
        self.value = float(value)

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def dec(self, amount: float = 1) -> None:
        self.value -= amount


class _HistogramChild:
    __slots__ = ("bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds  # the upper bounds, +Inf last
        self.counts = [0] * len(bounds)  # observations in each bucket alone (not cumulative)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # the first bound >= value ("le")
        self.sum += value


class _Family:
    """An instrument with its children by label values (one child of no labels when it has
    none, so ``BYTES_SERVED.inc(n)`` works like prometheus-client's)."""

    __slots__ = ("_children", "_only", "documentation", "labelnames", "name")

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Iterable[str] = (),
        *,
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], Any] = {}
        self._only: Any = None if self.labelnames else self._add(())
        if registry is not None:
            _collector(registry).add(self)

    def _new_child(self) -> Any:
        raise NotImplementedError

    def _add(self, values: tuple[str, ...]) -> Any:
        child = self._children[values] = self._new_child()
        return child

    def labels(self, *values: Any, **named: Any) -> Any:
        """The child of these label values (created on first use); look it up once and keep
        it where a path counts often."""
        if named:
            if values:
                raise ValueError("label values either by position or by name, not both")
            if set(named) != set(self.labelnames):
                raise ValueError(f"{self.name}: labels are {self.labelnames}")
            values = tuple(named[n] for n in self.labelnames)
        if len(values) != len(self.labelnames) or not self.labelnames:
            raise ValueError(f"{self.name}: labels are {self.labelnames}, got {values}")
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        return child if child is not None else self._add(key)

    def clear(self) -> None:
        """Forget every child (a labelled instrument)."""
        if self.labelnames:
            self._children.clear()

    def _single(self) -> Any:
        if self._only is None:
            raise ValueError(f"{self.name} has labels: call labels() first")
        return self._only

    def _family(self) -> Metric:
        raise NotImplementedError

    def describe(self) -> Metric:
        return self._family()

    def collect(self) -> Metric:
        family = self._family()
        for values, child in list(self._children.items()):  # a snapshot: a child may be added meanwhile
            self._export(family, list(values), child)
        return family

    def _export(self, family: Any, values: list[str], child: Any) -> None:
        raise NotImplementedError


class CounterFamily(_Family):
    __slots__ = ()

    def _new_child(self) -> _CounterChild:
        return _CounterChild()

    def inc(self, amount: float = 1) -> None:
        self._single().inc(amount)

    def _family(self) -> Metric:
        return CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def _export(self, family: Any, values: list[str], child: Any) -> None:
        family.add_metric(values, child.value, created=child.created)


class GaugeFamily(_Family):
    __slots__ = ()

    def _new_child(self) -> _GaugeChild:
        return _GaugeChild()

    def set(self, value: float) -> None:
        self._single().set(value)

    def inc(self, amount: float = 1) -> None:
        self._single().inc(amount)

    def dec(self, amount: float = 1) -> None:
        self._single().dec(amount)

    def _family(self) -> Metric:
        return GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def _export(self, family: Any, values: list[str], child: Any) -> None:
        family.add_metric(values, child.value)


DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


class HistogramFamily(_Family):
    __slots__ = ("_les", "bounds")

    def __init__(self, *args: Any, buckets: Sequence[float] = DEFAULT_BUCKETS, **kw: Any) -> None:
        """As a family's (name, documentation, labelnames, registry), and the buckets' upper
        bounds (+Inf added)."""
        bounds = sorted(float(b) for b in buckets)
        if bounds != [float(b) for b in buckets]:
            raise ValueError("histogram buckets must be in increasing order")
        if not bounds or bounds[-1] != float("inf"):
            bounds.append(float("inf"))
        self.bounds = tuple(bounds)
        self._les = [floatToGoString(b) for b in self.bounds]
        super().__init__(*args, **kw)

    def _new_child(self) -> _HistogramChild:
        return _HistogramChild(self.bounds)

    def observe(self, value: float) -> None:
        self._single().observe(value)

    def _family(self) -> Metric:
        return HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def _export(self, family: Any, values: list[str], child: Any) -> None:
        cumulative, total = [], 0
        for le, n in zip(self._les, child.counts, strict=True):
            total += n
            cumulative.append((le, total))
        family.add_metric(values, cumulative, child.sum)
        family.samples.append(
            Sample(self.name + "_created", dict(zip(self.labelnames, values, strict=True)), child.created)
        )


class _Instruments(Collector):
    """Every instrument of one registry, exported at scrape time (one collector, registered
    again when an instrument is added so the registry knows every name)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.families: list[_Family] = []

    def add(self, family: _Family) -> None:
        if any(f.name == family.name for f in self.families):
            raise ValueError(f"duplicated metric: {family.name}")
        if self.families:
            self.registry.unregister(self)
        self.families.append(family)
        try:
            self.registry.register(self)  # refuses a name another collector of the registry has
        except ValueError:
            self.families.pop()
            if self.families:
                self.registry.register(self)
            raise

    def describe(self) -> list[Metric]:
        return [f.describe() for f in self.families]

    def collect(self) -> list[Metric]:
        return [f.collect() for f in self.families]


_COLLECTORS: dict[int, _Instruments] = {}


def _collector(registry: CollectorRegistry) -> _Instruments:
    found = _COLLECTORS.get(id(registry))
    if found is None or found.registry is not registry:
        found = _COLLECTORS[id(registry)] = _Instruments(registry)
    return found


class _Off:
    """An instrument that counts nothing (metrics off)."""

    def labels(self, *values: str, **named: str) -> _Off:
        return self

    def inc(self, amount: float = 1) -> None:
        pass

    def dec(self, amount: float = 1) -> None:
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


Counter, Gauge, Histogram = _or_off(CounterFamily), _or_off(GaugeFamily), _or_off(HistogramFamily)


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
