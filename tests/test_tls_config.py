"""`[dsp] tls_mode` in the configuration (connector.config): the older plain_http/mutual_tls
mapped onto it, contradictions refused with the reason, proxy mode only on a private address
with an https public URL; and what `connector config check` says about each mode."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from connector.config import Config
from connector.devspace import process_env
from connector.initconfig import Setup, check, render


def _config(public_url: str = "https://c.example", **dsp: Any) -> Config:
    return Config.model_validate(
        {
            "connector": {"participant_dir": "p", "authority_url": "http://a", "public_url": public_url},
            "management": {"api_key": "k" * 16},
            "dsp": dsp,
        }
    )


@pytest.mark.parametrize(
    ("dsp", "mode"),
    [
        ({}, "mutual"),
        ({"plain_http": True}, "none"),
        ({"plain_http": True, "mutual_tls": True}, "none"),  # as devspace wrote it: no TLS at all
        ({"plain_http": False}, "mutual"),
        ({"mutual_tls": True}, "mutual"),
        ({"mutual_tls": False}, "server"),
        ({"tls_mode": "server"}, "server"),
        ({"tls_mode": "server", "mutual_tls": False}, "server"),  # the same said twice
        ({"tls_mode": "none", "plain_http": True}, "none"),
    ],
)
def test_the_older_keys_map_onto_the_mode(dsp: dict[str, Any], mode: str) -> None:
    assert _config(**dsp).dsp.tls_mode == mode


@pytest.mark.parametrize(
    "dsp",
    [
        {"tls_mode": "mutual", "mutual_tls": False},
        {"tls_mode": "server", "plain_http": True},
        {"tls_mode": "proxy", "host": "10.0.0.5", "mutual_tls": True},
    ],
)
def test_old_and_new_keys_in_contradiction_are_an_error_with_the_reason(dsp: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="contradicts the older plain_http"):
        _config(**dsp)


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("8.8.8.8", "is a public address"),
        ("0.0.0.0", "listens on every interface"),
        ("::", "listens on every interface"),
        ("proxy.example", "is not an IP address"),
    ],
)
def test_proxy_mode_refuses_to_bind_a_public_address(host: str, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        _config(tls_mode="proxy", host=host)


@pytest.mark.parametrize("host", ["127.0.0.1", "10.1.2.3", "192.168.0.7", "fd00::1", "::1", "localhost"])
def test_proxy_mode_binds_private_and_loopback_addresses(host: str) -> None:
    config = _config(tls_mode="proxy", host=host, trusted_proxies=["10.0.0.0/8", "fd00::/8"])
    assert not config.dsp.serves_tls and config.dsp.uses_tls
    certs = config.dsp.client_certificates()
    assert certs.mode == "proxy" and certs.header == "X-Forwarded-Client-Cert"
    assert [str(n) for n in certs.trusted_proxies] == ["10.0.0.0/8", "fd00::/8"]


def test_the_certificate_header_format_reaches_the_client_certificates() -> None:
    assert _config(tls_mode="proxy", host="10.0.0.2").dsp.client_certificates().format == "pem"  # as before
    certs = _config(
        tls_mode="proxy", host="10.0.0.2", client_cert_format="envoy-xfcc"
    ).dsp.client_certificates()
    assert certs.format == "envoy-xfcc" and certs.header == "X-Forwarded-Client-Cert"


def test_proxy_mode_keeps_the_public_url_https() -> None:
    with pytest.raises(ValidationError, match="public_url must be the proxy's https URL"):
        _config(public_url="http://c.example", tls_mode="proxy")


@pytest.mark.parametrize(
    ("dsp", "reason"),
    [
        ({"trusted_proxies": ["proxy.example"]}, "neither an IP address nor a CIDR"),
        ({"trusted_proxies": ["10.0.0.0/33"]}, "neither an IP address nor a CIDR"),
        ({"client_cert_header": "X Client: Cert"}, "not an HTTP header name"),
        ({"tls_mode": "optional"}, "tls_mode"),
        ({"client_cert_format": "xfcc"}, "client_cert_format"),
    ],
)
def test_bad_values_are_refused(dsp: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        _config(**dsp)


def _checked(tmp_path: Path, profile: str | None, **dsp: Any) -> set[tuple[str, str]]:
    values, _ = Setup(
        tmp_path, "C", "consumer", host="10.0.0.2", dsp_port=9001, management_port=9002, dataplane_port=9003
    ).values()
    values["dsp"].update(dsp)
    path = tmp_path / "connector.toml"
    path.write_text(render(values))
    (tmp_path / "participant").mkdir(exist_ok=True)
    for name in ("tls.crt", "tls.key", "ca.crt"):  # present (load_config asks no more of them)
        (tmp_path / "participant" / name).touch()
    return {(f.key, f.text) for f in check(path, security_profile=profile) if f.key.startswith("dsp.")}


def test_check_says_what_each_mode_costs(tmp_path: Path) -> None:
    assert _checked(tmp_path, "idsc:BASE_SECURITY_PROFILE") == set()  # init writes "mutual"
    server = _checked(tmp_path, "idsc:BASE_SECURITY_PROFILE", tls_mode="server")
    assert {k for k, _ in server} == {"dsp.tls_mode"}
    assert "a stolen DAT is usable without its holder's certificate" in next(iter(server))[1]
    proxy = _checked(tmp_path, None, tls_mode="proxy", trusted_proxies=["10.0.0.1"])
    assert len(proxy) == 1 and "whoever controls a trusted proxy" in next(iter(proxy))[1]
    none = _checked(tmp_path, None, tls_mode="none")
    assert "for loopback tests only" in next(iter(none))[1]
    # a file written with the older key is named by it
    assert {k for k, _ in _checked(tmp_path, None, plain_http=True, tls_mode=None)} == {"dsp.plain_http"}


def test_check_reports_a_contradiction_as_an_error(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        render(
            {
                "connector": {"participant_dir": "p", "authority_url": "http://a", "public_url": "https://c"},
                "management": {"api_key_file": "k"},
                "dsp": {"tls_mode": "server", "plain_http": True},
            }
        )
    )
    (finding,) = check(path)
    assert finding.level == "error" and "contradicts the older plain_http = true" in finding.text


def test_check_warns_about_a_mode_weaker_than_the_data_space_asks(tmp_path: Path) -> None:
    for profile in ("idsc:TRUST_SECURITY_PROFILE", "idsc:TRUST_PLUS_SECURITY_PROFILE"):
        assert _checked(tmp_path, profile) == set()  # mutual TLS: as asked
        server = _checked(tmp_path, profile, tls_mode="server")
        asked = [text for _, text in server if profile in text]
        assert len(asked) == 1 and "weaker than the data space asks" in asked[0]
    base = _checked(tmp_path, "idsc:BASE_SECURITY_PROFILE", tls_mode="server")
    assert not any("data space asks" in text for _, text in base)


def test_check_warns_about_proxy_mode_trusting_no_proxy(tmp_path: Path) -> None:
    found = _checked(tmp_path, None, tls_mode="proxy")
    empty = [text for key, text in found if key == "dsp.trusted_proxies"]
    assert len(empty) == 1 and "X-Forwarded-Client-Cert is never read" in empty[0]


def test_serve_refuses_to_start_proxy_mode_on_a_public_address(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        render(
            {
                "connector": {
                    "participant_dir": "p",
                    "authority_url": "http://a",
                    "public_url": "https://c.example",
                },
                "management": {"api_key": "k" * 16},
                "dsp": {"tls_mode": "proxy", "host": "8.8.4.4"},
            }
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "connector", "serve", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=process_env(),
    )
    assert done.returncode != 0
    assert "host must be a private or loopback address, and 8.8.4.4 is a public address" in done.stderr, (
        done.stderr
    )
