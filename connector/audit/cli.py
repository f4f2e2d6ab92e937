"""`connector audit verify` and `connector audit show`."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import click
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from connector.audit.crossborder import export_report, report_csv, report_json
from connector.audit.log import AuditError, Entry, parse_time, read_entries, read_lines, verify_file
from connector.audit.receipts import cross_check
from connector.audit.timeline import format_entry, select
from connector.config import ConfigError, load_config
from connector.identity.keys import KeyFormatError, PublicKey, algorithm_of

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def load_public_key(path: Path) -> PublicKey:
    """The public key of a PEM certificate (or of a bare PEM public key)."""
    data = path.read_bytes()
    try:
        key: object = x509.load_pem_x509_certificate(data).public_key()
    except ValueError:
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError as exc:
            raise click.BadParameter(f"{path}: neither a PEM certificate nor a PEM public key") from exc
    try:
        algorithm_of(key)
    except KeyFormatError as exc:
        raise click.BadParameter(f"{path}: {exc}") from exc
    return key  # type: ignore[return-value]


@click.group("audit")
def audit() -> None:
    """The hash-chained, signed audit log: verify it, show it."""


def _participant(path: Path) -> str | None:
    """The data-space participant a certificate names (None for a bare key or a foreign one)."""
    from connector.identity.ca import participant_id

    try:
        return participant_id(x509.load_pem_x509_certificate(path.read_bytes()))
    except Exception:
        return None


@audit.command("verify")
@click.argument("logfile", type=_FILE)
@click.option("--cert", "cert", type=_FILE, required=True, help="Certificate of the log's connector.")
@click.option(
    "--head",
    "head",
    type=_FILE,
    default=None,
    help="Head anchor to check against (default: LOGFILE.head if it exists).",
)
@click.option("--no-head", is_flag=True, help="Do not check the head anchor.")
@click.option(
    "--peer-receipts",
    "peer_log",
    type=_FILE,
    default=None,
    help="The provider's audit log: cross-check its receipts against LOGFILE.",
)
@click.option("--peer-cert", "peer_cert", type=_FILE, default=None, help="The provider's certificate.")
def verify_command(
    logfile: Path, cert: Path, head: Path | None, no_head: bool, peer_log: Path | None, peer_cert: Path | None
) -> None:
    """Check LOGFILE's chain and signatures; exit 1 naming the first bad entry."""
    if peer_log is not None and peer_cert is None:
        raise click.UsageError("--peer-receipts needs --peer-cert")
    key = load_public_key(cert)
    report = verify_file(logfile, key, head=False if no_head else (head if head is not None else True))
    for note in report.notes:
        click.echo(f"note: {note}", err=True)
    if not report.ok:
        click.echo(f"{logfile}: {report.summary()}")
        raise SystemExit(1)
    click.echo(report.summary())
    if peer_log is None or peer_cert is None:
        return
    peer_key = load_public_key(peer_cert)
    peer_report = verify_file(peer_log, peer_key, head=True)
    if not peer_report.ok:
        click.echo(f"{peer_log}: {peer_report.summary()}")
        raise SystemExit(1)
    problems, checked = cross_check(
        read_entries(logfile), read_entries(peer_log), peer_key, consumer_id=_participant(cert)
    )
    if problems:
        click.echo(f"receipts: {len(problems)} problem(s)")
        for problem in problems:
            click.echo(f"  {problem}")
        raise SystemExit(1)
    click.echo(f"OK: {checked} provider receipts match the consumer's log")


@audit.command("show")
@click.argument("logfile", type=_FILE)
@click.option("--kind", "kinds", multiple=True, help="Only this kind (or prefix: 'transfer'); repeatable.")
@click.option("--since", default=None, help="Only entries at or after this ISO 8601 time (UTC if no zone).")
@click.option("--json", "as_json", is_flag=True, help="One JSON entry per line instead of a table.")
def show_command(logfile: Path, kinds: tuple[str, ...], since: str | None, as_json: bool) -> None:
    """Print LOGFILE as a timeline (unverified: run `verify` for that)."""
    since_time: datetime | None = None
    if since is not None:
        try:
            since_time = parse_time(since)
        except ValueError as exc:
            raise click.BadParameter(f"not an ISO 8601 time: {since}", param_hint="--since") from exc
    entries: list[Entry] = []
    for number, line in read_lines(logfile):
        try:
            entries.append(Entry.from_dict(json.loads(line)))
        except (ValueError, AuditError) as exc:
            click.echo(f"line {number}: unreadable ({exc})", err=True)
    for entry in select(entries, kinds=kinds, since=since_time):
        click.echo(json.dumps(entry.to_dict(), ensure_ascii=False) if as_json else format_entry(entry))


@audit.command("export-report")
@click.option(
    "--config",
    "config_path",
    type=_FILE,
    required=True,
    help="The connector's configuration (its audit log is read).",
)
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.option("--agreement", "agreement", default=None, help="Only transfers under this agreement.")
def export_report_command(config_path: Path, fmt: str, agreement: str | None) -> None:
    """List every transfer that crossed a border (the parties' attested jurisdictions are in
    different countries), grouped by agreement, from the connector's audit log."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    path = config.audit_log_path
    entries: list[Entry] = []
    if path.is_file():
        for number, line in read_lines(path):
            try:
                entries.append(Entry.from_dict(json.loads(line)))
            except (ValueError, AuditError) as exc:
                click.echo(f"line {number}: unreadable ({exc})", err=True)
    rows = [r for r in export_report(entries) if agreement is None or r["agreement_id"] == agreement]
    if fmt == "json":
        click.echo(json.dumps(report_json(rows), indent=1, ensure_ascii=False))
    else:
        click.echo(report_csv(rows), nl=False)
