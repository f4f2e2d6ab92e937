"""TLS certificates from the data-space CA, served and checked over a real TLS connection."""

from __future__ import annotations

import hashlib
import json
import ssl
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from connector.cli import main
from connector.http.tls import (
    check_transport_binding,
    client_context,
    peer_certificate_sha256,
    server_context,
)


def run(*args: object) -> dict:
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


@pytest.fixture
def space(tmp_path: Path) -> dict[str, Path | str]:
    run("authority", "init", tmp_path / "auth", "--name", "TLS space")
    out = {"auth": tmp_path / "auth"}
    for name in ("alice", "bob"):
        run(
            "init",
            tmp_path / name,
            "--name",
            name.capitalize(),
            "--tls-host",
            "127.0.0.1",
            "--tls-host",
            "localhost",
        )
        reg = run("authority", "register", tmp_path / "auth", tmp_path / name / "participant.csr")
        tls = run(
            "authority",
            "issue-tls",
            tmp_path / "auth",
            tmp_path / name / "tls.csr",
            "--participant",
            reg["participant_id"],
        )
        out[name] = tmp_path / name
        out[name + "_pid"] = reg["participant_id"]
        out[name + "_sha"] = tls["sha256"]
    return out


def test_tls_certificate_names_the_hosts_and_is_bound_in_the_registry(space: dict) -> None:
    cert = x509.load_pem_x509_certificate((space["alice"] / "tls.crt").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    der = cert.public_bytes(serialization.Encoding.DER)
    assert hashlib.sha256(der).hexdigest() == space["alice_sha"]
    state = json.loads((space["auth"] / "state.json").read_text())
    attrs = state["participants"][space["alice_pid"]]["attributes"]
    assert space["alice_sha"] in attrs["transport_certs_sha256"]


def test_issue_tls_refuses_bad_requests(space: dict, tmp_path: Path) -> None:
    runner = CliRunner()
    # the identity CSR has no subjectAltName: not a TLS request
    res = runner.invoke(
        main,
        [
            "authority",
            "issue-tls",
            str(space["auth"]),
            str(space["alice"] / "participant.csr"),
            "--participant",
            space["alice_pid"],
        ],
    )
    assert res.exit_code != 0 and "subjectAltName" in res.output
    # Bob's TLS CSR for Alice's participant id: the name does not match
    res = runner.invoke(
        main,
        [
            "authority",
            "issue-tls",
            str(space["auth"]),
            str(space["bob"] / "tls.csr"),
            "--participant",
            space["alice_pid"],
        ],
    )
    assert res.exit_code != 0 and "common name" in res.output
    res = runner.invoke(
        main,
        [
            "authority",
            "issue-tls",
            str(space["auth"]),
            str(space["bob"] / "tls.csr"),
            "--participant",
            "AA:keyid:BB",
        ],
    )
    assert res.exit_code != 0 and "no participant" in res.output


async def test_mutual_tls_with_the_data_space_ca(space: dict) -> None:
    ca = space["auth"] / "ca.crt"
    assert ca.is_file()
    seen: list[str | None] = []

    async def hello(request: web.Request) -> web.Response:
        seen.append(peer_certificate_sha256(request))
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(
        runner,
        "127.0.0.1",
        0,
        ssl_context=server_context(
            space["alice"] / "tls.crt", space["alice"] / "tls.key", ca, require_client_cert=True
        ),
    )
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        bob_ctx = client_context(ca, space["bob"] / "tls.crt", space["bob"] / "tls.key")
        async with aiohttp.ClientSession() as http:
            async with http.get(f"https://127.0.0.1:{port}/", ssl=bob_ctx) as resp:
                assert await resp.text() == "hello"
            assert seen == [space["bob_sha"]]
            assert check_transport_binding([space["bob_sha"]], seen[0]) is None
            assert "not the one" in (check_transport_binding([space["alice_sha"]], seen[0]) or "")
            # a client without a certificate is refused by the mutual-TLS server
            with pytest.raises(aiohttp.ClientError):
                async with http.get(f"https://127.0.0.1:{port}/", ssl=client_context(ca)):
                    pass
            # a client that does not trust the data-space CA refuses the server
            with pytest.raises(aiohttp.ClientError):
                async with http.get(f"https://127.0.0.1:{port}/", ssl=ssl.create_default_context()):
                    pass
    finally:
        await runner.cleanup()
