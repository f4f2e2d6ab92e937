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
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from connector.devspace import Connector, DataSpace, cli, negotiate, offer_asset, wait_final
from connector.odrl import terms as T
from connector.odrl.compile import DecisionRequest, compile_policy
from connector.odrl.evaluate import evaluate
from connector.odrl.model import Request, Value, World
from connector.odrl.parse import load_policy
from connector.odrl.templates import fill


class Narrator:
    """What the demo says: printed for people, or kept for ``--json``'s summary."""

    def __init__(self) -> None:
        self.quiet = False
        self.summary: dict[str, Any] = {"decisions": [], "audit": [], "steps": []}

    def step(self, text: str) -> None:
        self.summary["steps"].append(text)
        if not self.quiet:
            click.secho(f"\n== {text}", bold=True)

    def say(self, text: str) -> None:
        if not self.quiet:
            click.echo(text)

    def decision(self, label: str, permit: bool, reason: str) -> None:
        self.summary["decisions"].append({"what": label, "permit": permit, "reason": reason})
        if not self.quiet:
            mark = click.style("PERMIT", fg="green") if permit else click.style("DENY  ", fg="red")
            click.echo(f"  {mark} {label}\n         {reason}")


OUT = Narrator()
_step, _say, _decision = OUT.step, OUT.say, OUT.decision


async def _verify_each_other(space: DataSpace, provider_dir: Path, consumer_dir: Path) -> dict:
    import aiohttp

    from connector.identity.client import DatClient, ParticipantIdentity
    from connector.identity.verify import DatVerifier

    async with aiohttp.ClientSession() as http:
        url = space.authority.url
        verifier = await DatVerifier.from_authority(http, url)
        consumer_dat = await (
            await DatClient.discover(http, url, ParticipantIdentity.load(consumer_dir))
        ).token()
        provider_dat = await (
            await DatClient.discover(http, url, ParticipantIdentity.load(provider_dir))
        ).token()
        c = await verifier.verify(consumer_dat)
        p = await verifier.verify(provider_dat)
        _say(f"  provider verified the consumer's DAT: roles={list(c.roles)} profile={c.security_profile}")
        _say(f"  consumer verified the provider's DAT: roles={list(p.roles)} profile={p.security_profile}")
        return dict(c.attributes)


async def _token_refused(space: DataSpace, participant_dir: Path) -> str:
    import aiohttp

    from connector.identity.client import DatClient, ParticipantIdentity
    from connector.identity.errors import TokenUnavailable

    async with aiohttp.ClientSession() as http:
        client = await DatClient.discover(
            http, space.authority.url, ParticipantIdentity.load(participant_dir)
        )
        try:
            await client.token()
        except TokenUnavailable as exc:
            return str(exc)
    return "unexpected: a token was issued"


def _leave_running(space: DataSpace, provider: Connector, consumer: Connector) -> None:
    """Print where everything is and wait for Ctrl-C or SIGTERM (then stop it all)."""
    import signal
    import threading

    urls = {
        "authority": space.authority.url,
        **{
            c.name: {
                "dashboard": f"{c.api_url}/ui",
                "managementApi": c.api_url,
                "apiKey": c.api_key,
                "dsp": c.dsp_url,
                "config": str(c.config),
            }
            for c in (provider, consumer)
        },
    }
    OUT.summary["running"] = urls
    if OUT.quiet:
        click.echo(json.dumps(OUT.summary, indent=1), nl=True)
    else:
        _step("The data space stays up (Ctrl-C to stop it)")
        for c in (provider, consumer):
            _say(f"  {c.name}: dashboard {c.api_url}/ui  API key {c.api_key}  config {c.config}")
        _say(f"  authority: {space.authority.url}")
    sys.stdout.flush()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


def _run(root: Path, keep_running: bool = False) -> None:
    _step("An operator creates the data space (CA, token-signing key, authority service)")
    space = DataSpace(root, tls=True)
    try:
        _say(f"  authority listening on {space.authority.url}")

        _step("A provider and a consumer join and start their connectors (DSP over mutual TLS)")
        provider = space.connector("Provider", roles=("provider",), profile="idsc:TRUST_SECURITY_PROFILE")
        consumer = space.connector("Consumer", roles=("consumer",))
        for c in (provider, consumer):
            _say(f"  {c.name}: {c.participant_id[:29]}...  DSP {c.dsp_url}  management {c.api_url}")

        _step("Each verifies the other's Dynamic Attribute Token")
        asyncio.run(_verify_each_other(space, provider.directory, consumer.directory))

        _step("The provider offers datasets")
        open_offer = offer_asset(
            provider,
            asset_id="urn:asset:weather-2026",
            contract={"template": "n-times-usage", "params": {"max": "3"}},
            offer_id="urn:offer:weather",
        )
        offer_asset(
            provider,
            asset_id="urn:asset:grid-load",
            offer_id="urn:offer:grid",
            contract={"template": "n-times-usage", "params": {"max": "3"}},
            access={
                "template": "security-level-restricted",
                "params": {"securityLevel": "idsc:TRUST_SECURITY_PROFILE"},
            },
        )
        _say("  urn:asset:weather-2026: N-times usage (3), open to every member")
        _say("  urn:asset:grid-load:    N-times usage (3), TRUST connectors only")

        _step("The consumer reads the catalog and negotiates")
        _, catalog = consumer.api("POST", "/api/catalog", {"peerUrl": provider.dsp_url})
        _say(f"  the consumer sees: {[d['id'] for d in catalog['datasets']]}")
        n = negotiate(consumer, provider, open_offer)
        _say(f"  {n['state']}: agreement {n['agreementId']}")
        OUT.summary["agreement"] = {"id": n["agreementId"], "state": n["state"], "offer": open_offer}
        _, hidden = consumer.api(
            "POST",
            "/api/negotiations",
            {
                "peerUrl": provider.dsp_url,
                "offerId": "urn:offer:grid:urn:asset:grid-load",
                "datasetId": "urn:asset:grid-load",
                "terms": {
                    "permission": [
                        {
                            "action": "use",
                            "constraint": [{"leftOperand": "count", "operator": "lteq", "rightOperand": 3}],
                        }
                    ]
                },
            },
        )
        hidden = wait_final(consumer, hidden["id"])
        _say(f"  asking for urn:asset:grid-load directly: {hidden['state']}")
        _say(f"         reason: {'; '.join(hidden['terminationReason'] or [])}")
        OUT.summary["refusedNegotiation"] = {"state": hidden["state"], "reason": hidden["terminationReason"]}

        _step("The engine decides each use under the agreement")
        _, agreement = consumer.api("GET", f"/api/agreements/{n['agreementId']}")
        policy_doc = {
            "@context": [
                "https://w3id.org/dspace/2025/1/context.jsonld",
                "https://w3id.org/dspace/2025/1/odrl-profile.jsonld",
            ],
            **agreement["policy"],
        }
        decide = compile_policy(load_policy(policy_doc))
        now = datetime.now(UTC)
        for done in range(4):
            d = decide(
                DecisionRequest(
                    action=T.O + "read",
                    now=now,
                    target=agreement["target"],
                    assignee=consumer.participant_id,
                    count=done,
                )
            )
            _decision(f"read number {done + 1} under the agreement", d.permit, d.reason)
        purpose = load_policy(
            fill(
                "purpose-restricted",
                {"purpose": "https://w3id.org/dpv#ScientificResearch"},
                target="urn:asset:weather-2026",
            )
        )
        for p in ("https://w3id.org/dpv#ScientificResearch", "https://w3id.org/dpv#Marketing"):
            rep = evaluate(
                purpose,
                Request(
                    action=T.O + "use", target="urn:asset:weather-2026", context={T.PURPOSE: (Value.iri(p),)}
                ),
                World(now=now),
            )
            _decision(f"purpose-restricted, consumer states {T.short(p)}", rep.permit, rep.explanation)

        _transfers(provider, consumer, n["agreementId"])
        _audits(provider, consumer)

        if keep_running:
            _leave_running(space, provider, consumer)
            return
        _step("The operator revokes the consumer")
        cli("authority", "revoke", space.authority.directory, consumer.participant_id, "--reason", "demo")
        refused = asyncio.run(_token_refused(space, consumer.directory))
        _say(f"  the authority refuses a new DAT: {refused}")
        status = _refused_catalog(consumer, provider.dsp_url)
        _say(f"  the consumer's catalog request now gets: {status}")
        OUT.summary["revocation"] = {"newToken": refused, "catalogRequest": status}
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
    _say(
        f"  {job['state']}: {job['bytes']} bytes, sha256 {job['sha256'][:16]}..., "
        f"{job['receipts']} signed receipt(s) verified against the provider's certificate"
    )
    _, item = consumer.api("GET", f"/api/vault/{job['vaultId']}")
    _say(f"  kept in the consumer's vault as {item['id']} under agreement {agreement_id}")

    _step("The provider pushes the data into the consumer's vault (HttpData-PUSH)")
    _, t = consumer.api("POST", "/api/transfers", {"agreementId": agreement_id, "format": "HttpData-PUSH"})
    t = _wait_transfer(consumer, t["id"], {"COMPLETED", "TERMINATED"})
    _say(f"  {t['state']}: transfer {t['id']}")

    _step("A third data request, then one past the agreement's 3 uses")
    job = _pull(consumer, agreement_id)
    _decision(
        "pull number 3 at the provider's data plane",
        job["state"] == "done",
        f"{job['bytes']} bytes" if job["state"] == "done" else job["error"],
    )
    job = _pull(consumer, agreement_id)
    _decision("pull number 4 at the provider's data plane", job["state"] == "done", job["error"] or "")

    _step("Local use of the vault copy goes through the consumer's connector, on the same limit")
    _, items = consumer.api("GET", "/api/vault")
    vid = items[0]["id"]
    import json
    import urllib.error
    import urllib.request

    req = urllib.request.Request(
        f"{consumer.api_url}/api/vault/{vid}/data", headers={"X-Api-Key": consumer.api_key}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            size = len(resp.read())
            _decision(
                f"local read of {vid}", True, f"{size} bytes, use {resp.headers['X-Use-Number']}, logged"
            )
    except urllib.error.HTTPError as exc:  # the agreement's 3 uses: pulls, pushes, local reads
        body = json.loads(exc.read() or b"{}")
        _decision(
            f"local read of {vid} (one limit for pulls, pushes and local reads)",
            False,
            str(body.get("error") or body),
        )


def _audits(provider: Connector, consumer: Connector) -> None:
    import subprocess
    import sys

    from connector.devspace import process_env

    _step("Both parties' audit logs verify; the provider's receipts match the consumer's log")
    log = {c.name: c.directory / f"audit-{c.name}.log" for c in (provider, consumer)}
    for c in (provider, consumer):
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "connector",
                "audit",
                "verify",
                str(log[c.name]),
                "--cert",
                str(c.directory / "participant.crt"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=process_env(),
        )
        _say(f"  {c.name}: {r.stdout.strip() or r.stderr.strip()}")
        OUT.summary["audit"].append(
            {"party": c.name, "verified": r.returncode == 0, "result": (r.stdout.strip() or r.stderr.strip())}
        )
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "connector",
            "audit",
            "verify",
            str(log[consumer.name]),
            "--cert",
            str(consumer.directory / "participant.crt"),
            "--peer-receipts",
            str(log[provider.name]),
            "--peer-cert",
            str(provider.directory / "participant.crt"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=process_env(),
    )
    _say("  " + r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr)
    OUT.summary["audit"].append(
        {
            "party": "receipt cross-check",
            "verified": r.returncode == 0,
            "result": (r.stdout.strip().splitlines() or [r.stderr])[-1],
        }
    )


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
@click.option(
    "--keep-running",
    is_flag=True,
    help="Leave the data space up after the run (no revocation) and print the "
    "dashboards' URLs; Ctrl-C or SIGTERM stops it.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print only a machine-readable summary: the agreement, every decision "
    "(pulls permitted and denied with their reasons), the audit verification.",
)
def demo(keep: str | None, keep_running: bool, as_json: bool) -> None:
    """Run a small data space on loopback: identities, tokens, connectors, a negotiation, policy
    decisions with reasons, and a revocation."""
    OUT.quiet = as_json
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        _run(Path(keep), keep_running)
    else:
        with tempfile.TemporaryDirectory(prefix="connector-demo-") as tmp:
            _run(Path(tmp), keep_running)
    if as_json:
        if not keep_running:
            OUT.summary["ok"] = bool(OUT.summary.get("agreement")) and all(
                a["verified"] for a in OUT.summary["audit"]
            )
            click.echo(json.dumps(OUT.summary, indent=1))
        return
    click.secho("\nDemo complete.", bold=True)
