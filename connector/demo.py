"""`connector demo`: the most complete thing the project can do today, end to end, on loopback.

1. An operator creates a data space: a real authority process.
2. A provider (TRUST profile) and a consumer (BASE profile) join: keys, CSRs, certificates, TLS
   certificates from the data-space CA; both run as connector processes (DSP over mutual TLS).
3. Each verifies the other's Dynamic Attribute Token.
4. The provider offers a dataset under "N-times usage", and another one to TRUST connectors only.
5. The consumer reads the catalog (it sees one dataset), negotiates it to FINALIZED, and asks
   for the hidden one directly: TERMINATED, with the policy engine's reason.
6. The engine decides uses under the agreement, with its reason for every deny.
7. The data moves under the agreement: the consumer's connector pulls (transfer token, live
   decision, signed receipts verified and logged), the provider pushes into the consumer's
   vault, a local read goes through the connector, and the request past the agreement's uses
   is denied at the data plane with the engine's reason.
8. Both audit logs verify, and the provider's receipts match the consumer's log.
9. The operator revokes the consumer: no new token, and the provider refuses its calls.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import click

from connector.devspace import Connector, DataSpace, cli, negotiate, offer_asset, wait_final
from connector.odrl import terms as T
from connector.odrl.compile import DecisionRequest, compile_policy
from connector.odrl.evaluate import evaluate
from connector.odrl.model import Request, Value, World
from connector.odrl.parse import load_policy
from connector.odrl.templates import fill


def _step(text: str) -> None:
    click.secho(f"\n== {text}", bold=True)


def _decision(label: str, permit: bool, reason: str) -> None:
    mark = click.style("PERMIT", fg="green") if permit else click.style("DENY  ", fg="red")
    click.echo(f"  {mark} {label}\n         {reason}")


async def _verify_each_other(space: DataSpace, provider_dir: Path, consumer_dir: Path) -> dict:
    import aiohttp

    from connector.identity.client import DatClient, ParticipantIdentity
    from connector.identity.verify import DatVerifier

    async with aiohttp.ClientSession() as http:
        url = space.authority.url
        verifier = await DatVerifier.from_authority(http, url)
        consumer_dat = await (await DatClient.discover(
            http, url, ParticipantIdentity.load(consumer_dir))).token()
        provider_dat = await (await DatClient.discover(
            http, url, ParticipantIdentity.load(provider_dir))).token()
        c = await verifier.verify(consumer_dat)
        p = await verifier.verify(provider_dat)
        click.echo(f"  provider verified the consumer's DAT: roles={list(c.roles)} "
                   f"profile={c.security_profile}")
        click.echo(f"  consumer verified the provider's DAT: roles={list(p.roles)} "
                   f"profile={p.security_profile}")
        return dict(c.attributes)


async def _token_refused(space: DataSpace, participant_dir: Path) -> str:
    import aiohttp

    from connector.identity.client import DatClient, ParticipantIdentity
    from connector.identity.errors import TokenUnavailable

    async with aiohttp.ClientSession() as http:
        client = await DatClient.discover(http, space.authority.url,
                                          ParticipantIdentity.load(participant_dir))
        try:
            await client.token()
        except TokenUnavailable as exc:
            return str(exc)
    return "unexpected: a token was issued"


def _run(root: Path) -> None:
    _step("An operator creates the data space (CA, token-signing key, authority service)")
    space = DataSpace(root, tls=True)
    try:
        click.echo(f"  authority listening on {space.authority.url}")

        _step("A provider and a consumer join and start their connectors (DSP over mutual TLS)")
        provider = space.connector("Provider", roles=("provider",),
                                   profile="idsc:TRUST_SECURITY_PROFILE")
        consumer = space.connector("Consumer", roles=("consumer",))
        for c in (provider, consumer):
            click.echo(f"  {c.name}: {c.participant_id[:29]}...  DSP {c.dsp_url}  "
                       f"management {c.api_url}")

        _step("Each verifies the other's Dynamic Attribute Token")
        asyncio.run(_verify_each_other(space, provider.directory, consumer.directory))

        _step("The provider offers datasets")
        open_offer = offer_asset(provider, asset_id="urn:asset:weather-2026",
                                 contract={"template": "n-times-usage", "params": {"max": "3"}},
                                 offer_id="urn:offer:weather")
        offer_asset(provider, asset_id="urn:asset:grid-load", offer_id="urn:offer:grid",
                    contract={"template": "n-times-usage", "params": {"max": "3"}},
                    access={"template": "security-level-restricted",
                            "params": {"securityLevel": "idsc:TRUST_SECURITY_PROFILE"}})
        click.echo("  urn:asset:weather-2026: N-times usage (3), open to every member")
        click.echo("  urn:asset:grid-load:    N-times usage (3), TRUST connectors only")

        _step("The consumer reads the catalog and negotiates")
        _, catalog = consumer.api("POST", "/api/catalog", {"peerUrl": provider.dsp_url})
        click.echo(f"  the consumer sees: {[d['id'] for d in catalog['datasets']]}")
        n = negotiate(consumer, provider, open_offer)
        click.echo(f"  {n['state']}: agreement {n['agreementId']}")
        _, hidden = consumer.api("POST", "/api/negotiations", {
            "peerUrl": provider.dsp_url, "offerId": "urn:offer:grid:urn:asset:grid-load",
            "datasetId": "urn:asset:grid-load", "terms": {"permission": [
                {"action": "use", "constraint": [
                    {"leftOperand": "count", "operator": "lteq", "rightOperand": 3}]}]}})
        hidden = wait_final(consumer, hidden["id"])
        click.echo(f"  asking for urn:asset:grid-load directly: {hidden['state']}")
        click.echo(f"         reason: {'; '.join(hidden['terminationReason'] or [])}")

        _step("The engine decides each use under the agreement")
        _, agreement = consumer.api("GET", f"/api/agreements/{n['agreementId']}")
        policy_doc = {"@context": ["https://w3id.org/dspace/2025/1/context.jsonld",
                                   "https://w3id.org/dspace/2025/1/odrl-profile.jsonld"],
                      **agreement["policy"]}
        decide = compile_policy(load_policy(policy_doc))
        now = datetime.now(UTC)
        for done in range(4):
            d = decide(DecisionRequest(action=T.O + "read", now=now, target=agreement["target"],
                                       assignee=consumer.participant_id, count=done))
            _decision(f"read number {done + 1} under the agreement", d.permit, d.reason)
        purpose = load_policy(fill("purpose-restricted",
                                   {"purpose": "https://w3id.org/dpv#ScientificResearch"},
                                   target="urn:asset:weather-2026"))
        for p in ("https://w3id.org/dpv#ScientificResearch", "https://w3id.org/dpv#Marketing"):
            rep = evaluate(purpose, Request(action=T.O + "use", target="urn:asset:weather-2026",
                                            context={T.PURPOSE: (Value.iri(p),)}), World(now=now))
            _decision(f"purpose-restricted, consumer states {T.short(p)}", rep.permit,
                      rep.explanation)

        _transfers(provider, consumer, n["agreementId"])
        _audits(provider, consumer)

        _step("The operator revokes the consumer")
        cli("authority", "revoke", space.authority.directory, consumer.participant_id,
            "--reason", "demo")
        refused = asyncio.run(_token_refused(space, consumer.directory))
        click.echo(f"  the authority refuses a new DAT: {refused}")
        status = _refused_catalog(consumer, provider.dsp_url)
        click.echo(f"  the consumer's catalog request now gets: {status}")
    finally:
        space.close()


def _wait_transfer(c: Connector, tid: str, states: set[str], timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        _, t = c.api("GET", f"/api/transfers/{tid}")
        if t["state"] in states or time.monotonic() > deadline:
            return t
        time.sleep(0.05)


def _pull(consumer: Connector, agreement_id: str) -> dict:
    _, t = consumer.api("POST", "/api/transfers", {"agreementId": agreement_id})
    t = _wait_transfer(consumer, t["id"], {"STARTED", "TERMINATED"})
    _, job = consumer.api("POST", f"/api/transfers/{t['id']}/pull", {})
    while job["state"] == "running":
        _, job = consumer.api("GET", f"/api/transfers/{t['id']}/pull?wait=5")
    return job


def _transfers(provider: Connector, consumer: Connector, agreement_id: str) -> None:
    _step("The consumer's connector pulls the data (HttpData-PULL)")
    job = _pull(consumer, agreement_id)
    click.echo(f"  {job['state']}: {job['bytes']} bytes, sha256 {job['sha256'][:16]}..., "
               f"{job['receipts']} signed receipt(s) verified against the provider's certificate")
    _, item = consumer.api("GET", f"/api/vault/{job['vaultId']}")
    click.echo(f"  kept in the consumer's vault as {item['id']} under agreement {agreement_id}")

    _step("The provider pushes the data into the consumer's vault (HttpData-PUSH)")
    _, t = consumer.api("POST", "/api/transfers", {"agreementId": agreement_id,
                                                   "format": "HttpData-PUSH"})
    t = _wait_transfer(consumer, t["id"], {"COMPLETED", "TERMINATED"})
    click.echo(f"  {t['state']}: transfer {t['id']}")

    _step("A third data request, then one past the agreement's 3 uses")
    job = _pull(consumer, agreement_id)
    _decision("pull number 3 at the provider's data plane", job["state"] == "done",
              f"{job['bytes']} bytes" if job["state"] == "done" else job["error"])
    job = _pull(consumer, agreement_id)
    _decision("pull number 4 at the provider's data plane", job["state"] == "done",
              job["error"] or "")

    _step("Local use of the vault copy goes through the consumer's connector, on the same limit")
    _, items = consumer.api("GET", "/api/vault")
    vid = items[0]["id"]
    import json
    import urllib.error
    import urllib.request

    req = urllib.request.Request(f"{consumer.api_url}/api/vault/{vid}/data",
                                 headers={"X-Api-Key": consumer.api_key})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            size = len(resp.read())
            _decision(f"local read of {vid}", True,
                      f"{size} bytes, use {resp.headers['X-Use-Number']}, logged")
    except urllib.error.HTTPError as exc:  # the agreement's 3 uses: pulls, pushes, local reads
        body = json.loads(exc.read() or b"{}")
        _decision(f"local read of {vid} (one limit for pulls, pushes and local reads)", False,
                  str(body.get("error") or body))


def _audits(provider: Connector, consumer: Connector) -> None:
    import subprocess
    import sys

    from connector.devspace import process_env

    _step("Both parties' audit logs verify; the provider's receipts match the consumer's log")
    log = {c.name: c.directory / f"audit-{c.name}.log" for c in (provider, consumer)}
    for c in (provider, consumer):
        r = subprocess.run([sys.executable, "-m", "connector", "audit", "verify", str(log[c.name]),
                            "--cert", str(c.directory / "participant.crt")],
                           capture_output=True, text=True, timeout=60, env=process_env())
        click.echo(f"  {c.name}: {r.stdout.strip() or r.stderr.strip()}")
    r = subprocess.run([sys.executable, "-m", "connector", "audit", "verify", str(log[consumer.name]),
                        "--cert", str(consumer.directory / "participant.crt"),
                        "--peer-receipts", str(log[provider.name]),
                        "--peer-cert", str(provider.directory / "participant.crt")],
                       capture_output=True, text=True, timeout=60, env=process_env())
    click.echo("  " + r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr)


def _refused_catalog(consumer: Connector, provider_url: str) -> str:
    """The consumer's connector asks again with its cached DAT; the provider refuses it once
    its revocation poll has seen the revocation."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        status, body = consumer.api("POST", "/api/catalog", {"peerUrl": provider_url})
        if status != 200:
            return f"{status} {json.dumps(body)[:160]}"
        time.sleep(0.5)
    return "still served (the revocation poll has not run yet)"


@click.command(name="demo")
@click.option("--keep", type=click.Path(file_okay=False), help="Keep the data space in DIR.")
def demo(keep: str | None) -> None:
    """Run a small data space on loopback: identities, tokens, connectors, a negotiation, policy
    decisions with reasons, and a revocation."""
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        _run(Path(keep))
    else:
        with tempfile.TemporaryDirectory(prefix="connector-demo-") as tmp:
            _run(Path(tmp))
    click.secho("\nDemo complete.", bold=True)

