"""Provider-signed transfer tokens: issue, verify at the data plane, refresh."""

from __future__ import annotations

import pytest
from identity_testlib import Env

from connector.identity.errors import InvalidGrant, InvalidToken
from connector.identity.keys import SigningKey
from connector.identity.tokens import TransferTokenIssuer
from connector.identity.verify import (
    ReplayCache,
    RevocationStatus,
    TransferTokenVerifier,
    Verifier,
)

PLANE = "https://alice.example/dataplane"


def provider(env: Env, **kwargs: object) -> TransferTokenIssuer:
    key = SigningKey.from_private_key(env.alice.key.private_key)
    return TransferTokenIssuer(
        key,
        env.alice.participant_id,
        replay=ReplayCache(),
        clock=env.clock,
        new_id=env.new_id,
        **kwargs,  # type: ignore[arg-type]
    )


def plane(env: Env, issuer: TransferTokenIssuer, **kwargs: object) -> TransferTokenVerifier:
    key = issuer.verification_key
    assert key.kid is not None
    return TransferTokenVerifier(
        {key.kid: key},
        provider_id=env.alice.participant_id,
        audience=PLANE,
        clock=env.clock,
        **kwargs,  # type: ignore[arg-type]
    )


async def test_issue_and_verify_bound_token(env: Env) -> None:
    issuer = provider(env)
    tokens = issuer.issue(
        agreement_id="agr-7",
        transfer_id="tp-9",
        consumer_id=env.bob.participant_id,
        audience=PLANE,
    )
    assert tokens.expires_in == 300 and tokens.token_type == "Bearer"
    verifier = plane(env, issuer)
    assert isinstance(verifier, Verifier)
    claims = await verifier.verify(tokens.access_token)
    assert claims.scheme == "transfer"
    assert claims.subject == env.bob.participant_id
    assert claims.issuer == env.alice.participant_id
    assert claims.audience == (PLANE,)
    assert claims.attributes == {"agreementId": "agr-7", "transferId": "tp-9"}
    assert claims.expires_at - claims.issued_at == 300


async def test_short_lived_then_refreshed(env: Env) -> None:
    issuer = provider(env)
    verifier = plane(env, issuer)
    first = issuer.issue(
        agreement_id="a", transfer_id="t", consumer_id=env.bob.participant_id, audience=PLANE
    )
    env.clock.advance(331)
    with pytest.raises(InvalidToken, match="expired"):
        await verifier.verify(first.access_token)
    second = issuer.refresh(first.refresh_token, consumer_id=env.bob.participant_id)
    claims = await verifier.verify(second.access_token)
    assert claims.attributes["transferId"] == "t" and claims.subject == env.bob.participant_id
    assert second.refresh_token != first.refresh_token
    # one-time refresh tokens: the old one is spent, the new one works once
    with pytest.raises(InvalidGrant, match="replayed"):
        issuer.refresh(first.refresh_token, consumer_id=env.bob.participant_id)
    issuer.refresh(second.refresh_token, consumer_id=env.bob.participant_id)


async def test_refresh_token_expires(env: Env) -> None:
    issuer = provider(env, refresh_lifetime=600)
    tokens = issuer.issue(
        agreement_id="a", transfer_id="t", consumer_id=env.bob.participant_id, audience=PLANE
    )
    env.clock.advance(631)
    with pytest.raises(InvalidGrant, match="expired"):
        issuer.refresh(tokens.refresh_token, consumer_id=env.bob.participant_id)


async def test_terminated_transfer_refused(env: Env) -> None:
    active = {"t"}
    issuer = provider(env, is_transfer_active=lambda t: t in active)
    verifier = plane(env, issuer, is_transfer_active=lambda t: t in active)
    tokens = issuer.issue(
        agreement_id="a", transfer_id="t", consumer_id=env.bob.participant_id, audience=PLANE
    )
    await verifier.verify(tokens.access_token)
    active.clear()
    with pytest.raises(InvalidToken, match="no longer active"):
        await verifier.verify(tokens.access_token)  # even from the claims cache
    with pytest.raises(InvalidGrant, match="no longer active"):
        issuer.refresh(tokens.refresh_token, consumer_id=env.bob.participant_id)


async def test_revoked_consumer_refused_at_data_plane(env: Env) -> None:
    issuer = provider(env)
    revocations = RevocationStatus.static(frozenset({env.bob.participant_id}))
    verifier = plane(env, issuer, revocations=revocations)
    tokens = issuer.issue(
        agreement_id="a", transfer_id="t", consumer_id=env.bob.participant_id, audience=PLANE
    )
    with pytest.raises(InvalidToken, match="revoked"):
        await verifier.verify(tokens.access_token)


def test_issue_validates_binding(env: Env) -> None:
    issuer = provider(env)
    with pytest.raises(ValueError, match="agreement_id"):
        issuer.issue(agreement_id="", transfer_id="t", consumer_id="c", audience=PLANE)
    with pytest.raises(ValueError, match="lifetimes"):
        provider(env, access_lifetime=0)
