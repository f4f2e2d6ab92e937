"""CRUD of every repository, listing with filters and pagination, the one-query catalog load, and
data-address secrets that no default read returns."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from store_testlib import NOW

from connector.store import (
    MASK,
    AgreementRow,
    AssetRow,
    DuplicateKey,
    NegotiationRow,
    NotFound,
    OfferRow,
    PolicyRow,
    ReferenceViolation,
    Store,
    TransferRow,
)

SECRET_ADDRESS: dict[str, Any] = {
    "type": "HttpData",
    "baseUrl": "https://upstream.example/data",
    "headers": {"Authorization": "Bearer upstream-secret-1", "X-Tenant": "tenant-secret-2"},
    "authKey": "X-Api-Key",
    "authCode": "api-secret-3",
    "oauth2": {"clientId": "connector", "clientSecret": "oauth-secret-4", "tokenUrl": "https://idp/token"},
    "proxyHeaders": [{"name": "Cookie", "value": "session=cookie-secret-5"}],
}
SECRETS = ("upstream-secret-1", "tenant-secret-2", "api-secret-3", "oauth-secret-4", "cookie-secret-5")


def asset(asset_id: str, minutes: int = 0, **changes: Any) -> AssetRow:
    row = AssetRow(
        id=asset_id,
        created_at=NOW + timedelta(minutes=minutes),
        title=f"Title {asset_id}",
        description="weather data",
        keywords=("weather", "open"),
        content_type="text/csv",
        data_address={"type": "HttpData", "baseUrl": f"https://upstream/{asset_id}"},
        properties={"dct:license": "CC-BY-4.0"},
    )
    return replace(row, **changes)


def negotiation(negotiation_id: str, minutes: int = 0, **changes: Any) -> NegotiationRow:
    row = NegotiationRow(
        id=negotiation_id,
        role="provider",
        state="REQUESTED",
        created_at=NOW + timedelta(minutes=minutes),
        updated_at=NOW + timedelta(minutes=minutes),
        provider_pid=f"urn:uuid:p-{negotiation_id}",
        consumer_pid=f"urn:uuid:c-{negotiation_id}",
        counter_party_id="consumer-1",
        counter_party_address="https://consumer/dsp",
        offer={"@id": "offer-1", "target": "asset-1"},
        data={"callbackAddress": "https://consumer/cb", "history": [1, 2]},
    )
    return replace(row, **changes)


def agreement(agreement_id: str, negotiation_id: str | None = None, **changes: Any) -> AgreementRow:
    row = AgreementRow(
        id=agreement_id,
        negotiation_id=negotiation_id,
        provider_id="provider-1",
        consumer_id="consumer-1",
        target="asset-1",
        policy={"@type": "Agreement", "permission": [{"action": "use"}]},
        signed_at=NOW,
    )
    return replace(row, **changes)


def leaks_secret(value: Any) -> bool:
    text = json.dumps(value, default=repr)
    return any(secret in text for secret in SECRETS)


async def test_assets_crud_and_listing(store: Store) -> None:
    async with store.transaction() as tx:
        for index in range(5):
            await tx.assets.add(asset(f"a{index}", minutes=index))
        with pytest.raises(DuplicateKey):
            await tx.assets.add(asset("a0"))
        # The transaction stays usable after a duplicate (ON CONFLICT, not an aborted statement).
        assert await tx.assets.count() == 5
    got = await store.get_asset("a3")
    assert got == asset("a3", minutes=3)
    assert await store.get_asset("missing") is None
    async with store.transaction() as tx:
        assert [a.id for a in await tx.assets.list(limit=2, offset=1)] == ["a1", "a2"]
        assert [a.id for a in await tx.assets.list(ids=["a4", "a0", "zz"])] == ["a0", "a4"]
        updated = await tx.assets.update(replace(asset("a1", minutes=1), title="New", keywords=("x",)))
        assert updated.title == "New"
        assert await tx.assets.delete("a2") is True
        assert await tx.assets.delete("a2") is False
        with pytest.raises(NotFound):
            await tx.assets.update(asset("nope"))
    async with store.transaction(readonly=True) as tx:
        assert (await tx.assets.get("a1")) == replace(asset("a1", minutes=1), title="New", keywords=("x",))
        assert [a.id for a in await tx.assets.list(limit=None)] == ["a0", "a1", "a3", "a4"]


async def test_asset_secrets_are_never_returned_by_default_reads(store: Store) -> None:
    async with store.transaction() as tx:
        added = await tx.assets.add(asset("secret", data_address=SECRET_ADDRESS))
        await tx.policies.add(PolicyRow(id="p", body="{}", created_at=NOW))
        await tx.offers.add(
            OfferRow(id="o", access_policy_id="p", contract_policy_id="p", created_at=NOW, asset_selector={})
        )
    assert not leaks_secret(added)
    got = await store.get_asset("secret")
    assert got is not None and not leaks_secret(got)
    assert got.data_address == {
        "type": "HttpData",
        "baseUrl": "https://upstream.example/data",
        "headers": {"Authorization": MASK, "X-Tenant": MASK},
        "authKey": MASK,
        "authCode": MASK,
        "oauth2": {"clientId": "connector", "clientSecret": MASK, "tokenUrl": "https://idp/token"},
        "proxyHeaders": [{"name": "Cookie", "value": MASK}],
    }
    async with store.transaction(readonly=True) as tx:
        assert not leaks_secret(await tx.assets.list(limit=None))
    offers, assets = await store.load_catalog()
    assert not leaks_secret(assets) and not leaks_secret(offers)
    # The data plane gets it whole.
    assert await store.get_asset_secret_address("secret") == SECRET_ADDRESS
    assert await store.get_asset_secret_address("missing") is None

    # Writing back what a client read keeps the secrets; a new value replaces one.
    edited = dict(got.data_address, baseUrl="https://upstream.example/v2")
    edited["headers"] = {"Authorization": MASK, "X-Tenant": "tenant-new"}
    async with store.transaction() as tx:
        await tx.assets.update(replace(got, data_address=edited))
    full = await store.get_asset_secret_address("secret")
    assert full == dict(
        SECRET_ADDRESS,
        baseUrl="https://upstream.example/v2",
        headers={"Authorization": "Bearer upstream-secret-1", "X-Tenant": "tenant-new"},
    )
    again = await store.get_asset("secret")
    assert again is not None and again.data_address["headers"] == {"Authorization": MASK, "X-Tenant": MASK}


async def test_policies_offers_and_catalog(store: Store) -> None:
    async with store.transaction() as tx:
        for index in range(3):
            body = json.dumps({"@id": f"policy-{index}", "permission": [{"action": "use"}]})
            await tx.policies.add(
                PolicyRow(id=f"policy-{index}", body=body, created_at=NOW + timedelta(index))
            )
        with pytest.raises(DuplicateKey):
            await tx.policies.add(PolicyRow(id="policy-0", body="{}", created_at=NOW))
        for index in range(4):
            await tx.offers.add(
                OfferRow(
                    id=f"offer-{index}",
                    access_policy_id="policy-0",
                    contract_policy_id=f"policy-{1 + index % 2}",
                    created_at=NOW + timedelta(minutes=index),
                    asset_selector={"assetIds": [f"a{index}"]},
                )
            )
    async with store.transaction() as tx:
        with pytest.raises(ReferenceViolation):
            await tx.offers.add(
                OfferRow(
                    id="dangling", access_policy_id="nope", contract_policy_id="policy-0", created_at=NOW
                )
            )
    async with store.transaction() as tx:
        with pytest.raises(ReferenceViolation):
            await tx.policies.delete("policy-1")  # offers still use it
    async with store.transaction() as tx:
        policy = await tx.policies.get("policy-2")
        assert policy is not None and policy.document()["@id"] == "policy-2"
        await tx.policies.update(replace(policy, body='{"@id": "policy-2", "v": 2}'))
        assert [p.id for p in await tx.policies.list(ids=["policy-2", "policy-0"])] == [
            "policy-0",
            "policy-2",
        ]
        assert await tx.policies.count() == 3
        with pytest.raises(NotFound):
            await tx.policies.update(PolicyRow(id="nope", body="{}", created_at=NOW))
        offer = await tx.offers.get("offer-3")
        assert offer is not None and offer.asset_selector == {"assetIds": ["a3"]}
        await tx.offers.update(replace(offer, asset_selector={"assetIds": ["a3", "a4"]}))
        assert [o.id for o in await tx.offers.list(limit=2, offset=2)] == ["offer-2", "offer-3"]
        assert await tx.offers.count() == 4

    catalog = await store.load_catalog_offers()
    assert [c.offer.id for c in catalog] == ["offer-0", "offer-1", "offer-2", "offer-3"]
    assert catalog[3].offer.asset_selector == {"assetIds": ["a3", "a4"]}
    assert {c.access_policy.id for c in catalog} == {"policy-0"}
    assert [c.contract_policy.id for c in catalog] == ["policy-1", "policy-2", "policy-1", "policy-2"]
    assert catalog[1].contract_policy.document() == {"@id": "policy-2", "v": 2}
    assert catalog[0].access_policy.created_at == NOW

    async with store.transaction() as tx:
        assert await tx.offers.delete("offer-0") and await tx.offers.delete("offer-2")
        assert await tx.policies.delete("policy-1") is True
        assert await tx.offers.delete("offer-0") is False


async def test_catalog_is_loaded_in_one_query(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.policies.add(PolicyRow(id="p", body="{}", created_at=NOW))
        for index in range(20):
            await tx.offers.add(
                OfferRow(id=f"o{index:02}", access_policy_id="p", contract_policy_id="p", created_at=NOW)
            )
    statements: list[str] = []
    async with store.transaction(readonly=True) as tx:
        from sqlalchemy import event

        def count(*args: Any) -> None:
            statements.append(str(args[2]))

        event.listen(tx.connection.sync_connection, "before_cursor_execute", count)
        offers = await tx.offers.load_catalog_offers()
        event.remove(tx.connection.sync_connection, "before_cursor_execute", count)
    assert len(offers) == 20 and len(statements) == 1


async def test_negotiations_crud_lookup_and_listing(store: Store) -> None:
    async with store.transaction() as tx:
        for index in range(6):
            state = "REQUESTED" if index % 2 == 0 else "AGREED"
            added = await tx.negotiations.add(negotiation(f"n{index}", minutes=index, state=state))
            assert added.version == 1
        # A consumer-side row may share pids with a provider-side row (a connector talking to itself).
        await tx.negotiations.add(
            negotiation(
                "n0-consumer",
                role="consumer",
                state="REQUESTING",
                provider_pid="urn:uuid:p-n0",
                consumer_pid="urn:uuid:c-n0",
            )
        )
        with pytest.raises(DuplicateKey):
            await tx.negotiations.add(negotiation("other", provider_pid="urn:uuid:p-n1", consumer_pid=None))
        with pytest.raises(DuplicateKey):
            await tx.negotiations.add(negotiation("n1"))
        # NULL pids never collide.
        await tx.negotiations.add(negotiation("x1", provider_pid=None, consumer_pid="c-x1", minutes=10))
        await tx.negotiations.add(negotiation("x2", provider_pid=None, consumer_pid="c-x2", minutes=11))

    async with store.transaction(readonly=True) as tx:
        got = await tx.negotiations.get("n2")
        assert got == replace(negotiation("n2", minutes=2), version=1)
        by_provider = await tx.negotiations.get_by_provider_pid("urn:uuid:p-n0", role="provider")
        by_consumer = await tx.negotiations.get_by_consumer_pid("urn:uuid:c-n0", role="consumer")
        assert by_provider is not None and by_provider.id == "n0"
        assert by_consumer is not None and by_consumer.id == "n0-consumer"
        assert await tx.negotiations.get_by_provider_pid("urn:uuid:p-n0", role="consumer") is not None
        assert await tx.negotiations.get_by_consumer_pid("nope", role="provider") is None
        # one lookup by this connector's own pid: the provider row by its providerPid, the
        # consumer row by its consumerPid, never a row by the pid its counter-party chose
        ours = [await tx.negotiations.get_by_pid(p) for p in ("urn:uuid:p-n0", "urn:uuid:c-n0")]
        assert [n.id if n else None for n in ours] == ["n0", "n0-consumer"]
        assert await tx.negotiations.get_by_pid("c-x1") is None  # a provider row's consumerPid
        assert await tx.negotiations.get_by_pid("nope") is None
        requested = await tx.negotiations.list(state="REQUESTED", role="provider")
        assert [n.id for n in requested] == ["n0", "n2", "n4", "x1", "x2"]
        page = await tx.negotiations.list(state=["REQUESTED", "AGREED"], role="provider", limit=3, offset=2)
        assert [n.id for n in page] == ["n2", "n3", "n4"]
        assert await tx.negotiations.count(state="AGREED") == 3
        assert await tx.negotiations.count(role="consumer") == 1
        assert await tx.negotiations.count(counter_party_id="consumer-1") == 9
        with pytest.raises(ValueError):
            await tx.negotiations.list(limit=-1)

    async with store.transaction() as tx:
        current = await tx.negotiations.get("n2", for_update=True)
        assert current is not None
        saved = await tx.negotiations.save(
            replace(
                current, state="AGREED", agreement_id="ag-2", data={"x": 1}, updated_at=NOW + timedelta(1)
            )
        )
        assert saved.version == 2
    got = None
    async with store.transaction(readonly=True) as tx:
        got = await tx.negotiations.get("n2")
    assert got == replace(saved, version=2)
    assert got.created_at == NOW + timedelta(minutes=2) and got.updated_at == NOW + timedelta(1)
    # A consumer learns the provider's pid later; a colliding one is a duplicate, and nothing is written.
    with pytest.raises(DuplicateKey):
        async with store.transaction() as tx:
            await tx.negotiations.save(replace(got, consumer_pid="urn:uuid:c-n3"))
    async with store.transaction(readonly=True) as tx:
        assert await tx.negotiations.get("n2") == got


async def test_agreements_and_transfers(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.negotiations.add(negotiation("n1"))
        await tx.agreements.add(agreement("ag-1", "n1"))
        await tx.agreements.add(
            agreement("ag-2", consumer_id="consumer-2", target="asset-2", signed_at=NOW + timedelta(1))
        )
        with pytest.raises(DuplicateKey):
            await tx.agreements.add(agreement("ag-1"))
        transfer = TransferRow(
            id="t1",
            role="provider",
            state="REQUESTED",
            created_at=NOW,
            updated_at=NOW,
            agreement_id="ag-1",
            provider_pid="urn:uuid:tp1",
            consumer_pid="urn:uuid:tc1",
            format="HttpData-PULL",
            counter_party_address="https://consumer/cb",
            data={"dataAddress": None},
        )
        added = await tx.transfers.add(transfer)
        assert added.version == 1
        await tx.transfers.add(
            replace(transfer, id="t2", provider_pid="tp2", consumer_pid="tc2", agreement_id="ag-2")
        )
    async with store.transaction() as tx:
        with pytest.raises(ReferenceViolation):
            await tx.transfers.add(
                replace(transfer, id="t3", provider_pid="x", consumer_pid="y", agreement_id="none")
            )
    async with store.transaction() as tx:
        assert await tx.agreements.get("ag-1") == agreement("ag-1", "n1")
        assert [a.id for a in await tx.agreements.list(consumer_id="consumer-1")] == ["ag-1"]
        assert [a.id for a in await tx.agreements.list()] == ["ag-1", "ag-2"]
        assert [a.id for a in await tx.agreements.list(negotiation_id="n1")] == ["ag-1"]
        assert await tx.agreements.count(target="asset-2") == 1
        assert await tx.agreements.count(provider_id="provider-1") == 2
        got = await tx.transfers.get_by_consumer_pid("urn:uuid:tc1", role="provider")
        assert got == replace(transfer, version=1)
        started = await tx.transfers.save(
            replace(transfer, version=1, state="STARTED", updated_at=NOW + timedelta(1))
        )
        assert started.version == 2
        assert [t.id for t in await tx.transfers.list(state="STARTED")] == ["t1"]
        assert [t.id for t in await tx.transfers.list(agreement_id="ag-2")] == ["t2"]
        assert await tx.transfers.count(role="provider") == 2
        assert await tx.transfers.count(agreement_id="ag-1", state="STARTED") == 1
        assert (await tx.transfers.get_by_provider_pid("tp2", role="provider")) is not None
        by_pid = await tx.transfers.get_by_pid("tp2")
        assert by_pid is not None and by_pid.id == "t2"
        assert await tx.transfers.get_by_pid("urn:uuid:tc1") is None  # the consumer's pid


async def test_participants_seen(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.participants.touch(
            "participant-a", NOW, address="https://a/dsp", attributes={"membership": True}
        )
        await tx.participants.touch("participant-b", NOW + timedelta(seconds=1))
        await tx.participants.touch("participant-a", NOW + timedelta(seconds=5))
    async with store.transaction(readonly=True) as tx:
        a = await tx.participants.get("participant-a")
        assert a is not None
        assert (a.first_seen, a.last_seen) == (NOW, NOW + timedelta(seconds=5))
        assert a.address == "https://a/dsp" and a.attributes == {"membership": True}
        assert [p.id for p in await tx.participants.list()] == ["participant-a", "participant-b"]
        assert await tx.participants.get("nobody") is None
