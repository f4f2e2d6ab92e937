"""schemathesis against the management API of real connector processes, both roles, from the
OpenAPI document they serve: 0 server errors, 0 undocumented statuses, documented content types,
bodies and headers, and every request the schema refuses refused (issue 9). A bounded run for CI
(fixed seed); bench/fuzz_management.py runs the large one."""

from __future__ import annotations

import pytest
from dataspace_testlib import Connector, DataSpace
from openapi_fuzzlib import EXCLUSIONS, fuzz, seed, tracebacks

pytestmark = pytest.mark.integration

EXAMPLES = 3  # per operation and phase; the coverage phase adds its own deterministic cases
SEED = 20269


@pytest.fixture(scope="module")
def pair(space: DataSpace) -> tuple[Connector, Connector]:
    provider = space.connector("fuzzprov", roles=("provider",))
    consumer = space.connector("fuzzcons", roles=("consumer",))
    seed(provider, consumer)
    return provider, consumer


@pytest.mark.parametrize("role", ["provider", "consumer"])
def test_management_api_fuzz(pair: tuple[Connector, Connector], role: str) -> None:
    provider, consumer = pair
    c, peer = (provider, consumer) if role == "provider" else (consumer, provider)
    run = fuzz(
        c.api_url,
        c.api_key,
        peer_url=peer.dsp_url,
        sandbox=c.directory / "fuzz-files",
        max_examples=EXAMPLES,
        seed=SEED,
        max_steps=6,
        exclusions=EXCLUSIONS,
    )
    report = run.report()
    print(report)
    assert run.requests > 500, report
    assert not run.errors, report
    assert run.server_errors == 0, report
    assert not run.undocumented, report
    assert not run.findings, report
    assert set(run.method_probes) <= {405}, report
    assert not tracebacks(c.log), "\n".join(c.log[-60:])


def test_an_audit_time_without_offset_is_refused(pair: tuple[Connector, Connector]) -> None:
    """It used to be compared with the log's aware times: a TypeError, a 500."""
    _, consumer = pair
    status, rows = consumer.api("GET", "/api/audit?since=2025-01-01T00:00:00Z&limit=1")
    assert status == 200 and len(rows) == 1, rows
    status, err = consumer.api("GET", "/api/audit?since=2025-01-01T00:00:00")
    assert status == 400 and "since" in " ".join(err["details"]), err
    status, err = consumer.api("GET", "/api/audit?since=0.5")
    assert status == 400, err
