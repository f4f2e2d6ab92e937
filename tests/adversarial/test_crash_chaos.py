"""Kill -9 of the provider, the consumer and the authority in the middle of concurrent
negotiations, pushes and pulls (connector.chaos: the same runs and invariants as
`bench/crash.py`, with fixed seeds), and the defects those runs found, each pinned by a
deterministic test."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dataspace_testlib import DataSpace

from connector.chaos import ASSET_ID, ChaosConfig, ChaosSpace, Driver, run_once
from connector.devspace import offer_asset

pytestmark = pytest.mark.integration
# small enough for CI: a run takes a few seconds plus the victim's restart
CI = ChaosConfig(lanes=2)


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosSpace]:
    space = DataSpace(tmp_path_factory.mktemp("chaos"), tls=True)
    try:
        yield ChaosSpace.create(space)
        space.assert_wire_valid()
    finally:
        space.close()


@pytest.mark.parametrize(("victim", "seed"), [("provider", 11), ("consumer", 12), ("authority", 13)])
def test_a_kill_loses_nothing_duplicates_nothing_and_counts_exactly(
    chaos: ChaosSpace, victim: str, seed: int
) -> None:
    report = run_once(chaos, victim, seed, CI)
    assert report.kill.at > 0, "the victim was not killed"
    assert report.ok, "\n".join([report.line(), *report.problems(), *report.notes])
    assert report.negotiations >= CI.lanes and report.settled >= report.negotiations


def test_an_authority_outage_longer_than_the_revocation_poll_delays_messages_never_fails_them(
    chaos: ChaosSpace,
) -> None:
    """Defect: with the authority down longer than the revocation poll interval (2 s here), a
    DSP receiver answered every DAT with 404 (the DSP answer to an unauthenticated call), which
    the sender's outbox takes as permanent: the transfer completion below died, the consumer
    stayed TERMINATING (in doubt) and the provider STARTED, for good. A revocation list that
    cannot be refreshed is a transient condition: 503, retried until the authority is back."""
    cfg = ChaosConfig(lanes=1, push=False)
    provider, consumer, _ = chaos.participants(cfg)
    try:
        offer = offer_asset(
            provider,
            asset_id=ASSET_ID,
            content=b"x" * 1024,
            contract={"template": "n-times-usage", "params": {"max": "5"}},
        )
        driver = Driver(provider, consumer, offer, cfg, b"x" * 1024, time.monotonic() + 60)
        status, n = driver.call(
            consumer,
            "POST",
            "/api/negotiations",
            {"peerUrl": provider.dsp_url, "offerId": offer},
            expect=(201,),
        )
        assert status == 201, n
        agreement = driver.wait_negotiation(n["id"])["agreementId"]
        status, t = driver.call(consumer, "POST", "/api/transfers", {"agreementId": agreement}, expect=(201,))
        assert status == 201, t
        assert driver.wait_transfer(t["id"], {"STARTED"})["internalState"] == "STARTED"
        authority = chaos.space.authority
        authority.kill9()
        try:
            time.sleep(3)  # past the provider's 2 s revocation poll interval
            status, out = consumer.api("POST", f"/api/transfers/{t['id']}/complete")
            assert status == 200, out
            time.sleep(1)  # the completion message meets the provider's stale list
        finally:
            authority.start()
        done = driver.wait_transfer(t["id"], {"COMPLETED", "TERMINATED"})
        assert done["internalState"] == "COMPLETED", done
        deadline = time.monotonic() + 30
        while True:
            status, pt = provider.api("GET", f"/api/transfers/{done['providerPid']}")
            if pt["internalState"] == "COMPLETED" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert pt["internalState"] == "COMPLETED", pt
    finally:
        provider.stop()
        consumer.stop()
