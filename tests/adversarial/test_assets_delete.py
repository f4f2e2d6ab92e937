"""Referential integrity through real processes (issue 9: an asset could be deleted while an
offer listed it and a transfer was STARTED, 204; the data plane served from its cache until a
restart, then every pull was 500).

An asset listed by an offer or under an agreement, and a policy an offer uses, are not deleted:
409 naming what refers to them, nothing changed, pulls go on. An asset gone anyway (deleted in
the database behind the connector's back) is a 410 with a reason at the data plane, not a 500."""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from assets_testlib import pull, start_transfer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dataspace_testlib import Connector, DataSpace, negotiate, offer_asset

pytestmark = pytest.mark.integration
CONTENT = b"day,temp\n1,12\n"


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Connector, Connector]]:
    ds = DataSpace(tmp_path_factory.mktemp("delete"), tls=False)
    try:
        yield ds.connector("delprov", roles=("provider",)), ds.connector("delcons", roles=("consumer",))
        ds.assert_wire_valid()
    finally:
        ds.close()


def test_what_is_in_use_is_not_deleted_and_pulls_go_on(pair: tuple[Connector, Connector]) -> None:
    provider, consumer = pair
    offer = offer_asset(
        provider,
        asset_id="urn:asset:used",
        content=CONTENT,
        offer_id="urn:offer:o1",
        contract={"template": "n-times-usage", "params": {"max": "100"}},
    )
    (o,) = [o for o in provider.api("GET", "/api/offers")[1] if o["id"] == "urn:offer:o1"]

    # an asset an offer lists, a policy an offer uses
    status, err = provider.api("DELETE", "/api/assets/urn:asset:used")
    assert status == 409 and "urn:offer:o1" in err["error"] and err["details"] == ["offer: urn:offer:o1"], err
    for policy in (o["accessPolicyId"], o["contractPolicyId"]):
        status, err = provider.api("DELETE", f"/api/policies/{policy}")
        assert status == 409 and "urn:offer:o1" in err["error"], err
        assert provider.api("GET", f"/api/policies/{policy}")[0] == 200

    # an asset under an agreement with a STARTED transfer, its offer withdrawn
    n = negotiate(consumer, provider, offer)
    assert n["state"] == "FINALIZED", n
    t = start_transfer(consumer, n["agreementId"])
    assert pull(consumer, t) == (200, CONTENT)
    assert provider.api("DELETE", "/api/offers/urn:offer:o1")[0] == 204
    status, err = provider.api("DELETE", "/api/assets/urn:asset:used")
    assert status == 409 and err["details"] == [f"agreement: {n['agreementId']}"], err
    assert "agreement" in err["error"] and n["agreementId"] in err["error"]
    assert provider.api("GET", "/api/assets/urn:asset:used")[0] == 200
    # nothing changed: the data plane still serves it, from a fresh lookup too
    time.sleep(1.1)  # past the data plane's transfer lookup cache (1 s)
    assert pull(consumer, t) == (200, CONTENT)
    # a policy only the withdrawn offer used may go (the agreement keeps its own copy)
    assert provider.api("DELETE", f"/api/policies/{o['contractPolicyId']}")[0] == 204
    assert pull(consumer, t) == (200, CONTENT)


def test_an_asset_gone_behind_the_connectors_back_is_a_410(pair: tuple[Connector, Connector]) -> None:
    provider, consumer = pair
    offer = offer_asset(
        provider,
        asset_id="urn:asset:doomed",
        content=CONTENT,
        contract={"template": "allow-usage", "params": {}},
    )
    n = negotiate(consumer, provider, offer)
    t = start_transfer(consumer, n["agreementId"])
    assert pull(consumer, t) == (200, CONTENT)
    with sqlite3.connect(provider.directory / "connector.db", timeout=30) as db:
        db.execute("DELETE FROM assets WHERE id = ?", ("urn:asset:doomed",))
    deadline = time.monotonic() + 15
    while (answer := pull(consumer, t))[0] == 200 and time.monotonic() < deadline:
        time.sleep(0.1)  # the data plane's lookup cache lives a second
    status, body = answer
    assert status == 410, (status, body[:300])
    assert json.loads(body) == {"error": "the asset of this agreement no longer exists"}
