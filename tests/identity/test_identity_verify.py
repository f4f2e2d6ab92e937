"""DAT issuance and verification: claims, caching, JWKS refresh, rotation, revocation, replay."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json

import pytest
from identity_testlib import ISSUER, Env, make_env

from connector.identity.errors import InvalidToken
from connector.identity.jose import TokenRules, check_claims
from connector.identity.registry import (
    prepare_next_key,
    retire_previous_keys,
    revoke_participant,
    rotate_signing_key,
)
from connector.identity.tokens import DAT_AUDIENCE, Claims
from connector.identity.verify import (
    ClaimsCache,
    DatVerifier,
    ReplayCache,
    ReplayCacheFull,
    Verifier,
    check_transport_binding,
    parse_jwks,
)


async def test_dat_carries_ids_payload_and_attributes(env: Env) -> None:
    alice = env.participant(
        "Carol",
        roles=["provider", "broker"],
        securityProfile="idsc:TRUST_SECURITY_PROFILE",
        referringConnector="https://carol.example/connector",
        transportCertsSha256=["ab" * 32],
    )
    claims = await env.verifier().verify(env.dat(alice))
    assert isinstance(claims, Claims)
    assert claims.scheme == "dat"
    assert claims.subject == alice.participant_id
    assert claims.issuer == ISSUER
    assert claims.audience == (DAT_AUDIENCE,)
    assert claims.expires_at - claims.issued_at == env.store.config.dat_lifetime
    assert claims.roles == ("provider", "broker")
    assert claims.security_profile == "idsc:TRUST_SECURITY_PROFILE"
    assert claims.scopes == ("idsc:IDS_CONNECTOR_ATTRIBUTES_ALL",)
    assert claims.attributes["referringConnector"] == "https://carol.example/connector"
    assert claims.attributes["transportCertsSha256"] == ("ab" * 32,)
    assert claims.attributes["membership"] is True
    assert claims.attributes["name"] == "Carol"
    assert claims.raw["@type"] == "ids:DatPayload"
    assert claims.key_id == env.current_signing_key().kid


def test_verifier_satisfies_the_seam(env: Env) -> None:
    assert isinstance(env.verifier(), Verifier)


async def test_each_participant_verifies_the_other(env: Env) -> None:
    at_alice, at_bob = env.verifier(), env.verifier()
    assert (await at_alice.verify(env.dat(env.bob))).subject == env.bob.participant_id
    assert (await at_bob.verify(env.dat(env.alice))).subject == env.alice.participant_id


async def test_es256_authority(tmp_path: object) -> None:
    es = make_env(tmp_path, alg="ES256")  # type: ignore[arg-type]
    token = es.dat(es.alice)
    assert (await es.verifier().verify(token)).subject == es.alice.participant_id


async def test_claims_cache_skips_signature_until_expiry(env: Env) -> None:
    verifier = env.verifier()
    token = env.dat(env.alice)
    first = await verifier.verify(token)
    assert verifier.cache is not None and len(verifier.cache) == 1
    assert await verifier.verify(token) is first  # served from the cache
    env.clock.advance(3600 + 31)
    with pytest.raises(InvalidToken, match="expired"):
        await verifier.verify(token)


async def test_exp_leeway_boundary(env: Env) -> None:
    verifier = env.verifier(cache_claims=False, revocation_poll_interval=10_000)
    token = env.dat(env.alice)
    env.clock.advance(3600 + 29)  # inside the 30 s leeway
    await verifier.verify(token)
    env.clock.advance(1)  # now == exp + leeway
    with pytest.raises(InvalidToken, match="expired"):
        await verifier.verify(token)


def test_time_claim_rules() -> None:
    rules = TokenRules(label="T", typ=frozenset({None}), leeway=5, max_lifetime=100, required=())
    check_claims({"iat": 100, "nbf": 105, "exp": 150}, rules, now=100)
    with pytest.raises(InvalidToken, match="not yet valid"):
        check_claims({"nbf": 106}, rules, now=100)
    with pytest.raises(InvalidToken, match="issued in the future"):
        check_claims({"iat": 106}, rules, now=100)
    with pytest.raises(InvalidToken, match="lifetime"):
        check_claims({"iat": 100, "exp": 201}, rules, now=100)
    with pytest.raises(InvalidToken, match="must be a number"):
        check_claims({"exp": True}, rules, now=100)


async def test_unknown_kid_refreshes_jwks_rate_limited(env: Env) -> None:
    verifier = env.verifier(jwks_min_refresh_interval=30)
    await verifier.verify(env.dat(env.alice))
    assert env.jwks_fetch.calls == 1
    rotate_signing_key(env.store, now=env.clock(), overlap=600)
    env.clock.advance(5)
    new_token = env.dat(env.alice)
    # within the rate limit the new kid is unknown and no fetch happens
    with pytest.raises(InvalidToken, match="unknown kid"):
        await verifier.verify(new_token)
    assert env.jwks_fetch.calls == 1
    env.clock.advance(30)
    assert (await verifier.verify(new_token)).key_id == env.current_signing_key().kid
    assert env.jwks_fetch.calls == 2


async def test_unknown_kid_flood_fetches_once(env: Env) -> None:
    verifier = env.verifier()
    await verifier.verify(env.dat(env.alice))
    token = env.dat(env.bob)
    rest = token.partition(".")[2]
    forged = []
    for i in range(200):
        h = json.dumps({"alg": "ES256", "kid": f"flood-{i}", "typ": "at+jwt"}).encode()
        forged.append(base64.urlsafe_b64encode(h).rstrip(b"=").decode() + "." + rest)
    env.clock.advance(31)  # the rate limit allows exactly one refresh now
    results = await asyncio.gather(*(verifier.verify(t) for t in forged), return_exceptions=True)
    assert all(isinstance(r, InvalidToken) and "unknown kid" in str(r) for r in results)
    assert env.jwks_fetch.calls == 2


async def test_jwks_refreshed_when_old(env: Env) -> None:
    verifier = env.verifier(jwks_max_age=300, revocation_poll_interval=10_000)
    token = env.dat(env.alice)
    await verifier.verify(token)
    env.clock.advance(301)
    await verifier.verify(env.dat(env.alice))
    assert env.jwks_fetch.calls == 2


async def test_rotation_overlap_then_old_key_stops(env: Env) -> None:
    verifier = env.verifier(jwks_min_refresh_interval=0)
    old_token = env.dat(env.alice)
    assert await verifier.verify(old_token)
    old_kid = env.current_signing_key().kid

    result = rotate_signing_key(env.store, now=env.clock(), overlap=600)
    assert result["previous"] == old_kid
    published = {k["kid"] for k in env.authority.jwks()["keys"]}
    assert published == {old_kid, result["current"]}
    new_token = env.dat(env.alice)
    # both verify during the overlap (old from cache and afresh)
    assert (await verifier.verify(new_token)).key_id == result["current"]
    assert (await verifier.verify(old_token)).key_id == old_kid
    assert (await env.verifier().verify(old_token)).key_id == old_kid

    env.clock.advance(601)  # overlap over: the authority stops publishing the old key
    assert {k["kid"] for k in env.authority.jwks()["keys"]} == {result["current"]}
    await verifier.jwks.refresh()
    with pytest.raises(InvalidToken, match="unknown kid"):
        await verifier.verify(old_token)  # even though its claims were cached
    with pytest.raises(InvalidToken, match="unknown kid"):
        await env.verifier().verify(old_token)
    assert await verifier.verify(new_token)


async def test_prepublished_next_key_and_retire(env: Env) -> None:
    nxt = prepare_next_key(env.store, now=env.clock())
    assert nxt.kid in {k["kid"] for k in env.authority.jwks()["keys"]}
    assert env.current_signing_key().kid != nxt.kid  # published, not yet signing
    verifier = env.verifier()
    old = env.dat(env.alice)
    await verifier.verify(old)
    rotate_signing_key(env.store, now=env.clock())
    assert env.current_signing_key().kid == nxt.kid
    # the verifier already holds the next key: no refresh needed
    await verifier.verify(env.dat(env.alice))
    assert env.jwks_fetch.calls == 1
    assert retire_previous_keys(env.store, now=env.clock())
    await verifier.jwks.refresh()
    with pytest.raises(InvalidToken, match="unknown kid"):
        await verifier.verify(old)


async def test_revocation_within_poll_interval(env: Env) -> None:
    verifier = env.verifier(revocation_poll_interval=60)
    token = env.dat(env.bob)
    await verifier.verify(token)
    revoke_participant(env.store, env.bob.participant_id, now=env.clock(), reason="left")
    # the authority refuses new tokens at once
    from connector.identity.errors import InvalidClient

    with pytest.raises(InvalidClient, match="revoked"):
        env.dat(env.bob)
    env.clock.advance(59)
    await verifier.verify(token)  # not polled yet: still accepted (documented window)
    env.clock.advance(1)
    with pytest.raises(InvalidToken, match="revoked"):
        await verifier.verify(token)
    assert env.revocation_fetch.calls == 2
    assert await verifier.verify(env.dat(env.alice))


async def test_revocation_list_unreachable_fails_closed(env: Env) -> None:
    verifier = env.verifier(revocation_poll_interval=60)
    token = env.dat(env.alice)
    await verifier.verify(token)
    env.revocation_fetch.fail = ConnectionError("authority unreachable")
    env.clock.advance(61)
    with pytest.raises(InvalidToken, match="revocation status unavailable"):
        await verifier.verify(token)
    calls = env.revocation_fetch.calls
    with pytest.raises(InvalidToken, match="revocation status unavailable"):
        await verifier.verify(token)
    assert env.revocation_fetch.calls == calls  # retries are rate-limited
    env.revocation_fetch.fail = None
    env.clock.advance(5)
    assert await verifier.verify(token)


async def test_revocation_list_rollback_refused(env: Env) -> None:
    verifier = env.verifier(revocation_poll_interval=60)
    old_list = env.authority.revocation_list()
    revoke_participant(env.store, env.bob.participant_id, now=env.clock())
    await verifier.verify(env.dat(env.alice))
    assert verifier.revocations.seq == 1

    async def replay_old() -> str:
        return old_list

    verifier.revocations._fetch = replay_old
    env.clock.advance(61)
    with pytest.raises(InvalidToken, match=r"revocation status unavailable.*rolled back"):
        await verifier.verify(env.dat(env.alice))
    assert env.bob.participant_id in verifier.revocations.revoked


async def test_replay_protection_is_opt_in(env: Env) -> None:
    token = env.dat(env.alice)
    bearer = env.verifier()
    await bearer.verify(token)
    await bearer.verify(token)  # DATs are bearer tokens: reuse is normal
    one_time = env.verifier(replay_protection=True)
    assert one_time.cache is None
    await one_time.verify(token)
    with pytest.raises(InvalidToken, match="replayed"):
        await one_time.verify(token)
    assert one_time.replay is not None and len(one_time.replay) == 1


def test_replay_cache_bounded_and_expiring() -> None:
    cache = ReplayCache(max_entries=2)
    a, b, c = (ReplayCache.key("iss", j) for j in "abc")
    assert len(a) == 32 and ReplayCache.key("iss", "j" * 128) != ReplayCache.key("iss2", "j")
    cache.add(a, expires_at=10, now=0)
    cache.add(b, expires_at=20, now=0)
    with pytest.raises(InvalidToken, match="replayed"):
        cache.check(a, now=5)
    with pytest.raises(ReplayCacheFull, match="replay cache full"):
        cache.add(c, expires_at=30, now=5)
    assert len(cache) == 2 and c not in cache
    cache.check(a, now=10)  # expired: usable again only because its token expired too
    cache.add(c, expires_at=30, now=11)  # purges a
    assert len(cache) == 2 and a not in cache


async def test_authority_refuses_with_503_when_replay_cache_full(env: Env) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from connector.identity.authority import JWT_BEARER, create_app

    env.authority.replay = ReplayCache(max_entries=1)
    env.dat(env.alice)
    async with TestClient(TestServer(create_app(env.authority))) as client:
        resp = await client.post(
            "/token",
            data={
                "grant_type": "client_credentials",
                "client_assertion_type": JWT_BEARER,
                "client_assertion": env.assertion(env.bob),
            },
        )
        body = await resp.json()
    assert resp.status == 503 and body["error"] == "temporarily_unavailable"
    assert env.authority.issued == 1 and len(env.authority.replay) == 1


def test_claims_cache_bounded() -> None:
    cache = ClaimsCache(max_entries=3)
    c = Claims("dat", "i", "s", ("a",), 0, 0, 10, "j", "k")
    for i in range(10):
        cache.put(bytes([i]), c)
    assert len(cache) == 3 and cache.get(bytes([9])) is c and cache.get(bytes([0])) is None


def test_parse_jwks_skips_unusable_keys(env: Env) -> None:
    good = env.authority.jwks()["keys"][0]
    doc = {
        "keys": [
            good,
            {**good, "kid": "../etc/passwd"},
            {**good, "kid": "enc", "use": "enc"},
            {"kty": "RSA", "kid": "rsa", "n": "AQAB", "e": "AQAB"},
            {**good, "kid": "priv", "d": "AAAA"},
            "junk",
        ]
    }
    assert list(parse_jwks(doc)) == [good["kid"]]
    with pytest.raises(InvalidToken, match="JWKS malformed"):
        parse_jwks({"keys": "nope"})


async def test_verifier_from_authority_settings_validated() -> None:
    from pydantic import ValidationError

    from connector.identity.verify import DatVerifierSettings

    with pytest.raises(ValidationError):
        DatVerifierSettings(issuer="x", leeway=-1)
    with pytest.raises(ValidationError):
        DatVerifierSettings(issuer="x", unknown=1)  # type: ignore[call-arg]


async def test_concurrent_verifications_share_one_jwks_fetch(env: Env) -> None:
    verifier: DatVerifier = env.verifier()
    tokens = [env.dat(env.alice) for _ in range(20)]
    await asyncio.gather(*(verifier.verify(t) for t in tokens))
    assert env.jwks_fetch.calls == 1
    assert env.revocation_fetch.calls == 1


async def test_withdrawn_key_stops_cached_tokens_within_jwks_max_age(env: Env) -> None:
    verifier = env.verifier(jwks_max_age=300, revocation_poll_interval=10_000)
    token = env.dat(env.alice)
    await verifier.verify(token)
    # emergency: the operator rotates with no overlap (key compromised)
    rotate_signing_key(env.store, now=env.clock(), overlap=0)
    env.clock.advance(299)
    assert await verifier.verify(token)  # cached, JWKS not yet due
    env.clock.advance(1)
    with pytest.raises(InvalidToken, match="unknown kid"):
        await verifier.verify(token)
    assert env.jwks_fetch.calls == 2


async def test_transport_binding(env: Env) -> None:
    pinned = hashlib.sha256(b"tls-cert-der").hexdigest()
    carol = env.participant("Carol", transportCertsSha256=[pinned])
    claims = await env.verifier().verify(env.dat(carol))
    check_transport_binding(claims, b"tls-cert-der")
    with pytest.raises(InvalidToken, match="transportCertsSha256"):
        check_transport_binding(claims, b"another-cert")
    unpinned = await env.verifier().verify(env.dat(env.alice))
    check_transport_binding(unpinned, b"anything")  # nothing pinned, nothing to check
