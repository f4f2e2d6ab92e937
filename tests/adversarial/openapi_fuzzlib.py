"""schemathesis against a running connector's management API, from the OpenAPI document the
connector serves; shared by tests/adversarial/test_openapi_fuzz.py (a bounded run in CI) and
bench/fuzz_management.py (a large run with figures).

Every answer is counted by status and checked: no server error, every status documented for its
operation, the documented content type, the documented body (and headers: ``Retry-After`` on a
503), and that a request the schema refuses is refused (``negative_data_rejection``). A request
with a method the path does not have is a probe of its own (405 expected), counted apart.

Three bounds keep a run on loopback, inside its sandbox and short; none hides a defect of the API:
``peerUrl`` is pinned to a real peer (a fuzzed peer address is the outbound-address suite's
matter, and a generated host name would be looked up in the DNS); an absolute file path the
connector would write or register (a pull's ``out``, a copy's ``path``) is moved into ``sandbox``
(the API key holder may name any path the connector can write, and a copy registered under a
delete duty is deleted: a fuzzer must not do that to the machine); and a wait (``timeout``,
``wait``) is capped at `MAX_WAIT` seconds (a valid long wait is a wait, not a finding).
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import schemathesis
from schemathesis.core.result import Ok
from schemathesis.engine import events, from_schema
from schemathesis.hooks import GLOBAL_HOOK_DISPATCHER

from connector.devspace import Connector, negotiate, offer_asset

MAX_WAIT = 0.05
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "negative_data_rejection",
    "use_after_free",
    "ensure_resource_availability",
)

# (operation label, a predicate on the case and the status it got, why): a finding that is not
# this suite's to fix; ``why`` names the fix that owns it, and the exclusion goes when it is merged
Exclusion = tuple[str, Callable[[Any, int | None], bool], str]


EXCLUSIONS: list[Exclusion] = []  # none left: every answer must be documented and no 5xx


def tracebacks(log: Iterable[str]) -> list[str]:
    """The exception lines of the tracebacks in a connector's log, but aiohttp's HTTP parser
    refusing a request it cannot read (a NUL in a header, a request line over the limit: it
    answers 400 itself, before any handler runs, and logs it so)."""
    found, in_traceback = [], False
    for line in log:
        if line.startswith("Traceback (most recent call last)"):
            in_traceback = True
        elif in_traceback and line and not line[0].isspace():
            in_traceback = False
            if not line.startswith("aiohttp.http_exceptions."):
                found.append(line)
    return found


# a traceback in a connector's log that another fix owns: (its exception line, the owner)
KNOWN_TRACEBACKS: list[tuple[str, str]] = [
    # a provider's asset deleted while a transfer of it is STARTED: the data plane has no source
    (
        "AttributeError: 'NoneType' object has no attribute 'open'",
        "asset deleted under a STARTED transfer (assets fix: deletion integrity)",
    ),
]


def owner_of(traceback_line: str) -> str | None:
    return next((owner for line, owner in KNOWN_TRACEBACKS if traceback_line == line), None)


def seed(provider: Connector, consumer: Connector) -> None:
    """Real resources on both sides, so that lists, ids and links reach real rows and views: an
    asset offered under two policies, a FINALIZED negotiation, a STARTED pull transfer."""
    offer = offer_asset(
        provider, asset_id="urn:asset:fuzz-seed", contract={"template": "allow-usage", "params": {}}
    )
    n = negotiate(consumer, provider, offer)
    assert n["state"] == "FINALIZED", n
    status, t = consumer.api("POST", "/api/transfers", {"agreementId": n["agreementId"]})
    assert status == 201, t


@dataclass
class Finding:
    operation: str
    check: str
    title: str
    message: str
    status: int | None
    curl: str


@dataclass
class FuzzRun:
    requests: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    by_operation: Counter[tuple[str, int]] = field(default_factory=Counter)
    phase_seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    seconds_by_operation: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    method_probes: Counter[int] = field(default_factory=Counter)
    undocumented: Counter[tuple[str, int]] = field(default_factory=Counter)
    findings: dict[tuple[str, str, int | None], Finding] = field(default_factory=dict)
    excluded: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.by_status.items() if status >= 500)

    def merge(self, other: FuzzRun) -> None:
        self.requests += other.requests
        self.by_status.update(other.by_status)
        self.by_operation.update(other.by_operation)
        for name, seconds in other.phase_seconds.items():
            self.phase_seconds[name] += seconds
        for name, seconds in other.seconds_by_operation.items():
            self.seconds_by_operation[name] += seconds
        self.method_probes.update(other.method_probes)
        self.undocumented.update(other.undocumented)
        for k, v in other.findings.items():
            self.findings.setdefault(k, v)
        self.excluded.update(other.excluded)
        self.errors.extend(other.errors)
        self.seconds += other.seconds

    def report(self) -> str:
        lines = [
            f"requests: {self.requests} in {self.seconds:.1f} s",
            "by status: " + ", ".join(f"{s}: {n}" for s, n in sorted(self.by_status.items())),
            f"5xx: {self.server_errors}"
            + "".join(
                f"\n  {op} -> {s}: {n}" for (op, s), n in sorted(self.by_operation.items()) if s >= 500
            ),
            "seconds by phase: " + ", ".join(f"{p}: {t:.1f}" for p, t in self.phase_seconds.items()),
            f"undocumented statuses: {sum(self.undocumented.values())}"
            + "".join(f"\n  {op} -> {s}: {n}" for (op, s), n in sorted(self.undocumented.items())),
            "method probes (other methods on a path, 405 expected): "
            + ", ".join(f"{s}: {n}" for s, n in sorted(self.method_probes.items())),
            f"findings: {len(self.findings)}",
        ]
        lines += [
            f"  {f.operation} [{f.check}] {f.title} ({f.status}): {f.message}\n    {f.curl[:2000]}"
            for f in self.findings.values()
        ]
        if self.excluded:
            lines.append(
                "excluded (owned by another fix): "
                + ", ".join(f"{why}: {n}" for why, n in sorted(self.excluded.items()))
            )
        lines += [f"engine error: {e}" for e in self.errors]
        return "\n".join(lines)


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def fuzz(
    api_url: str,
    api_key: str,
    *,
    peer_url: str,
    sandbox: Path,
    max_examples: int,
    seed: int | None = None,
    stateful: bool = True,
    max_steps: int = 10,
    coverage: bool = True,
    exclusions: Iterable[Exclusion] = (),
) -> FuzzRun:
    """One schemathesis run against the management API at ``api_url``."""
    exclusions = list(exclusions)
    sandbox.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {
        "base-url": api_url,
        "headers": {"X-Api-Key": api_key},
        "generation": {"max-examples": max_examples, "database": "none", "mode": "all"},
        "phases": {
            "examples": {"enabled": False},
            "coverage": {"enabled": coverage},
            "stateful": {"enabled": stateful, "max-steps": max_steps},
        },
        "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
        "request-timeout": 30,
        "workers": 1,
    }
    if seed is not None:
        config["seed"] = seed
    schema = schemathesis.openapi.from_url(
        api_url + "/api/openapi.json", config=schemathesis.Config.from_dict(config)
    )
    loaded = list(schema.get_all_operations())
    operations = [r.ok() for r in loaded if isinstance(r, Ok)]
    documented = {
        (op.method.upper(), op.path): {str(s) for s in op.responses.status_codes} for op in operations
    }

    def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
        if context.operation is None or context.operation.schema is not schema:
            return
        if isinstance(case.body, dict):
            if isinstance(case.body.get("peerUrl"), str):
                case.body["peerUrl"] = peer_url
            for name in ("out", "path"):  # a pull's output, a local copy to register
                value = case.body.get(name)
                if isinstance(value, str) and value.startswith("/") and "\x00" not in value:
                    case.body[name] = str(sandbox / hashlib.sha256(value.encode()).hexdigest()[:16])
        if isinstance(case.query, dict):
            if "waitFor" in case.query:
                case.query.setdefault("timeout", MAX_WAIT)  # not the default 10 s
            for name in ("timeout", "wait"):
                n = _number(case.query.get(name))
                if n is not None and n > MAX_WAIT:
                    case.query[name] = MAX_WAIT

    run = FuzzRun()
    run.errors += [f"invalid operation: {r.err()}" for r in loaded if not isinstance(r, Ok)]
    started = phase_started = time.monotonic()
    schemathesis.hook("before_call")(before_call)
    try:
        for event in from_schema(schema).execute():
            if isinstance(event, events.PhaseStarted):
                phase_started = time.monotonic()
            elif isinstance(event, events.PhaseFinished):
                run.phase_seconds[str(event.phase.name)] += time.monotonic() - phase_started
            if isinstance(event, events.NonFatalError):
                run.errors.append(f"{event.label}: {event.value!r}"[:500])
            elif isinstance(event, events.FatalError):
                run.errors.append(f"fatal: {event.exception!r}"[:500])
            if not isinstance(event, events.ScenarioFinished | events.FuzzScenarioFinished):
                continue
            recorder = event.recorder
            excluded_cases = set()
            for case_id, node in recorder.cases.items():
                case = node.value
                answered = recorder.interactions.get(case_id)
                status = answered.response.status_code if answered and answered.response else None
                why = next(
                    (
                        w
                        for label, match, w in exclusions
                        if label == case.operation.label and match(case, status)
                    ),
                    None,
                )
                if why is not None:
                    excluded_cases.add(case_id)
                    run.excluded[why] += 1
            for case_id, interaction in recorder.interactions.items():
                if case_id in excluded_cases or interaction.response is None:
                    continue
                case = recorder.cases[case_id].value
                status = interaction.response.status_code
                run.requests += 1
                if interaction.request.method.upper() != case.operation.method.upper():
                    run.method_probes[status] += 1
                    continue
                run.by_status[status] += 1
                run.by_operation[(case.operation.label, status)] += 1
                run.seconds_by_operation[case.operation.label] += interaction.response.elapsed
                if str(status) not in documented[(case.operation.method.upper(), case.operation.path)]:
                    run.undocumented[(case.operation.label, status)] += 1
            for case_id, checks in recorder.checks.items():
                if case_id in excluded_cases:
                    continue
                for check in checks:
                    info = check.failure_info
                    if info is None:
                        continue
                    failure = info.failure
                    status = getattr(failure, "status_code", None)
                    label = failure.operation or recorder.label
                    key = (label, check.name, status)
                    run.findings.setdefault(
                        key,
                        Finding(
                            label,
                            check.name,
                            failure.title,
                            failure.message,
                            status,
                            info.steps[-1].curl if info.steps else "",
                        ),
                    )
    finally:
        GLOBAL_HOOK_DISPATCHER.unregister(before_call)
    run.seconds = time.monotonic() - started
    return run
