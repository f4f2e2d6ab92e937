"""Usage receipts: the hash chain, batching, and the consumer's verification."""

from __future__ import annotations

import hashlib

import pytest

from connector.dataplane.receipts import (
    ReceiptBook,
    ReceiptChain,
    ReceiptError,
    ReceiptVerifier,
    chain_step,
    genesis,
)
from connector.identity.jose import VerificationKey
from connector.identity.keys import SigningKey

KEY = SigningKey.generate("EdDSA")
VKEY = VerificationKey(kid=KEY.kid, alg=KEY.alg, key=KEY.public_key)


def chain(interval: float = 1.0) -> ReceiptChain:
    return ReceiptChain("t1", "a1", KEY, "urn:provider", interval)


def send(c: ReceiptChain, body: bytes, now: float) -> tuple[int, str | None]:
    seq = c.begin()
    return seq, c.complete(seq, len(body), hashlib.sha256(body).digest(), now)


def verifier() -> ReceiptVerifier:
    return ReceiptVerifier(VKEY, transfer_id="t1", agreement_id="a1", issuer="urn:provider")


def test_chain_definition() -> None:
    c = chain()
    bodies = [b"alpha", b"", b"gamma" * 100]
    for i, b in enumerate(bodies):
        send(c, b, 0.1 * i)
    head = genesis("t1", "a1")
    for seq, b in enumerate(bodies, 1):
        head = chain_step(head, seq, len(b), hashlib.sha256(b).digest())
    assert c.head == head
    token = c.flush(0.5)
    assert token is not None
    claims = verifier().decode(token)
    assert claims["seq_from"] == 1 and claims["seq_to"] == 3
    assert claims["bytes"] == sum(map(len, bodies)) and claims["chain_head"] == head.hex()
    assert claims["time"] == 0.5 and claims["transfer_id"] == "t1" and claims["agreement_id"] == "a1"


def test_thousand_responses_within_a_second_yield_one_receipt() -> None:
    c = chain()
    v = verifier()
    for i in range(1000):
        body = f"response {i}".encode()
        seq, receipt = send(c, body, 100.0 + i * 0.000999)
        assert receipt is None
        v.add_body(seq, body)
    assert c.receipts == []
    assert c.flush(101.0) is not None
    assert len(c.receipts) == 1
    coverage = v.verify(c.receipts)
    assert coverage.seq_to == 1000 and coverage.receipts == 1


def test_receipt_at_least_every_second_while_responses_flow() -> None:
    c = chain()
    v = verifier()
    for i in range(35):  # ~4.4 s of traffic, one response every 125 ms
        body = b"x" * 10
        seq, _receipt = send(c, body, i * 0.125)
        v.add_body(seq, body)
    now = 35 * 0.125
    assert len(c.receipts) == 3
    # no response waits more than a second for the receipt that covers it
    for r in c.receipts:
        claims = verifier().decode(r)
        oldest_completed = (claims["seq_from"] - 1) * 0.125
        assert claims["time"] - oldest_completed <= 1.0 + 1e-9
    c.flush(now)  # end of transfer
    assert v.verify(c.receipts).seq_to == 35


def test_out_of_order_completion_never_skips_a_response() -> None:
    c = chain()
    s1, s2, s3 = c.begin(), c.begin(), c.begin()
    d = hashlib.sha256(b"b").digest()
    c.complete(s3, 1, d, 0.0)
    c.complete(s2, 1, d, 0.0)
    assert c.flush(0.1) is None  # nothing contiguous from 1 yet
    c.complete(s1, 1, d, 0.2)
    assert c.chained_to == 3
    with pytest.raises(ValueError):
        c.complete(s1, 1, d, 0.3)


def test_tampered_response_detected() -> None:
    c = chain()
    v = verifier()
    for i in range(5):
        body = f"row {i}".encode()
        seq, _ = send(c, body, 0.0)
        v.add_body(seq, b"row 2 (altered)" if i == 2 else body)
    c.flush(1.0)
    with pytest.raises(ReceiptError, match="chain head mismatch"):
        v.verify(c.receipts)


def test_missing_receipt_forged_signature_and_uncovered_responses() -> None:
    c = chain()
    v = verifier()
    for i in range(3):
        seq, _ = send(c, b"r%d" % i, 0.0)
        v.add_body(seq, b"r%d" % i)
    c.flush(0.5)
    seq, _ = send(c, b"late", 0.6)
    v.add_body(seq, b"late")
    with pytest.raises(ReceiptError, match="not covered"):
        v.verify(c.receipts)
    assert v.verify(c.receipts, require_all=False).seq_to == 3
    c.flush(0.7)
    assert v.verify(c.receipts).seq_to == 4
    with pytest.raises(ReceiptError, match="does not continue"):
        v.verify(c.receipts[1:])
    other = ReceiptChain("t1", "a1", SigningKey.generate("EdDSA"), "urn:provider")
    other.complete(other.begin(), 2, hashlib.sha256(b"r0").digest(), 0.0)
    with pytest.raises(ReceiptError, match=r"signature|another key"):
        v.verify([other.flush(1.0) or ""])
    parts = c.receipts[0].split(".")
    with pytest.raises(ReceiptError):
        v.verify([parts[0] + "." + parts[1][:-4] + "AAAA." + parts[2], c.receipts[1]])


def test_book_flushes_due_chains_and_finishes() -> None:
    book = ReceiptBook(KEY, "urn:provider", interval=1.0, clock=lambda: 0.0)
    c = book.chain("t1", "a1")
    send(c, b"x", 0.0)
    assert book.flush_due(0.5) == 0
    assert book.flush_due(1.0) == 1
    send(c, b"y", 1.2)
    assert len(book.finish("t1", 1.3)) == 2
    assert "t1" not in book.chains
    with pytest.raises(ValueError):
        book.chain("t2", "a1")
        book.chain("t2", "a2")


def test_a_broken_response_ends_its_batch_and_later_responses_are_still_proven() -> None:
    """A response that broke off is receipted at once, alone; the consumer, which got only part
    of it, cannot prove that batch, logs it as unproven and still proves what came after."""
    c = chain()
    seq1, _ = send(c, b"complete one", 0.0)
    seq2 = c.begin()
    sent = b"partial bytes the provider wrote"
    token = c.complete(seq2, len(sent), hashlib.sha256(sent).digest(), 0.1, broken=True)
    assert token is not None  # signed at once, not after the interval
    seq3, _ = send(c, b"the retry", 0.2)
    c.flush(0.3)
    v = verifier()
    v.add_body(seq1, b"complete one")
    v.add_body(seq2, b"partial")  # what arrived before the connection broke
    v.add_body(seq3, b"the retry")
    with pytest.raises(ReceiptError):
        v.verify(c.receipts)
    done = v.verify_lenient(c.receipts, {("", seq3)})
    assert done.unproven == {c.receipts[0]} and done.coverage.seq_to == 3
    # the response this pull is about must be proven
    with pytest.raises(ReceiptError, match="response 2 differs"):
        v.verify_lenient(c.receipts, {("", seq2)})
    # and must be covered: a receipt still on its way is "not covered"
    seq4, _ = send(c, b"not yet receipted", 0.4)
    v.add_body(seq4, b"not yet receipted")
    with pytest.raises(ReceiptError, match="not covered"):
        v.verify_lenient(c.receipts, {("", seq4)})
