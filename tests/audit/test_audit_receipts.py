"""The data plane's receipts in both parties' logs: cross-checked, every disagreement named."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from conftest import MakeLog

from connector.audit import AuditLog, cross_check, receipt_data
from connector.dataplane.receipts import ReceiptChain
from connector.identity.keys import PrivateKey, SigningKey, generate_private_key


@dataclass
class Issued:
    token: str
    responses: list[tuple[int, int, bytes]]


def issue(
    provider: PrivateKey, bodies: list[bytes], batches: list[int], transfer_id: str = "t1", chain_id: str = ""
) -> list[Issued]:
    """Receipts as the provider's data plane signs them: ``batches`` responses per receipt."""
    chain = ReceiptChain(
        transfer_id, "a1", SigningKey.from_private_key(provider), "provider", chain_id=chain_id
    )
    out: list[Issued] = []
    it = iter(bodies)
    for size in batches:
        batch = []
        for _ in range(size):
            body = next(it)
            seq = chain.begin()
            digest = hashlib.sha256(body).digest()
            chain.complete(seq, len(body), digest, 0.0)
            batch.append((seq, len(body), digest))
        token = chain.flush(0.0)
        assert token is not None
        out.append(Issued(token, batch))
    return out


def bodies(n: int) -> list[bytes]:
    return [f"response {i}".encode() * (i + 1) for i in range(n)]


def logs(
    make_log: MakeLog, provider: PrivateKey, consumer: PrivateKey, prov: list[Issued], cons: list[Issued]
) -> tuple[AuditLog, AuditLog]:
    import uuid

    p = make_log(provider, name=f"provider-{uuid.uuid4().hex[:6]}.jsonl")
    c = make_log(consumer, name=f"consumer-{uuid.uuid4().hex[:6]}.jsonl")
    p.append("transfer.started", {"state": "STARTED"}, transfer_id="t1")
    for r in prov:
        p.append(
            "receipt", receipt_data(r.token), transfer_id="t1", agreement_id="a1", participant_id="consumer"
        )
    for r in cons:
        c.append(
            "receipt",
            receipt_data(r.token, r.responses),
            transfer_id="c1",
            agreement_id="a1",
            participant_id="provider",
        )
    return p, c


def test_all_match(make_log: MakeLog, key: PrivateKey, ed_key: PrivateKey) -> None:
    issued = issue(key, bodies(6), [1, 3, 2])
    p, c = logs(make_log, key, ed_key, issued, issued)
    assert cross_check(c.entries(), p.entries(), key.public_key()) == ([], 3)


def test_missing_receipt_in_consumer_log(make_log: MakeLog, key: PrivateKey, ed_key: PrivateKey) -> None:
    issued = issue(key, bodies(4), [1, 1, 2])
    p, c = logs(make_log, key, ed_key, issued, [issued[0], issued[2]])
    problems, _ = cross_check(c.entries(), p.entries(), key.public_key())
    assert problems == [
        "transfer t1: response 2 is covered by no receipt in the consumer's log (a gap)",
        "transfer t1 response 2: the provider issued a receipt the consumer did not log",
        "transfer t1 responses 3..4: the consumer recorded no response 2, so it cannot prove "
        "what the receipt covers",
    ]


def test_receipt_unknown_to_provider(make_log: MakeLog, key: PrivateKey, ed_key: PrivateKey) -> None:
    issued = issue(key, bodies(3), [1, 2])
    p, c = logs(make_log, key, ed_key, issued[:1], issued)
    problems, checked = cross_check(c.entries(), p.entries(), key.public_key())
    assert checked == 1
    assert problems == [
        "transfer t1 responses 2..3: the consumer logged a receipt the provider has no record of"
    ]


def test_forged_receipt(make_log: MakeLog, key: PrivateKey, ed_key: PrivateKey) -> None:
    issued = issue(key, bodies(2), [1, 1])
    forged = issue(generate_private_key("ES256"), bodies(2), [1, 1])
    p, c = logs(make_log, key, ed_key, issued, [issued[0], forged[1]])
    problems, _ = cross_check(c.entries(), p.entries(), key.public_key())
    assert problems[0].startswith("consumer log seq 1: ")
    assert "provider's key" in problems[0] or "signed with" in problems[0]
    assert "transfer t1 response 2: the provider issued a receipt the consumer did not log" in problems


def test_a_response_the_consumer_recorded_differently(
    make_log: MakeLog, key: PrivateKey, ed_key: PrivateKey
) -> None:
    issued = issue(key, bodies(3), [3])
    seq, n, _ = issued[0].responses[1]
    altered = [
        Issued(issued[0].token, [issued[0].responses[0], (seq, n, b"\0" * 32), issued[0].responses[2]])
    ]
    p, c = logs(make_log, key, ed_key, issued, altered)
    problems, _ = cross_check(c.entries(), p.entries(), key.public_key())
    assert problems == [
        "transfer t1 responses 1..3: the consumer's record of the responses does "
        "not match the chain head and byte count the provider signed"
    ]


def test_other_consumers_receipts_are_left_out(
    make_log: MakeLog, key: PrivateKey, ed_key: PrivateKey
) -> None:
    mine = issue(key, bodies(2), [2])
    theirs = issue(key, bodies(1), [1], transfer_id="t2")
    p, c = logs(make_log, key, ed_key, mine, mine)
    p.append(
        "receipt",
        receipt_data(theirs[0].token),
        transfer_id="t2",
        agreement_id="a1",
        participant_id="someone else",
    )
    assert cross_check(c.entries(), p.entries(), key.public_key(), consumer_id="consumer") == ([], 1)
    problems, _ = cross_check(c.entries(), p.entries(), key.public_key())
    assert problems == ["transfer t2 response 1: the provider issued a receipt the consumer did not log"]


def test_duplicates_malformed_and_mislabelled(make_log: MakeLog, key: PrivateKey, ed_key: PrivateKey) -> None:
    issued = issue(key, bodies(2), [1, 1])
    p, c = logs(make_log, key, ed_key, issued, issued)
    c.append(
        "receipt", receipt_data(issued[1].token, issued[1].responses), transfer_id="c1", agreement_id="a1"
    )
    c.append("receipt", {"token": "not a jws"}, transfer_id="c1")
    c.append("receipt", receipt_data(issued[0].token, [(1, 2, "xyz")]), transfer_id="c1")
    c.append("receipt", receipt_data(issued[0].token, issued[0].responses), agreement_id="a9")
    problems, _ = cross_check(c.entries(), p.entries(), key.public_key())
    assert "transfer t1 response 2: logged more than once by the consumer" in problems
    assert "consumer log seq 3: malformed receipt (Not enough segments)" in problems
    assert "consumer log seq 4: a response must be [seq, bytes, sha256 hex]" in problems
    assert "consumer log seq 5: logged under agreement a9, the receipt is for a1" in problems


def test_one_chain_per_provider_replica(make_log: MakeLog, key: PrivateKey, ed_key: PrivateKey) -> None:
    """Two provider processes served the transfer: each signed its own chain from response 1."""
    a = issue(key, bodies(3), [1, 2], chain_id="replica-a")
    b = issue(key, bodies(2), [2], chain_id="replica-b")
    p, c = logs(make_log, key, ed_key, a + b, a + b)
    assert cross_check(c.entries(), p.entries(), key.public_key()) == ([], 3)
    p2, c2 = logs(make_log, key, ed_key, a + b, a)
    problems, _ = cross_check(c2.entries(), p2.entries(), key.public_key())
    assert problems == [
        "transfer t1 chain replica-b responses 1..2: the provider issued a receipt the consumer did not log"
    ]
