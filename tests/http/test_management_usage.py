"""The management API's provider-held facts, payments and agreement retirement, in process on a
real store."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner

from connector.http.client import DspClient
from connector.http.management import management_app
from connector.http.outbound import OutboundPolicy
from connector.http.views import AgreementView, FactView, PaymentView
from connector.mgmtcli import transfer
from connector.protocol import transfer as xfer
from connector.protocol.common import Role
from connector.runtime import ControlPlane, transfer_to_row
from connector.store import AgreementRow, NegotiationRow, Store

KEY = "k" * 24
NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
S = xfer.TransferState
PROVIDER = "urn:test:provider"
EUR = "http://dbpedia.org/resource/Euro"
XSD_DATETIME = "http://www.w3.org/2001/XMLSchema#dateTime"


def agreement_policy(agreement_id: str, end: str | None) -> dict[str, Any]:
    permission: dict[str, Any] = {"action": "use"}
    if end:
        permission["constraint"] = [
            {
                "leftOperand": "dateTime",
                "operator": "lteq",
                "rightOperand": {"@value": end, "@type": XSD_DATETIME},
            }
        ]
    return {
        "@id": agreement_id,
        "@type": "Agreement",
        "assigner": PROVIDER,
        "assignee": "urn:test:consumer",
        "target": "urn:asset:x",
        "permission": [permission],
    }


async def add_agreement(
    store: Store, agreement_id: str, *, role: str = "provider", end: str | None = None
) -> None:
    negotiation_id = f"urn:negotiation:{agreement_id}"
    async with store.transaction() as tx:
        await tx.negotiations.add(
            NegotiationRow(
                id=negotiation_id,
                role=role,
                state="FINALIZED",
                created_at=NOW,  # type: ignore[arg-type]
                updated_at=NOW,
                agreement_id=agreement_id,
                counter_party_id="urn:test:consumer",
            )
        )
        await tx.agreements.add(
            AgreementRow(
                id=agreement_id,
                provider_id=PROVIDER,
                consumer_id="urn:test:consumer",
                target="urn:asset:x",
                policy=agreement_policy(agreement_id, end),
                signed_at=NOW,
                negotiation_id=negotiation_id,
            )
        )


async def add_transfer(store: Store, transfer_id: str, agreement_id: str, state: xfer.TransferState) -> None:
    t = xfer.Transfer(
        id=transfer_id,
        role=Role.PROVIDER,
        provider_pid=transfer_id,
        consumer_pid=f"{transfer_id}-c",
        state=state,
        counter_party_id="urn:test:consumer",
        counter_party_address="http://127.0.0.1:9",
        agreement_id=agreement_id,
        format="HttpData-PULL",
        created_at=NOW,
        updated_at=NOW,
        acked_state=state,
    )
    async with store.transaction() as tx:
        await tx.transfers.add(transfer_to_row(t))


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[TestClient]:
    store = await Store.open(f"sqlite:///{tmp_path / 'c.db'}")
    await store.migrate()

    async def no_token() -> str:
        raise RuntimeError("no peers in this test")

    dsp = DspClient(no_token, ssl_context=None, policy=OutboundPolicy())
    cp = ControlPlane(store, dsp, participant_id=PROVIDER, dsp_url="http://127.0.0.1:9", clock=lambda: NOW)
    client = TestClient(TestServer(management_app(cp, KEY)))
    await client.start_server()
    client.session.headers["X-Api-Key"] = KEY
    try:
        yield client
    finally:
        await client.close()
        await dsp.close()
        await store.close()


async def call(api: TestClient, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with api.request(method, path, json=body) as r:
        text = await r.text()
        return r.status, (await r.json()) if text else None


# ------------------------------------------------------------------ facts


async def test_facts_set_list_unset(api: TestClient) -> None:
    status, fact = await call(api, "PUT", "/api/facts/idsc:STATE", {"values": ["idsc:ACTIVE"]})
    assert status == 200, fact
    FactView.model_validate(fact)
    assert fact["name"] == "https://w3id.org/idsa/code/STATE"
    assert fact["values"] == ["https://w3id.org/idsa/code/ACTIVE"]
    event = quote("http://www.w3.org/ns/odrl/2/event", safe="")
    status, fact = await call(
        api, "PUT", f"/api/facts/{event}", {"values": ["urn:event:fair"], "until": "2027-03-02T00:00:00Z"}
    )
    assert status == 200 and fact["until"] == "2027-03-02T00:00:00Z"
    status, _ = await call(
        api, "PUT", "/api/facts/event", {"values": ["urn:event:old"], "until": "2027-03-01T11:00:00Z"}
    )
    assert status == 200
    status, listed = await call(api, "GET", "/api/facts")
    assert status == 200
    assert {f["name"]: f["values"] for f in listed} == {  # the expired event is absent
        "https://w3id.org/idsa/code/STATE": ["https://w3id.org/idsa/code/ACTIVE"]
    }
    assert (await call(api, "DELETE", "/api/facts/idsc:STATE"))[0] == 204
    assert (await call(api, "DELETE", "/api/facts/idsc:STATE"))[0] == 404
    assert (await call(api, "GET", "/api/facts"))[1] == []


@pytest.mark.parametrize(
    ("path", "body", "status", "says"),
    [
        ("/api/facts/state", {"values": ["x"]}, 404, "did you mean idsc:STATE"),
        ("/api/facts/idsc:STATE", {"values": []}, 400, "values"),
        ("/api/facts/idsc:STATE", {"values": ["a"], "until": "2027-01-01T00:00:00"}, 400, "until"),
        ("/api/facts/idsc:STATE", {"values": ["a"], "until": "tomorrow"}, 400, "until"),
        ("/api/facts/payAmount", {"values": ["lots"]}, 400, "invalid fact"),
        ("/api/facts/idsc:STATE", {"values": ["a"], "extra": 1}, 400, "extra"),
    ],
)
async def test_bad_facts_are_refused(api: TestClient, path: str, body: Any, status: int, says: str) -> None:
    got, answer = await call(api, "PUT", path, body)
    assert got == status, answer
    assert says in answer["error"] + " ".join(answer["details"])


# ------------------------------------------------------------------ payments


@pytest.fixture
async def with_agreements(api: TestClient, tmp_path: Path) -> TestClient:
    store = await Store.open(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        await add_agreement(store, "urn:agreement:sold")
        await add_agreement(store, "urn:agreement:over", end="2027-01-01T00:00:00Z")
        await add_agreement(store, "urn:agreement:bought", role="consumer")
        await add_transfer(store, "urn:transfer:running", "urn:agreement:sold", xfer.TransferState.STARTED)
        await add_transfer(
            store, "urn:transfer:suspended", "urn:agreement:sold", xfer.TransferState.SUSPENDED
        )
        await add_transfer(store, "urn:transfer:done", "urn:agreement:sold", xfer.TransferState.COMPLETED)
    finally:
        await store.close()
    return api


async def test_payments_recorded_exactly_and_listed(with_agreements: TestClient) -> None:
    api = with_agreements
    status, p = await call(
        api,
        "POST",
        "/api/payments",
        {"agreement": "urn:agreement:sold", "amount": "10.50", "currency": "EUR", "reference": "inv-1"},
    )
    assert status == 201, p
    PaymentView.model_validate(p)
    assert (p["amount"], p["currency"], p["paidAt"], p["reference"]) == (
        "10.50",
        EUR,
        "2027-03-01T12:00:00Z",
        "inv-1",
    )
    status, q = await call(
        api,
        "POST",
        "/api/payments",
        {
            "agreement": "urn:agreement:sold",
            "amount": 0.1,
            "currency": EUR,
            "paidAt": "2027-02-01T00:00:00+01:00",
        },
    )
    assert status == 201 and q["amount"] == "0.1" and q["paidAt"] == "2027-01-31T23:00:00Z"
    status, listed = await call(api, "GET", "/api/payments?agreement=urn:agreement:sold")
    assert status == 200 and [x["id"] for x in listed] == [q["id"], p["id"]]
    assert (await call(api, "GET", "/api/payments?agreement=urn:agreement:over"))[1] == []
    assert len((await call(api, "GET", "/api/payments"))[1]) == 2


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"agreement": "urn:agreement:none", "amount": "1", "currency": "EUR"}, 404, "no agreement"),
        ({"agreement": "urn:agreement:bought", "amount": "1", "currency": "EUR"}, 404, "no agreement"),
        ({"agreement": "urn:agreement:sold", "amount": "ten", "currency": "EUR"}, 400, "amount"),
        ({"agreement": "urn:agreement:sold", "amount": "-1", "currency": "EUR"}, 400, "positive"),
        ({"agreement": "urn:agreement:sold", "amount": "NaN", "currency": "EUR"}, 400, "positive"),
        ({"agreement": "urn:agreement:sold", "amount": "1", "currency": "EURO"}, 400, "unknown currency"),
        ({"agreement": "urn:agreement:sold", "amount": True, "currency": "EUR"}, 400, "amount"),
        ({"agreement": "urn:agreement:sold", "amount": "1"}, 400, "currency"),
    ],
)
async def test_bad_payments_are_refused(
    with_agreements: TestClient, body: Any, status: int, says: str
) -> None:
    got, answer = await call(with_agreements, "POST", "/api/payments", body)
    assert got == status, answer
    assert says in answer["error"] + " ".join(answer["details"])
    assert (await call(with_agreements, "GET", "/api/payments"))[1] == []


# ------------------------------------------------------------------ agreements


async def test_agreements_show_their_status(with_agreements: TestClient) -> None:
    status, listed = await call(with_agreements, "GET", "/api/agreements")
    assert status == 200
    for a in listed:
        AgreementView.model_validate(a)
    assert {a["id"]: a["status"] for a in listed} == {
        "urn:agreement:sold": "active",
        "urn:agreement:over": "expired",
        "urn:agreement:bought": "active",
    }
    status, one = await call(with_agreements, "GET", "/api/agreements/urn:agreement:over")
    assert (one["status"], one["retiredAt"], one["retiredReason"]) == ("expired", None, None)


async def test_retire_terminates_running_transfers(with_agreements: TestClient) -> None:
    api = with_agreements
    status, a = await call(
        api, "POST", "/api/agreements/urn:agreement:sold/retire", {"reason": "licence withdrawn"}
    )
    assert status == 200, a
    assert (a["status"], a["retiredAt"], a["retiredReason"]) == (
        "retired",
        "2027-03-01T12:00:00Z",
        "licence withdrawn",
    )
    why = ["agreement urn:agreement:sold retired: licence withdrawn"]
    for tid in ("urn:transfer:running", "urn:transfer:suspended"):
        status, t = await call(api, "GET", f"/api/transfers/{tid}")
        # the consumer is told (here it cannot be reached: the provider ends it all the same)
        assert t["internalState"] in ("TERMINATING", "TERMINATED"), t
        assert t["terminationReason"] == why, t
    status, done = await call(api, "GET", "/api/transfers/urn:transfer:done")
    assert done["state"] == "COMPLETED" and done["terminationReason"] is None
    # a second retirement keeps the first
    status, again = await call(api, "POST", "/api/agreements/urn:agreement:sold/retire", {"reason": "other"})
    assert status == 200 and again["retiredReason"] == "licence withdrawn"
    assert (await call(api, "GET", "/api/agreements/urn:agreement:sold"))[1]["status"] == "retired"


@pytest.mark.parametrize(
    ("agreement", "body", "status"),
    [
        ("urn:agreement:none", {"reason": "x"}, 404),
        ("urn:agreement:bought", {"reason": "x"}, 404),  # the consumer's: not ours to retire
        ("urn:agreement:sold", {"reason": ""}, 400),
        ("urn:agreement:sold", {}, 400),
    ],
)
async def test_bad_retirements_are_refused(
    with_agreements: TestClient, agreement: str, body: Any, status: int
) -> None:
    got, answer = await call(with_agreements, "POST", f"/api/agreements/{agreement}/retire", body)
    assert got == status, answer
    assert (await call(with_agreements, "GET", "/api/agreements/urn:agreement:sold"))[1]["status"] == "active"


# ------------------------------------------------------------------ listings


MIXED = [
    (S.STARTED, S.STARTED),
    (S.REQUESTED, S.REQUESTED),
    (S.COMPLETED, S.COMPLETED),
    (S.SUSPENDING, S.STARTED),
    (S.STARTING, None),
    (S.TERMINATED, S.TERMINATED),
]


def created(i: int) -> datetime:
    # a shuffled creation order (i * 37 mod 250 is a permutation)
    return NOW + timedelta(seconds=(i * 37) % 250)


async def add_many(tmp_path: Path) -> None:
    """250 transfers in the states of MIXED, in turn, into the API's store."""
    store = await Store.open(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        await add_agreement(store, "urn:agreement:many")
        async with store.transaction() as tx:
            for i in range(250):
                state, acked = MIXED[i % len(MIXED)]
                await tx.transfers.add(
                    transfer_to_row(
                        xfer.Transfer(
                            id=f"urn:transfer:{i:03d}",
                            role=Role.PROVIDER,
                            provider_pid=f"urn:transfer:{i:03d}",
                            consumer_pid=f"c-{i}",
                            state=state,
                            counter_party_id="urn:test:consumer",
                            counter_party_address="http://127.0.0.1:9",
                            agreement_id="urn:agreement:many",
                            format="HttpData-PULL",
                            created_at=created(i),
                            updated_at=created(i),
                            acked_state=acked,
                        )
                    )
                )
    finally:
        await store.close()


async def test_transfer_list_by_state_pages_newest_first(api: TestClient, tmp_path: Path) -> None:
    """250 transfers in mixed states: `?state=` finds every one in that (DSP) state across
    pages, newest first with `order=newest`, each page full, none twice. (The store's tests run
    the same query on PostgreSQL: tests/store/test_store_listing.py.)"""
    await add_many(tmp_path)
    # STARTED: settled STARTED, SUSPENDING (STARTED acknowledged last) and STARTING (none yet)
    expected = sorted(
        (i for i in range(250) if i % len(MIXED) in (0, 3, 4)), key=lambda i: (created(i), i), reverse=True
    )
    seen: list[str] = []
    for offset in range(0, 500, 30):
        status, page = await call(
            api, "GET", f"/api/transfers?state=STARTED&order=newest&limit=30&offset={offset}"
        )
        assert status == 200, page
        assert {t["state"] for t in page} <= {"STARTED"}
        assert len(page) == min(30, max(0, len(expected) - offset))
        seen += [t["id"] for t in page]
    assert seen == [f"urn:transfer:{i:03d}" for i in expected]
    status, oldest = await call(api, "GET", "/api/transfers?state=COMPLETED&limit=500")
    assert [t["id"] for t in oldest] == sorted(
        (t["id"] for t in oldest), key=lambda tid: (created(int(tid[-3:])), tid)
    )
    assert len(oldest) == len(range(2, 250, len(MIXED)))
    status, refused = await call(api, "GET", "/api/transfers?state=STARTING")
    assert status == 400, refused  # an internal state is not a DSP state


async def test_cli_transfer_list_shows_the_newest(api: TestClient, tmp_path: Path) -> None:
    """`connector transfer list` says newest first: the 200 newest, filtered by the API."""
    await add_many(tmp_path)
    base = f"http://127.0.0.1:{api.port}"

    def listed(*args: str) -> list[str]:
        result = CliRunner().invoke(transfer, ["list", "--api", base, "--api-key", KEY, "--json", *args])
        assert result.exit_code == 0, result.output
        return [t["id"] for t in json.loads(result.output)]

    newest = sorted(range(250), key=lambda i: (created(i), i), reverse=True)
    assert await asyncio.to_thread(listed) == [f"urn:transfer:{i:03d}" for i in newest[:200]]
    started = await asyncio.to_thread(listed, "--state", "STARTED")
    assert started == [f"urn:transfer:{i:03d}" for i in newest if i % len(MIXED) in (0, 3, 4)]
