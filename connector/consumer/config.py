"""How the consumer side is set up: one frozen record, built once at start."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from connector.http.outbound import OutboundPolicy
from connector.identity.keys import SigningKey


@dataclass(frozen=True, slots=True)
class ConsumerConfig:
    """``ca``: the data-space CA (a provider's receipt certificates are checked against it;
    ``ca_file`` is the same, for TLS to the provider's data plane); ``vault_dir``: where pulled
    and pushed copies go; ``records_dir``: where older versions kept the vault's index as JSON
    records (imported into the store once); ``signing_key``/``certificate``: this participant's,
    for the deletion and use notices; ``outbound``: which data addresses a pull may reach."""

    ca: x509.Certificate
    ca_file: Path
    vault_dir: Path
    signing_key: SigningKey
    certificate: x509.Certificate
    records_dir: Path | None = None
    outbound: OutboundPolicy = field(default_factory=OutboundPolicy)

    @classmethod
    def load(
        cls,
        *,
        ca_file: Path,
        vault_dir: Path,
        signing_key: SigningKey,
        certificate: x509.Certificate,
        records_dir: Path | None = None,
        outbound: OutboundPolicy | None = None,
    ) -> ConsumerConfig:
        """The configuration with the CA read from ``ca_file``."""
        return cls(
            ca=x509.load_pem_x509_certificate(ca_file.read_bytes()),
            ca_file=ca_file,
            vault_dir=vault_dir,
            signing_key=signing_key,
            certificate=certificate,
            records_dir=records_dir,
            outbound=outbound or OutboundPolicy(),
        )


__all__ = ["ConsumerConfig"]
