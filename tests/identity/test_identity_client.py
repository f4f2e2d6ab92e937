"""The DAT client: caching, refresh before expiry, single flight, lost responses."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from identity_testlib import ISSUER, Env

from connector.identity.authority import TokenRequest
from connector.identity.client import (
    DatClient,
    ParticipantIdentity,
    init_participant,
)
from connector.identity.errors import IdentityError, TokenUnavailable
from connector.identity.registry import register_participant, revoke_participant


class AuthorityTransport:
    """Calls the real authority core; can hold requests at a gate or lose the response."""

    def __init__(self, env: Env):
        self.env = env
        self.gate: asyncio.Event | None = None
        self.lose_response = False
        self.calls = 0

    async def __call__(self, form: Mapping[str, str]) -> Mapping[str, Any]:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        response = self.env.authority.issue_token(TokenRequest.model_validate(dict(form)))
        if self.lose_response:
            raise ConnectionResetError("connection reset after the authority answered")
        return response.model_dump()


def client(env: Env, transport: AuthorityTransport, who: ParticipantIdentity | None = None) -> DatClient:
    return DatClient(
        who or env.alice,
        audience=ISSUER,
        transport=transport,
        clock=env.clock,
        new_id=env.new_id,
        refresh_margin=60,
        retry_interval=5,
    )


async def test_cached_until_refresh_margin(env: Env) -> None:
    transport = AuthorityTransport(env)
    dat = client(env, transport)
    first = await dat.token()
    assert (await env.verifier().verify(first)).subject == env.alice.participant_id
    env.clock.advance(3600 - 61)
    assert await dat.token() == first
    env.clock.advance(1)  # inside the margin: refresh
    second = await dat.token()
    assert second != first and transport.calls == 2


async def test_single_flight_for_many_callers(env: Env) -> None:
    transport = AuthorityTransport(env)
    transport.gate = asyncio.Event()
    dat = client(env, transport)
    callers = [asyncio.ensure_future(dat.token()) for _ in range(100)]
    await asyncio.sleep(0)
    transport.gate.set()
    tokens = await asyncio.gather(*callers)
    assert len(set(tokens)) == 1
    assert transport.calls == 1
    assert env.authority.issued == 1


async def test_cancelled_caller_does_not_cancel_the_refresh(env: Env) -> None:
    transport = AuthorityTransport(env)
    transport.gate = asyncio.Event()
    dat = client(env, transport)
    impatient = asyncio.ensure_future(dat.token())
    patient = asyncio.ensure_future(dat.token())
    await asyncio.sleep(0)
    impatient.cancel()
    transport.gate.set()
    assert await patient
    assert impatient.cancelled() and transport.calls == 1


async def test_lost_refresh_response_keeps_callers_working(env: Env) -> None:
    transport = AuthorityTransport(env)
    dat = client(env, transport)
    first = await dat.token()
    env.clock.advance(3600 - 30)  # refresh due, old token still valid
    transport.lose_response = True
    results = await asyncio.gather(*(dat.token() for _ in range(10)))
    assert results == [first] * 10  # everyone keeps the valid DAT
    assert transport.calls == 2 and env.authority.issued == 2  # the lost one was issued
    assert "connection reset" in (dat.last_error or "")
    assert await dat.token() == first  # no retry storm within retry_interval
    assert transport.calls == 2
    transport.lose_response = False
    env.clock.advance(5)
    fresh = await dat.token()  # a new assertion (new jti): not refused as a replay
    assert fresh != first and transport.calls == 3
    assert (await env.verifier().verify(fresh)).subject == env.alice.participant_id


async def test_no_token_and_failure_raises_then_recovers(env: Env) -> None:
    transport = AuthorityTransport(env)
    transport.lose_response = True
    dat = client(env, transport)
    with pytest.raises(TokenUnavailable, match="could not obtain a DAT"):
        await dat.token()
    transport.lose_response = False
    assert await dat.token()


async def test_revoked_participant_loses_access_at_expiry(env: Env) -> None:
    transport = AuthorityTransport(env)
    dat = client(env, transport, env.bob)
    first = await dat.token()
    revoke_participant(env.store, env.bob.participant_id, now=env.clock())
    env.clock.advance(3600 - 30)
    assert await dat.token() == first  # refresh refused, old DAT still valid locally
    env.clock.advance(31)
    with pytest.raises(TokenUnavailable, match="revoked"):
        await dat.token()


def test_init_participant_and_load(env: Env, tmp_path: Path) -> None:
    csr_path = init_participant(tmp_path / "p", "Frank", alg="ES256")
    assert (tmp_path / "p" / "participant.key").stat().st_mode & 0o077 == 0
    with pytest.raises(IdentityError, match=r"participant\.crt is missing"):
        ParticipantIdentity.load(tmp_path / "p")
    record = register_participant(env.store, csr_path.read_bytes(), now=env.clock())
    (tmp_path / "p" / "participant.crt").write_text(record.certificate)
    frank = ParticipantIdentity.load(tmp_path / "p")
    assert frank.participant_id == record.participant_id and frank.name == "Frank"
    with pytest.raises(IdentityError, match="refusing to overwrite"):
        init_participant(tmp_path / "p", "Frank")
    # a certificate of somebody else's key is refused
    (tmp_path / "p" / "participant.crt").write_text(
        env.store.state().participants[env.alice.participant_id].certificate
    )
    with pytest.raises(IdentityError, match="does not belong"):
        ParticipantIdentity.load(tmp_path / "p")
