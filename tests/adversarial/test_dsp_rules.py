"""The DSP rules of issue 9 against a real connector process: an offer must be known by its
``@id``; a terminal process refuses every message, and a sender whose re-delivery is refused
that way settles from the counter-party's state; exactly one ``Authorization`` (DSP) and one
``X-Api-Key`` (management); short, URL-safe process ids; a token refresh of an ended transfer is
refused locally. The examiner talks DSP with its own DAT; the fake peer stands for its connector
(see dsp_fuzzlib)."""

from __future__ import annotations

import asyncio
import http.client
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from dsp_fuzzlib import CONTEXT, DspSpace, Snapshot, dsp_space
from dsp_schema import assert_valid

from connector.identity.client import DatClient, ParticipantIdentity

__all__ = ["dsp_space"]  # the session's data space (a fixture shared with test_dsp_fuzz)
pytestmark = pytest.mark.integration


@pytest.fixture
def space(dsp_space: DspSpace) -> DspSpace:
    dsp_space.fuzzer.forget()
    return dsp_space


def request_for(offer: dict[str, Any], peer_url: str, consumer_pid: str | None = None) -> dict[str, Any]:
    return {
        "@context": CONTEXT,
        "@type": "ContractRequestMessage",
        "consumerPid": consumer_pid or f"urn:uuid:{uuid.uuid4()}",
        "offer": offer,
        "callbackAddress": peer_url,
    }


def unchanged(space: DspSpace, before: Snapshot) -> None:
    assert before.diff(space.fuzzer.snapshot()) == []


def wait_state(space: DspSpace, kind: str, pid: str, states: tuple[str, ...], timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        p = space.fuzzer.snapshot().process(kind, pid)
        if (p is not None and p["internalState"] in states) or time.monotonic() > deadline:
            return p
        time.sleep(0.05)


# ----------------------------------------------------------------------------- offers by @id


def test_an_initial_request_for_an_offer_the_provider_does_not_know_opens_nothing(space: DspSpace) -> None:
    # issue 9: the offer was matched by content and agreed
    fz, ex = space.fuzzer, space.examiner
    known = fz.offers[0]
    before = fz.snapshot()
    for offer in (
        {**known, "@id": "urn:offer:made-up"},  # the catalog's terms under another id
        {**known, "target": fz.offers[1]["target"]},
    ):  # a known id for another dataset
        status, err = ex.post("/negotiations/request", request_for(offer, space.peer.url))
        assert status == 400, err
        assert_valid(err, "contract-negotiation-error")
        assert "offer" in " ".join(err["reason"])
    unchanged(space, before)
    status, ack = ex.post("/negotiations/request", request_for(known, space.peer.url))
    assert status == 201, ack  # the catalog's offer by its id: taken


# ----------------------------------------------------------------------------- terminal states


def test_a_terminal_process_refuses_every_message_even_a_repeated_one(space: DspSpace) -> None:
    # issue 9: a verification repeated after FINALIZED got 200
    fz, ex = space.fuzzer, space.examiner
    n = fz.negotiate(fz.offers[0], finalize=True)
    pids = {"providerPid": n["providerPid"], "consumerPid": n["consumerPid"]}
    t = fz.transfer()
    tpids = {"providerPid": t["providerPid"], "consumerPid": t["consumerPid"]}
    completion = {"@context": CONTEXT, "@type": "TransferCompletionMessage", **tpids}
    status, _ = ex.post(f"/transfers/{t['providerPid']}/completion", completion)
    assert status == 200
    fz.quiesce()
    before = fz.snapshot()
    for path, body in (
        (
            f"/negotiations/{n['providerPid']}/agreement/verification",
            {"@context": CONTEXT, "@type": "ContractAgreementVerificationMessage", **pids},
        ),
        (
            f"/negotiations/{n['providerPid']}/termination",
            {"@context": CONTEXT, "@type": "ContractNegotiationTerminationMessage", **pids},
        ),
        (
            f"/negotiations/{n['providerPid']}/events",
            {
                "@context": CONTEXT,
                "@type": "ContractNegotiationEventMessage",
                "eventType": "ACCEPTED",
                **pids,
            },
        ),
        (f"/transfers/{t['providerPid']}/completion", completion),
        (
            f"/transfers/{t['providerPid']}/termination",
            {"@context": CONTEXT, "@type": "TransferTerminationMessage", **tpids},
        ),
        (
            f"/transfers/{t['providerPid']}/suspension",
            {"@context": CONTEXT, "@type": "TransferSuspensionMessage", **tpids},
        ),
    ):
        status, err = ex.post(path, body)
        assert status == 400, (path, err)
        area = "contract-negotiation-error" if path.startswith("/negotiations") else "transfer-error"
        assert_valid(err, area)
        assert "terminal state" in err["reason"][0], err
    unchanged(space, before)


def test_a_refused_redelivery_of_a_finalization_settles_from_the_consumers_state(space: DspSpace) -> None:
    """The provider's FINALIZED event is taken but its acknowledgement lost (503); the
    re-delivery is refused (400: the consumer is terminal). The provider asks the consumer
    (GET) and, finding it FINALIZED, is FINALIZED too: no termination is sent."""
    fz, ex, peer = space.fuzzer, space.examiner, space.peer
    n = fz.negotiate(fz.offers[0])  # AGREED
    cpid, ppid = n["consumerPid"], n["providerPid"]
    refused = {
        "@context": CONTEXT,
        "@type": "ContractNegotiationError",
        "providerPid": ppid,
        "consumerPid": cpid,
        "code": "400",
        "reason": ["FINALIZED is a terminal state"],
    }
    peer.script[f"/negotiations/{cpid}/events"] = [(503, refused), (400, refused)]
    peer.states[f"/negotiations/{cpid}"] = {
        "@context": CONTEXT,
        "@type": "ContractNegotiation",
        "providerPid": ppid,
        "consumerPid": cpid,
        "state": "FINALIZED",
    }
    status, _ = ex.post(
        f"/negotiations/{ppid}/agreement/verification",
        {
            "@context": CONTEXT,
            "@type": "ContractAgreementVerificationMessage",
            "providerPid": ppid,
            "consumerPid": cpid,
        },
    )
    assert status == 200
    done = wait_state(space, "negotiation", ppid, ("FINALIZED", "TERMINATED"))
    assert done is not None and done["internalState"] == "FINALIZED", done
    assert not any(path == f"/negotiations/{cpid}/termination" for path, _ in peer.received)
    assert done["agreementId"] in fz.snapshot().agreements


def test_a_refusal_from_a_counter_party_elsewhere_still_terminates(space: DspSpace) -> None:
    fz, ex, peer = space.fuzzer, space.examiner, space.peer
    n = fz.negotiate(fz.offers[0])
    cpid, ppid = n["consumerPid"], n["providerPid"]
    refused = {
        "@context": CONTEXT,
        "@type": "ContractNegotiationError",
        "providerPid": ppid,
        "consumerPid": cpid,
        "code": "400",
        "reason": ["no"],
    }
    peer.script[f"/negotiations/{cpid}/events"] = [(400, refused)]
    peer.states[f"/negotiations/{cpid}"] = {
        "@context": CONTEXT,
        "@type": "ContractNegotiation",
        "providerPid": ppid,
        "consumerPid": cpid,
        "state": "VERIFIED",
    }
    ex.post(
        f"/negotiations/{ppid}/agreement/verification",
        {
            "@context": CONTEXT,
            "@type": "ContractAgreementVerificationMessage",
            "providerPid": ppid,
            "consumerPid": cpid,
        },
    )
    done = wait_state(space, "negotiation", ppid, ("FINALIZED", "TERMINATED"))
    assert done is not None and done["internalState"] == "TERMINATED", done


def test_a_refused_redelivery_of_a_completion_settles_from_the_consumers_state(space: DspSpace) -> None:
    fz, peer, provider = space.fuzzer, space.peer, space.provider
    t = fz.transfer()
    cpid, ppid = t["consumerPid"], t["providerPid"]
    refused = {
        "@context": CONTEXT,
        "@type": "TransferError",
        "providerPid": ppid,
        "consumerPid": cpid,
        "code": "400",
        "reason": ["COMPLETED is a terminal state"],
    }
    peer.script[f"/transfers/{cpid}/completion"] = [(503, refused), (400, refused)]
    peer.states[f"/transfers/{cpid}"] = {
        "@context": CONTEXT,
        "@type": "TransferProcess",
        "providerPid": ppid,
        "consumerPid": cpid,
        "state": "COMPLETED",
    }
    status, body = provider.api("POST", f"/api/transfers/{t['id']}/complete", {})
    assert status == 200, body
    done = wait_state(space, "transfer", ppid, ("COMPLETED", "TERMINATED"))
    assert done is not None and done["internalState"] == "COMPLETED", done
    assert not any(path == f"/transfers/{cpid}/termination" for path, _ in peer.received)


# ----------------------------------------------------------------------------- one credential


def _raw(url: str, method: str, headers: list[tuple[str, str]]) -> tuple[int, Any]:
    """One request with ``headers`` as given (a name may repeat, which urllib does not allow)."""
    split = urlsplit(url)
    conn = http.client.HTTPConnection(split.hostname or "127.0.0.1", split.port, timeout=30)
    try:
        conn.putrequest(method, split.path)
        for k, v in headers:
            conn.putheader(k, v)
        conn.endheaders()
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, json.loads(raw) if raw else None
    finally:
        conn.close()


def test_exactly_one_authorization_header(space: DspSpace) -> None:
    # issue 9: a valid DAT followed by garbage, or two participants' DATs, got 200
    ex, provider = space.examiner, space.provider

    async def provider_dat() -> str:
        async with aiohttp.ClientSession() as http:
            client = await DatClient.discover(
                http, space.ds.authority.url, ParticipantIdentity.load(provider.directory)
            )
            return await client.token()

    mine, theirs = ex.token(), asyncio.run(provider_dat())
    body = json.dumps({"@context": CONTEXT, "@type": "CatalogRequestMessage"}).encode()
    assert ex.send("POST", "/catalog/request", body)[0] == 200  # one: fine
    for pair in ((mine, "garbage"), ("garbage", mine), (mine, theirs), (theirs, mine), (mine, mine)):
        status, err = ex.send(
            "POST", "/catalog/request", body, [("Authorization", f"Bearer {token}") for token in pair]
        )
        assert status == 404, (pair, err)  # as unauthenticated
        assert_valid(err, "catalog-error")
    before = space.fuzzer.snapshot()
    status, err = ex.send(
        "POST",
        "/negotiations/request",
        json.dumps(request_for(space.fuzzer.offers[0], space.peer.url)).encode(),
        [("Authorization", f"Bearer {mine}"), ("Authorization", "Bearer x")],
    )
    assert status == 404
    assert_valid(err, "contract-negotiation-error")
    unchanged(space, before)


def test_exactly_one_api_key(space: DspSpace) -> None:
    provider = space.provider
    url = provider.api_url + "/api/negotiations"
    assert _raw(url, "GET", [("X-Api-Key", provider.api_key)])[0] == 200
    key = provider.api_key
    for keys in ((key, key), (key, "wrong"), ("wrong", key)):
        status, err = _raw(url, "GET", [("X-Api-Key", k) for k in keys])
        assert status == 401, (keys, err)


# ----------------------------------------------------------------------------- process ids


@pytest.mark.parametrize(
    "pid",
    ["urn:uuid:" + "x" * 1_000_000, "urn:" + "a" * 253, "urn:a/b", "urn:a b", "urn:a?b", "urn:{a}", ".."],
)
def test_a_process_id_that_is_huge_or_unsafe_in_a_path_is_refused(space: DspSpace, pid: str) -> None:
    # issue 9: a consumerPid of 1,000,000 characters was accepted, stored and used in callbacks
    fz, ex = space.fuzzer, space.examiner
    before = fz.snapshot()
    status, err = ex.post("/negotiations/request", request_for(fz.offers[0], space.peer.url, pid))
    assert status == 400, err
    assert_valid(err, "contract-negotiation-error")
    # a million characters is refused by the JSON string limit before the message is read;
    # shorter over-long or unsafe ids by the process-id rule
    assert err["reason"][0].startswith(("ContractRequestMessage.consumerPid: ", "a JSON string is longer"))
    assert len(json.dumps(err)) < 2000
    status, err = ex.post(
        "/transfers/request",
        {
            "@context": CONTEXT,
            "@type": "TransferRequestMessage",
            "consumerPid": pid,
            "agreementId": fz.agreement_id,
            "format": "HttpData-PULL",
            "callbackAddress": space.peer.url,
        },
    )
    assert status == 400, err
    assert_valid(err, "transfer-error")
    unchanged(space, before)


def test_the_longest_process_id_is_taken(space: DspSpace) -> None:
    fz, ex = space.fuzzer, space.examiner
    pid = "urn:" + "a" * 252  # 256 characters
    status, ack = ex.post("/negotiations/request", request_for(fz.offers[0], space.peer.url, pid))
    assert status == 201 and ack["consumerPid"] == pid, ack
    fz.quiesce()
    assert any(path == f"/negotiations/{pid}/agreement" for path, _ in space.peer.received)


# ----------------------------------------------------------------------------- token refresh


def test_refreshing_the_token_of_an_ended_transfer_is_refused_here(space: DspSpace) -> None:
    """The connector as a consumer, the fake peer as its provider: a pull transfer completed (and
    one terminated) is refused a refresh with 409, and the provider is not asked."""
    ex, peer, connector = space.examiner, space.peer, space.provider
    dataset, offer_id = "urn:asset:remote", f"urn:offer:remote-{uuid.uuid4()}"
    rules = {"permission": [{"action": "use"}]}
    service = {"@id": "urn:svc", "@type": "DataService", "endpointURL": peer.url}
    peer.script["/catalog/request"] = [
        (
            200,
            {
                "@context": CONTEXT,
                "@type": "Catalog",
                "@id": "urn:catalog:remote",
                "participantId": ex.participant_id,
                "dataset": [
                    {
                        "@id": dataset,
                        "@type": "Dataset",
                        "hasPolicy": [{"@id": offer_id, "@type": "Offer", **rules}],
                        "distribution": [
                            {"@type": "Distribution", "format": "HttpData-PULL", "accessService": service}
                        ],
                    }
                ],
            },
        )
    ]
    status, n = connector.api("POST", "/api/negotiations", {"peerUrl": peer.url, "offerId": offer_id})
    assert status == 201, n
    n = wait_state(space, "negotiation", n["id"], ("REQUESTED", "TERMINATED"))
    pids = {"providerPid": n["providerPid"], "consumerPid": n["consumerPid"]}
    agreement = {
        "@id": f"urn:uuid:{uuid.uuid4()}",
        "@type": "Agreement",
        "target": dataset,
        "assigner": ex.participant_id,
        "assignee": connector.participant_id,
        "timestamp": "2026-01-01T00:00:00Z",
        **rules,
    }
    status, got = ex.post(
        f"/negotiations/{n['consumerPid']}/agreement",
        {"@context": CONTEXT, "@type": "ContractAgreementMessage", **pids, "agreement": agreement},
    )
    assert status == 200, got
    assert wait_state(space, "negotiation", n["id"], ("VERIFIED",))["internalState"] == "VERIFIED"
    status, got = ex.post(
        f"/negotiations/{n['consumerPid']}/events",
        {"@context": CONTEXT, "@type": "ContractNegotiationEventMessage", "eventType": "FINALIZED", **pids},
    )
    assert status == 200, got

    def started_transfer() -> dict[str, Any]:
        status, t = connector.api("POST", "/api/transfers", {"agreementId": agreement["@id"]})
        assert status == 201, t
        t = wait_state(space, "transfer", t["id"], ("REQUESTED",))
        tpids = {"providerPid": t["providerPid"], "consumerPid": t["consumerPid"]}
        status, got = ex.post(
            f"/transfers/{t['consumerPid']}/start",
            {
                "@context": CONTEXT,
                "@type": "TransferStartMessage",
                **tpids,
                "dataAddress": {
                    "@type": "DataAddress",
                    "endpointType": "https://w3id.org/idsa/v4.1/HTTP",
                    "endpoint": f"{peer.url}/data",
                    "endpointProperties": [
                        {"@type": "EndpointProperty", "name": "authorization", "value": "token-1"},
                        {"@type": "EndpointProperty", "name": "refreshToken", "value": "refresh-1"},
                    ],
                },
            },
        )
        assert status == 200, got
        return {**t, **tpids}

    completed, terminated = started_transfer(), started_transfer()
    assert connector.api("POST", f"/api/transfers/{completed['id']}/complete", {})[0] == 200
    assert connector.api("POST", f"/api/transfers/{terminated['id']}/terminate", {"reason": "done"})[0] == 200
    assert wait_state(space, "transfer", completed["id"], ("COMPLETED",))["internalState"] == "COMPLETED"
    assert wait_state(space, "transfer", terminated["id"], ("TERMINATED",))["internalState"] == "TERMINATED"
    for t in (completed, terminated):
        peer.script[f"/transfers/{t['providerPid']}/token"] = [(400, {"reason": ["not running"]})]
        status, err = connector.api("POST", f"/api/transfers/{t['id']}/refresh")
        assert status == 409, err  # issue 9: the provider's 400 came back as 502
        assert "no longer refreshed" in err["error"]
        assert not any(path.endswith("/token") for path, _ in peer.received)
