"""`connector init` (a participant's identity, or with --role a whole connector folder) and
`connector config check` (connector.initconfig)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from connector.broker.check import check_broker, is_broker_config
from connector.config import ConfigError
from connector.identity.cli import init as identity_init
from connector.identity.errors import IdentityError
from connector.initconfig import Setup, check, write_setup


@click.command(name="init")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--name", required=True, help="The participant's human-readable name.")
@click.option(
    "--role",
    type=click.Choice(["provider", "consumer"]),
    default=None,
    help="Set up a whole connector in DIRECTORY: connector.toml (every key with its "
    "default), the management API key, the participant's and TLS key and CSRs "
    "under participant/, and (provider) a data/ folder for file assets. Without "
    "it: only the participant's key and CSR in DIRECTORY.",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="(--role) The address the connector listens on and peers reach it at; also "
    "the TLS certificate's name.",
)
@click.option(
    "--authority-url",
    default="http://127.0.0.1:8700",
    show_default=True,
    help="(--role) The data-space authority.",
)
@click.option("--dsp-port", type=int, default=None, help="(--role) Default: a free port.")
@click.option("--management-port", type=int, default=None, help="(--role) Default: a free port.")
@click.option("--dataplane-port", type=int, default=None, help="(--role) Default: a free port.")
@click.option("--plain-http", is_flag=True, help="(--role) DSP without TLS: for loopback tests only.")
@click.option("--alg", type=click.Choice(["EdDSA", "ES256"]), default="EdDSA", show_default=True)
@click.option(
    "--tls-host",
    "tls_hosts",
    multiple=True,
    help="(without --role) A host name or IP address the connector serves DSP on "
    "(repeatable): also create a TLS key and CSR (tls.key, tls.csr).",
)
@click.pass_context
def init(
    ctx: click.Context,
    directory: str,
    name: str,
    role: str | None,
    host: str,
    authority_url: str,
    dsp_port: int | None,
    management_port: int | None,
    dataplane_port: int | None,
    plain_http: bool,
    alg: str,
    tls_hosts: tuple[str, ...],
) -> None:
    """Create a participant's key pair and certificate signing request in DIRECTORY; with
    --role, a whole connector's folder ready for `connector config check` and `connector serve`."""
    if role is None:
        ctx.invoke(identity_init, directory=directory, name=name, alg=alg, tls_hosts=tls_hosts)
        return
    setup = Setup(
        Path(directory),
        name,
        role,  # type: ignore[arg-type]
        host=host,
        authority_url=authority_url,
        dsp_port=dsp_port,
        management_port=management_port,
        dataplane_port=dataplane_port,
        plain_http=plain_http,
    )
    try:
        written = write_setup(setup)
    except (ConfigError, IdentityError, OSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    participant = Path(directory) / "participant"
    written["next"] = [
        f"the authority's operator: `connector authority register AUTHORITY_DIR {written['csr']} "
        f"--tls-csr {written['tls_csr']} --role {role}` (the certificates go to "
        f"{participant / 'participant.crt'} and {participant / 'tls.crt'}; the data-space CA "
        f"certificate to {participant / 'ca.crt'} when the authority is on this machine, else "
        "copy the authority's ca.crt there)",
        f"`connector config check {written['config']}`, then "
        f"`connector serve {written['config']}`, and `connector status {written['config']}`",
    ]
    click.echo(json.dumps(written, indent=1))


@click.group()
def config() -> None:
    """The connector's configuration file."""


@config.command(name="check")
@click.argument("config_file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="The findings as a JSON array.")
@click.option(
    "--security-profile",
    default=None,
    metavar="PROFILE",
    help="Hold [dsp] tls_mode (a broker's [broker] tls_mode) against this profile "
    "(idsc:TRUST_SECURITY_PROFILE and idsc:TRUST_PLUS_SECURITY_PROFILE ask for mutual TLS). "
    "Default: the one the authority attests in this connector's DAT, when it can be "
    "reached (a broker's: none).",
)
def config_check(config_file: str, as_json: bool, security_profile: str | None) -> None:
    """Explain what is missing or wrong in CONFIG_FILE (a connector's or a broker's). Exit 0:
    it can be served (warnings name weaker settings); 1: errors."""
    path = Path(config_file)
    if is_broker_config(path):
        findings = check_broker(path, security_profile=security_profile)
    else:
        findings = check(path, security_profile=security_profile, ask_authority=True)
    if as_json:
        click.echo(json.dumps([f.__dict__ for f in findings], indent=1))
    else:
        for f in findings:
            click.echo(f"{f.level}: {f.key}: {f.text}")
        if not any(f.level == "error" for f in findings):
            click.echo(f"ok: {config_file} can be served")
    if any(f.level == "error" for f in findings):
        raise SystemExit(1)
