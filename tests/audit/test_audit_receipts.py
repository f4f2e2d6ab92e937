"""Provider receipts against the consumer's log: missing, forged, gaps, differences."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
from conftest import MakeLog

from connector.audit import AuditLog, KeySigner, Receipt, cross_check, sign_receipt, verify_receipt
from connector.identity.keys import PrivateKey, generate_private_key


def receipts(provider: PrivateKey, transfer_id: str = "t1", n: int = 4) -> list[Receipt]:
    signer = KeySigner(provider)
    return [
        sign_receipt(
            signer,
            transfer_id=transfer_id,
            agreement_id="a1",
            seq=seq,
            bytes=1000 + seq,
            sha256=hashlib.sha256(f"{transfer_id}-{seq}".encode()).hexdigest(),
            time=f"2026-01-01T00:00:0{seq}.000000Z",
            chain_head=hashlib.sha256(b"batch").hexdigest() if seq == 0 else None,
        )
        for seq in range(n)
    ]


def log_receipts(log: AuditLog, items: list[Receipt]) -> None:
    log.append("transfer.started", {"note": "not a receipt"}, transfer_id="t1")
    for r in items:
        log.append("receipt", r.to_dict(), transfer_id=r.transfer_id, agreement_id=r.agreement_id)


@pytest.fixture
def provider(key: PrivateKey) -> PrivateKey:
    return key


def test_receipt_round_trip(provider: PrivateKey) -> None:
    r = receipts(provider, n=1)[0]
    assert verify_receipt(r, provider.public_key())
    assert Receipt.from_dict(r.to_dict()) == r
    assert not verify_receipt(dataclasses.replace(r, bytes=1), provider.public_key())
    assert not verify_receipt(r, generate_private_key("EdDSA").public_key())
    with pytest.raises(ValueError, match="sha256"):
        Receipt.from_dict({**r.to_dict(), "sha256": "xyz"})
    with pytest.raises(ValueError, match="missing seq"):
        Receipt.from_dict({k: v for k, v in r.to_dict().items() if k != "seq"})


def test_all_match(make_log: MakeLog, provider: PrivateKey, ed_key: PrivateKey) -> None:
    issued = receipts(provider) + receipts(provider, "t2", 2)
    log = make_log(ed_key)
    log_receipts(log, issued)
    assert cross_check(log.entries(), issued, provider.public_key()) == []


def test_missing_receipt_in_consumer_log(make_log: MakeLog, provider: PrivateKey, ed_key: PrivateKey) -> None:
    issued = receipts(provider)
    log = make_log(ed_key)
    log_receipts(log, [issued[0], issued[1], issued[3]])
    problems = cross_check(log.entries(), issued, provider.public_key())
    assert problems == [
        "transfer t1 seq 2: missing from the consumer's log (a gap in the sequence)",
        "transfer t1 seq 2: the provider issued a receipt the consumer did not log",
    ]


def test_receipt_unknown_to_provider(make_log: MakeLog, provider: PrivateKey, ed_key: PrivateKey) -> None:
    issued = receipts(provider)
    log = make_log(ed_key)
    log_receipts(log, issued)
    problems = cross_check(log.entries(), issued[:3], provider.public_key())
    assert problems == ["transfer t1 seq 3: the consumer logged a receipt the provider has no record of"]


def test_wrong_signature(make_log: MakeLog, provider: PrivateKey, ed_key: PrivateKey) -> None:
    issued = receipts(provider)
    forged = receipts(generate_private_key("ES256"))
    log = make_log(ed_key)
    log_receipts(log, [issued[0], forged[1], issued[2], issued[3]])
    problems = cross_check(log.entries(), issued, provider.public_key())
    assert problems[0] == (
        "transfer t1 seq 1: receipt signature does not verify with the provider's key (consumer log seq 2)"
    )
    assert problems[1] == "transfer t1 seq 1: the receipts differ: signature"


def test_altered_receipt(make_log: MakeLog, provider: PrivateKey, ed_key: PrivateKey) -> None:
    issued = receipts(provider)
    log = make_log(ed_key)
    log_receipts(log, [issued[0], dataclasses.replace(issued[1], bytes=5), issued[2], issued[3]])
    problems = cross_check(log.entries(), issued, provider.public_key())
    assert "transfer t1 seq 1: receipt signature does not verify" in problems[0]
    assert problems[1] == "transfer t1 seq 1: the receipts differ: bytes 1001 (provider) vs 5 (consumer)"


def test_gap_in_seq_on_both_sides(make_log: MakeLog, provider: PrivateKey, ed_key: PrivateKey) -> None:
    issued = receipts(provider, n=6)
    kept = [r for r in issued if r.seq not in (2, 3)]
    log = make_log(ed_key)
    log_receipts(log, kept)
    problems = cross_check(log.entries(), kept, provider.public_key())
    assert problems == [
        "transfer t1 seq 2: missing from the consumer's log (a gap in the sequence)",
        "transfer t1 seq 3: missing from the consumer's log (a gap in the sequence)",
        "transfer t1 seq 2: missing from the provider's receipts (a gap in the sequence)",
        "transfer t1 seq 3: missing from the provider's receipts (a gap in the sequence)",
    ]


def test_duplicates_and_mislabelled(make_log: MakeLog, provider: PrivateKey, ed_key: PrivateKey) -> None:
    issued = receipts(provider, n=2)
    log = make_log(ed_key)
    log_receipts(log, issued)
    log.append("receipt", issued[1].to_dict(), transfer_id="t1")
    log.append("receipt", issued[0].to_dict(), transfer_id="t9")
    log.append("receipt", {"transfer_id": "t1"}, transfer_id="t1")
    problems = cross_check(log.entries(), issued, provider.public_key())
    assert "transfer t1 seq 1: logged more than once by the consumer (consumer log seq 3)" in problems
    assert "transfer t1 seq 0: logged under transfer t9 (consumer log seq 4)" in problems
    assert "consumer log seq 5: not a receipt: missing agreement_id" in problems
