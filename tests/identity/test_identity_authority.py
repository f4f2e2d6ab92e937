"""The authority service over HTTP (in-process aiohttp server on loopback), and its files."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from identity_testlib import ADMIN_TOKEN, ISSUER, Env

from connector.identity.authority import JWT_BEARER, Authority, create_app
from connector.identity.ca import create_csr, participant_id
from connector.identity.client import ParticipantIdentity
from connector.identity.errors import Conflict
from connector.identity.keys import generate_private_key
from connector.identity.registry import register_participant, revoke_participant
from connector.identity.store import AuthorityStore
from connector.identity.verify import DatVerifier

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
async def client(env: Env) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    async with TestClient(TestServer(create_app(env.authority))) as c:
        yield c


async def post_token(client: TestClient, assertion: str) -> aiohttp.ClientResponse:  # type: ignore[type-arg]
    return await client.post(
        "/token",
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": JWT_BEARER,
            "client_assertion": assertion,
            "scope": "idsc:IDS_CONNECTOR_ATTRIBUTES_ALL",
        },
    )


async def test_metadata_and_jwks(client: TestClient, env: Env) -> None:  # type: ignore[type-arg]
    meta = await (await client.get("/.well-known/oauth-authorization-server")).json()
    assert meta["issuer"] == ISSUER
    assert meta["token_endpoint"] == f"{ISSUER}/token"
    assert meta["jwks_uri"] == f"{ISSUER}/.well-known/jwks.json"
    assert meta["grant_types_supported"] == ["client_credentials"]
    assert meta["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert set(meta["token_endpoint_auth_signing_alg_values_supported"]) == {"EdDSA", "ES256"}
    jwks = await (await client.get("/.well-known/jwks.json")).json()
    (key,) = jwks["keys"]
    assert key["kid"] == env.current_signing_key().kid
    assert "d" not in key and key["use"] == "sig"
    assert (await client.get("/health")).status == 200


async def test_token_endpoint_issues_verifiable_dat(client: TestClient, env: Env) -> None:  # type: ignore[type-arg]
    resp = await post_token(client, env.assertion(env.bob))
    body = await resp.json()
    assert resp.status == 200, body
    assert resp.headers["Cache-Control"] == "no-store"
    assert body["token_type"] == "bearer" and body["expires_in"] == 3600
    assert body["scope"] == "idsc:IDS_CONNECTOR_ATTRIBUTES_ALL"
    claims = await env.verifier().verify(body["access_token"])
    assert claims.subject == env.bob.participant_id
    assert len(env.authority.replay) == 1 and env.authority.issued == 1


async def test_verifier_over_http(client: TestClient, env: Env) -> None:  # type: ignore[type-arg]
    token = env.dat(env.alice)
    async with aiohttp.ClientSession() as session:
        verifier = await DatVerifier.from_authority(session, str(client.make_url("/")), clock=env.clock)
        # the metadata names the public issuer URL, so point the fetchers at the test server
        assert verifier.settings.issuer == ISSUER
        from connector.identity.verify import HttpFetcher

        verifier.jwks._fetch = HttpFetcher(session, str(client.make_url("/.well-known/jwks.json")))
        verifier.revocations._fetch = HttpFetcher(session, str(client.make_url("/revocations")), text=True)
        claims = await verifier.verify(token)
    assert claims.subject == env.alice.participant_id


async def test_admin_register_revoke_rotate(client: TestClient, env: Env) -> None:  # type: ignore[type-arg]
    key = generate_private_key("ES256")
    csr = create_csr(key, "Dora").public_bytes(Encoding.PEM).decode()
    resp = await client.post(
        "/admin/participants",
        json={"csr": csr, "attributes": {"roles": ["broker"], "membership": True}},
        headers=ADMIN,
    )
    view = await resp.json()
    assert resp.status == 201, view
    cert = x509.load_pem_x509_certificate(view["certificate"].encode())
    assert view["participant_id"] == participant_id(cert)
    assert view["attributes"]["roles"] == ["broker"]
    dora = ParticipantIdentity.from_parts(key, cert)
    env.store.ca.check_issued(cert, now=env.clock())

    resp = await post_token(client, env.assertion(dora))
    dat = (await resp.json())["access_token"]
    verifier = env.verifier()
    assert (await verifier.verify(dat)).roles == ("broker",)

    listed = await (await client.get("/admin/participants", headers=ADMIN)).json()
    assert {p["name"] for p in listed["participants"]} == {"Alice", "Bob", "Dora"}

    resp = await client.post(
        "/admin/revocations",
        json={"participant_id": dora.participant_id, "reason": "left"},
        headers=ADMIN,
    )
    assert resp.status == 200
    # refused new tokens at once
    resp = await post_token(client, env.assertion(dora))
    assert resp.status == 401
    assert "revoked" in (await resp.json())["error_description"]
    revs = await (await client.get("/admin/revocations", headers=ADMIN)).json()
    assert revs["seq"] == 1 and revs["revoked"][0]["reason"] == "left"
    # the public signed list carries it
    signed = await (await client.get("/revocations")).text()
    env.clock.advance(61)
    with pytest.raises(Exception, match="revoked"):
        await verifier.verify(dat)
    assert dora.participant_id in verifier.revocations.revoked
    assert signed.count(".") == 2

    old_kid = env.current_signing_key().kid
    resp = await client.post("/admin/keys/rotate", json={"overlap_seconds": 60}, headers=ADMIN)
    rotated = await resp.json()
    assert rotated["previous"] == old_kid
    kids = {k["kid"] for k in (await (await client.get("/.well-known/jwks.json")).json())["keys"]}
    assert kids == {old_kid, rotated["current"]}
    assert (await client.post("/admin/keys/retire", headers=ADMIN)).status == 200
    kids = {k["kid"] for k in (await (await client.get("/.well-known/jwks.json")).json())["keys"]}
    assert kids == {rotated["current"]}


async def test_unknown_routes_are_json_errors(client: TestClient) -> None:  # type: ignore[type-arg]
    resp = await client.get("/nope")
    assert resp.status == 404 and (await resp.json())["error"] == "invalid_request"
    resp = await client.get("/token")
    assert resp.status == 405 and "error" in await resp.json()


def test_restart_keeps_state(env: Env) -> None:
    revoke_participant(env.store, env.bob.participant_id, now=env.clock())
    jwks = env.authority.jwks()
    again = Authority(AuthorityStore(env.store.directory), issuer=ISSUER, clock=env.clock)
    assert again.jwks() == jwks
    state = again.store.state()
    assert set(state.participants) == {env.alice.participant_id, env.bob.participant_id}
    assert state.participants[env.bob.participant_id].revoked_at is not None
    assert state.revocation_seq == 1


def test_changes_by_another_process_are_seen(env: Env) -> None:
    # the CLI works on its own AuthorityStore instance; the server's instance reloads
    cli_store = AuthorityStore(env.store.directory)
    env.clock.advance(1)
    eve = env.participant("Eve")  # registered through the server's store ...
    revoke_participant(cli_store, eve.participant_id, now=env.clock())  # ... revoked by the CLI
    with pytest.raises(Exception, match="revoked"):
        env.dat(eve)


def test_registration_through_two_store_instances_conflicts(env: Env) -> None:
    other = AuthorityStore(env.store.directory)
    other.state()  # cached before the first registration lands
    csr1 = create_csr(generate_private_key("EdDSA"), "Dave").public_bytes(Encoding.PEM)
    csr2 = create_csr(generate_private_key("EdDSA"), "Dave").public_bytes(Encoding.PEM)
    register_participant(env.store, csr1, now=env.clock())
    with pytest.raises(Conflict, match="already taken"):
        register_participant(other, csr2, now=env.clock())


def test_state_files_are_private(env: Env) -> None:
    root = env.store.directory
    for name in ("ca.key", "admin.token"):
        assert (root / name).stat().st_mode & 0o077 == 0
    for key in (root / "signing").iterdir():
        assert key.stat().st_mode & 0o077 == 0
    state = json.loads((root / "state.json").read_text())
    assert "-----BEGIN PRIVATE KEY-----" not in json.dumps(state)


def test_init_refuses_existing_directory(env: Env, tmp_path: Path) -> None:
    from connector.identity.store import StoreError

    with pytest.raises(StoreError, match="already holds"):
        AuthorityStore.initialize(env.store.directory, name="X", alg="EdDSA", now=0, admin_token="t")
