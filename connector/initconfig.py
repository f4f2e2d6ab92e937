"""A connector's setup from nothing (`connector init DIR --role ...`) and the check of a config
file (`connector config check CONFIG`).

`init` with a role writes one folder an operator can start from::

    DIR/connector.toml     every key of connector.config with its default and its description
    DIR/management.key     the management API key (0600)
    DIR/participant/       the participant's key and CSR, the TLS key and CSR (connector.identity)
    DIR/data/              (provider) the folder whose files may be file assets

The config's text is rendered from the pydantic models in connector.config (each field's
description and default), so it cannot drift from what `serve` reads.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import secrets
import socket
import textwrap
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import aiohttp
import jwt
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from connector.config import Config, ConfigError, WebhookSection, load_config
from connector.http.clientcert import TlsMode
from connector.identity.client import DatClient, ParticipantIdentity, init_participant

log = logging.getLogger(__name__)
Role = Literal["provider", "consumer"]
CONFIG_FILE = "connector.toml"
KEY_FILE = "management.key"
PARTICIPANT_DIR = "participant"
DATA_DIR = "data"
WIDTH = 96

# the sections in the order `init` writes them (Config's own fields that are not sections are
# set by load_config)
SECTIONS = (
    "connector",
    "dsp",
    "management",
    "store",
    "negotiation",
    "dataplane",
    "assets",
    "limits",
    "broker",
)


def free_port(host: str) -> int:
    """A TCP port nothing listens on now (the kernel's choice)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Path):
        return _toml(str(value))
    if isinstance(value, str):
        # a TOML basic string (JSON's escapes are TOML's) whose "$" stays a "$" when the
        # config is read (connector.tomlenv expands "${NAME}" and reads "$$" as "$")
        return json.dumps(value.replace("$", "$$"))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _comment(text: str, indent: str = "") -> list[str]:
    return [indent + "# " + line for line in textwrap.wrap(text, WIDTH - len(indent) - 2)]


def _default(model: type[BaseModel], name: str) -> Any:
    f = model.model_fields[name]
    if f.default_factory is not None:
        return f.default_factory()  # type: ignore[call-arg]
    return None if f.default is PydanticUndefined else f.default


def render(values: Mapping[str, Mapping[str, Any]], notes: Mapping[str, str] | None = None) -> str:
    """The whole config: every key of every section with its description, set to ``values``
    where given, else to its default (a key without one is written commented out)."""
    notes = notes or {}
    lines = [
        "# The connector's configuration (connector.config): every key with its default.",
        "# Relative paths are relative to this file's folder. A string value may name environment",
        '# variables: "${NAME}", "${NAME:-default}" ("$$" is a literal "$"). Check it with',
        "# `connector config check connector.toml`; run it with `connector serve connector.toml`.",
    ]
    for section in SECTIONS:
        model = Config.model_fields[section].annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        lines += ["", f"[{section}]"]
        if model.__doc__ and not model.__doc__.startswith(model.__name__ + "("):
            lines += _comment(" ".join(model.__doc__.split()))
        given = values.get(section, {})
        for name, f in model.model_fields.items():
            lines += _comment(f.description or "")
            if f"{section}.{name}" in notes:
                lines += _comment("here: " + notes[f"{section}.{name}"])
            value = given[name] if name in given else _default(model, name)
            lines.append(f"{name} = {_toml(value)}" if value is not None else f"# {name} =")
    # a list of tables, none by default: an example to copy, commented out
    lines += ["", "# Webhooks (none by default): one [[webhooks]] table per receiver."]
    lines += _comment(" ".join((WebhookSection.__doc__ or "").split()))
    lines.append("# [[webhooks]]")
    for name, f in WebhookSection.model_fields.items():
        lines += _comment(f.description or "")
        example = {"url": "https://ops.example/connector-events", "secret_file": "webhook.key"}
        value = example.get(name, _default(WebhookSection, name))
        lines.append(f"# {name} = {_toml(value)}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Setup:
    """What `connector init DIR --role ...` writes, before any file is written."""

    directory: Path
    name: str
    role: Role
    host: str = "127.0.0.1"
    authority_url: str = "http://127.0.0.1:8700"
    dsp_port: int | None = None
    management_port: int | None = None
    dataplane_port: int | None = None
    plain_http: bool = False
    ports: dict[str, int] = field(default_factory=dict)

    def values(self) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
        """(the values set in the config, a note per key explaining a value init chose)."""
        ports = {"dsp": self.dsp_port, "management": self.management_port, "dataplane": self.dataplane_port}
        notes: dict[str, str] = {}
        for section, port in list(ports.items()):
            if port is None:
                ports[section] = free_port(self.host)
                notes[f"{section}.port"] = "a port that was free when `connector init` ran"
        scheme = "http" if self.plain_http else "https"
        provider = self.role == "provider"
        values: dict[str, dict[str, Any]] = {
            "connector": {
                "participant_dir": PARTICIPANT_DIR,
                "authority_url": self.authority_url,
                "public_url": f"{scheme}://{self.host}:{ports['dsp']}",
                "title": f"{self.name} ({self.role})",
            },
            "dsp": {
                "host": self.host,
                "port": ports["dsp"],
                "tls_mode": "none" if self.plain_http else "mutual",
            },
            "management": {"port": ports["management"], "api_key_file": KEY_FILE},
            "dataplane": {"enabled": provider, "host": self.host, "port": ports["dataplane"]},
            "assets": {"roots": [DATA_DIR] if provider else []},
        }
        if is_loopback(self.host):
            # every party of this data space is on this machine: its calls go to loopback
            loop = ["127.0.0.0/8", "::1"]
            values["dsp"]["peer_allow"] = loop
            values["dataplane"].update(push_allow=loop, pull_allow=loop, upstream_allow=[])
            for key in ("dsp.peer_allow", "dataplane.push_allow", "dataplane.pull_allow"):
                notes[key] = (
                    "loopback, because this connector was set up on a loopback address; "
                    "remove it for a connector that talks to the internet"
                )
        return values, notes


def write_setup(setup: Setup) -> dict[str, Any]:
    """Write the folder (refusing to overwrite an existing config or key); what was written."""
    d = setup.directory
    config_path, key_path = d / CONFIG_FILE, d / KEY_FILE
    for p in (config_path, key_path):
        if p.exists():
            raise ConfigError(f"{p} already exists; refusing to overwrite it")
    d.mkdir(parents=True, exist_ok=True)
    values, notes = setup.values()
    participant = d / PARTICIPANT_DIR
    participant.mkdir(exist_ok=True)
    csr = init_participant(participant, setup.name, tls_hosts=(setup.host,))
    key_path.touch(mode=0o600)
    key_path.write_text(secrets.token_urlsafe(32) + "\n", encoding="utf-8")
    if setup.role == "provider":
        (d / DATA_DIR).mkdir(exist_ok=True)
    config_path.write_text(render(values, notes), encoding="utf-8")
    return {
        "config": str(config_path),
        "api_key_file": str(key_path),
        "csr": str(csr),
        "tls_csr": str(participant / "tls.csr"),
        "ports": {s: values[s]["port"] for s in ("dsp", "management", "dataplane")},
    }


# ------------------------------------------------------------------ config check


@dataclass(frozen=True)
class Finding:
    level: Literal["error", "warning"]
    key: str  # the config key (section.name) or file it is about
    text: str


def _files(config: Config) -> Iterator[Finding]:
    d = config.participant_dir
    if not d.is_dir():
        yield Finding(
            "error", "connector.participant_dir", f"{d} does not exist: create it with `connector init`"
        )
        return
    for name, why in (
        ("participant.key", "the participant's key (`connector init`)"),
        (
            "participant.crt",
            "the participant's certificate: have the authority's operator run `connector authority register`",
        ),
        ("ca.crt", "the data-space CA certificate (the authority's ca.crt)"),
    ):
        if not (d / name).is_file():
            yield Finding("error", "connector.participant_dir", f"{d / name} is missing: {why}")
    try:
        config.management_api_key()
    except ConfigError as exc:
        yield Finding("error", "management.api_key_file", str(exc))


TRUSTED_PROFILES = ("idsc:TRUST_SECURITY_PROFILE", "idsc:TRUST_PLUS_SECURITY_PROFILE")
WEAKER = {
    "none": "DSP without TLS: peers' identities rest on their DATs alone and the traffic can be "
    "read and changed on the way; for loopback tests only",
    "server": "peers need not present their data-space certificate: a DAT bound to a "
    "certificate is checked against it only where one is presented, so a stolen DAT "
    "is usable without its holder's certificate",
    "proxy": "TLS ends at the proxy: the client certificate is what the trusted proxies pass in "
    "the certificate header, the binding is checked only where they pass one (a stolen "
    "DAT is usable without its holder's certificate), and whoever controls a trusted "
    "proxy address can claim any certificate",
}


class TlsKeys(Protocol):
    """The TLS mode's keys of a section ([dsp], the broker's [broker])."""

    tls_mode: TlsMode
    plain_http: bool | None
    trusted_proxies: list[str]
    client_cert_header: str


def tls_mode_findings(section: TlsKeys, name: str, profile: str | None) -> Iterator[Finding]:
    """A mode weaker than mutual TLS: its consequence; weaker than the data space asks (the
    authority attests a TRUST profile, whose connectors authenticate mutually on the
    transport): said so; proxy mode that trusts no proxy. ``name``: the section's."""
    mode = section.tls_mode
    key = f"{name}.plain_http" if mode == "none" and section.plain_http else f"{name}.tls_mode"
    if mode in WEAKER:
        yield Finding("warning", key, WEAKER[mode])
    if profile in TRUSTED_PROFILES and mode != "mutual":
        yield Finding(
            "warning",
            f"{name}.tls_mode",
            f"the authority attests {profile} for this connector, and that profile "
            f"asks for mutual TLS on the data-space CA: tls_mode = {mode!r} "
            "is weaker than the data space asks",
        )
    if mode == "proxy" and not section.trusted_proxies:
        yield Finding(
            "warning",
            f"{name}.trusted_proxies",
            f"no proxy is trusted: {section.client_cert_header} is never read, every peer "
            "counts as presenting no certificate and no DAT's binding is checked",
        )


def _security(config: Config, profile: str | None = None) -> Iterator[Finding]:
    yield from tls_mode_findings(config.dsp, "dsp", profile)
    if not is_loopback(config.management.host):
        yield Finding(
            "warning",
            "management.host",
            f"the management API listens on {config.management.host}, not loopback: "
            "anyone who reaches it and has the key controls this connector",
        )
    for section, key, allow in (
        ("dsp", "peer_allow", config.dsp.peer_allow),
        ("dataplane", "push_allow", config.dataplane.push_allow),
        ("dataplane", "pull_allow", config.dataplane.pull_allow),
        ("dataplane", "upstream_allow", config.dataplane.upstream_allow),
    ):
        if allow:
            yield Finding(
                "warning",
                f"{section}.{key}",
                f"calls may reach private or loopback addresses {', '.join(allow)}",
            )
    ports = {"dsp": config.dsp.port, "management": config.management.port}
    if config.dataplane.enabled:
        ports["dataplane"] = config.dataplane.port
    used: dict[int, str] = {}
    for name, port in ports.items():
        if port and port in used:
            yield Finding("error", f"{name}.port", f"port {port} is also {used[port]}.port")
        used[port] = name


def attested_security_profile(config: Config, timeout: float = 5.0) -> str | None:
    """The securityProfile the authority attests in this connector's DAT; None when no DAT can
    be had now (no key or certificate yet, the authority unreachable)."""

    async def fetch() -> str:
        identity = ParticipantIdentity.load(config.participant_dir)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            dat = await DatClient.discover(session, config.connector.authority_url, identity)
            token = await asyncio.wait_for(dat.token(), timeout)
        # only read (what to warn about), never trusted: serve verifies every DAT
        payload = jwt.decode(token, options={"verify_signature": False})
        return str(payload.get("securityProfile") or "")

    try:
        return asyncio.run(fetch()) or None
    except Exception as exc:  # any reason there is no DAT now: the rule is skipped, said so
        log.info("no DAT for the security profile check: %s", exc)
        return None


def check(path: Path, *, security_profile: str | None = None, ask_authority: bool = False) -> list[Finding]:
    """What is missing or wrong in the config at ``path`` (empty: it can be served). The TLS
    mode is held against ``security_profile``, or with ``ask_authority`` the one the authority
    attests in this connector's DAT."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        return [Finding("error", "file", str(exc))]
    files = list(_files(config))
    if security_profile is None and ask_authority and not files:
        security_profile = attested_security_profile(config)
    return [*files, *_security(config, security_profile)]
