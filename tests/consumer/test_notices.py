"""Deletion notices: signed by the consumer, checked by the provider against the data space."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connector.consumer.notices import NoticeError, sign_notice, verify_notice
from connector.consumer.vault import VaultItem
from connector.identity.ca import CertificateAuthority, create_csr, participant_id
from connector.identity.keys import SigningKey, generate_private_key

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def member(ca: CertificateAuthority, name: str) -> tuple[SigningKey, object, str]:
    key = generate_private_key("EdDSA")
    cert = ca.sign_csr(create_csr(key, name), now=NOW.timestamp())
    return SigningKey.from_private_key(key), cert, participant_id(cert)


@pytest.fixture
def space(tmp_path: Path) -> dict:
    ca = CertificateAuthority.create(generate_private_key("ES256"), "Space", now=NOW.timestamp())
    other = CertificateAuthority.create(generate_private_key("ES256"), "Other", now=NOW.timestamp())
    key, cert, pid = member(ca, "Consumer")
    item = VaultItem(
        path=str(tmp_path / "copy.csv"),
        agreement_id="urn:a",
        transfer_id="urn:t",
        provider_id="PROVIDER",
        provider_address="x",
        sha256="ab" * 32,
        delete_at="2026-11-24T00:00:00+00:00",
        registered_at=NOW.isoformat(),
        id="0" * 24,
    )
    return {"ca": ca, "other": other, "key": key, "cert": cert, "pid": pid, "item": item}


def test_a_genuine_notice_verifies(space: dict) -> None:
    token = sign_notice(space["key"], space["cert"], space["item"], NOW)
    claims = verify_notice(
        token, ca=space["ca"].certificate, sender=space["pid"], audience="PROVIDER", now=NOW
    )
    assert claims["agreementId"] == "urn:a" and claims["sha256"] == space["item"].sha256


def test_forged_or_misdirected_notices_are_refused(space: dict) -> None:
    token = sign_notice(space["key"], space["cert"], space["item"], NOW)
    ca = space["ca"].certificate
    with pytest.raises(NoticeError, match="not the caller's"):
        verify_notice(token, ca=ca, sender="AA:keyid:BB", audience="PROVIDER", now=NOW)
    with pytest.raises(NoticeError, match="not issued by this data space"):
        verify_notice(token, ca=space["other"].certificate, sender=space["pid"], audience="PROVIDER", now=NOW)
    with pytest.raises(NoticeError, match="does not verify"):
        verify_notice(token, ca=ca, sender=space["pid"], audience="SOMEONE-ELSE", now=NOW)
    # another member's key under the consumer's certificate
    mallory_key, _, _ = member(space["ca"], "Mallory")
    forged = sign_notice(mallory_key, space["cert"], space["item"], NOW)
    with pytest.raises(NoticeError, match="does not verify"):
        verify_notice(forged, ca=ca, sender=space["pid"], audience="PROVIDER", now=NOW)
    for bad in ("", "x.y.z", "a" * 20_000):
        with pytest.raises(NoticeError):
            verify_notice(bad, ca=ca, sender=space["pid"], audience="PROVIDER", now=NOW)
    later = NOW + timedelta(days=4000)
    with pytest.raises(NoticeError, match="not valid now"):
        verify_notice(token, ca=ca, sender=space["pid"], audience="PROVIDER", now=later)
