"""Test helpers for the data plane: keys, tokens, agreements, an injected clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from connector.dataplane.pep import AgreementPolicy, TransferView
from connector.dataplane.tokencache import TokenCache
from connector.identity.keys import SigningKey
from connector.identity.tokens import TransferTokenIssuer
from connector.identity.verify import ReplayCache, TransferTokenVerifier

T0 = 1_780_000_000.0  # 2026-05-28
PROVIDER = "urn:participant:provider"
CONSUMER = "urn:participant:consumer"
PLANE = "https://provider.test/data"
TARGET = "urn:asset:weather"
CTX = ["http://www.w3.org/ns/odrl.jsonld", {"ex": "urn:ex:"}]


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def iso(ts: float) -> dict[str, str]:
    return {"@value": datetime.fromtimestamp(ts, UTC).isoformat(), "@type": "xsd:dateTime"}


def agreement_doc(constraints: list[dict[str, Any]], uid: str = "urn:agreement:1") -> dict[str, Any]:
    return {
        "@context": CTX,
        "@type": "Agreement",
        "uid": uid,
        "target": TARGET,
        "assigner": PROVIDER,
        "assignee": CONSUMER,
        "permission": [{"action": "use", "target": TARGET, "constraint": constraints}],
    }


def count_lteq(n: int) -> dict[str, Any]:
    return {"leftOperand": "count", "operator": "lteq", "rightOperand": n}


@dataclass
class Provider:
    clock: FakeClock = field(default_factory=FakeClock)
    key: SigningKey = field(default_factory=lambda: SigningKey.generate("EdDSA"))
    issuer: TransferTokenIssuer = field(init=False)
    verifier: TransferTokenVerifier = field(init=False)
    cache: TokenCache = field(init=False)

    def __post_init__(self) -> None:
        n = iter(range(1, 1_000_000))
        self.issuer = TransferTokenIssuer(
            self.key, PROVIDER, replay=ReplayCache(), clock=self.clock, new_id=lambda: f"jti-{next(n)}"
        )
        self.verifier = TransferTokenVerifier(
            {self.key.kid: self.issuer.verification_key},
            provider_id=PROVIDER,
            audience=PLANE,
            clock=self.clock,
            cache_claims=False,
        )
        self.cache = TokenCache(self.verifier, clock=self.clock)

    def token(
        self, transfer_id: str = "t1", agreement_id: str = "urn:agreement:1", consumer: str = CONSUMER
    ) -> str:
        return self.issuer.issue(
            agreement_id=agreement_id, transfer_id=transfer_id, consumer_id=consumer, audience=PLANE
        ).access_token


def transfer(
    policy: dict[str, Any],
    *,
    state: str = "STARTED",
    source: Any = None,
    transfer_id: str = "t1",
    agreement_id: str = "urn:agreement:1",
) -> TransferView:
    return TransferView(
        transfer_id=transfer_id,
        agreement_id=agreement_id,
        consumer_id=CONSUMER,
        state=state,
        agreement=AgreementPolicy.compile(agreement_id, TARGET, policy),
        source=source,
    )


def unlimited_counter() -> Callable[..., Any]:
    count = {"n": 0}

    async def consume(
        agreement_id: str, consumer_id: str, target: str, limit: int | None
    ) -> tuple[bool, int]:
        if limit is not None and count["n"] >= limit:
            return False, count["n"]
        count["n"] += 1
        return True, count["n"]

    return consume
