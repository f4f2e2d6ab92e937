"""CLI commands of the identity layer (`connector authority ...`, `connector init`)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import secrets
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from connector.identity.client import CERT_FILE, TLS_CERT_FILE, TLS_CSR_FILE, init_participant
from connector.identity.errors import IdentityError
from connector.identity.keys import ALGORITHMS
from connector.identity.store import AuthorityStore, ParticipantAttributes, StoreError
from connector.logs import LogFormat, log_options
from connector.logs import configure as configure_logs


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=1, sort_keys=True))


def _store(directory: str) -> AuthorityStore:
    try:
        return AuthorityStore(directory)
    except (StoreError, OSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Identity errors become a one-line CLI error (exit 1), not a traceback."""
    try:
        yield
    except IdentityError as exc:
        raise click.ClickException(f"{exc.error}: {exc.description}") from exc
    except (ValueError, OSError) as exc:  # pydantic ValidationError, bad key files
        raise click.ClickException(str(exc)) from exc


def _jurisdiction_options(fn: Any) -> Any:
    for option in reversed(
        (
            click.option(
                "--country",
                default=None,
                metavar="CC",
                help="Attested jurisdiction: ISO 3166-1 alpha-2 country (e.g. CN).",
            ),
            click.option(
                "--subdivision",
                default=None,
                metavar="CC-SUB",
                help="ISO 3166-2 subdivision of the country (e.g. CN-SH).",
            ),
            click.option(
                "--zone",
                default=None,
                help="A zone inside it (a pilot free-trade zone): a short token or an IRI.",
            ),
        )
    ):
        fn = option(fn)
    return fn


def _jurisdiction(country: str | None, subdivision: str | None, zone: str | None) -> dict[str, str] | None:
    if country is None:
        if subdivision or zone:
            raise click.UsageError("--subdivision and --zone need --country")
        return None
    j = {"country": country, "subdivision": subdivision, "zone": zone}
    return {k: v for k, v in j.items() if v is not None}


@click.group(name="authority")
def authority() -> None:
    """Run the data-space authority: CA, participant registry, DAT issuance."""


@authority.command(name="init")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--name", default="dataspace", show_default=True, help="The data space's name.")
@click.option("--alg", type=click.Choice(ALGORITHMS), default="EdDSA", show_default=True)
@click.option("--issuer", default=None, help="Public base URL (default: http://HOST:PORT).")
@click.option("--dat-lifetime", type=int, default=3600, show_default=True, help="Seconds.")
def authority_init(directory: str, name: str, alg: str, issuer: str | None, dat_lifetime: int) -> None:
    """Create the data-space CA, the token-signing key and the admin token in DIRECTORY."""
    with _errors():
        try:
            store = AuthorityStore.initialize(
                directory,
                name=name,
                alg=alg,  # type: ignore[arg-type]
                now=time.time(),
                admin_token=secrets.token_urlsafe(32),
                issuer=issuer,
                dat_lifetime=dat_lifetime,
            )
        except StoreError as exc:
            raise click.ClickException(str(exc)) from exc
    state = store.state()
    _echo_json(
        {
            "directory": str(store.directory),
            "ca_certificate": str(store.directory / store.CA_CERT),
            "signing_kid": state.keys[0].kid,
            "admin_token_file": str(store.directory / store.ADMIN_TOKEN),
        }
    )


@authority.command(name="serve")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--port", type=int, required=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--issuer", default=None, help="Public base URL (overrides authority.json).")
@click.option(
    "--limits",
    "limits_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="A TOML file whose [limits] section bounds requests (default: safe defaults).",
)
@log_options
def authority_serve(
    directory: str,
    port: int,
    host: str,
    issuer: str | None,
    limits_file: str | None,
    log_level: str,
    log_format: LogFormat,
) -> None:
    """Run the authority service (token endpoint, JWKS, metadata, admin API)."""
    from connector.config import ConfigError, load_limits
    from connector.http.observe import Readiness, count_requests, health_routes
    from connector.identity.authority import Authority, create_app, serve
    from connector.ui.authority import authority_ui  # as the serving code: only serve needs it

    configure_logs(log_level, log_format)

    try:
        limits = load_limits(limits_file)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    store = _store(directory)
    issuer = issuer or store.config.issuer or f"http://{host}:{port}"
    service = Authority(store, issuer=issuer)
    app = create_app(service, limits)
    app.add_subapp("/ui", authority_ui(service))  # a read-only page, behind the admin token

    async def registry_readable() -> None:  # the participant registry and its signing keys
        if not store.state().keys:
            raise RuntimeError("no signing key")

    app.add_routes(health_routes(Readiness({"registry": registry_readable}), with_health=False))
    count_requests(app, "authority")

    def ready(url: str) -> None:
        click.echo(f"authority {issuer} listening on {url}")
        sys.stdout.flush()

    asyncio.run(serve(app, host, port, limits=limits, ready=ready))


def _sha256_of_cert(path: str) -> str:
    cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


@authority.command(name="issue-tls")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.argument("tls_csr", type=click.Path(exists=True, dir_okay=False))
@click.option("--participant", "pid", required=True, help="The participant id (SKI:keyid:AKI).")
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Where to write the certificate (default: tls.crt beside the CSR).",
)
def authority_issue_tls(directory: str, tls_csr: str, pid: str, out: str | None) -> None:
    """Certify a participant's TLS key for the hosts in its CSR; DATs then carry its hash."""
    from connector.identity.registry import issue_tls_certificate

    store = _store(directory)
    with _errors():
        pem, digest = issue_tls_certificate(store, pid, Path(tls_csr).read_bytes(), now=time.time())
    target = Path(out) if out else Path(tls_csr).with_name(TLS_CERT_FILE)
    target.write_text(pem)
    _echo_json({"participant_id": pid, "certificate": str(target), "sha256": digest})


@authority.command(name="register")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.argument("csr_or_cert", type=click.Path(exists=True, dir_okay=False))
@click.option("--role", "roles", multiple=True, type=click.Choice(["provider", "consumer", "broker"]))
@click.option(
    "--security-profile",
    type=click.Choice(
        [
            "idsc:BASE_SECURITY_PROFILE",
            "idsc:TRUST_SECURITY_PROFILE",
            "idsc:TRUST_PLUS_SECURITY_PROFILE",
        ]
    ),
    default="idsc:BASE_SECURITY_PROFILE",
    show_default=True,
)
@click.option("--membership/--no-membership", default=True, show_default=True)
@click.option("--connector-url", default=None, help="The participant's connector (referringConnector).")
@click.option("--transport-cert", multiple=True, type=click.Path(exists=True, dir_okay=False))
@_jurisdiction_options
@click.option(
    "--certification",
    "certifications",
    multiple=True,
    metavar="IRI",
    help="An attested certification (IRI or URN, e.g. urn:assessment:...); repeatable.",
)
@click.option(
    "--group",
    "groups",
    multiple=True,
    metavar="NAME",
    help="A group (created before) the participant is in; repeatable.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Where to write the certificate (default: participant.crt beside the CSR).",
)
@click.option(
    "--tls-csr",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Also certify the participant's TLS key from this CSR (as `issue-tls`; "
    "the certificate goes to tls.crt beside it).",
)
def authority_register(
    directory: str,
    csr_or_cert: str,
    roles: tuple[str, ...],
    security_profile: str,
    membership: bool,
    connector_url: str | None,
    transport_cert: tuple[str, ...],
    country: str | None,
    subdivision: str | None,
    zone: str | None,
    certifications: tuple[str, ...],
    groups: tuple[str, ...],
    out: str | None,
    tls_csr: str | None,
) -> None:
    """Register a participant from its CSR (or a certificate of this CA); write its certificate
    (and, with --tls-csr, its TLS certificate)."""
    from connector.identity.registry import issue_tls_certificate, register_participant

    store = _store(directory)
    with _errors():
        attributes = ParticipantAttributes.model_validate(
            {
                "securityProfile": security_profile,
                "membership": membership,
                "roles": roles or ("provider", "consumer"),
                "referringConnector": connector_url,
                "transportCertsSha256": [_sha256_of_cert(p) for p in transport_cert],
                "jurisdiction": _jurisdiction(country, subdivision, zone),
                "certifications": certifications,
                "groups": groups,
            }
        )
        record = register_participant(
            store, Path(csr_or_cert).read_bytes(), now=time.time(), attributes=attributes
        )
    target = Path(out) if out else Path(csr_or_cert).with_name(CERT_FILE)
    if not target.exists() or target.read_text() != record.certificate:
        target.write_text(record.certificate)
    # The participant also needs the data-space CA certificate, to verify its peers' TLS.
    ca_target = target.with_name(AuthorityStore.CA_CERT)
    ca_pem = (Path(directory) / AuthorityStore.CA_CERT).read_text()
    if not ca_target.exists() or ca_target.read_text() != ca_pem:
        ca_target.write_text(ca_pem)
    shown = {
        "participant_id": record.participant_id,
        "name": record.name,
        "certificate": str(target),
        "ca_certificate": str(ca_target),
    }
    if tls_csr is not None:
        with _errors():
            pem, digest = issue_tls_certificate(
                store, record.participant_id, Path(tls_csr).read_bytes(), now=time.time()
            )
        tls_target = Path(tls_csr).with_name(TLS_CERT_FILE)
        tls_target.write_text(pem)
        shown |= {"tls_certificate": str(tls_target), "tls_sha256": digest}
    _echo_json(shown)


@authority.command(name="attributes")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.argument("participant_id")
@_jurisdiction_options
@click.option("--no-jurisdiction", is_flag=True, help="Attest no jurisdiction.")
@click.option(
    "--certification",
    "certifications",
    multiple=True,
    metavar="IRI",
    help="Replace the certifications with these; repeatable.",
)
@click.option("--no-certifications", is_flag=True, help="Attest no certification.")
@click.option(
    "--group",
    "groups",
    multiple=True,
    metavar="NAME",
    help="Replace the participant's groups with these; repeatable.",
)
@click.option("--no-groups", is_flag=True, help="Take the participant out of every group.")
def authority_attributes(
    directory: str,
    participant_id: str,
    country: str | None,
    subdivision: str | None,
    zone: str | None,
    no_jurisdiction: bool,
    certifications: tuple[str, ...],
    no_certifications: bool,
    groups: tuple[str, ...],
    no_groups: bool,
) -> None:
    """Show or change what DATs attest about a participant (jurisdiction, certifications,
    groups). Connectors refuse its DATs issued before the change within their poll interval."""
    from connector.identity.registry import participant_view, update_attributes

    store = _store(directory)
    changes: dict[str, Any] = {}
    if no_jurisdiction or country or subdivision or zone:
        changes["jurisdiction"] = None if no_jurisdiction else _jurisdiction(country, subdivision, zone)
    if no_certifications or certifications:
        changes["certifications"] = [] if no_certifications else list(certifications)
    if no_groups or groups:
        changes["groups"] = [] if no_groups else list(groups)
    with _errors():
        if changes:
            record = update_attributes(store, participant_id, changes, now=time.time())
        else:
            record = store.state().participants.get(participant_id)  # type: ignore[assignment]
            if record is None:
                raise click.ClickException(f"no participant {participant_id!r}")
    view = participant_view(record)
    view.pop("certificate")
    _echo_json(view)


@authority.group(name="group")
def authority_group() -> None:
    """Named groups of participants (their DATs name the groups they are in)."""


@authority_group.command(name="create")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.argument("name")
@click.option("--description", default="")
def group_create(directory: str, name: str, description: str) -> None:
    """Create an empty group."""
    from connector.identity.registry import create_group

    store = _store(directory)
    with _errors():
        _echo_json(create_group(store, name, now=time.time(), description=description).model_dump())


@authority_group.command(name="delete")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.argument("name")
def group_delete(directory: str, name: str) -> None:
    """Delete a group; its members leave it."""
    from connector.identity.registry import delete_group

    store = _store(directory)
    with _errors():
        _echo_json({"deleted": name, "left": delete_group(store, name, now=time.time())})


@authority_group.command(name="add")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.argument("name")
@click.argument("participant_id")
def group_add(directory: str, name: str, participant_id: str) -> None:
    """Add a participant to a group."""
    _membership(directory, name, participant_id, member=True)


@authority_group.command(name="remove")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.argument("name")
@click.argument("participant_id")
def group_remove(directory: str, name: str, participant_id: str) -> None:
    """Take a participant out of a group."""
    _membership(directory, name, participant_id, member=False)


@authority_group.command(name="list")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
def group_list(directory: str) -> None:
    """List the groups and their members."""
    from connector.identity.registry import group_views

    _echo_json(group_views(_store(directory).state()))


def _membership(directory: str, name: str, pid: str, *, member: bool) -> None:
    from connector.identity.registry import set_membership

    store = _store(directory)
    with _errors():
        record = set_membership(store, name, pid, member=member, now=time.time())
    _echo_json({"participant_id": record.participant_id, "groups": list(record.attributes.groups)})


@authority.command(name="revoke")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.argument("participant_id")
@click.option("--reason", default="")
def authority_revoke(directory: str, participant_id: str, reason: str) -> None:
    """Revoke a participant: no new DATs at once; connectors refuse it within their poll."""
    from connector.identity.registry import revoke_participant

    store = _store(directory)
    with _errors():
        record = revoke_participant(store, participant_id, now=time.time(), reason=reason)
    _echo_json({"participant_id": record.participant_id, "revoked_at": record.revoked_at})


@authority.command(name="rotate-key")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--overlap",
    type=int,
    default=None,
    help="Seconds the old key stays published (default: the DAT lifetime).",
)
def authority_rotate_key(directory: str, overlap: int | None) -> None:
    """Roll the token-signing key; the old one is published until the overlap ends."""
    from connector.identity.registry import rotate_signing_key

    store = _store(directory)
    with _errors():
        _echo_json(rotate_signing_key(store, now=time.time(), overlap=overlap))


@authority.command(name="retire-keys")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
def authority_retire_keys(directory: str) -> None:
    """End the rotation overlap now: tokens signed by previous keys stop verifying."""
    from connector.identity.registry import retire_previous_keys

    store = _store(directory)
    _echo_json({"retired": retire_previous_keys(store, now=time.time())})


@authority.command(name="participants")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
def authority_participants(directory: str) -> None:
    """List registered participants."""
    store = _store(directory)
    _echo_json(
        [
            {
                "participant_id": p.participant_id,
                "name": p.name,
                "roles": list(p.attributes.roles),
                "jurisdiction": p.attributes.jurisdiction.claim() if p.attributes.jurisdiction else None,
                "groups": list(p.attributes.groups),
                "revoked_at": p.revoked_at,
            }
            for p in store.state().participants.values()
        ]
    )


@authority.command(name="revocations")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
def authority_revocations(directory: str) -> None:
    """List revoked participants."""
    store = _store(directory)
    state = store.state()
    _echo_json(
        {
            "seq": state.revocation_seq,
            "revoked": [
                {"participant_id": pid, "revoked_at": p.revoked_at, "reason": p.revocation_reason}
                for pid, p in state.participants.items()
                if p.revoked_at is not None
            ],
        }
    )


@click.command(name="init")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--name", required=True, help="The participant's human-readable name.")
@click.option("--alg", type=click.Choice(ALGORITHMS), default="EdDSA", show_default=True)
@click.option(
    "--tls-host",
    "tls_hosts",
    multiple=True,
    help="A host name or IP address the connector serves DSP on (repeatable): also "
    "create a TLS key and CSR (tls.key, tls.csr).",
)
def init(directory: str, name: str, alg: str, tls_hosts: tuple[str, ...]) -> None:
    """Create a participant's key pair and certificate signing request in DIRECTORY."""
    with _errors():
        csr = init_participant(directory, name, alg=alg, tls_hosts=tls_hosts)  # type: ignore[arg-type]
    out = {
        "csr": str(csr),
        "next": "have the operator run `connector authority register AUTHORITY_DIR "
        f"{csr}`; the certificate goes to {Path(directory) / CERT_FILE}",
    }
    if tls_hosts:
        out["tls_csr"] = str(Path(directory) / TLS_CSR_FILE)
    _echo_json(out)


@click.group()
def standalone() -> None:
    """Identity commands alone (`python -m connector.identity ...`)."""


standalone.add_command(authority)
standalone.add_command(init)
