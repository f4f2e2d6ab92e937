"""A consumer's copy leaves its vault only as the agreement says, between real processes:
distribute-only-if-encrypted (the pull works; no plain export; an envelope to a participant's
certificate that its key opens), attach-policy-for-third-party (the envelope carries the next
policy), and an n-times-usage agreement (no distribution at all, with the reason)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dataspace_testlib import Connector, DataSpace, cli, negotiate, offer_asset

from connector.devspace import process_env

pytestmark = pytest.mark.integration
CONTENT = b"id,value\n" + b"".join(f"{i},{i * 13 % 97}\n".encode() for i in range(30000))
THIRD_PARTY = "https://provider.example/policies/third-party-use"


@pytest.fixture(scope="module")
def consumer_(space: DataSpace) -> Connector:
    return space.connector("dcons", roles=("consumer",))


@pytest.fixture
def pair(
    space: DataSpace, consumer_: Connector, request: pytest.FixtureRequest
) -> tuple[Connector, Connector]:
    """A provider of its own for each test (its offers and logs apart), and the one consumer."""
    name = "p-" + re.sub(r"[^a-z0-9]", "", request.node.name.lower())[-20:]
    return space.connector(name, roles=("provider",)), consumer_


def recipient(space: DataSpace, name: str, alg: str) -> Path:
    """A third participant of the data space (certificate and key only, no connector)."""
    d = space.root / name
    cli("init", d, "--name", name, "--alg", alg)
    cli("authority", "register", space.authority.directory, d / "participant.csr", "--role", "consumer")
    return d


def run(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "connector", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env=process_env(),
    )


# The templates, and the same terms written as plain rules beside a plain `use` (which must not
# let an unencrypted copy out) and in IDS-G's form of the next policy (a TARGET_POLICY constraint).
USE = {"action": "use"}
ENCRYPTED_ONLY = [
    pytest.param({"template": "distribute-only-if-encrypted", "params": {}}, id="template"),
    pytest.param(
        {"policy": {"permission": [USE, {"action": "distribute", "duty": [{"action": "idsc:ENCRYPT"}]}]}},
        id="rules",
    ),
]
NEXT_POLICY = [
    pytest.param(
        {"template": "attach-policy-for-third-party", "params": {"nextPolicy": THIRD_PARTY}}, id="template"
    ),
    pytest.param(
        {
            "policy": {
                "permission": [
                    USE,
                    {
                        "action": "distribute",
                        "duty": [
                            {
                                "action": "nextPolicy",
                                "constraint": [
                                    {
                                        "leftOperand": "idsc:TARGET_POLICY",
                                        "operator": "eq",
                                        "rightOperand": THIRD_PARTY,
                                    }
                                ],
                            }
                        ],
                    },
                ]
            }
        },
        id="rules",
    ),
]


def pulled_item(
    consumer: Connector, provider: Connector, contract: dict[str, Any], asset: str
) -> dict[str, Any]:
    """Offer, negotiate and pull into the consumer's vault; the vault item."""
    offer = offer_asset(provider, asset_id=asset, content=CONTENT, contract=contract)
    n = negotiate(consumer, provider, offer)
    assert n["state"] == "FINALIZED", n
    r = run("pull", provider.dsp_url, n["agreementId"], "--config", consumer.config)
    assert r.returncode == 0, r.stdout + r.stderr
    status, items = consumer.api("GET", "/api/vault")
    assert status == 200, items
    return next(i for i in items if i["agreementId"] == n["agreementId"])


def distributed(consumer: Connector, agreement_id: str) -> list[dict[str, Any]]:
    status, rows = consumer.api("GET", "/api/audit?kind=vault.distributed")
    assert status == 200, rows
    return [e for e in rows if e.get("agreementId") == agreement_id]


@pytest.mark.parametrize("contract", ENCRYPTED_ONLY)
def test_distribute_only_if_encrypted(
    space: DataSpace,
    pair: tuple[Connector, Connector],
    tmp_path: Path,
    contract: dict[str, Any],
    request: pytest.FixtureRequest,
) -> None:
    provider, consumer = pair
    tag = request.node.callspec.id
    item = pulled_item(consumer, provider, contract, f"urn:asset:encrypted-only-{tag}")
    assert Path(item["path"]).read_bytes() == CONTENT  # usable: the pull worked
    # and so does a local read: the encrypt duty binds a copy that leaves, not a read
    r = run("vault", "read", item["id"], "--config", consumer.config)
    assert r.returncode == 0 and r.stdout.encode() == CONTENT, r.stderr
    # no unencrypted export
    r = run(
        "vault", "export", item["id"], "--config", consumer.config, "--plain", "--out", tmp_path / "plain.csv"
    )
    assert r.returncode == 1, r.stdout + r.stderr
    assert "403" in r.stderr and "no unencrypted export" in r.stderr, r.stderr
    assert not (tmp_path / "plain.csv").exists()
    # to a participant of the data space: its key, and only its key, opens the envelope
    for name, alg in ((f"bob-{tag}", "ES256"), (f"carol-{tag}", "EdDSA")):
        bob = recipient(space, name, alg)
        env = tmp_path / f"{name}.env"
        r = run(
            "vault",
            "export",
            item["id"],
            "--config",
            consumer.config,
            "--recipient-cert",
            bob / "participant.crt",
            "--out",
            env,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        assert "exported encrypted" in r.stdout
        assert CONTENT[:4096] not in env.read_bytes()
        r = run(
            "vault",
            "decrypt",
            env,
            "--key",
            bob / "participant.key",
            "--out",
            tmp_path / f"{name}.csv",
            "--ca",
            bob / "ca.crt",
        )
        assert r.returncode == 0, r.stdout + r.stderr
        assert (tmp_path / f"{name}.csv").read_bytes() == CONTENT
        assert item["agreementId"] in r.stdout and "no next policy attached" in r.stdout
        assert f"sent by {consumer.participant_id} (signature verified" in r.stdout, r.stdout
    # another participant's key does not
    r = run(
        "vault",
        "decrypt",
        tmp_path / f"bob-{tag}.env",
        "--key",
        consumer.directory / "participant.key",
        "--out",
        tmp_path / "stolen.csv",
    )
    assert r.returncode == 1 and "for another key" in r.stderr, r.stderr
    assert not (tmp_path / "stolen.csv").exists()
    # a certificate of another data space is no recipient
    other = DataSpace(tmp_path / "elsewhere", tls=False)
    try:
        mallory = recipient(other, "mallory", "ES256")
    finally:
        other.close()
    r = run(
        "vault",
        "export",
        item["id"],
        "--config",
        consumer.config,
        "--recipient-cert",
        mallory / "participant.crt",
        "--out",
        tmp_path / "m.env",
    )
    assert r.returncode == 1 and "not issued by this data space's CA" in r.stderr, r.stderr
    # each export in the consumer's audit log, with the recipient's fingerprint
    logged = distributed(consumer, item["agreementId"])
    assert [e["data"]["encrypted"] for e in logged] == [True, True]
    assert all(len(e["data"]["recipient"]["certificateSha256"]) == 64 for e in logged)
    _, denied = consumer.api("GET", "/api/audit?kind=vault.denied")
    reasons = [e["data"]["reason"] for e in denied if e.get("agreementId") == item["agreementId"]]
    assert any("no unencrypted export" in x for x in reasons)
    assert any("not issued by this data space's CA" in x for x in reasons)


@pytest.mark.parametrize("contract", NEXT_POLICY)
def test_attach_policy_for_third_party(
    space: DataSpace,
    pair: tuple[Connector, Connector],
    tmp_path: Path,
    contract: dict[str, Any],
    request: pytest.FixtureRequest,
) -> None:
    provider, consumer = pair
    tag = request.node.callspec.id
    item = pulled_item(consumer, provider, contract, f"urn:asset:next-policy-{tag}")
    dave = recipient(space, f"dave-{tag}", "ES256")
    r = run(
        "vault",
        "export",
        item["id"],
        "--config",
        consumer.config,
        "--recipient-cert",
        dave / "participant.crt",
        "--out",
        tmp_path / "d.env",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"next policy attached: {THIRD_PARTY}" in r.stdout and "IRI only" in r.stdout
    r = run(
        "vault", "decrypt", tmp_path / "d.env", "--key", dave / "participant.key", "--out", tmp_path / "d.csv"
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "d.csv").read_bytes() == CONTENT
    shown = r.stdout.split("next policy (the data is received under it):\n", 1)[1]
    assert json.loads(shown.split("\nnote:", 1)[0]) == {"@id": THIRD_PARTY}
    # a plain copy would leave without its policy: refused
    r = run(
        "vault",
        "export",
        item["id"],
        "--config",
        consumer.config,
        "--plain",
        "--out",
        tmp_path / "d.csv.plain",
    )
    assert r.returncode == 1 and "is violated" in r.stderr, r.stderr
    assert "the next policy travels only in an envelope" in r.stderr
    [logged] = distributed(consumer, item["agreementId"])
    assert logged["data"]["nextPolicy"] == THIRD_PARTY and logged["data"]["encrypted"] is True


def test_n_times_usage_grants_no_distribution(
    space: DataSpace, pair: tuple[Connector, Connector], tmp_path: Path
) -> None:
    provider, consumer = pair
    item = pulled_item(
        consumer, provider, {"template": "n-times-usage", "params": {"max": "5"}}, "urn:asset:counted"
    )
    erin = recipient(space, "erin", "ES256")
    r = run(
        "vault",
        "export",
        item["id"],
        "--config",
        consumer.config,
        "--recipient-cert",
        erin / "participant.crt",
        "--out",
        tmp_path / "e.env",
    )
    assert r.returncode == 1, r.stdout + r.stderr
    assert "403" in r.stderr and "distribute is not granted" in r.stderr, r.stderr
    assert not (tmp_path / "e.env").exists()
    assert distributed(consumer, item["agreementId"]) == []
    # through the management API: the same refusal, as the API's error body
    cert = (erin / "participant.crt").read_text()
    status, body = consumer.api("POST", f"/api/vault/{item['id']}/export", {"recipientCertificate": cert})
    assert status == 403 and body["error"].startswith("distribute is not granted"), body
