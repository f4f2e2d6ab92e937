"""Fixtures of the audit tests: keys, a fixed clock, a log factory, certificate files."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from connector.audit import AuditLog
from connector.identity.keys import Algorithm, PrivateKey, generate_private_key

T0 = 1_790_000_000.0


class StepClock:
    def __init__(self, start: float = T0, step: float = 1.0):
        self.now = start
        self.step = step

    def __call__(self) -> float:
        value = self.now
        self.now += self.step
        return value


@pytest.fixture(params=["EdDSA", "ES256"])
def alg(request: pytest.FixtureRequest) -> Algorithm:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def key(alg: Algorithm) -> PrivateKey:
    return generate_private_key(alg)


@pytest.fixture
def ed_key() -> PrivateKey:
    return generate_private_key("EdDSA")


MakeLog = Callable[..., AuditLog]


@pytest.fixture
def make_log(tmp_path: Path) -> Iterator[MakeLog]:
    opened: list[AuditLog] = []

    def make(private: PrivateKey, name: str = "audit.jsonl", **options: object) -> AuditLog:
        options.setdefault("fsync", False)
        log = AuditLog.open(tmp_path / name, private, private.public_key(), StepClock(), **options)  # type: ignore[arg-type]
        opened.append(log)
        return log

    yield make
    for log in opened:
        log.close()


def write_cert(path: Path, private: PrivateKey, name: str = "participant") -> Path:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=365))
    )
    algorithm = None if isinstance(private, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    cert = builder.sign(private, algorithm)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path
