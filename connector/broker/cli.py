"""`connector broker serve|register|unregister` and `connector search`."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import click

from connector.broker import client
from connector.broker.description import FILTER_KINDS
from connector.broker.store import registration_id
from connector.config import Config, ConfigError, load_config
from connector.http.tls import client_context
from connector.logs import LogFormat, log_options

T = TypeVar("T")


def _connector_config(path: str) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


def _ssl(config: Config) -> ssl.SSLContext | None:
    if not config.dsp.uses_tls:
        return None
    cert, key, ca = config.tls_files
    return client_context(ca, cert, key)


def _run(work: Callable[[aiohttp.ClientSession], Awaitable[T]]) -> T:
    async def main() -> T:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            try:
                return await work(session)
            except client.BrokerRefused as exc:
                raise click.ClickException(str(exc)) from None
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                raise click.ClickException(f"the broker cannot be reached: {exc}") from None

    return asyncio.run(main())


async def _dat(session: aiohttp.ClientSession, config: Config) -> str:
    from connector.identity.client import DatClient, ParticipantIdentity

    identity = ParticipantIdentity.load(config.participant_dir)
    dat = await DatClient.discover(session, config.connector.authority_url, identity)
    return await dat.token()


def _broker_url(config: Config, url: str | None) -> str:
    found = url or config.broker.url
    if not found:
        raise click.ClickException("no broker: give --broker or set [broker] url in the config")
    return found


@click.group(name="broker")
def broker() -> None:
    """The broker node: registrations, keyword search and SPARQL over the data space."""


@broker.command(name="serve")
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@log_options
def serve(config: str, log_level: str, log_format: LogFormat) -> None:
    """Run a broker from its TOML CONFIG (see connector.broker.config)."""
    from connector.broker.config import load_broker_config
    from connector.broker.serve import serve as run

    try:
        loaded = load_broker_config(config)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    run(loaded, log_level=log_level, log_format=log_format)


@broker.command(name="register")
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.option("--broker", "broker_url", help="The broker (default: [broker] url of CONFIG).")
def register(config: str, broker_url: str | None) -> None:
    """Register the running connector of CONFIG at the broker: its self-description (read from
    its DSP endpoint) with its DAT."""
    cfg = _connector_config(config)
    url = _broker_url(cfg, broker_url)
    context = _ssl(cfg)

    async def work(session: aiohttp.ClientSession) -> dict[str, Any]:
        async with session.get(
            f"{cfg.connector.public_url}/",
            headers={"Accept": "text/turtle"},
            ssl=context if context is not None else True,
        ) as resp:
            if resp.status != 200:
                raise click.ClickException(f"the connector's self-description cannot be read: {resp.status}")
            body = await resp.read()
        return await client.register(
            session, url, await _dat(session, cfg), body, "text/turtle", ssl_context=context
        )

    click.echo(json.dumps(_run(work), indent=2))


@broker.command(name="unregister")
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.option("--broker", "broker_url", help="The broker (default: [broker] url of CONFIG).")
def unregister(config: str, broker_url: str | None) -> None:
    """Remove the registration of the connector of CONFIG from the broker."""
    cfg = _connector_config(config)
    url = _broker_url(cfg, broker_url)
    reg_id = registration_id(f"{cfg.connector.public_url}/")  # the id its description gets

    async def work(session: aiohttp.ClientSession) -> None:
        await client.unregister(session, url, await _dat(session, cfg), reg_id, ssl_context=_ssl(cfg))

    _run(work)
    click.echo(json.dumps({"unregistered": reg_id}))


@broker.command(name="verify")
@click.argument("certificate", type=click.File("r"))
@click.option(
    "--ca",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="The data-space CA certificate (PEM).",
)
def verify(certificate: Any, ca: str) -> None:
    """Verify a data product CERTIFICATE (a file, or - for stdin) offline against the CA; print
    its claims, or the reason it does not verify (exit status 1)."""
    from cryptography import x509

    from connector.broker.products import CertificateInvalid, verify_certificate

    text = certificate.read(1 << 20).strip()
    try:
        if text.startswith("{"):  # the broker's answer as saved
            text = str(json.loads(text).get("certificate", ""))
        claims = verify_certificate(text, x509.load_pem_x509_certificate(Path(ca).read_bytes()))
    except (CertificateInvalid, ValueError) as exc:
        raise click.ClickException(f"the certificate does not verify: {exc}") from None
    click.echo(json.dumps(claims, indent=2))


@click.command(name="search")
@click.argument("broker_url")
@click.argument("text", default="")
@click.option(
    "--filter",
    "filters",
    multiple=True,
    metavar="KEY=VALUE",
    help=f"Only datasets with this {', '.join(FILTER_KINDS)} (repeatable).",
)
@click.option(
    "--all",
    "include_unavailable",
    is_flag=True,
    help="Include connectors that have not renewed their registration.",
)
@click.option(
    "--sort", type=click.Choice(["relevance", "title", "-title"]), default="relevance", show_default=True
)
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 200))
@click.option("--offset", default=0, type=click.IntRange(0, 100_000))
@click.option(
    "--ca",
    type=click.Path(exists=True, dir_okay=False),
    help="The data-space CA certificate (for a broker served over TLS).",
)
def search(
    broker_url: str,
    text: str,
    filters: tuple[str, ...],
    include_unavailable: bool,
    sort: str,
    limit: int,
    offset: int,
    ca: str | None,
) -> None:
    """Find datasets across the data space at BROKER_URL by keywords TEXT."""
    wanted: dict[str, list[str]] = {}
    for f in filters:
        key, sep, value = f.partition("=")
        if not sep or key not in FILTER_KINDS or not value:
            raise click.BadParameter(
                f"{f!r}: use KEY=VALUE with KEY one of {', '.join(FILTER_KINDS)}", param_hint="--filter"
            )
        wanted.setdefault(key, []).append(value)
    context = client_context(Path(ca)) if ca else None
    found = _run(
        lambda session: client.search(
            session,
            broker_url,
            text,
            wanted,
            sort=sort,
            limit=limit,
            offset=offset,
            include_unavailable=include_unavailable,
            ssl_context=context,
        )
    )
    click.echo(json.dumps(found, indent=2))
