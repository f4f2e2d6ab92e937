"""A full disk under real connector processes: the store, the audit log and the vault each on a
small tmpfs of their own, filled while the processes run.

Every request that must write answers 503 with a reason and a ``Retry-After`` (the management
API, the data plane, DSP with the DSP error body of its area); no byte of data leaves while a
use cannot be counted or a receipt cannot be logged; a pull into a full vault fails saying why
and leaves nothing; no process crashes. Once space is freed the same requests succeed, with no
restart. (A read-only remount at run time cannot be made here: the kernel refuses to remount a
file system read-only while the store holds files open on it for writing; the read-only faults
are produced in the drivers in test_storage_store.py, and at start-up in test_storage_startup.py.)
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from storage_testlib import fill, free, tmpfs

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dataspace_testlib import Connector, DataSpace, cli, negotiate, offer_asset
from dsp_schema import assert_valid

from connector.audit import RECEIPT_KIND, read_entries, verify_file
from connector.identity.client import DatClient, ParticipantIdentity

pytestmark = pytest.mark.integration
NO_SPACE = "no space left on the device"
CONTENT = b"station,reading\n" + b"".join(f"{i},{i % 97}\n".encode() for i in range(3000))


@dataclass
class Space:
    ds: DataSpace
    provider: Connector
    consumer: Connector
    store_disk: Path  # the provider's store
    audit_disk: Path  # the provider's audit log
    vault_disk: Path  # the consumer's vault
    dat: str  # a third participant's DAT, for DSP calls made by hand


def _with_audit_log(c: Connector, path: Path) -> None:
    lines = [
        f'audit_log = "{path}"' if line.startswith("audit_log =") else line
        for line in c.config.read_text().splitlines()
    ]
    c.config.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def space(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Space]:
    root = tmp_path_factory.mktemp("storage")
    with tmpfs(root / "store-disk") as store_disk, tmpfs(root / "audit-disk") as audit_disk:
        ds = DataSpace(root, tls=False)
        try:
            provider = ds.connector(
                "fprov", roles=("provider",), store=f"sqlite:///{store_disk / 'provider.db'}", start=False
            )
            _with_audit_log(provider, audit_disk / "provider-audit.log")
            provider.start()
            consumer = ds.connector("fcons", roles=("consumer",), start=False)
            with tmpfs(consumer.directory / "vault") as vault_disk:
                consumer.start()
                cli("init", root / "examiner", "--name", "Examiner")
                cli("authority", "register", ds.authority.directory, root / "examiner" / "participant.csr")
                yield Space(
                    ds,
                    provider,
                    consumer,
                    store_disk,
                    audit_disk,
                    vault_disk,
                    asyncio.run(_dat(ds, root / "examiner")),
                )
                for c in (provider, consumer):
                    assert c.proc is not None and c.proc.poll() is None, f"{c.name} crashed"
                    assert not any("Traceback" in line for line in c.log), "\n".join(c.log[-40:])
                ds.close()  # before the vault is unmounted: the consumer holds it
        finally:
            ds.close()


async def _dat(ds: DataSpace, directory: Path) -> str:
    async with aiohttp.ClientSession() as http:
        client = await DatClient.discover(http, ds.authority.url, ParticipantIdentity.load(directory))
        return await client.token()


def http(method: str, url: str, *, token: str, body: Any = None) -> tuple[int, bytes, dict[str, str]]:
    async def go() -> tuple[int, bytes, dict[str, str]]:
        async with (
            aiohttp.ClientSession() as s,
            s.request(method, url, json=body, headers={"Authorization": f"Bearer {token}"}) as r,
        ):
            return r.status, await r.read(), dict(r.headers)

    return asyncio.run(go())


def pull(t: dict[str, Any]) -> tuple[int, bytes, dict[str, str]]:
    return http("GET", t["endpoint"], token=t["endpointProperties"]["authorization"])


def agreed_transfer(space: Space, asset_id: str, uses: int = 100) -> dict[str, Any]:
    """A STARTED pull transfer of a fresh asset under an agreement of `uses` counted uses."""
    offer = offer_asset(
        space.provider,
        asset_id=asset_id,
        content=CONTENT,
        contract={"template": "n-times-usage", "params": {"max": str(uses)}},
    )
    n = negotiate(space.consumer, space.provider, offer)
    assert n["state"] == "FINALIZED", n
    status, t = space.consumer.api("POST", "/api/transfers", {"agreementId": n["agreementId"]})
    assert status == 201, t
    deadline = time.monotonic() + 20
    while t["state"] != "STARTED" and time.monotonic() < deadline:
        time.sleep(0.05)
        _, t = space.consumer.api("GET", f"/api/transfers/{t['id']}")
    assert t["state"] == "STARTED", t
    return t


def contract_request(space: Space, consumer_pid: str) -> dict[str, Any]:
    """A DSP contract request for an offer the provider's catalog shows this participant."""
    status, raw, _ = http(
        "POST",
        f"{space.provider.dsp_url}/catalog/request",
        token=space.dat,
        body={
            "@context": ["https://w3id.org/dspace/2025/1/context.jsonld"],
            "@type": "CatalogRequestMessage",
        },
    )
    assert status == 200, raw
    dataset = json.loads(raw)["dataset"][0]
    return {
        "@context": ["https://w3id.org/dspace/2025/1/context.jsonld"],
        "@type": "ContractRequestMessage",
        "consumerPid": consumer_pid,
        "offer": {**dataset["hasPolicy"][0], "target": dataset["@id"]},
        "callbackAddress": space.consumer.dsp_url,
    }


def assert_unavailable(status: int, headers: dict[str, str], reason: str, why: str) -> None:
    assert status == 503, (status, reason)
    assert int(headers["Retry-After"]) > 0
    assert "storage unavailable" in reason and why in reason, reason


def test_full_store_answers_503_everywhere_then_recovers(space: Space) -> None:
    provider = space.provider
    t = agreed_transfer(space, "urn:asset:storage-full")  # not pulled yet: no uses reserved
    request = contract_request(space, "urn:uuid:storage-full-1")
    fill(space.store_disk)
    try:
        # the management API
        status, body = provider.api("POST", "/api/policies", {"template": "allow-usage", "params": {}})
        assert status == 503 and "SQLITE_FULL" in body["error"], body
        status, body = provider.api("GET", "/api/assets")  # reads go on
        assert status == 200, body
        # the data plane: the use cannot be counted, so no byte of data leaves
        status, raw, headers = pull(t)
        assert_unavailable(status, headers, json.loads(raw)["error"], "SQLITE_FULL")
        assert CONTENT[:20] not in raw
        # DSP: the DSP error body of the area
        status, raw, headers = http(
            "POST", f"{provider.dsp_url}/negotiations/request", token=space.dat, body=request
        )
        error = json.loads(raw)
        assert_unavailable(status, headers, " ".join(error["reason"]), "SQLITE_FULL")
        assert_valid(error, "contract-negotiation-error-schema")
    finally:
        free(space.store_disk)
    # the same requests, no restart
    status, body = provider.api("POST", "/api/policies", {"template": "allow-usage", "params": {}})
    assert status == 201, body
    status, raw, _ = pull(t)
    assert (status, raw) == (200, CONTENT)
    status, raw, _ = http("POST", f"{provider.dsp_url}/negotiations/request", token=space.dat, body=request)
    assert status == 201, raw


def test_no_data_leaves_while_a_receipt_cannot_be_logged(space: Space) -> None:
    provider = space.provider
    t = agreed_transfer(space, "urn:asset:audit-full")
    assert pull(t)[0] == 200
    fill(space.audit_disk)
    try:
        # the receipts of these pulls reach the log's last partial block, then none fits
        refused: tuple[int, bytes, dict[str, str]] | None = None
        for _ in range(60):
            status, raw, headers = pull(t)
            if status != 200:
                refused = (status, raw, headers)
                break
            time.sleep(0.1)  # a receipt is signed within a second of its response
        assert refused is not None, "the data plane kept serving with an audit log that is full"
        assert_unavailable(refused[0], refused[2], json.loads(refused[1])["error"], NO_SPACE)
        status, raw, headers = pull(t)  # and again: still nothing
        assert_unavailable(status, headers, json.loads(raw)["error"], NO_SPACE)
    finally:
        free(space.audit_disk)
    status, raw, _ = pull(t)
    assert (status, raw) == (200, CONTENT)
    # every receipt the data plane handed out is in the provider's audit log, chain unbroken
    status, raw, _ = http("GET", f"{t['endpoint']}/receipts", token=t["endpointProperties"]["authorization"])
    assert status == 200, raw
    handed_out = set(json.loads(raw)["receipts"])
    log_path = space.audit_disk / "provider-audit.log"
    logged = {e.data["token"] for e in read_entries(log_path) if e.kind == RECEIPT_KIND}
    assert handed_out and handed_out <= logged
    key = ParticipantIdentity.load(provider.directory).certificate.public_key()
    assert verify_file(log_path, key).ok  # type: ignore[arg-type]


def test_a_pull_into_a_full_vault_fails_saying_why_and_keeps_nothing(space: Space) -> None:
    consumer = space.consumer
    t = agreed_transfer(space, "urn:asset:vault-full")
    fill(space.vault_disk)
    try:
        status, job = consumer.api("POST", f"/api/transfers/{t['id']}/pull", {})
        assert status == 202, job
        _, job = consumer.api("GET", f"/api/transfers/{t['id']}/pull?wait=20")
        assert job["state"] == "failed", job
        assert f"the vault: {NO_SPACE}" in job["error"], job
        assert job["vaultId"] is None
        left = [p for p in space.vault_disk.rglob("*") if p.is_file() and p.name != ".filler"]
        assert left == []  # no partial copy
        status, items = consumer.api("GET", "/api/vault")
        assert status == 200 and not [i for i in items if i.get("transferId") == t["id"]]
    finally:
        free(space.vault_disk)
    status, job = consumer.api("POST", f"/api/transfers/{t['id']}/pull", {})
    assert status == 202, job
    _, job = consumer.api("GET", f"/api/transfers/{t['id']}/pull?wait=20")
    assert job["state"] == "done" and job["vaultId"], json.dumps(job)
    assert Path(job["path"]).read_bytes() == CONTENT
