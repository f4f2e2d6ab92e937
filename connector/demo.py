"""`connector demo`: the most complete thing the project can do today, end to end.

1. An operator creates a data space: a real authority process on a loopback port.
2. A provider and a consumer join (key pair + CSR, registered by the operator).
3. Both obtain Dynamic Attribute Tokens and verify each other's.
4. The provider fills usage-policy templates; the consumer's verified attributes and requests
   are decided by the policy engine, with the engine's reason for every deny.
5. The operator revokes the consumer: the authority refuses it a new token.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import click

from connector.odrl import terms as T
from connector.odrl.compile import DecisionRequest, compile_policy
from connector.odrl.evaluate import evaluate
from connector.odrl.facts import fact_values, world_facts
from connector.odrl.model import Request, Value, World
from connector.odrl.parse import load_policy
from connector.odrl.templates import fill


def _cli(*args: object) -> str:
    result = subprocess.run([sys.executable, "-m", "connector", *map(str, args)],
                            capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        raise click.ClickException(f"connector {args[0]} failed: {result.stderr.strip()}")
    return result.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise click.ClickException("the authority process exited early")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(b"GET /health HTTP/1.0\r\n\r\n")
                if b"200" in s.recv(64):
                    return
        except OSError:
            time.sleep(0.05)
    raise click.ClickException("the authority did not become ready")


def _step(text: str) -> None:
    click.secho(f"\n== {text}", bold=True)


def _decision(label: str, permit: bool, reason: str) -> None:
    mark = click.style("PERMIT", fg="green") if permit else click.style("DENY  ", fg="red")
    click.echo(f"  {mark} {label}\n         {reason}")


async def _run(work: Path) -> None:
    from connector.identity.client import DatClient, ParticipantIdentity
    from connector.identity.errors import TokenUnavailable
    from connector.identity.verify import DatVerifier

    _step("An operator creates the data space (CA, token-signing key, authority service)")
    _cli("authority", "init", work / "authority", "--name", "Demo data space")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "connector", "authority", "serve",
                             str(work / "authority"), "--port", str(port), "--host", "127.0.0.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ})
    try:
        _wait_ready(port, proc)
        click.echo(f"  authority listening on {url}")

        _step("A provider and a consumer join")
        ids: dict[str, Any] = {}
        for name, role, profile in (("provider", "provider", "idsc:TRUST_SECURITY_PROFILE"),
                                    ("consumer", "consumer", "idsc:BASE_SECURITY_PROFILE")):
            _cli("init", work / name, "--name", name.capitalize())
            reg = json.loads(_cli("authority", "register", work / "authority",
                                  work / name / "participant.csr", "--role", role,
                                  "--security-profile", profile,
                                  "--connector-url", f"https://{name}.example/dsp"))
            ids[name] = ParticipantIdentity.load(work / name)
            click.echo(f"  {name}: participant id {reg['participant_id']} ({profile})")

        async with aiohttp.ClientSession() as http:
            _step("Both obtain DATs and verify each other's")
            provider_client = await DatClient.discover(http, url, ids["provider"])
            consumer_client = await DatClient.discover(http, url, ids["consumer"])
            verifier = await DatVerifier.from_authority(http, url)
            consumer_dat = await consumer_client.token()
            claims = await verifier.verify(consumer_dat)
            provider_claims = await (await DatVerifier.from_authority(http, url)).verify(
                await provider_client.token())
            click.echo(f"  provider verified the consumer's DAT: sub={claims.subject[:23]}... "
                       f"roles={list(claims.roles)} profile={claims.security_profile}")
            click.echo(f"  consumer verified the provider's DAT: sub={provider_claims.subject[:23]}...")

            _step("The provider sets usage terms from templates; the engine decides")
            facts = fact_values(claims.attributes)
            now = datetime.now(UTC)
            asset = "urn:asset:weather-2026"
            trust = load_policy(fill("security-level-restricted",
                                     {"securityLevel": "idsc:TRUST_SECURITY_PROFILE"},
                                     target=asset))
            rep = evaluate(trust, Request(action=T.O + "use", assignee=claims.subject,
                                          target=asset),
                           World(now=now, facts=world_facts(claims.attributes)))
            _decision("security-level-restricted (TRUST required), consumer has BASE",
                      rep.permit, rep.explanation)

            three = load_policy(fill("n-times-usage", {"max": "3"}, target=asset))
            decide = compile_policy(three)
            for done in range(4):
                d = decide(DecisionRequest(action=T.O + "read", now=now, target=asset,
                                           assignee=claims.subject, count=done, context=facts))
                _decision(f"n-times-usage (max 3), read number {done + 1}", d.permit, d.reason)

            purpose = load_policy(fill("purpose-restricted",
                                       {"purpose": "https://w3id.org/dpv#ScientificResearch"},
                                       target=asset))
            for p in ("https://w3id.org/dpv#ScientificResearch", "https://w3id.org/dpv#Marketing"):
                rep = evaluate(purpose, Request(action=T.O + "use", target=asset,
                                                assignee=claims.subject,
                                                context={T.PURPOSE: (Value.iri(p),)}),
                               World(now=now))
                _decision(f"purpose-restricted, consumer states {T.short(p)}", rep.permit,
                          rep.explanation)

            _step("The operator revokes the consumer")
            _cli("authority", "revoke", work / "authority", claims.subject, "--reason", "demo")
            try:
                await (await DatClient.discover(http, url, ids["consumer"])).token()
                click.echo("  unexpected: a token was issued")
            except TokenUnavailable as exc:
                click.echo(f"  the authority refuses a new DAT: {exc}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@click.command(name="demo")
@click.option("--keep", type=click.Path(file_okay=False), help="Keep the data space in DIR.")
def demo(keep: str | None) -> None:
    """Run a small data space on loopback: identities, tokens, usage policies, decisions."""
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        asyncio.run(_run(Path(keep)))
    else:
        with tempfile.TemporaryDirectory(prefix="connector-demo-") as tmp:
            asyncio.run(_run(Path(tmp)))
    click.secho("\nDemo complete.", bold=True)
