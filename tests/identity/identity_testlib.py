"""Test helpers: a real authority directory, two real participants, an injected clock."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from connector.identity.authority import JWT_BEARER, Authority, TokenRequest
from connector.identity.ca import create_csr
from connector.identity.client import ParticipantIdentity
from connector.identity.keys import Algorithm, SigningKey, generate_private_key
from connector.identity.registry import register_participant
from connector.identity.store import AuthorityStore, ParticipantAttributes
from connector.identity.verify import DatVerifier, DatVerifierSettings

T0 = 1_750_000_000.0
ISSUER = "http://authority.test"
ADMIN_TOKEN = "test-admin-token-0123456789"


class FakeClock:
    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Counter:
    """Wraps an async fetch and counts calls (the fetch itself is the real authority)."""

    def __init__(self, fetch: Callable[[], Awaitable[Any]]):
        self._fetch = fetch
        self.calls = 0
        self.fail: Exception | None = None

    async def __call__(self) -> Any:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return await self._fetch()


def ids() -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"id-{next(counter)}"


@dataclass
class Env:
    root: Path
    clock: FakeClock
    store: AuthorityStore
    authority: Authority
    alice: ParticipantIdentity
    bob: ParticipantIdentity
    jwks_fetch: Counter
    revocation_fetch: Counter
    new_id: Callable[[], str] = field(default_factory=ids)

    def participant(self, name: str, alg: Algorithm = "EdDSA", **attributes: Any) -> ParticipantIdentity:
        key = generate_private_key(alg)
        record = register_participant(
            self.store,
            create_csr(key, name).public_bytes(Encoding.PEM),
            now=self.clock(),
            attributes=ParticipantAttributes.model_validate(attributes),
        )
        cert = x509.load_pem_x509_certificate(record.certificate.encode())
        return ParticipantIdentity.from_parts(key, cert)

    def assertion(self, who: ParticipantIdentity, **overrides: Any) -> str:
        return who.client_assertion(
            overrides.pop("audience", ISSUER), now=self.clock(), jti=self.new_id(), **overrides
        )

    def token_request(self, assertion: str, **fields: Any) -> TokenRequest:
        base = {
            "grant_type": "client_credentials",
            "client_assertion_type": JWT_BEARER,
            "client_assertion": assertion,
        }
        base.update(fields)
        return TokenRequest.model_validate(base)

    def dat(self, who: ParticipantIdentity) -> str:
        return self.authority.issue_token(self.token_request(self.assertion(who))).access_token

    def verifier(self, **settings: Any) -> DatVerifier:
        cfg = DatVerifierSettings(issuer=ISSUER, **settings)
        return DatVerifier.create(
            cfg,
            fetch_jwks=self.jwks_fetch,
            fetch_revocations=self.revocation_fetch,
            clock=self.clock,
        )

    def current_signing_key(self) -> SigningKey:
        record = self.store.state().key_with("current")
        assert record is not None
        return self.store.signing_key(record.kid)


def make_env(root: Path, alg: Algorithm = "EdDSA") -> Env:
    clock = FakeClock()
    store = AuthorityStore.initialize(
        root / "authority", name="Test Space", alg=alg, now=clock(), admin_token=ADMIN_TOKEN
    )
    authority = Authority(store, issuer=ISSUER, clock=clock, new_id=ids())
    clock.advance(1)  # assertions must be issued after the authority started

    async def jwks() -> Any:
        return authority.jwks()

    async def revocations() -> Any:
        return authority.revocation_list()

    env = Env(
        root=root,
        clock=clock,
        store=store,
        authority=authority,
        alice=None,  # type: ignore[arg-type]
        bob=None,  # type: ignore[arg-type]
        jwks_fetch=Counter(jwks),
        revocation_fetch=Counter(revocations),
    )
    env.alice = env.participant("Alice", roles=["provider"])
    env.bob = env.participant("Bob", "ES256", roles=["consumer"])
    return env
