"""`connector audit verify` / `show` through click's runner."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from conftest import MakeLog, write_cert

from connector.audit.cli import audit
from connector.identity.keys import PrivateKey, generate_private_key


def run(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(audit, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def test_verify_ok_and_tampered(make_log: MakeLog, key: PrivateKey, tmp_path: Path) -> None:
    log = make_log(key)
    for i in range(8):
        log.append("negotiation.requested", {"i": i}, process_id="p1")
    cert = write_cert(tmp_path / "c.crt", key)
    code, out, _ = run("verify", log.path, "--cert", cert)
    assert (code, out) == (0, "OK: 8 entries, chain intact\n")
    lines = log.path.read_bytes().splitlines(keepends=True)
    lines[6] = lines[6].replace(b'"i":6', b'"i":7')
    log.path.write_bytes(b"".join(lines))
    code, out, _ = run("verify", log.path, "--cert", cert)
    assert code == 1
    assert out == (
        f"{log.path}: FAILED: line 7 (seq 6): hash mismatch: the entry was changed after it was written\n"
    )


def test_verify_wrong_cert_and_tail_removal(make_log: MakeLog, ed_key: PrivateKey, tmp_path: Path) -> None:
    log = make_log(ed_key)
    for i in range(3):
        log.append("transfer.started", {"i": i}, transfer_id="t")
    other = write_cert(tmp_path / "o.crt", generate_private_key("ES256"))
    code, out, _ = run("verify", log.path, "--cert", other)
    assert code == 1 and "line 1 (seq 0): signature does not verify" in out
    cert = write_cert(tmp_path / "c.crt", ed_key)
    log.path.write_bytes(b"".join(log.path.read_bytes().splitlines(keepends=True)[:-1]))
    code, out, _ = run("verify", log.path, "--cert", cert)
    assert code == 1 and "entries were removed from the end (seq 2)" in out
    code, out, err = run("verify", log.path, "--cert", cert, "--no-head")
    assert code == 0 and out == "OK: 2 entries, chain intact\n" and "cannot be detected" in err


def test_verify_peer_receipts(make_log: MakeLog, tmp_path: Path) -> None:
    from test_audit_receipts import bodies, issue

    from connector.audit import receipt_data

    consumer_key, provider_key = generate_private_key("EdDSA"), generate_private_key("ES256")
    consumer = make_log(consumer_key, name="consumer.jsonl")
    provider = make_log(provider_key, name="provider.jsonl")
    issued = issue(provider_key, bodies(3), [1, 1, 1])
    for i, r in enumerate(issued):
        provider.append("receipt", receipt_data(r.token), transfer_id="t1", agreement_id="a1")
        if i != 1:
            consumer.append(
                "receipt", receipt_data(r.token, r.responses), transfer_id="t1", agreement_id="a1"
            )
    ccert = write_cert(tmp_path / "consumer.crt", consumer_key, "consumer")
    pcert = write_cert(tmp_path / "provider.crt", provider_key, "provider")
    args = ("verify", consumer.path, "--cert", ccert, "--peer-receipts", provider.path, "--peer-cert", pcert)
    code, out, _ = run(*args)
    assert code == 1
    assert out.splitlines() == [
        "OK: 2 entries, chain intact",
        "receipts: 3 problem(s)",
        "  transfer t1: response 2 is covered by no receipt in the consumer's log (a gap)",
        "  transfer t1 response 2: the provider issued a receipt the consumer did not log",
        "  transfer t1 response 3: the consumer recorded no response 2, so it cannot prove what "
        "the receipt covers",
    ]
    code, out, _ = run("verify", consumer.path, "--cert", ccert, "--peer-receipts", provider.path)
    assert code == 2 and "needs --peer-cert" in out + _
    # complete the consumer's log (late, out of order in time but a valid chain)
    consumer.append(
        "receipt", receipt_data(issued[1].token, issued[1].responses), transfer_id="t1", agreement_id="a1"
    )
    code, out, _ = run(*args)
    assert code == 0 and out.splitlines()[-1] == "OK: 3 provider receipts match the consumer's log"


def test_show(make_log: MakeLog, ed_key: PrivateKey) -> None:
    log = make_log(ed_key)
    log.append(
        "negotiation.finalized",
        {"offer": "o1", "counterparty": "did:web:example.com:provider"},
        process_id="p1",
        agreement_id="a1",
    )
    log.append("transfer.started", {"format": "HttpData-PULL"}, transfer_id="t1", agreement_id="a1")
    log.append("deletion-notice", {"deleted": True, "bytes": 10}, transfer_id="t1")
    code, out, _ = run("show", log.path)
    assert code == 0
    rows = out.splitlines()
    assert len(rows) == 3
    assert rows[0].startswith("2026-09-21T14:13:20.000000Z  #0      negotiation.finalized")
    assert "processId=p1 agreementId=a1" in rows[0] and "offer=o1" in rows[0]
    assert "transferId=t1" in rows[1] and "format=HttpData-PULL" in rows[1]
    code, out, _ = run("show", log.path, "--kind", "transfer")
    assert out.splitlines() == [rows[1]]
    code, out, _ = run("show", log.path, "--since", "2026-09-21T14:13:22Z", "--kind", "deletion-notice")
    assert out.splitlines() == [rows[2]]
    code, out, _ = run("show", log.path, "--json", "--kind", "negotiation")
    assert json.loads(out)["agreement_id"] == "a1"
    code, out, _ = run("show", log.path, "--since", "yesterday")
    assert code == 2


def test_show_tolerates_a_damaged_line(make_log: MakeLog, ed_key: PrivateKey) -> None:
    log = make_log(ed_key)
    log.append("a", {})
    log.append("b", {})
    log.path.write_bytes(log.path.read_bytes()[:-20])
    code, out, err = run("show", log.path)
    assert code == 0 and len(out.splitlines()) == 1 and "line 2: unreadable" in err


def test_timeline_view_for_the_management_api(make_log: MakeLog, ed_key: PrivateKey) -> None:
    from connector.audit.timeline import select, to_view

    log = make_log(ed_key)
    log.append("transfer.started", {"format": "HttpData-PULL"}, transfer_id="t1", agreement_id="a1")
    log.append("receipt", {"bytes": 3}, transfer_id="t1")
    views = [to_view(e) for e in select(log.entries(), kinds=["receipt"])]
    assert views == [
        {
            "seq": 1,
            "time": "2026-09-21T14:13:21.000000Z",
            "kind": "receipt",
            "transferId": "t1",
            "summary": "bytes=3",
            "data": {"bytes": 3},
            "hash": views[0]["hash"],
        }
    ]
