"""What the authority attests beyond keys: jurisdiction, certifications, groups, the participant
IRI; changes that make older DATs stale within the poll interval; the attested snapshot in
transfer tokens; the DAT client's fresh token after a change."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from identity_testlib import ADMIN_TOKEN, Env
from pydantic import ValidationError

from connector.identity import jose
from connector.identity.authority import create_app
from connector.identity.cli import standalone
from connector.identity.client import DatClient
from connector.identity.errors import AttributesChanged, Conflict, InvalidToken, NotFound
from connector.identity.participants import (
    AttestationError,
    Jurisdiction,
    as_participant_iri,
    participant_id_from_iri,
    participant_iri,
)
from connector.identity.registry import (
    create_group,
    delete_group,
    set_membership,
    update_attributes,
)
from connector.identity.store import ParticipantAttributes
from connector.identity.tokens import (
    TransferTokenIssuer,
    attested_snapshot,
    dat_claims,
    transfer_claims,
)
from connector.identity.verify import ReplayCache, RevocationStatus, TransferTokenVerifier

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PID = "0A:1B:2C:keyid:3D:4E"  # begins with a digit: no URI scheme


# --- participant IRIs ----------------------------------------------------------------------


def test_participant_iri_is_a_reversible_urn() -> None:
    iri = participant_iri(PID)
    assert iri == "urn:participant:0A:1B:2C:keyid:3D:4E"
    assert participant_id_from_iri(iri) == PID
    assert as_participant_iri(PID) == iri
    assert as_participant_iri(iri) == iri  # already the IRI form
    assert as_participant_iri("https://connector.example/") == "https://connector.example/"
    odd = "name with space/%#"
    assert participant_iri(odd) == "urn:participant:name%20with%20space/%25%23"
    assert participant_id_from_iri(participant_iri(odd)) == odd


@given(st.text(min_size=1, max_size=100))
def test_participant_iri_round_trips(pid: str) -> None:
    iri = participant_iri(pid)
    assert " " not in iri and "#" not in iri
    assert participant_id_from_iri(iri) == pid


@pytest.mark.parametrize(
    "iri", ["urn:participant:", "urn:group:x", "urn:participant:a%3Ab", "urn:participant:%zz"]
)
def test_participant_iri_refuses_other_and_non_canonical_forms(iri: str) -> None:
    with pytest.raises(AttestationError):
        participant_id_from_iri(iri)


# --- attributes ------------------------------------------------------------------------------


def test_jurisdiction_levels() -> None:
    j = Jurisdiction(country="CN", subdivision="CN-SH", zone="lingang")
    assert j.iris() == ("urn:jurisdiction:CN", "urn:jurisdiction:CN-SH", "urn:jurisdiction:CN-SH:lingang")
    assert Jurisdiction(country="DE", zone="urn:zone:x").iris() == ("urn:jurisdiction:DE", "urn:zone:x")


@pytest.mark.parametrize(
    "bad",
    [
        {"jurisdiction": {"country": "XX"}},
        {"jurisdiction": {"country": "cn"}},
        {"jurisdiction": {"country": "CN", "subdivision": "DE-BY"}},
        {"jurisdiction": {"country": "CN", "subdivision": "Shanghai"}},
        {"jurisdiction": {"country": "CN", "zone": "Pilot Zone"}},
        {"jurisdiction": {"subdivision": "CN-SH"}},
        {"jurisdiction": {"country": "CN", "city": "x"}},
        {"certifications": ["not an iri"]},
        {"certifications": ["urn:a:1", "urn:a:1"]},
        {"groups": ["Partners"]},
        {"groups": ["a", "a"]},
    ],
)
def test_malformed_attributes_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ParticipantAttributes.model_validate(bad)


async def test_dat_carries_jurisdiction_certifications_groups_and_iri(env: Env) -> None:
    create_group(env.store, "partners", now=env.clock())
    carol = env.participant(
        "Carol",
        jurisdiction={"country": "CN", "subdivision": "CN-SH"},
        certifications=["urn:assessment:2026-001"],
        groups=["partners"],
    )
    dat = env.dat(carol)
    payload = jose.unverified_payload(dat, "DAT")
    assert payload["jurisdiction"] == {"country": "CN", "subdivision": "CN-SH"}
    assert payload["certifications"] == ["urn:assessment:2026-001"]
    assert payload["groups"] == ["partners"]
    assert payload["participantIri"] == participant_iri(carol.participant_id)
    claims = await env.verifier().verify(dat)
    assert dict(claims.attributes["jurisdiction"]) == {"country": "CN", "subdivision": "CN-SH"}
    assert claims.attributes["certifications"] == ("urn:assessment:2026-001",)
    assert claims.attributes["groups"] == ("partners",)
    assert claims.attributes["participantIri"] == participant_iri(carol.participant_id)
    # a participant without them: no jurisdiction claim, empty lists
    bob = await env.verifier().verify(env.dat(env.bob))
    assert bob.attributes["jurisdiction"] is None and bob.attributes["groups"] == ()


def _payload(**extra: Any) -> dict[str, Any]:
    base = {
        "iss": "i",
        "sub": PID,
        "aud": "a",
        "iat": 1,
        "nbf": 1,
        "exp": 2,
        "jti": "j",
        "securityProfile": "idsc:BASE_SECURITY_PROFILE",
        "membership": True,
        "roles": [],
    }
    base.update(extra)
    return base


def test_tokens_without_the_new_claims_still_read() -> None:
    claims = dat_claims(_payload(), None)
    assert claims.attributes["participantIri"] == participant_iri(PID)
    assert claims.attributes["certifications"] == () and claims.attributes["jurisdiction"] is None


@pytest.mark.parametrize(
    "bad",
    [
        {"jurisdiction": "CN"},
        {"jurisdiction": {"country": "ZZ"}},
        {"certifications": [1]},
        {"certifications": ["no iri"]},
        {"groups": ["UPPER"]},
        {"groups": "x y"},
        {"participantIri": "urn:participant:someone-else"},
        {"referringConnector": 5},
    ],
)
def test_malformed_claims_refuse_the_dat(bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidToken):
        dat_claims(_payload(**bad), None)


# --- changes and groups --------------------------------------------------------------------


async def test_changed_jurisdiction_makes_older_dats_stale_within_the_poll(env: Env) -> None:
    verifier = env.verifier(revocation_poll_interval=60)
    old = env.dat(env.bob)
    assert (await verifier.verify(old)).attributes["jurisdiction"] is None  # cached now
    env.clock.advance(0.5)
    record = update_attributes(
        env.store, env.bob.participant_id, {"jurisdiction": {"country": "DE"}}, now=env.clock()
    )
    changed = record.attributes_changed_at
    assert changed is not None and changed >= env.clock() and changed == int(changed)
    listed = jose.unverified_payload(env.authority.revocation_list(), "list")
    assert listed["changed"] == {env.bob.participant_id: changed}
    # within the poll interval the old DAT may still pass; at the next poll it is refused,
    # from the claims cache as from a full verification
    assert await verifier.verify(old)
    env.clock.advance(60)
    with pytest.raises(AttributesChanged, match="a fresh token is needed") as refused:
        await verifier.verify(old)
    assert refused.value.status == 401 and refused.value.changed_at == changed
    assert verifier.revocations.changed_at(env.bob.participant_id) == changed
    assert verifier.revocations.changed_at(env.alice.participant_id) is None
    fresh = await verifier.verify(env.dat(env.bob))  # issued after the change: accepted
    assert dict(fresh.attributes["jurisdiction"]) == {"country": "DE"}
    assert fresh.issued_at >= changed
    assert await verifier.verify(env.dat(env.alice))  # others are not affected


async def test_a_change_within_the_same_second_still_gets_a_usable_dat(env: Env) -> None:
    verifier = env.verifier(revocation_poll_interval=60)
    env.clock.advance(0.25)
    update_attributes(env.store, env.bob.participant_id, {"certifications": ["urn:a:1"]}, now=env.clock())
    claims = await verifier.verify(env.dat(env.bob))  # iat is the change's second, not before
    assert claims.attributes["certifications"] == ("urn:a:1",)


def test_no_change_no_change_time(env: Env) -> None:
    seq = env.store.state().revocation_seq
    record = update_attributes(env.store, env.bob.participant_id, {"roles": ["consumer"]}, now=env.clock())
    assert record.attributes_changed_at is None and env.store.state().revocation_seq == seq


def test_old_changes_leave_the_list(env: Env) -> None:
    update_attributes(env.store, env.bob.participant_id, {"groups": []}, now=env.clock())
    update_attributes(env.store, env.bob.participant_id, {"certifications": ["urn:a:1"]}, now=env.clock())
    assert jose.unverified_payload(env.authority.revocation_list(), "l")["changed"]
    env.clock.advance(3600 + 31)  # no DAT issued before the change is alive any more
    assert jose.unverified_payload(env.authority.revocation_list(), "l")["changed"] == {}


def test_update_refusals(env: Env) -> None:
    with pytest.raises(NotFound):
        update_attributes(env.store, "nobody", {"groups": []}, now=env.clock())
    with pytest.raises(NotFound, match="no group"):
        update_attributes(env.store, env.bob.participant_id, {"groups": ["ghosts"]}, now=env.clock())
    with pytest.raises(ValidationError):
        update_attributes(
            env.store, env.bob.participant_id, {"jurisdiction": {"country": "QQ"}}, now=env.clock()
        )
    assert env.store.state().participants[env.bob.participant_id].attributes_changed_at is None


async def test_groups_membership_in_the_dat(env: Env) -> None:
    verifier = env.verifier(revocation_poll_interval=60)
    create_group(env.store, "partners", now=env.clock(), description="business partners")
    with pytest.raises(Conflict):
        create_group(env.store, "partners", now=env.clock())
    with pytest.raises(NotFound):
        set_membership(env.store, "nope", env.bob.participant_id, member=True, now=env.clock())
    before = env.dat(env.bob)
    set_membership(env.store, "partners", env.bob.participant_id, member=True, now=env.clock())
    env.clock.advance(1)
    assert (await verifier.verify(env.dat(env.bob))).attributes["groups"] == ("partners",)
    with pytest.raises(AttributesChanged):
        await verifier.verify(before)
    env.clock.advance(1)
    assert delete_group(env.store, "partners", now=env.clock()) == [env.bob.participant_id]
    env.clock.advance(61)
    assert (await verifier.verify(env.dat(env.bob))).attributes["groups"] == ()


def test_malformed_change_list_is_refused(env: Env) -> None:
    status = RevocationStatus.static()
    assert status.changed_at("x") is None
    status.changed = {"x": 10.0}
    status.check_current("x", 10, "DAT")
    with pytest.raises(AttributesChanged):
        status.check_current("x", 9, "DAT")


async def test_revocation_list_with_malformed_changes_fails_closed(env: Env) -> None:
    key = env.current_signing_key()

    async def forged() -> str:
        now = int(env.clock())
        return jose.encode(
            {
                "iss": "http://authority.test",
                "iat": now,
                "exp": now + 60,
                "seq": 0,
                "revoked": [],
                "changed": {"x": "yesterday"},
            },
            key,
            typ=jose.REVOCATION_LIST_TYP,
        )

    env.revocation_fetch._fetch = forged
    verifier = env.verifier(revocation_poll_interval=60)
    with pytest.raises(InvalidToken, match="revocation status unavailable"):
        await verifier.verify(env.dat(env.bob))


# --- admin API and CLI ------------------------------------------------------------------------


@pytest.fixture
async def client(env: Env) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    async with TestClient(TestServer(create_app(env.authority))) as c:
        yield c


async def test_admin_api_attributes_and_groups(client: TestClient, env: Env) -> None:  # type: ignore[type-arg]
    pid = env.bob.participant_id
    r = await client.post("/admin/groups", json={"name": "partners"}, headers=ADMIN)
    assert r.status == 201
    r = await client.post("/admin/groups/partners/members", json={"participant_id": pid}, headers=ADMIN)
    assert r.status == 200 and (await r.json())["attributes"]["groups"] == ["partners"]
    r = await client.patch(
        f"/admin/participants/{pid}/attributes",
        headers=ADMIN,
        json={
            "jurisdiction": {"country": "CN", "subdivision": "CN-SH", "zone": "lingang"},
            "certifications": ["urn:assessment:1"],
        },
    )
    body = await r.json()
    assert r.status == 200, body
    assert body["attributes"]["jurisdiction"]["zone"] == "lingang"
    assert body["attributes_changed_at"] is not None
    assert body["participant_iri"] == participant_iri(pid)
    groups = await (await client.get("/admin/groups", headers=ADMIN)).json()
    assert groups["groups"][0]["members"] == [pid]
    r = await client.delete(f"/admin/groups/partners/members/{pid}", headers=ADMIN)
    assert (await r.json())["attributes"]["groups"] == []
    r = await client.delete("/admin/groups/partners", headers=ADMIN)
    assert (await r.json()) == {"deleted": "partners", "left": []}
    # refusals: a clear 4xx with the reason, nothing changed
    r = await client.patch(
        f"/admin/participants/{pid}/attributes", headers=ADMIN, json={"jurisdiction": {"country": "XX"}}
    )
    assert r.status == 400 and "ISO 3166-1" in (await r.json())["error_description"]
    r = await client.patch(f"/admin/participants/{pid}/attributes", headers=ADMIN, json={"colour": "red"})
    assert r.status == 400
    r = await client.patch("/admin/participants/nobody/attributes", headers=ADMIN, json={})
    assert r.status == 404
    r = await client.post("/admin/groups", json={"name": "Bad Name"}, headers=ADMIN)
    assert r.status == 400
    r = await client.delete("/admin/groups/none", headers=ADMIN)
    assert r.status == 404
    r = await client.post("/admin/groups", json={"name": "x"})
    assert r.status == 401


def test_cli_attributes_and_groups(env: Env) -> None:
    directory, pid = str(env.root / "authority"), env.bob.participant_id

    def run(*args: str, ok: bool = True) -> Any:
        result = CliRunner().invoke(standalone, ["authority", *args])
        assert (result.exit_code == 0) == ok, result.output
        return json.loads(result.output) if ok else result.output

    run("group", "create", directory, "partners")
    assert run("group", "add", directory, "partners", pid)["groups"] == ["partners"]
    view = run(
        "attributes",
        directory,
        pid,
        "--country",
        "CN",
        "--subdivision",
        "CN-SH",
        "--certification",
        "urn:assessment:1",
    )
    assert view["attributes"]["jurisdiction"] == {"country": "CN", "subdivision": "CN-SH"}
    assert view["attributes"]["groups"] == ["partners"]
    assert "--country" in run("attributes", directory, pid, "--zone", "x", ok=False)
    assert "ISO 3166-1" in run("attributes", directory, pid, "--country", "XX", ok=False)
    assert run("group", "list", directory)[0]["members"] == [pid]
    assert run("group", "remove", directory, "partners", pid)["groups"] == []
    assert run("attributes", directory, pid, "--no-jurisdiction")["attributes"].get("jurisdiction") is None
    assert "no group" in run("group", "delete", directory, "ghosts", ok=False)


# --- transfer tokens and the DAT client ------------------------------------------------------


async def test_transfer_token_carries_the_attested_snapshot(env: Env) -> None:
    update_attributes(
        env.store,
        env.bob.participant_id,
        {"jurisdiction": {"country": "DE"}, "certifications": ["urn:a:1"]},
        now=env.clock(),
    )
    env.clock.advance(1)
    consumer = await env.verifier().verify(env.dat(env.bob))
    issuer = TransferTokenIssuer(
        env.current_signing_key(), env.alice.participant_id, replay=ReplayCache(), clock=env.clock
    )
    tokens = issuer.issue(
        agreement_id="a",
        transfer_id="t",
        consumer_id=consumer.subject,
        audience="https://dp",
        attested=consumer,
    )
    payload = jose.unverified_payload(tokens.access_token, "t")
    assert payload["attested"] == attested_snapshot(consumer)
    assert "scopes" not in payload["attested"] and "transportCertsSha256" not in payload["attested"]
    assert payload["attestedAt"] == int(consumer.issued_at)
    revocations = RevocationStatus.static()
    verifier = TransferTokenVerifier(
        {issuer.verification_key.kid or "": issuer.verification_key},
        provider_id=env.alice.participant_id,
        audience="https://dp",
        clock=env.clock,
        revocations=revocations,
    )
    claims = await verifier.verify(tokens.access_token)
    assert dict(claims.attributes["attested"]["jurisdiction"]) == {"country": "DE"}
    assert claims.attributes["attested"]["certifications"] == ("urn:a:1",)
    assert claims.attributes["attestedAt"] == int(consumer.issued_at)
    # the refresh takes a new snapshot from the DAT presented with it
    env.clock.advance(5)
    newer = await env.verifier().verify(env.dat(env.bob))
    again = issuer.refresh(tokens.refresh_token, consumer_id=consumer.subject, attested=newer)
    assert jose.unverified_payload(again.access_token, "t")["attestedAt"] == int(newer.issued_at)
    # once the consumer's attributes change, the old snapshot is refused at the data plane
    revocations.changed = {consumer.subject: consumer.issued_at + 1}
    with pytest.raises(AttributesChanged):
        await verifier.verify(tokens.access_token)
    with pytest.raises(ValueError):
        issuer.issue(
            agreement_id="a",
            transfer_id="t",
            consumer_id="someone else",
            audience="https://dp",
            attested=consumer,
        )


def test_transfer_claims_refuse_a_malformed_snapshot() -> None:
    base = {
        "iss": "p",
        "sub": PID,
        "aud": "dp",
        "iat": 1,
        "nbf": 1,
        "exp": 2,
        "jti": "j",
        "agreementId": "a",
        "transferId": "t",
    }
    assert "attested" not in transfer_claims(base, None).attributes  # older tokens
    for bad in (
        {"attested": [], "attestedAt": 1},
        {"attested": {"securityProfile": "x", "groups": ["UP"]}, "attestedAt": 1},
        {"attested": {"securityProfile": "x"}, "attestedAt": "now"},
    ):
        with pytest.raises(InvalidToken):
            transfer_claims({**base, **bad}, None)


async def test_dat_client_drops_a_dat_older_than_its_change(env: Env) -> None:
    from identity_testlib import ISSUER

    from connector.identity.authority import TokenRequest

    async def transport(form: Any) -> Any:
        return env.authority.issue_token(TokenRequest.model_validate(form)).model_dump()

    changed: list[float] = []
    client = DatClient(
        env.bob,
        audience=ISSUER,
        transport=transport,
        clock=env.clock,
        new_id=env.new_id,
        changed_at=lambda: changed[0] if changed else None,
    )
    first = await client.token()
    assert await client.token() == first and client.requests == 1
    env.clock.advance(2)
    changed.append(env.clock())
    second = await client.token()
    assert second != first and client.requests == 2
    assert await client.token() == second  # issued at the change: current
    env.clock.advance(2)
    assert await client.renew(stale="not the cached one") == second  # nothing to drop
    third = await client.renew(stale=second)
    assert third != second and client.requests == 3


def test_registration_refuses_unknown_groups(env: Env, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no group"):
        env.participant("Dora", groups=["ghosts"])
    assert "Dora" not in {p.name for p in env.store.state().participants.values()}
