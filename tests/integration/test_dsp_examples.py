"""Every official DSP example is accepted by the matching endpoint of a running connector, or
refused with the error the state calls for; every body that comes back is schema-valid."""

from __future__ import annotations

import asyncio
import copy
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dataspace_testlib import DataSpace, cli, offer_asset
from dsp_schema import EXAMPLES, assert_valid

from connector.identity.client import DatClient, ParticipantIdentity

pytestmark = pytest.mark.integration
NOWHERE = "http://127.0.0.1:9/callback"  # loopback, nothing listens: never the example's host


def example(area: str, name: str) -> dict[str, Any]:
    body = json.loads((EXAMPLES / area / f"{name}.json").read_text())
    if "callbackAddress" in body:
        body["callbackAddress"] = NOWHERE
    return body


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DataSpace, Any, str]]:
    root = tmp_path_factory.mktemp("examples")
    ds = DataSpace(root, tls=False)
    connector = ds.connector("target", roles=("provider", "consumer"))
    cli("init", root / "examiner", "--name", "Examiner")
    cli("authority", "register", ds.authority.directory, root / "examiner" / "participant.csr")

    async def token() -> str:
        async with aiohttp.ClientSession() as http:
            client = await DatClient.discover(
                http, ds.authority.url, ParticipantIdentity.load(root / "examiner")
            )
            return await client.token()

    try:
        yield ds, connector, asyncio.run(token())
        ds.assert_wire_valid()
    finally:
        ds.close()


def call(setup: tuple, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    _, connector, token = setup

    async def go() -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession() as http,
            http.request(
                method, connector.dsp_url + path, json=body, headers={"Authorization": f"Bearer {token}"}
            ) as r,
        ):
            return r.status, await r.json(content_type=None)

    return asyncio.run(go())


def test_catalog_examples(setup: tuple) -> None:
    status, body = call(setup, "POST", "/catalog/request", example("catalog", "catalog-request-message"))
    assert status == 200
    assert_valid(body, "catalog-schema")
    status, body = call(setup, "GET", "/catalog/datasets/urn:uuid:3afeadd8-ed2d-569e-d634-8394a8836d57")
    assert status == 404
    assert_valid(body, "catalog-error-schema")


def test_initial_request_for_an_offer_the_provider_does_not_know_is_refused(setup: tuple) -> None:
    # DSP: "If the Provider is not aware of the offer.@id value, it must respond with an error
    # message": the example's offer is none of this provider's, so no negotiation is opened
    _, connector, _ = setup
    before = connector.api("GET", "/api/negotiations?limit=500")[1]
    status, err = call(
        setup, "POST", "/negotiations/request", example("negotiation", "contract-request-message_initial")
    )
    assert status == 400, err
    assert_valid(err, "contract-negotiation-error-schema")
    assert "is not an offer of this provider" in " ".join(err["reason"])
    assert connector.api("GET", "/api/negotiations?limit=500")[1] == before


def test_initial_request_is_taken_idempotently_then_the_state_refuses_a_verification(setup: tuple) -> None:
    _, connector, _ = setup
    offer_id = offer_asset(
        connector,
        asset_id="urn:asset:examples",
        contract={"template": "n-times-usage", "params": {"max": "3"}},
    )
    initial = example("negotiation", "contract-request-message_initial")
    initial["offer"].update({"@id": offer_id, "target": "urn:asset:examples"})
    status, first = call(setup, "POST", "/negotiations/request", initial)
    assert status == 201, first
    assert_valid(first, "contract-negotiation-schema")
    assert first["consumerPid"] == initial["consumerPid"] and first["state"] == "REQUESTED"
    status, again = call(setup, "POST", "/negotiations/request", copy.deepcopy(initial))
    assert (status, again) == (201, first)  # a retried message: the same answer, no new process
    pid = first["providerPid"]
    status, got = call(setup, "GET", f"/negotiations/{pid}")
    assert status == 200
    assert_valid(got, "contract-negotiation-schema")
    # the example's terms are looser than the offer's: terminated; a verification is refused
    verification = example("negotiation", "contract-agreement-verification-message")
    verification.update(providerPid=pid, consumerPid=initial["consumerPid"])
    status, err = call(setup, "POST", f"/negotiations/{pid}/agreement/verification", verification)
    assert status == 400, err
    assert_valid(err, "contract-negotiation-error-schema")


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("contract-request-message", "/negotiations/urn:uuid:a343fcbf-99fc-4ce8-8e9b-148c97605aab/request"),
        (
            "contract-negotiation-event-message",
            "/negotiations/urn:uuid:a343fcbf-99fc-4ce8-8e9b-148c97605aab/events",
        ),
        (
            "contract-agreement-verification-message",
            "/negotiations/urn:uuid:a343fcbf-99fc-4ce8-8e9b-148c97605aab/agreement/verification",
        ),
        (
            "contract-negotiation-termination-message",
            "/negotiations/urn:uuid:a343fcbf-99fc-4ce8-8e9b-148c97605aab/termination",
        ),
        ("contract-offer-message", "/negotiations/urn:uuid:32541fe6-c580-409e-85a8-8a9a32fbe833/offers"),
        (
            "contract-agreement-message",
            "/negotiations/urn:uuid:32541fe6-c580-409e-85a8-8a9a32fbe833/agreement",
        ),
        (
            "contract-agreement-message-full",
            "/negotiations/urn:uuid:32541fe6-c580-409e-85a8-8a9a32fbe833/agreement",
        ),
    ],
)
def test_messages_for_unknown_processes_get_404(setup: tuple, name: str, path: str) -> None:
    status, err = call(setup, "POST", path, example("negotiation", name))
    assert status == 404, err
    assert_valid(err, "contract-negotiation-error-schema")


def test_provider_initiated_offer_is_taken_by_the_consumer_callback(setup: tuple) -> None:
    status, body = call(
        setup, "POST", "/negotiations/offers", example("negotiation", "contract-offer-message_initial")
    )
    assert status == 201, body
    assert_valid(body, "contract-negotiation-schema")
    assert body["state"] == "OFFERED"


def test_a_message_at_the_wrong_endpoint_or_malformed_is_400(setup: tuple) -> None:
    status, err = call(
        setup, "POST", "/negotiations/request", example("negotiation", "contract-negotiation-event-message")
    )
    assert status == 400 and "@type" in json.dumps(err)
    status, err = call(setup, "POST", "/negotiations/request", {"@type": "ContractRequestMessage"})
    assert status == 400
    assert_valid(err, "contract-negotiation-error-schema")
