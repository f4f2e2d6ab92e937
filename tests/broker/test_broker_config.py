"""The broker's `tls_mode` (connector.broker.config), validated by the connector's own rules
(connector.config): every mode, the older plain_http/mutual_tls with the broker's old defaults,
contradictions, proxy mode only on a private address with an https public URL; the metrics key
file; and what `connector config check` says about a broker's file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from connector.broker.check import check_broker, is_broker_config
from connector.broker.config import BrokerConfig, load_broker_config
from connector.config import ConfigError
from connector.devspace import process_env


def _toml(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, bool) else str(value).lower()


def _write(tmp_path: Path, name: str = "broker.toml", *, tls_files: bool = True, **broker: Any) -> Path:
    participant = tmp_path / "participant"
    participant.mkdir(exist_ok=True)
    if tls_files:
        for f in ("tls.crt", "tls.key", "ca.crt"):  # present (the loader asks no more of them)
            (participant / f).touch()
    keys = {"participant_dir": "participant", "authority_url": "http://127.0.0.1:8700", "validation": "off"}
    keys.update(broker)
    lines = "".join(f"{k} = {_toml(v)}\n" for k, v in keys.items())
    path = tmp_path / name
    path.write_text(f"[broker]\n{lines}")
    return path


def _load(tmp_path: Path, **broker: Any) -> BrokerConfig:
    return load_broker_config(_write(tmp_path, **broker))


@pytest.mark.parametrize(
    ("broker", "mode"),
    [
        ({}, "mutual"),  # as a connector's
        ({"tls_mode": "mutual"}, "mutual"),
        ({"tls_mode": "server"}, "server"),
        ({"tls_mode": "none"}, "none"),
        ({"tls_mode": "proxy", "public_url": "https://broker.example"}, "proxy"),
        ({"plain_http": True}, "none"),
        ({"plain_http": True, "mutual_tls": True}, "none"),
        ({"plain_http": False}, "server"),  # the old mutual_tls defaulted to false at the broker
        ({"plain_http": False, "mutual_tls": False}, "server"),  # the old template's keys
        ({"mutual_tls": True}, "mutual"),
        ({"mutual_tls": False}, "server"),
        ({"tls_mode": "mutual", "mutual_tls": True}, "mutual"),  # the same said twice
        ({"tls_mode": "none", "plain_http": True}, "none"),
    ],
)
def test_every_mode_and_the_older_keys(tmp_path: Path, broker: dict[str, Any], mode: str) -> None:
    b = _load(tmp_path, **broker).broker
    assert b.tls_mode == mode
    assert b.serves_tls == (mode in ("mutual", "server"))
    assert b.uses_tls == (mode != "none")
    assert b.client_certificates().mode == mode


@pytest.mark.parametrize(
    "broker",
    [
        {"tls_mode": "mutual", "mutual_tls": False},
        {"tls_mode": "mutual", "plain_http": False},  # plain_http = false alone was "server" here
        {"tls_mode": "server", "plain_http": True},
        {"tls_mode": "none", "mutual_tls": True},
        {"tls_mode": "proxy", "host": "10.0.0.5", "public_url": "https://b.example", "mutual_tls": True},
    ],
)
def test_old_and_new_keys_in_contradiction_are_an_error(tmp_path: Path, broker: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="contradicts the older plain_http"):
        _load(tmp_path, **broker)


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("8.8.8.8", "8.8.8.8 is a public address"),
        ("0.0.0.0", "listens on every interface"),
        ("::", "listens on every interface"),
        ("broker.example", "is not an IP address"),
    ],
)
def test_proxy_mode_refuses_a_public_or_unspecified_host(tmp_path: Path, host: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=f"host must be a private or loopback address, and .*{reason}"):
        _load(tmp_path, tls_mode="proxy", host=host, public_url="https://broker.example")


@pytest.mark.parametrize("host", ["127.0.0.1", "10.1.2.3", "fd00::1", "localhost"])
def test_proxy_mode_on_a_private_host(tmp_path: Path, host: str) -> None:
    b = _load(
        tmp_path,
        tls_mode="proxy",
        host=host,
        public_url="https://broker.example",
        trusted_proxies=["10.0.0.0/8"],
        client_cert_header="X-Client-Cert",
    ).broker
    certs = b.client_certificates()
    assert (certs.mode, certs.header, [str(n) for n in certs.trusted_proxies]) == (
        "proxy",
        "X-Client-Cert",
        ["10.0.0.0/8"],
    )


@pytest.mark.parametrize("public_url", [None, "http://broker.example"])
def test_proxy_mode_needs_the_proxys_https_url(tmp_path: Path, public_url: str | None) -> None:
    keys = {"public_url": public_url} if public_url else {}
    with pytest.raises(ConfigError, match="public_url must be the proxy's https URL"):
        _load(tmp_path, tls_mode="proxy", **keys)


@pytest.mark.parametrize(
    ("broker", "reason"),
    [
        ({"trusted_proxies": ["proxy.example"]}, "neither an IP address nor a CIDR"),
        ({"client_cert_header": "X Client: Cert"}, "not an HTTP header name"),
        ({"tls_mode": "optional"}, "tls_mode"),
        ({"mutual_tls": "sometimes"}, "mutual_tls"),
    ],
)
def test_bad_values_are_refused(tmp_path: Path, broker: dict[str, Any], reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        _load(tmp_path, **broker)


def test_tls_files_are_needed_in_every_mode_but_none(tmp_path: Path) -> None:
    for mode in ("mutual", "server"):
        with pytest.raises(ConfigError, match=f"tls_mode = '{mode}' uses TLS but .*tls.crt"):
            load_broker_config(_write(tmp_path, tls_files=False, tls_mode=mode))
    with pytest.raises(ConfigError, match="'proxy' uses TLS"):  # the crawls use its certificate
        load_broker_config(
            _write(tmp_path, tls_files=False, tls_mode="proxy", public_url="https://b.example")
        )
    assert load_broker_config(_write(tmp_path, tls_files=False, tls_mode="none")).broker.tls_mode == "none"


def test_the_metrics_key_file(tmp_path: Path) -> None:
    assert _load(tmp_path).metrics_key() is None  # no key: no /metrics
    (tmp_path / "metrics.key").write_text("k" * 24 + "\n")
    assert _load(tmp_path, metrics_key_file="metrics.key").metrics_key() == "k" * 24
    (tmp_path / "short.key").write_text("short\n")
    with pytest.raises(ConfigError, match="shorter than 16 characters"):
        _load(tmp_path, metrics_key_file="short.key")
    with pytest.raises(ConfigError, match="metrics_key_file: cannot read"):
        _load(tmp_path, metrics_key_file="absent.key")


def _findings(path: Path, profile: str | None = None) -> set[tuple[str, str]]:
    return {(f.key, f.level) for f in check_broker(path, security_profile=profile)}


def test_config_check_of_a_broker_file(tmp_path: Path) -> None:
    assert is_broker_config(_write(tmp_path))
    assert _findings(_write(tmp_path)) == {("broker.participant_dir", "warning")}
    for f in ("participant.key", "participant.crt"):
        (tmp_path / "participant" / f).touch()
    assert _findings(_write(tmp_path)) == set()  # "mutual", the default
    assert _findings(_write(tmp_path, tls_mode="server")) == {("broker.tls_mode", "warning")}
    assert _findings(_write(tmp_path, mutual_tls=False)) == {("broker.tls_mode", "warning")}
    assert _findings(_write(tmp_path, plain_http=True)) == {("broker.plain_http", "warning")}
    assert _findings(_write(tmp_path, tls_mode="proxy", public_url="https://b.example")) == {
        ("broker.tls_mode", "warning"),
        ("broker.trusted_proxies", "warning"),
    }
    trusted = check_broker(
        _write(tmp_path, tls_mode="server"), security_profile="idsc:TRUST_SECURITY_PROFILE"
    )
    assert any("weaker than the data space asks" in f.text for f in trusted)
    (error,) = check_broker(_write(tmp_path, tls_mode="server", plain_http=True))
    assert error.level == "error" and "contradicts the older plain_http = true" in error.text


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "connector", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=process_env(),
    )


def test_the_cli_checks_a_broker_file_and_serve_refuses_proxy_mode_on_a_public_address(
    tmp_path: Path,
) -> None:
    done = _cli("config", "check", str(_write(tmp_path, tls_mode="none")))
    assert done.returncode == 0, done.stderr
    assert "warning: broker.tls_mode:" in done.stdout and "for loopback tests only" in done.stdout
    public = _write(tmp_path, tls_mode="proxy", host="8.8.4.4", public_url="https://b.example")
    done = _cli("config", "check", str(public))
    assert done.returncode == 1 and "8.8.4.4 is a public address" in done.stdout, done.stdout
    done = _cli("broker", "serve", str(public))
    assert done.returncode != 0
    assert "host must be a private or loopback address, and 8.8.4.4 is a public address" in done.stderr, (
        done.stderr
    )
