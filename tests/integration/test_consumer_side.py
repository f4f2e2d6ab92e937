"""The consumer's side between real processes: pulls run by its connector with receipts in both
audit logs and cross-checked; purpose bound at the data plane; governed local use of the vault
copy (local use limit, every use logged, the provider informed of each use)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dataspace_testlib import Connector, DataSpace, negotiate, offer_asset
from test_transfer_e2e import pull, start

from connector.devspace import process_env

pytestmark = pytest.mark.integration
CONTENT = b"id,value\n" + b"".join(f"{i},{i * 7 % 101}\n".encode() for i in range(20000))
PURPOSE = "https://w3id.org/dpv#AcademicResearch"


def connector_cli(*args: object, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "connector", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=process_env(),
    )


def audit_kinds(c: Connector, kind: str) -> list[dict[str, Any]]:
    status, rows = c.api("GET", f"/api/audit?kind={kind}")
    assert status == 200, rows
    return rows


def verify_receipts(consumer: Connector, provider: Connector) -> subprocess.CompletedProcess[str]:
    return connector_cli(
        "audit",
        "verify",
        consumer.directory / f"audit-{consumer.name}.log",
        "--cert",
        consumer.directory / "participant.crt",
        "--peer-receipts",
        provider.directory / f"audit-{provider.name}.log",
        "--peer-cert",
        provider.directory / "participant.crt",
    )


def test_pull_receipts_are_in_both_logs_and_cross_check(space: DataSpace, tmp_path: Path) -> None:
    provider = space.connector("rprov", roles=("provider",))
    consumer = space.connector("rcons", roles=("consumer",))
    offer = offer_asset(
        provider,
        asset_id="urn:asset:receipted",
        content=CONTENT,
        contract={"template": "n-times-usage", "params": {"max": "5"}},
    )
    n = negotiate(consumer, provider, offer)
    assert n["state"] == "FINALIZED", n
    for i in range(2):
        out = tmp_path / f"copy{i}.csv"
        r = connector_cli(
            "pull", provider.dsp_url, n["agreementId"], "--config", consumer.config, "--out", out
        )
        assert r.returncode == 0, r.stdout + r.stderr
        assert out.read_bytes() == CONTENT
        assert "receipts verified: 1 signed receipt(s) cover 1 response(s)" in r.stdout, r.stdout
    assert len(audit_kinds(consumer, "receipt")) == 2
    assert len(audit_kinds(provider, "receipt")) == 2
    r = verify_receipts(consumer, provider)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK: 2 provider receipts match the consumer's log" in r.stdout
    # a response the consumer's connector never saw (the token used behind its back): the
    # provider's receipt for it is in no consumer record, and the cross-check says so
    t = start(consumer, n["agreementId"])
    assert pull(consumer, t)[0] == 200
    deadline = time.monotonic() + 10
    while len(audit_kinds(provider, "receipt")) < 3 and time.monotonic() < deadline:
        time.sleep(0.3)
    r = verify_receipts(consumer, provider)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "the provider issued a receipt the consumer did not log" in r.stdout, r.stdout


def test_purpose_is_decided_at_the_data_plane(space: DataSpace, tmp_path: Path) -> None:
    provider = space.connector("pprov", roles=("provider",))
    consumer = space.connector("pcons", roles=("consumer",))
    offer = offer_asset(
        provider,
        asset_id="urn:asset:research",
        content=CONTENT,
        contract={"template": "purpose-restricted", "params": {"purpose": PURPOSE}},
    )
    n = negotiate(consumer, provider, offer)
    assert n["state"] == "FINALIZED", n
    t = start(consumer, n["agreementId"])
    status, body, _ = pull(consumer, t, {"X-Purpose": "https://w3id.org/dpv#Marketing"})
    assert status == 403 and b"purpose" in body, body
    status, body, _ = pull(consumer, t)  # no purpose stated: denied too
    assert status == 403 and b"purpose" in body, body
    status, body, _ = pull(consumer, t, {"X-Purpose": PURPOSE})
    assert status == 200 and body == CONTENT
    r = connector_cli(
        "pull",
        provider.dsp_url,
        n["agreementId"],
        "--config",
        consumer.config,
        "--out",
        tmp_path / "wrong.csv",
        "--purpose",
        "https://w3id.org/dpv#Marketing",
    )
    assert r.returncode == 1 and "403" in r.stderr and "purpose" in r.stderr, r.stdout + r.stderr
    assert not (tmp_path / "wrong.csv").exists()
    r = connector_cli(
        "pull",
        provider.dsp_url,
        n["agreementId"],
        "--config",
        consumer.config,
        "--out",
        tmp_path / "right.csv",
        "--purpose",
        PURPOSE,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "right.csv").read_bytes() == CONTENT


def test_local_use_is_governed_logged_and_reported_to_the_provider(space: DataSpace) -> None:
    provider = space.connector("lprov", roles=("provider",))
    consumer = space.connector("lcons", roles=("consumer",))
    policy = {
        "policy": {
            "permission": [
                {
                    "action": "use",
                    "constraint": [{"leftOperand": "count", "operator": "lteq", "rightOperand": 3}],
                    "duty": [
                        {"action": "inform", "informedParty": {"@id": provider.dsp_url}},
                        {"action": "idsc:LOG"},
                    ],
                }
            ]
        }
    }
    offer = offer_asset(provider, asset_id="urn:asset:local", content=CONTENT, contract=policy)
    n = negotiate(consumer, provider, offer)
    assert n["state"] == "FINALIZED", n
    # into the vault (no --out): the connector keeps the copy
    r = connector_cli("pull", provider.dsp_url, n["agreementId"], "--config", consumer.config)
    assert r.returncode == 0, r.stdout + r.stderr
    status, items = consumer.api("GET", "/api/vault")
    assert status == 200
    item = next(i for i in items if i["agreementId"] == n["agreementId"])
    assert item["uses"] == 0 and Path(item["path"]).read_bytes() == CONTENT
    # one limit for the agreement: the pull was use 1, so two local reads are left
    for number in (1, 2):
        r = connector_cli("vault", "read", item["id"], "--config", consumer.config)
        assert r.returncode == 0, r.stderr
        assert r.stdout.encode() == CONTENT and f"local use {number} of" in r.stderr
    r = connector_cli("vault", "read", item["id"], "--config", consumer.config)
    assert r.returncode == 1 and "403" in r.stderr and "use number 4 (3 completed)" in r.stderr, r.stderr
    # every use in the consumer's log; every use reported to the provider with a signed notice,
    # and counted there on the agreement's one counter (the pull was its first use)
    used = [e for e in audit_kinds(consumer, "vault.used") if e.get("agreementId") == n["agreementId"]]
    assert [e["data"]["use"] for e in used] == [1, 2]
    assert [e["data"]["agreementUse"] for e in used] == [2, 3]
    notices = [e for e in audit_kinds(provider, "use-notice") if e.get("agreementId") == n["agreementId"]]
    assert [e["data"]["useNumber"] for e in notices] == [1, 2]
    assert [e["data"]["agreementUse"] for e in notices] == [2, 3]
    assert all(e["participantId"] == consumer.participant_id for e in notices)
    status, shown = consumer.api("GET", f"/api/vault/{item['id']}")
    assert status == 200 and shown["uses"] == 2
    # the limit holds for pulls too: a second pull under the agreement is denied
    r = connector_cli("pull", provider.dsp_url, n["agreementId"], "--config", consumer.config)
    assert r.returncode == 1 and "use number 4 (3 completed)" in r.stderr, r.stdout + r.stderr


def test_no_use_notice_no_local_use(space: DataSpace) -> None:
    provider = space.connector("nprov", roles=("provider",))
    consumer = space.connector("ncons", roles=("consumer",))
    offer = offer_asset(
        provider,
        asset_id="urn:asset:informed",
        content=CONTENT,
        contract={"template": "remote-notification", "params": {"informedParty": provider.dsp_url}},
    )
    n = negotiate(consumer, provider, offer)
    assert n["state"] == "FINALIZED", n
    r = connector_cli("pull", provider.dsp_url, n["agreementId"], "--config", consumer.config)
    assert r.returncode == 0, r.stdout + r.stderr
    item = next(i for i in consumer.api("GET", "/api/vault")[1] if i["agreementId"] == n["agreementId"])
    r = connector_cli("vault", "read", item["id"], "--config", consumer.config)
    assert r.returncode == 0 and r.stdout.encode() == CONTENT, r.stderr
    provider.stop()  # the provider is unreachable: the duty cannot be fulfilled, so no use
    r = connector_cli("vault", "read", item["id"], "--config", consumer.config)
    assert r.returncode == 1 and "could not be delivered" in r.stderr, r.stderr
    status, shown = consumer.api("GET", f"/api/vault/{item['id']}")
    assert status == 200 and shown["uses"] == 1
    denied = [e for e in audit_kinds(consumer, "vault.denied") if e.get("agreementId") == n["agreementId"]]
    assert denied and "not delivered" in json.dumps(denied[-1]["data"])


def test_a_pull_cut_off_mid_stream_and_pulled_again(space: DataSpace, tmp_path: Path) -> None:
    """The provider suspends while the consumer's connector pulls: the pull fails saying so, and
    nothing half-received is kept. After the resume the next pull is proven by its receipts, and
    the broken response's receipt (signed at once, alone) is proven too."""
    from test_push_e2e import CONTENT as SLOW_CONTENT
    from test_push_e2e import SlowUpstream

    upstream = SlowUpstream()
    try:
        provider = space.connector("cutprov", roles=("provider",), upstream_allow=("127.0.0.1",))
        consumer = space.connector("cutcons", roles=("consumer",))
        status, _ = provider.api(
            "POST",
            "/api/assets",
            {
                "id": "urn:asset:slowpull",
                "title": "slow readings",
                "dataAddress": {"type": "http", "url": f"http://127.0.0.1:{upstream.port}/readings"},
            },
        )
        assert status == 201
        _, acc = provider.api("POST", "/api/policies", {"template": "allow-usage", "params": {}})
        _, con = provider.api("POST", "/api/policies", {"template": "n-times-usage", "params": {"max": "5"}})
        _, off = provider.api(
            "POST",
            "/api/offers",
            {"assetIds": ["urn:asset:slowpull"], "accessPolicyId": acc["id"], "contractPolicyId": con["id"]},
        )
        n = negotiate(consumer, provider, f"{off['id']}:urn:asset:slowpull")
        t = start(consumer, n["agreementId"])
        out = tmp_path / "slow.csv"
        status, job = consumer.api(
            "POST", f"/api/transfers/{t['id']}/pull", {"out": str(out), "complete": False}
        )
        assert status == 202, job
        deadline = time.monotonic() + 10
        while job["bytes"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
            _, job = consumer.api("GET", f"/api/transfers/{t['id']}/pull")
        status, _ = provider.api(
            "POST", f"/api/transfers/{t['providerPid']}/suspend", {"reason": "maintenance"}
        )
        assert status == 200
        _, job = consumer.api("GET", f"/api/transfers/{t['id']}/pull?wait=20")
        assert job["state"] == "failed" and "stopped after" in job["error"], job
        assert not out.exists() and not list(tmp_path.glob("*.part"))
        status, _ = provider.api("POST", f"/api/transfers/{t['providerPid']}/resume")
        assert status == 200
        from test_transfer_e2e import wait_transfer

        assert wait_transfer(consumer, t["id"], {"STARTED"})["state"] == "STARTED"
        status, job = consumer.api("POST", f"/api/transfers/{t['id']}/pull", {"out": str(out)})
        assert status == 202, job
        _, job = consumer.api("GET", f"/api/transfers/{t['id']}/pull?wait=30")
        assert job["state"] == "done", job
        assert out.read_bytes() == SLOW_CONTENT
        # the cut-off response was receipted on its own, with the bytes that left; the consumer
        # recorded those same bytes, so both pulls are proven and the two logs agree
        logged = [e for e in audit_kinds(consumer, "receipt") if e.get("transferId") == t["id"]]
        sizes = [r[1] for e in logged for r in e["data"]["responses"]]
        assert len(logged) == 2 and 0 < sizes[0] < len(SLOW_CONTENT) and sizes[1] == len(SLOW_CONTENT)
        assert not any(e["data"].get("unproven") for e in logged)
        r = verify_receipts(consumer, provider)
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        upstream.stop()


def test_a_consumer_pulls_from_no_private_address_it_has_not_allowed(
    space: DataSpace, tmp_path: Path
) -> None:
    provider = space.connector("ssrfprov", roles=("provider",))
    consumer = space.connector("ssrfcons", roles=("consumer",), pull_allow=False)
    offer = offer_asset(
        provider,
        asset_id="urn:asset:elsewhere",
        content=CONTENT,
        contract={"template": "allow-usage", "params": {}},
    )
    n = negotiate(consumer, provider, offer)
    r = connector_cli(
        "pull", provider.dsp_url, n["agreementId"], "--config", consumer.config, "--out", tmp_path / "x.csv"
    )
    assert r.returncode == 1 and "refused" in r.stderr and "loopback" in r.stderr, r.stderr
    assert not (tmp_path / "x.csv").exists()
