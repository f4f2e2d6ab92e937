"""Authority + provider + consumer as real processes: negotiate to FINALIZED over TLS."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dataspace_testlib import DataSpace, negotiate, offer_asset

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def space(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DataSpace]:
    ds = DataSpace(tmp_path_factory.mktemp("tls"), tls=True)
    try:
        yield ds
        ds.assert_wire_valid()
    finally:
        ds.close()


def test_negotiate_to_finalized_over_tls(space: DataSpace) -> None:
    provider = space.connector("provider", roles=("provider",))
    consumer = space.connector("consumer", roles=("consumer",))
    offer_id = offer_asset(provider, asset_id="urn:asset:weather",
                           contract={"template": "n-times-usage", "params": {"max": "10"}})
    status, cat = consumer.api("POST", "/api/catalog", {"peerUrl": provider.dsp_url})
    assert status == 200, cat
    assert [d["id"] for d in cat["datasets"]] == ["urn:asset:weather"]
    n = negotiate(consumer, provider, offer_id)
    assert n["state"] == "FINALIZED", (n, consumer.log[-20:], provider.log[-20:])
    status, agreements = provider.api("GET", "/api/agreements")
    assert status == 200 and [a["id"] for a in agreements] == [n["agreementId"]]
    assert agreements[0]["consumerId"] == consumer.participant_id
    status, mine = consumer.api("GET", f"/api/agreements/{n['agreementId']}")
    assert status == 200 and mine["providerId"] == provider.participant_id
