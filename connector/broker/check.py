"""`connector config check` of a broker's config file (connector.broker.config): the file's
errors, and what is weaker than it could be, with the findings of a connector's check
(connector.initconfig): the TLS mode held against mutual TLS (and a ``--security-profile``),
proxy mode trusting no proxy, crawls allowed to private addresses, a broker without the
participant identity its crawls and data product certificates need."""

from __future__ import annotations

from pathlib import Path

from connector.broker.config import load_broker_config
from connector.config import ConfigError, _read_toml
from connector.initconfig import Finding, tls_mode_findings


def is_broker_config(path: Path) -> bool:
    """Whether ``path`` is a broker's config (a [broker] table with a participant_dir and no
    [connector]); False for anything unreadable (the connector's check then says why)."""
    try:
        data = _read_toml(path)
    except ConfigError:
        return False
    broker = data.get("broker")
    return "connector" not in data and isinstance(broker, dict) and "participant_dir" in broker


def check_broker(path: Path, *, security_profile: str | None = None) -> list[Finding]:
    """What is missing or wrong in the broker config at ``path`` (no error: it can be served)."""
    try:
        config = load_broker_config(path)
    except ConfigError as exc:
        return [Finding("error", "file", str(exc))]
    b = config.broker
    findings = list(tls_mode_findings(b, "broker", security_profile))
    missing = [
        n for n in ("participant.key", "participant.crt") if not (config.participant_dir / n).is_file()
    ]
    if missing:
        findings.append(
            Finding(
                "warning",
                "broker.participant_dir",
                f"{', '.join(missing)} missing in {config.participant_dir}: no federated catalog "
                "(crawls request catalogs as the broker) and no data product certificates",
            )
        )
    if b.peer_allow:
        findings.append(
            Finding(
                "warning",
                "broker.peer_allow",
                f"crawls may reach private or loopback addresses {', '.join(b.peer_allow)}",
            )
        )
    return findings
