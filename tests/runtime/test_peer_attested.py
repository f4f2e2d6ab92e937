"""The provider keeps, with each transfer, what the consumer's latest DAT attested."""

from __future__ import annotations

from datetime import UTC, datetime
from types import MappingProxyType

from connector.identity.tokens import Claims
from connector.runtime import with_peer_attested
from connector.store.rows import TransferRow

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def _claims(country: str, iat: float) -> Claims:
    return Claims(
        scheme="dat",
        issuer="i",
        subject="c",
        audience=(),
        issued_at=iat,
        not_before=iat,
        expires_at=iat + 60,
        token_id="j",
        key_id=None,
        attributes=MappingProxyType(
            {
                "jurisdiction": MappingProxyType({"country": country}),
                "groups": ("g",),
                "scopes": ("s",),
                "transportCertsSha256": ("ab",),
            }
        ),
    )


def test_the_latest_snapshot_stays_with_the_transfer() -> None:
    row = TransferRow(
        id="t",
        role="provider",
        state="REQUESTED",
        created_at=NOW,
        updated_at=NOW,
        agreement_id="a",
        data={"processed": []},
    )
    assert with_peer_attested(row, None, None) == row  # nothing known yet
    first = with_peer_attested(row, None, _claims("DE", 100.7))
    assert first.data["peer_attested"] == {
        "attested": {"jurisdiction": {"country": "DE"}, "groups": ["g"]},
        "attestedAt": 100,
    }
    assert first.data["processed"] == []
    # a transition without a peer message (an acknowledgement) keeps it
    kept = with_peer_attested(row, first, None)
    assert kept.data["peer_attested"] == first.data["peer_attested"]
    # a later message with a newer DAT replaces it
    newer = with_peer_attested(row, kept, _claims("FR", 200))
    assert newer.data["peer_attested"]["attested"]["jurisdiction"] == {"country": "FR"}
