"""HttpData-PUSH between real processes: the provider streams to the consumer's push endpoint
under the live policy decision, with receipts both sides log; SSRF refusal; a consumer's
suspension cuts the push off and its resume pushes again."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dataspace_testlib import Connector, DataSpace, negotiate, offer_asset
from test_transfer_e2e import wait_transfer

from connector.devspace import free_port, process_env

pytestmark = pytest.mark.integration
CONTENT = b"ts,reading\n" + b"".join(f"{i},{i * 13 % 997}\n".encode() for i in range(50000))


def request_push(consumer: Connector, agreement_id: str, **extra: Any) -> dict[str, Any]:
    status, t = consumer.api(
        "POST", "/api/transfers", {"agreementId": agreement_id, "format": "HttpData-PUSH", **extra}
    )
    assert status == 201, t
    return t


def vault_item(consumer: Connector, agreement_id: str) -> dict[str, Any] | None:
    status, items = consumer.api("GET", "/api/vault")
    assert status == 200, items
    return next((i for i in items if i["agreementId"] == agreement_id), None)


def test_push_delivers_into_the_vault_with_receipts_both_logs_hold(space: DataSpace) -> None:
    provider = space.connector("pushprov", roles=("provider",))
    consumer = space.connector("pushcons", roles=("consumer",))
    offer = offer_asset(
        provider,
        asset_id="urn:asset:pushed",
        content=CONTENT,
        contract={"template": "n-times-usage", "params": {"max": "1"}},
    )
    n = negotiate(consumer, provider, offer)
    assert n["state"] == "FINALIZED", n
    t = request_push(consumer, n["agreementId"])
    done = wait_transfer(consumer, t["id"], {"COMPLETED", "TERMINATED"}, timeout=30)
    assert done["state"] == "COMPLETED", done
    item = vault_item(consumer, n["agreementId"])
    assert item is not None and Path(item["path"]).read_bytes() == CONTENT
    status, pt = provider.api("GET", f"/api/transfers/{done['providerPid']}")
    assert status == 200 and pt["state"] == "COMPLETED", pt
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "connector",
            "audit",
            "verify",
            consumer.directory / f"audit-{consumer.name}.log",
            "--cert",
            consumer.directory / "participant.crt",
            "--peer-receipts",
            provider.directory / f"audit-{provider.name}.log",
            "--peer-cert",
            provider.directory / "participant.crt",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=process_env(),
    )
    assert r.returncode == 0 and "OK: 1 provider receipts match" in r.stdout, r.stdout + r.stderr
    # the agreement's single use is spent: a second push is refused with the engine's reason
    t2 = request_push(consumer, n["agreementId"])
    refused = wait_transfer(consumer, t2["id"], {"COMPLETED", "TERMINATED"}, timeout=30)
    assert refused["state"] == "TERMINATED", refused
    assert "use number 2 (1 completed)" in " ".join(refused["terminationReason"] or []), refused


def test_push_to_a_private_address_is_refused_unless_allowed(space: DataSpace) -> None:
    provider = space.connector("strictprov", roles=("provider",), push_allow=False)
    consumer = space.connector("strictcons", roles=("consumer",))
    offer = offer_asset(
        provider,
        asset_id="urn:asset:guarded",
        content=CONTENT,
        contract={"template": "allow-usage", "params": {}},
    )
    n = negotiate(consumer, provider, offer)
    t = request_push(consumer, n["agreementId"])
    done = wait_transfer(consumer, t["id"], {"COMPLETED", "TERMINATED"}, timeout=30)
    assert done["state"] == "TERMINATED", done
    reason = " ".join(done["terminationReason"] or [])
    assert "destination refused" in reason and "loopback" in reason, reason
    assert vault_item(consumer, n["agreementId"]) is None


class SlowUpstream:
    """The provider's internal API: serves CONTENT in 40 pieces, 50 ms apart (2 s a body)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requests = 0
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._started.wait(10)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        response = web.StreamResponse(
            headers={"Content-Type": "text/csv", "Content-Length": str(len(CONTENT))}
        )
        await response.prepare(request)
        step = len(CONTENT) // 40 + 1
        for i in range(0, len(CONTENT), step):
            await response.write(CONTENT[i : i + step])
            await asyncio.sleep(0.05)
        await response.write_eof()
        return response

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_get("/readings", self._handle)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._started.set()
        self._loop.run_forever()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)


def test_a_consumer_suspension_cuts_the_push_off_and_its_resume_pushes_again(space: DataSpace) -> None:
    upstream = SlowUpstream()
    try:
        provider = space.connector("slowprov", roles=("provider",), upstream_allow=("127.0.0.1",))
        consumer = space.connector("slowcons", roles=("consumer",))
        status, _ = provider.api(
            "POST",
            "/api/assets",
            {
                "id": "urn:asset:slow",
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
            {"assetIds": ["urn:asset:slow"], "accessPolicyId": acc["id"], "contractPolicyId": con["id"]},
        )
        n = negotiate(consumer, provider, f"{off['id']}:urn:asset:slow")
        assert n["state"] == "FINALIZED", n
        t = request_push(consumer, n["agreementId"])
        assert wait_transfer(consumer, t["id"], {"STARTED", "TERMINATED"})["state"] == "STARTED"
        deadline = time.monotonic() + 10
        while upstream.requests == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.4)  # the push is under way
        status, st = consumer.api("POST", f"/api/transfers/{t['id']}/suspend", {"reason": "pause"})
        assert status == 200, st
        pt = wait_transfer(
            provider,
            t["providerPid"]
            if t.get("providerPid")
            else wait_transfer(consumer, t["id"], {"SUSPENDED"})["providerPid"],
            {"SUSPENDED"},
        )
        assert pt["state"] == "SUSPENDED", pt
        time.sleep(2.5)  # the cut-off push would have ended by now
        assert vault_item(consumer, n["agreementId"]) is None  # nothing half-delivered was kept
        status, rt = consumer.api("POST", f"/api/transfers/{t['id']}/resume")
        assert status == 200, rt
        done = wait_transfer(consumer, t["id"], {"COMPLETED", "TERMINATED"}, timeout=30)
        assert done["state"] == "COMPLETED", done
        assert upstream.requests == 2
        item = vault_item(consumer, n["agreementId"])
        assert item is not None and Path(item["path"]).read_bytes() == CONTENT
        # the consumer logged the provider's claim of the response that broke off
        status, rows = consumer.api("GET", "/api/audit?kind=receipt")
        mine = [r for r in rows if r.get("agreementId") == n["agreementId"]]
        assert any(r["data"].get("unreceived") == [1] for r in mine), mine
    finally:
        upstream.stop()


def cli_run(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "connector", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env=process_env(),
    )


def test_push_from_the_cli_states_the_purpose_and_either_side_ends_transfers(space: DataSpace) -> None:
    from test_transfer_e2e import pull, start

    provider = space.connector("cliprov", roles=("provider",))
    consumer = space.connector("clicons", roles=("consumer",))
    purpose = "https://w3id.org/dpv#AcademicResearch"
    offer = offer_asset(
        provider,
        asset_id="urn:asset:purposeful",
        content=CONTENT,
        contract={"template": "purpose-restricted", "params": {"purpose": purpose}},
    )
    n = negotiate(consumer, provider, offer)
    assert n["state"] == "FINALIZED", n
    r = cli_run("transfer", "push", n["agreementId"], "--config", consumer.config)
    assert r.returncode == 1 and "TERMINATED" in r.stdout and "purpose" in r.stdout, r.stdout + r.stderr
    r = cli_run("transfer", "push", n["agreementId"], "--config", consumer.config, "--purpose", purpose)
    assert r.returncode == 0 and "COMPLETED" in r.stdout and "vault item" in r.stdout, r.stdout + r.stderr
    # the provider terminates a pull from its CLI: the consumer's token stops working
    t = start(consumer, n["agreementId"])
    assert pull(consumer, t, {"X-Purpose": purpose})[0] == 200
    r = cli_run(
        "transfer", "terminate", t["providerPid"], "--config", provider.config, "--reason", "contract ended"
    )
    assert r.returncode == 0 and r.stdout.startswith("TERMINAT"), r.stdout + r.stderr
    assert pull(consumer, t, {"X-Purpose": purpose})[0] == 403
    assert wait_transfer(consumer, t["id"], {"TERMINATED"})["terminationReason"] == ["contract ended"]
