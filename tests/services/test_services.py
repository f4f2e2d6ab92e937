"""The management services without HTTP, on a real SQLite store: typed errors (and the one
table that maps them to statuses), records read and deleted, offers and policies checked before
they are stored, offers picked from a peer's catalog, DSP states as SQL filters."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from connector.consumer import Denied
from connector.http.errors import SERVICE_STATUS, service_fault
from connector.protocol import transfer as xfer
from connector.protocol.errors import ProtocolError
from connector.services import errors as e
from connector.services.negotiations import pick_offer, terms_on_the_wire
from connector.services.offers import Offers
from connector.services.policies import Policies
from connector.services.records import Page, wire_state_query
from connector.services.vault import refusals
from connector.store import AssetRow, Store

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
USE = {"permission": [{"action": "use"}]}


@pytest.fixture
async def store(sqlite_store: Store) -> Store:
    return sqlite_store


# ------------------------------------------------------------------ errors


def test_every_error_class_has_one_status() -> None:
    classes = {
        e.InvalidInput: 400,
        e.Forbidden: 403,
        e.NotFound: 404,
        e.Conflict: 409,
        e.Gone: 410,
        e.PeerFailed: 502,
        e.Unavailable: 503,
    }
    assert classes == SERVICE_STATUS
    for kind, status in classes.items():
        fault = service_fault(kind("why", ["one", "two"]))
        assert (fault.status, fault.reason, fault.details) == (status, "why", ("one", "two"))
        assert e.BY_STATUS[status] is kind


def test_a_subclass_answers_as_its_base() -> None:
    class TermsTaken(e.Conflict):
        pass

    assert service_fault(TermsTaken("taken")).status == 409
    assert service_fault(e.ServiceError("unclassified")).status == 400


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, e.InvalidInput),
        (403, e.Forbidden),
        (404, e.NotFound),
        (409, e.Conflict),
        (502, e.PeerFailed),
        (503, e.Unavailable),
        (422, e.InvalidInput),
        (500, e.Unavailable),
    ],
)
def test_control_plane_refusals_become_typed(status: int, kind: type[e.ServiceError]) -> None:
    with pytest.raises(kind) as raised, e.translated():
        raise ProtocolError(status, str(status), ["first", "second"])
    assert raised.value.reason == "first; second"
    assert isinstance(raised.value.__cause__, ProtocolError)


@pytest.mark.parametrize(
    ("status", "kind"),
    [(403, e.Forbidden), (404, e.NotFound), (410, e.Gone), (409, e.Conflict), (503, e.Unavailable)],
)
def test_vault_refusals_become_typed(status: int, kind: type[e.ServiceError]) -> None:
    with pytest.raises(kind, match="the copy"), refusals():
        raise Denied(status, "the copy says no")


# ------------------------------------------------------------------ DSP states in SQL


def test_wire_state_query_from_the_protocol_table() -> None:
    started = wire_state_query("STARTED", xfer.SENDING)
    assert started.reported_by == {"STARTING"}
    assert started.sending == {s.value for s in xfer.SENDING}
    with pytest.raises(e.InvalidInput, match="STARTING"):
        wire_state_query("STARTING", xfer.SENDING)  # internal: never on the wire
    with pytest.raises(e.InvalidInput):
        wire_state_query("started", xfer.SENDING)


# ------------------------------------------------------------------ policies and offers


async def test_policies_refuse_invalid_ones_with_every_problem(store: Store) -> None:
    policies = Policies(store, lambda: NOW)
    with pytest.raises(e.InvalidInput) as bad:
        await policies.add(
            policy_id="p",
            policy={
                "permission": [
                    {
                        "action": "use",
                        "constraint": [{"leftOperand": "nonsense", "operator": "eq", "rightOperand": "x"}],
                    }
                ]
            },
        )
    assert bad.value.reason == "invalid policy" and bad.value.details
    with pytest.raises(e.InvalidInput):
        await policies.add(policy_id="p", template="no-such-template")
    row = await policies.add(policy_id="p", policy=USE)
    assert row.id == "urn:policy:p" and row.created_at == NOW
    with pytest.raises(e.Conflict, match="urn:policy:p exists"):
        await policies.add(policy_id="p", policy=USE)
    with pytest.raises(e.InvalidInput):
        await policies.add(policy_id="bad id with spaces", policy=USE)
    assert [p.id for p in await policies.list(Page())] == ["urn:policy:p"]


async def test_offers_check_what_they_refer_to_and_refresh_the_catalog(store: Store) -> None:
    changed: list[int] = []
    offers = Offers(store, lambda: NOW, lambda: changed.append(1))
    policies = Policies(store, lambda: NOW)
    with pytest.raises(e.InvalidInput, match="no policy urn:policy:p"):
        await offers.add(
            offer_id="o", asset_ids=(), all_assets=True, access_policy_id="p", contract_policy_id="p"
        )
    await policies.add(policy_id="p", policy=USE)
    with pytest.raises(e.InvalidInput, match="no asset urn:asset:a"):
        await offers.add(
            offer_id="o", asset_ids=["a"], all_assets=False, access_policy_id="p", contract_policy_id="p"
        )
    assert changed == []
    async with store.transaction() as tx:
        await tx.assets.add(
            AssetRow(
                id="urn:asset:a", created_at=NOW, data_address={"type": "http", "url": "https://x.example/"}
            )
        )
    row = await offers.add(
        offer_id="o",
        asset_ids=["a", "urn:asset:a"],
        all_assets=False,
        access_policy_id="p",
        contract_policy_id="urn:policy:p",
    )
    assert row.asset_selector == {"assetIds": ["urn:asset:a"]} and changed == [1]
    with pytest.raises(e.Conflict) as in_use:
        await policies.delete("urn:policy:p")
    assert "urn:offer:o" in " ".join(in_use.value.details)
    await offers.delete("urn:offer:o")
    assert changed == [1, 1]
    with pytest.raises(e.NotFound, match="no such offer"):
        await offers.delete("urn:offer:o")
    await policies.delete("urn:policy:p")
    with pytest.raises(e.NotFound, match="no such policy"):
        await policies.get("urn:policy:p")


# ------------------------------------------------------------------ negotiations


CATALOG = {
    "participantId": "urn:test:provider",
    "dataset": [
        {"@id": "urn:asset:a", "hasPolicy": [{"@id": "urn:offer:1", "permission": []}]},
        {
            "@id": "urn:asset:b",
            "hasPolicy": [{"@id": "urn:offer:1", "permission": [{"action": "use"}]}, {"@id": "urn:offer:2"}],
        },
    ],
}


def test_an_offer_is_picked_with_its_dataset_as_target() -> None:
    assert pick_offer(CATALOG, "urn:offer:1", None)["target"] == "urn:asset:a"
    picked = pick_offer(CATALOG, "urn:offer:1", "urn:asset:b")
    assert picked == {"@id": "urn:offer:1", "permission": [{"action": "use"}], "target": "urn:asset:b"}
    with pytest.raises(e.NotFound, match="no urn:offer:2 to this"):
        pick_offer(CATALOG, "urn:offer:2", "urn:asset:a")
    with pytest.raises(e.NotFound):
        pick_offer({"dataset": None}, "urn:offer:1", None)


def test_terms_go_on_the_wire_or_are_refused_with_reasons() -> None:
    wire = terms_on_the_wire({"permission": [{"action": "use"}], "ignored": 1})
    assert "ignored" not in wire and wire["permission"]
    with pytest.raises(e.InvalidInput) as bad:
        terms_on_the_wire(
            {
                "permission": [
                    {
                        "action": "use",
                        "constraint": [{"leftOperand": "nonsense", "operator": "eq", "rightOperand": "x"}],
                    }
                ]
            }
        )
    assert bad.value.reason == "the terms cannot be read" and bad.value.details


# a connector's catalog: the provider's offer urn:offer:w over two assets, urn:offer:s over one
SHOWN = {
    "participantId": "urn:test:provider",
    "dataset": [
        {
            "@id": "urn:asset:a",
            "hasPolicy": [{"@id": "urn:offer:w:urn:asset:a"}, {"@id": "urn:offer:s:urn:asset:a"}],
        },
        {"@id": "urn:asset:b", "hasPolicy": [{"@id": "urn:offer:w:urn:asset:b"}]},
    ],
}


def test_the_id_offer_add_printed_picks_the_catalog_offer() -> None:
    # one dataset under the provider's offer: that one
    assert pick_offer(SHOWN, "urn:offer:s", None) == {
        "@id": "urn:offer:s:urn:asset:a",
        "target": "urn:asset:a",
    }
    # several: the dataset decides, or the refusal names the choices
    assert pick_offer(SHOWN, "urn:offer:w", "urn:asset:b")["@id"] == "urn:offer:w:urn:asset:b"
    with pytest.raises(e.InvalidInput, match="urn:asset:a, urn:asset:b"):
        pick_offer(SHOWN, "urn:offer:w", None)
    # a prefix of an id is not an offer id
    with pytest.raises(e.NotFound):
        pick_offer(SHOWN, "urn:offer", None)
    # the catalog's own id still works
    assert pick_offer(SHOWN, "urn:offer:w:urn:asset:a", None)["target"] == "urn:asset:a"
