"""Pull transfers between real processes: DSP transfer process, the EDR, the data plane
enforcing the agreement on every request, suspend/resume/terminate by either side."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dataspace_testlib import Connector, DataSpace, negotiate, offer_asset, wait_transfer

pytestmark = pytest.mark.integration
CONTENT = b"day,temp\n" + b"".join(f"{i},{i % 30}\n".encode() for i in range(5000))


@pytest.fixture(scope="module")
def pair(space: DataSpace) -> tuple[Connector, Connector]:
    return (space.connector("tprov", roles=("provider",)), space.connector("tcons", roles=("consumer",)))


def pull(
    consumer: Connector, t: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, bytes, dict[str, str]]:
    d = consumer.directory
    from connector.http.tls import client_context

    ssl = client_context(d / "ca.crt")  # the data plane's certificate is from the data-space CA

    async def go() -> tuple[int, bytes, dict[str, str]]:
        token = t["endpointProperties"]["authorization"]
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                t["endpoint"], ssl=ssl, headers={"Authorization": f"Bearer {token}", **(headers or {})}
            ) as r,
        ):
            return r.status, await r.read(), dict(r.headers)

    return asyncio.run(go())


def start(consumer: Connector, agreement_id: str) -> dict[str, Any]:
    status, t = consumer.api("POST", "/api/transfers", {"agreementId": agreement_id})
    assert status == 201, t
    t = wait_transfer(consumer, t["id"], {"STARTED", "TERMINATED"})
    assert t["state"] == "STARTED", t
    return t


def test_pull_with_the_token_counts_every_use(pair: tuple[Connector, Connector]) -> None:
    provider, consumer = pair
    offer = offer_asset(
        provider,
        asset_id="urn:asset:t1",
        content=CONTENT,
        contract={"template": "n-times-usage", "params": {"max": "3"}},
    )
    n = negotiate(consumer, provider, offer)
    assert n["state"] == "FINALIZED", n
    t = start(consumer, n["agreementId"])
    assert t["endpoint"].endswith(f"/data/{t['providerPid']}")
    for _ in range(3):
        status, body, headers = pull(consumer, t)
        assert status == 200 and body == CONTENT, (status, body[:300])
        assert "X-Receipt-Seq" in headers
    status, body, _ = pull(consumer, t)
    assert status == 403 and b"use number 4 (3 completed)" in body
    status, body, _ = pull(consumer, t, {"Range": "bytes=0-8"})  # still the 4th use: denied
    assert status == 403


def test_range_suspend_resume_terminate(pair: tuple[Connector, Connector]) -> None:
    provider, consumer = pair
    offer = offer_asset(
        provider,
        asset_id="urn:asset:t2",
        content=CONTENT,
        contract={"template": "n-times-usage", "params": {"max": "100"}},
    )
    n = negotiate(consumer, provider, offer)
    t = start(consumer, n["agreementId"])
    status, body, _ = pull(consumer, t, {"Range": "bytes=0-8"})
    assert status == 206 and body == CONTENT[:9]
    # the provider suspends: the next request is denied, whatever the token says
    status, pt = provider.api("POST", f"/api/transfers/{t['providerPid']}/suspend", {"reason": "maintenance"})
    assert status == 200, pt
    assert wait_transfer(consumer, t["id"], {"SUSPENDED"})["state"] == "SUSPENDED"
    status, body, _ = pull(consumer, t)
    assert status == 403 and b"SUSPENDED" in body
    # the provider resumes; a consumer could not lift the provider's suspension
    status, pt = provider.api("POST", f"/api/transfers/{t['providerPid']}/resume")
    assert status == 200, pt
    t2 = wait_transfer(consumer, t["id"], {"STARTED"})
    assert t2["state"] == "STARTED"
    assert pull(consumer, t2)[0] == 200
    # the consumer terminates: the provider stops serving
    status, ct = consumer.api("POST", f"/api/transfers/{t['id']}/terminate", {"reason": "done"})
    assert status == 200, ct
    deadline = time.monotonic() + 10
    while pull(consumer, t2)[0] == 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pull(consumer, t2)[0] == 403


def test_a_transfer_needs_a_finalized_agreement_of_the_caller(pair: tuple[Connector, Connector]) -> None:
    _, consumer = pair
    status, err = consumer.api("POST", "/api/transfers", {"agreementId": "urn:uuid:not-mine"})
    assert status == 404 and "no agreement" in err["error"]


def test_a_bad_token_is_401_and_a_token_for_another_transfer_is_refused(
    pair: tuple[Connector, Connector],
) -> None:
    provider, consumer = pair
    offer = offer_asset(
        provider,
        asset_id="urn:asset:t3",
        content=CONTENT,
        contract={"template": "n-times-usage", "params": {"max": "5"}},
    )
    a = start(consumer, negotiate(consumer, provider, offer)["agreementId"])
    b = start(consumer, negotiate(consumer, provider, offer)["agreementId"])
    forged = {**a, "endpointProperties": {**a["endpointProperties"], "authorization": "x.y.z"}}
    assert pull(consumer, forged)[0] == 401
    crossed = {**a, "endpointProperties": b["endpointProperties"]}
    status, body, _ = pull(consumer, crossed)
    assert status in (401, 403), body


def test_audit_trail_of_both_parties_verifies_and_tampering_is_located(
    pair: tuple[Connector, Connector], tmp_path: Path
) -> None:
    import json
    import subprocess

    from connector.devspace import process_env

    provider, consumer = pair
    # this test's own transfer, started and suspended (tests may run apart, in other workers)
    offer = offer_asset(
        provider,
        asset_id="urn:asset:audited",
        content=CONTENT,
        contract={"template": "n-times-usage", "params": {"max": "5"}},
    )
    t = start(consumer, negotiate(consumer, provider, offer)["agreementId"])
    status, _ = provider.api("POST", f"/api/transfers/{t['providerPid']}/suspend", {"reason": "x"})
    assert status == 200
    assert wait_transfer(consumer, t["id"], {"SUSPENDED"})["state"] == "SUSPENDED"
    deadline = time.monotonic() + 10
    while True:  # entries are appended right after each commit
        status, rows = provider.api("GET", "/api/audit?kind=transfer")
        kinds = {r["kind"] for r in rows} if status == 200 else set()
        if {"transfer.started", "transfer.suspended"} <= kinds or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert status == 200 and rows
    kinds = {r["kind"] for r in rows}
    assert "transfer.started" in kinds and "transfer.suspended" in kinds
    status, rows = consumer.api("GET", "/api/audit?kind=negotiation.finalized")
    assert status == 200 and rows and all(r["kind"] == "negotiation.finalized" for r in rows)
    for c in (provider, consumer):
        log = c.directory / f"audit-{c.name}.log"
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "connector",
                "audit",
                "verify",
                str(log),
                "--cert",
                str(c.directory / "participant.crt"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=process_env(),
        )
        assert r.returncode == 0 and r.stdout.startswith("OK:"), r.stdout + r.stderr
    # a tampered copy: one entry's state rewritten
    log = provider.directory / f"audit-{provider.name}.log"
    lines = log.read_text().splitlines()
    entry = json.loads(lines[2])
    entry["data"]["state"] = "FINALIZED" if entry["data"]["state"] != "FINALIZED" else "TERMINATED"
    lines[2] = json.dumps(entry)
    copy = tmp_path / "tampered.log"
    copy.write_text("\n".join(lines) + "\n")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "connector",
            "audit",
            "verify",
            str(copy),
            "--cert",
            str(provider.directory / "participant.crt"),
            "--no-head",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=process_env(),
    )
    assert r.returncode == 1 and "line 3" in (r.stdout + r.stderr), r.stdout + r.stderr


def test_connector_pull_downloads_verifies_receipts_and_refreshes(
    pair: tuple[Connector, Connector], tmp_path: Path
) -> None:
    import subprocess

    from connector.devspace import process_env

    provider, consumer = pair
    offer = offer_asset(
        provider,
        asset_id="urn:asset:cli-pull",
        content=CONTENT,
        contract={"template": "n-times-usage", "params": {"max": "10"}},
    )
    n = negotiate(consumer, provider, offer)
    out = tmp_path / "pulled.csv"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "connector",
            "pull",
            provider.dsp_url,
            n["agreementId"],
            "--config",
            str(consumer.config),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=process_env(),
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert out.read_bytes() == CONTENT
    assert "receipts verified: 1 signed receipt(s) cover 1 response(s)" in r.stdout
    # the refresh: a new access token from the one-time refresh token, and it works
    t = start(consumer, n["agreementId"])
    status, refreshed = consumer.api("POST", f"/api/transfers/{t['id']}/refresh")
    assert status == 200, refreshed
    new = refreshed["endpointProperties"]
    assert new["authorization"] != t["endpointProperties"]["authorization"]
    assert new["refreshToken"] != t["endpointProperties"]["refreshToken"]
    assert pull(consumer, refreshed)[0] == 200


def test_delete_after_duty_deletes_the_copy_and_the_provider_gets_the_signed_notice(
    pair: tuple[Connector, Connector], tmp_path: Path
) -> None:
    import subprocess
    from datetime import UTC, datetime, timedelta

    from connector.devspace import process_env

    provider, consumer = pair
    # 10 s: negotiation and pull must fit before it, on a loaded machine too
    delete_at = (datetime.now(UTC) + timedelta(seconds=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    offer = offer_asset(
        provider,
        asset_id="urn:asset:ephemeral",
        content=CONTENT,
        contract={"template": "use-and-delete-after", "params": {"deleteAt": delete_at}},
    )
    n = negotiate(consumer, provider, offer)
    assert n["state"] == "FINALIZED", n
    out = tmp_path / "ephemeral.csv"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "connector",
            "pull",
            provider.dsp_url,
            n["agreementId"],
            "--config",
            str(consumer.config),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=process_env(),
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "delete duty" in r.stdout and out.read_bytes() == CONTENT
    deadline = time.monotonic() + 30
    notices: list = []
    while time.monotonic() < deadline and not (notices and not out.exists()):
        time.sleep(0.5)
        _, notices = provider.api("GET", "/api/audit?kind=deletion-notice")
        notices = [x for x in notices if x.get("agreementId") == n["agreementId"]]
    assert not out.exists(), "the consumer's connector did not delete the copy"
    assert notices, "the provider got no deletion notice"
    assert notices[0]["participantId"] == consumer.participant_id


def test_a_suspension_cuts_a_running_stream_off(pair: tuple[Connector, Connector], tmp_path: Path) -> None:
    provider, consumer = pair
    big = b"z" * (48 << 20)
    offer = offer_asset(
        provider,
        asset_id="urn:asset:long",
        content=big,
        contract={"template": "n-times-usage", "params": {"max": "5"}},
    )
    t = start(consumer, negotiate(consumer, provider, offer)["agreementId"])
    from connector.http.tls import client_context

    ssl = client_context(consumer.directory / "ca.crt")

    async def slow_read() -> int:
        got = 0
        headers = {"Authorization": f"Bearer {t['endpointProperties']['authorization']}"}
        async with aiohttp.ClientSession() as http, http.get(t["endpoint"], ssl=ssl, headers=headers) as r:
            assert r.status == 200
            # the provider suspends while the body is still being sent
            status, _ = await asyncio.to_thread(
                provider.api, "POST", f"/api/transfers/{t['providerPid']}/suspend", {"reason": "stop now"}
            )
            assert status == 200
            try:
                async for chunk in r.content.iter_chunked(1 << 20):
                    got += len(chunk)
                    await asyncio.sleep(0.05)  # a slow reader: the provider waits on it
            except aiohttp.ClientPayloadError:
                pass  # the cut: the body ends before its Content-Length
        return got

    got = asyncio.run(slow_read())
    assert got < len(big), "the stream ran to its end despite the suspension"
    assert any("cut off" in line for line in provider.log)


def test_expired_token_is_refreshed_by_pull_and_a_closed_window_denies(
    space: DataSpace, tmp_path: Path
) -> None:
    import subprocess
    from datetime import UTC, datetime, timedelta

    from connector.devspace import process_env

    provider = space.connector("shortprov", roles=("provider",), token_lifetime=2)
    consumer = space.connector("shortcons", roles=("consumer",))
    end = (datetime.now(UTC) + timedelta(seconds=12)).strftime("%Y-%m-%dT%H:%M:%SZ")
    start_at = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    offer = offer_asset(
        provider,
        asset_id="urn:asset:window",
        content=CONTENT,
        contract={"template": "interval-restricted", "params": {"start": start_at, "end": end}},
    )
    n = negotiate(consumer, provider, offer)
    assert n["state"] == "FINALIZED", n
    t = start(consumer, n["agreementId"])
    time.sleep(5)  # past the 2 s token lifetime and the data plane's 2 s leeway
    status, body, _ = pull(consumer, t)
    assert status == 401 and b"expired" in body, body
    # connector pull refreshes on the 401 and gets the data
    out = tmp_path / "refreshed.csv"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "connector",
            "pull",
            provider.dsp_url,
            n["agreementId"],
            "--config",
            str(consumer.config),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=process_env(),
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert out.read_bytes() == CONTENT
    # when the agreement's window closes, access stops without anyone acting
    t2 = start(consumer, n["agreementId"])
    deadline = time.monotonic() + 30
    status, body = 200, b""
    while status == 200 and time.monotonic() < deadline:
        time.sleep(1)
        _, t2 = consumer.api("POST", f"/api/transfers/{t2['id']}/refresh")  # a live token
        status, body, _ = pull(consumer, t2)
    assert status == 403 and b"dateTime" in body, body


def test_a_revoked_consumer_can_no_longer_pull(space: DataSpace) -> None:
    from dataspace_testlib import cli

    provider = space.connector("revprov", roles=("provider",))
    consumer = space.connector("revcons", roles=("consumer",))
    offer = offer_asset(
        provider,
        asset_id="urn:asset:rev",
        content=CONTENT,
        contract={"template": "n-times-usage", "params": {"max": "50"}},
    )
    t = start(consumer, negotiate(consumer, provider, offer)["agreementId"])
    assert pull(consumer, t)[0] == 200  # the token is now in the data plane's cache
    cli("authority", "revoke", space.authority.directory, consumer.participant_id)
    deadline = time.monotonic() + 15
    status = 200
    while status == 200 and time.monotonic() < deadline:
        time.sleep(0.5)
        status, body, _ = pull(consumer, t)
    assert status == 401 and b"revoked" in body, (status, body)
