"""Authority + provider + consumer as real processes: the authority attests jurisdictions and
groups in DATs; a change made through its admin API makes the provider refuse the consumer's
older DAT within the revocation poll interval (2 s here), while the consumer's connector carries
on with a fresh one; the transfer token carries the consumer's attested snapshot; both audit
trails record both jurisdictions, and `connector audit export-report` lists the cross-border
transfer (CSV and JSON)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dataspace_testlib import (
    Connector,
    DataSpace,
    admin,
    fresh_dat,
    negotiate,
    offer_asset,
    wait_transfer,
)

from connector.devspace import process_env
from connector.http.tls import client_context
from connector.identity import jose
from connector.identity.participants import participant_iri

pytestmark = pytest.mark.integration


def catalog_with(c: Connector, provider: Connector, dat: str) -> tuple[int, Any]:
    """POST /catalog/request to the provider with ``dat``, over mutual TLS as ``c``."""
    d = c.directory
    ssl = client_context(d / "ca.crt", d / "tls.crt", d / "tls.key")

    async def go() -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                provider.dsp_url + "/catalog/request",
                ssl=ssl,
                json={
                    "@context": ["https://w3id.org/dspace/2025/1/context.jsonld"],
                    "@type": "CatalogRequestMessage",
                },
                headers={"Authorization": f"Bearer {dat}"},
            ) as r,
        ):
            return r.status, await r.json(content_type=None)

    return asyncio.run(go())


def export_report(c: Connector, fmt: str, *extra: str) -> str:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "connector",
            "audit",
            "export-report",
            "--config",
            str(c.config),
            "--format",
            fmt,
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=process_env(),
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_attested_jurisdictions_changes_and_the_export_report(space: DataSpace) -> None:
    provider = space.connector("xprov", roles=("provider",), start=False)
    consumer = space.connector("xcons", roles=("consumer",), start=False)
    # the operator attests jurisdictions and a group through the admin API
    assert admin(space, "POST", "/admin/groups", {"name": "partners"})[0] == 201
    status, view = admin(
        space, "POST", "/admin/groups/partners/members", {"participant_id": consumer.participant_id}
    )
    assert status == 200, view
    status, view = admin(
        space,
        "PATCH",
        f"/admin/participants/{provider.participant_id}/attributes",
        {"jurisdiction": {"country": "CN", "subdivision": "CN-SH"}},
    )
    assert status == 200, view
    status, view = admin(
        space,
        "PATCH",
        f"/admin/participants/{consumer.participant_id}/attributes",
        {"jurisdiction": {"country": "DE"}, "certifications": ["urn:assessment:2026-001"]},
    )
    assert status == 200, view
    status, view = admin(
        space,
        "PATCH",
        f"/admin/participants/{consumer.participant_id}/attributes",
        {"jurisdiction": {"country": "XX"}},
    )
    assert status == 400 and "ISO 3166-1" in view["error_description"]
    provider.start()
    consumer.start()

    # the DAT carries them
    old_dat = fresh_dat(space, consumer)
    claims = jose.unverified_payload(old_dat, "DAT")
    assert claims["jurisdiction"] == {"country": "DE"}
    assert claims["groups"] == ["partners"]
    assert claims["certifications"] == ["urn:assessment:2026-001"]
    assert claims["participantIri"] == participant_iri(consumer.participant_id)

    # a cross-border pull: the transfer token carries the consumer's attested snapshot
    offer = offer_asset(provider, asset_id="urn:asset:x1", contract={"template": "allow-usage", "params": {}})
    n = negotiate(consumer, provider, offer)
    assert n["state"] == "FINALIZED", (n, provider.log[-20:])
    status, t = consumer.api("POST", "/api/transfers", {"agreementId": n["agreementId"]})
    assert status == 201, t
    t = wait_transfer(consumer, t["id"], {"STARTED", "TERMINATED"})
    assert t["state"] == "STARTED", t
    access = jose.unverified_payload(t["endpointProperties"]["authorization"], "transfer token")
    assert access["attested"]["jurisdiction"] == {"country": "DE"}
    assert access["attested"]["groups"] == ["partners"]
    assert "scopes" not in access["attested"] and isinstance(access["attestedAt"], int)

    # the catalog decides access policies on the attested facts (dsf:group, dsf:jurisdiction)
    offer_asset(
        provider,
        asset_id="urn:asset:partners",
        contract={"template": "allow-usage"},
        access={"template": "group-restricted", "params": {"group": "urn:group:partners"}},
    )
    offer_asset(
        provider,
        asset_id="urn:asset:cn-only",
        contract={"template": "allow-usage"},
        access={"template": "jurisdiction-restricted", "params": {"jurisdiction": "urn:jurisdiction:CN"}},
    )
    status, cat = consumer.api("POST", "/api/catalog", {"peerUrl": provider.dsp_url})
    assert status == 200, cat
    shown = {d["id"] for d in cat["datasets"]}
    assert "urn:asset:partners" in shown and "urn:asset:cn-only" not in shown, shown

    # the old DAT works until the jurisdiction changes at the authority ...
    assert catalog_with(consumer, provider, old_dat)[0] == 200
    status, view = admin(
        space,
        "PATCH",
        f"/admin/participants/{consumer.participant_id}/attributes",
        {"jurisdiction": {"country": "FR"}},
    )
    assert status == 200 and view["attributes_changed_at"], view
    # ... then the provider refuses it once its revocation poll (2 s) comes round
    deadline = time.monotonic() + 30
    while True:
        status, body = catalog_with(consumer, provider, old_dat)
        if status != 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert status == 401, body
    assert "a fresh token is needed" in json.dumps(body)
    # the consumer's connector fetches a fresh DAT by itself: DSP calls keep working
    status, cat = consumer.api("POST", "/api/catalog", {"peerUrl": provider.dsp_url})
    assert status == 200, (cat, consumer.log[-20:])
    # and a refreshed transfer token carries the new jurisdiction
    status, t2 = consumer.api("POST", f"/api/transfers/{t['id']}/refresh")
    assert status == 200, t2
    refreshed = jose.unverified_payload(t2["endpointProperties"]["authorization"], "t")
    assert refreshed["attested"]["jurisdiction"] == {"country": "FR"}
    assert refreshed["attestedAt"] >= view["attributes_changed_at"]
    d = consumer.directory
    ssl = client_context(d / "ca.crt")

    async def pull(token: str) -> int:
        async with (
            aiohttp.ClientSession() as http,
            http.get(t2["endpoint"], ssl=ssl, headers={"Authorization": f"Bearer {token}"}) as r,
        ):
            await r.read()
            return r.status

    assert asyncio.run(pull(t2["endpointProperties"]["authorization"])) == 200

    # both audit trails name both jurisdictions; the export report lists the transfer
    rows = list(csv.DictReader(io.StringIO(export_report(provider, "csv"))))
    assert [
        (r["agreement_id"], r["role"], r["provider_jurisdiction"], r["consumer_jurisdiction"]) for r in rows
    ] == [(n["agreementId"], "provider", "CN-SH", "DE")]
    status, on_provider = provider.api("GET", f"/api/transfers/{rows[0]['transfer_id']}")
    assert status == 200 and on_provider["agreementId"] == n["agreementId"], on_provider
    report = json.loads(export_report(consumer, "json"))
    [agreement] = report["agreements"]
    assert agreement["agreement_id"] == n["agreementId"]
    [row] = agreement["transfers"]
    assert row["transfer_id"] == t["id"] and row["role"] == "consumer"
    assert row["jurisdictions"] == {
        "provider": {"country": "CN", "subdivision": "CN-SH"},
        "consumer": {"country": "DE"},
    }
    none = json.loads(export_report(consumer, "json", "--agreement", "urn:uuid:other"))
    assert none == {"agreements": []}
