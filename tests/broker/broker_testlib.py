"""Helpers of the broker tests: descriptions of made-up connectors, a database per test
(SQLite file, or a PostgreSQL schema when CONNECTOR_TEST_PG is set), a verifier of fixed tokens."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from connector.identity.errors import InvalidToken
from connector.identity.tokens import Claims
from connector.selfdescription import (
    TURTLE,
    ConnectorInfo,
    DatasetInfo,
    self_description_graph,
    serialize,
)

OFFER = {"@id": "urn:uuid:offer-1", "@type": "Offer", "permission": [{"action": "use"}]}


def description(
    participant: str, base: str, datasets: Sequence[Mapping[str, object]], media_type: str = TURTLE
) -> bytes:
    info = ConnectorInfo(
        id=f"{base}/",
        participant_id=participant,
        title=f"Connector of {participant}",
        curator="https://org.example/",
        maintainer="https://org.example/",
        security_profile="https://w3id.org/idsa/code/BASE_SECURITY_PROFILE",
        dsp_base_url=base,
        self_description_url=f"{base}/",
        catalog_id=f"{base}#catalog",
        dsp_service_id=f"{base}#dsp",
    )
    items = [
        DatasetInfo(
            id=str(d["id"]),
            title=str(d["title"]),
            description=d.get("description"),  # type: ignore[arg-type]
            keywords=tuple(d.get("keywords", ())),  # type: ignore[call-overload]
            media_type=d.get("media_type"),  # type: ignore[arg-type]
            distributions=[("HttpData-PULL", base)],
            offers=[OFFER],
        )
        for d in datasets
    ]
    return serialize(self_description_graph(info, items), media_type)


class FixedTokens:
    """A Verifier: token -> subject, anything else refused."""

    def __init__(self, tokens: Mapping[str, str]) -> None:
        self.tokens = dict(tokens)

    async def verify(self, token: str) -> Claims:
        subject = self.tokens.get(token)
        if subject is None:
            raise InvalidToken("DAT: not a token of this test")
        return Claims(
            scheme="dat",
            issuer="test",
            subject=subject,
            audience=("idsc:IDS_CONNECTORS_ALL",),
            issued_at=0,
            not_before=0,
            expires_at=2e9,
            token_id=token,
            key_id="k",
        )
