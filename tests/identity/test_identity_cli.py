"""The `connector authority ...` and `connector init` commands (in-process via click's runner)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from connector.identity.ca import CertificateAuthority, create_csr
from connector.identity.cli import standalone
from connector.identity.keys import generate_private_key
from connector.identity.store import AuthorityStore


def run(*args: str, ok: bool = True) -> str:
    result = CliRunner().invoke(standalone, [str(a) for a in args])
    assert (result.exit_code == 0) == ok, result.output
    return result.output


def test_operator_and_participant_flow(tmp_path: Path) -> None:
    auth, alice = tmp_path / "auth", tmp_path / "alice"
    out = json.loads(run("authority", "init", auth, "--name", "Demo", "--alg", "ES256"))
    assert (auth / "ca.crt").is_file() and out["signing_kid"]
    run("authority", "init", auth, ok=False)  # never overwrites an authority

    run("init", alice, "--name", "Alice")
    assert (alice / "participant.csr").is_file()
    run("init", alice, "--name", "Alice", ok=False)  # never overwrites a key

    tls = CertificateAuthority.create(generate_private_key("EdDSA"), "TLS", now=1.75e9)
    (tmp_path / "tls.pem").write_bytes(tls.certificate.public_bytes(Encoding.PEM))
    reg = json.loads(
        run(
            "authority",
            "register",
            auth,
            alice / "participant.csr",
            "--role",
            "provider",
            "--role",
            "consumer",
            "--security-profile",
            "idsc:TRUST_SECURITY_PROFILE",
            "--connector-url",
            "https://alice.example/",
            "--transport-cert",
            tmp_path / "tls.pem",
        )
    )
    cert = x509.load_pem_x509_certificate((alice / "participant.crt").read_bytes())
    store = AuthorityStore(auth)
    store.ca.check_issued(cert, now=store.ca.certificate.not_valid_before_utc.timestamp() + 120)
    record = store.state().participants[reg["participant_id"]]
    assert record.attributes.security_profile == "idsc:TRUST_SECURITY_PROFILE"
    assert len(record.attributes.transport_certs_sha256[0]) == 64

    # a second participant under a taken name is refused with a clear message
    csr = create_csr(generate_private_key("EdDSA"), "Alice").public_bytes(Encoding.PEM)
    (tmp_path / "dup.csr").write_bytes(csr)
    out = run("authority", "register", auth, tmp_path / "dup.csr", ok=False)
    assert "already taken" in out

    listed = json.loads(run("authority", "participants", auth))
    assert [p["name"] for p in listed] == ["Alice"]
    run("authority", "revoke", auth, reg["participant_id"], "--reason", "test")
    revs = json.loads(run("authority", "revocations", auth))
    assert revs["seq"] == 1 and revs["revoked"][0]["reason"] == "test"
    assert "no participant" in run("authority", "revoke", auth, "AA:keyid:BB", ok=False)

    rot = json.loads(run("authority", "rotate-key", auth, "--overlap", "10"))
    assert rot["previous"] == out_kid(auth, "previous")
    assert json.loads(run("authority", "retire-keys", auth))["retired"] == [rot["previous"]]


def out_kid(auth: Path, status: str) -> str:
    state = AuthorityStore(auth).state()
    return next(k.kid for k in state.keys if k.status == status)


def test_register_refuses_foreign_certificate(tmp_path: Path) -> None:
    run("authority", "init", tmp_path / "auth")
    other = CertificateAuthority.create(generate_private_key("EdDSA"), "Other", now=1.75e9)
    cert = other.sign_csr(create_csr(generate_private_key("EdDSA"), "Zed"), now=1.75e9)
    (tmp_path / "zed.crt").write_bytes(cert.public_bytes(Encoding.PEM))
    out = run("authority", "register", tmp_path / "auth", tmp_path / "zed.crt", ok=False)
    assert "not issued by this CA" in out


def test_commands_refuse_a_non_authority_directory(tmp_path: Path) -> None:
    out = run("authority", "participants", tmp_path, ok=False)
    assert "not an authority directory" in out
