"""Key generation and loading, JWK export and RFC 7638 thumbprints.

Only two signature algorithms exist in the data space: EdDSA (Ed25519) and ES256 (ECDSA P-256).
Everything else is refused when a key is loaded, so no later code has to ask.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeAlias

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm
from jwt.exceptions import InvalidKeyError

Algorithm: TypeAlias = Literal["EdDSA", "ES256"]
ALGORITHMS: tuple[Algorithm, ...] = ("EdDSA", "ES256")

PrivateKey: TypeAlias = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
PublicKey: TypeAlias = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey


class KeyFormatError(ValueError):
    """A key is malformed or uses an algorithm the data space does not accept."""


def generate_private_key(alg: Algorithm) -> PrivateKey:
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    raise KeyFormatError(f"unsupported key algorithm {alg!r}; use one of {', '.join(ALGORITHMS)}")


def algorithm_of(key: object) -> Algorithm:
    """The JOSE algorithm a key signs with; raises for any other key type or curve."""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "EdDSA"
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if isinstance(key.curve, ec.SECP256R1):
            return "ES256"
        raise KeyFormatError(f"unsupported elliptic curve {key.curve.name}; only P-256 is accepted")
    raise KeyFormatError(f"unsupported key type {type(key).__name__}; use Ed25519 or ECDSA P-256")


def private_key_to_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key_pem(data: bytes) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFormatError(f"not a PEM private key: {exc}") from exc
    algorithm_of(key)
    return key  # type: ignore[return-value]


def public_key_to_pem(key: PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_jwk(key: PublicKey, *, kid: str | None = None) -> dict[str, str]:
    """The public JWK of a key, with `alg`, `use` and (if given) `kid`."""
    alg = algorithm_of(key)
    raw: dict[str, Any]
    if isinstance(key, ed25519.Ed25519PublicKey):
        raw = OKPAlgorithm.to_jwk(key, as_dict=True)
    else:
        raw = ECAlgorithm.to_jwk(key, as_dict=True)
    jwk = {k: str(v) for k, v in raw.items() if k in ("kty", "crv", "x", "y")}
    jwk["alg"] = alg
    jwk["use"] = "sig"
    jwk["kid"] = kid if kid is not None else jwk_thumbprint(jwk)
    return jwk


_THUMBPRINT_MEMBERS = {"OKP": ("crv", "kty", "x"), "EC": ("crv", "kty", "x", "y")}


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 JWK SHA-256 thumbprint (base64url, no padding)."""
    members = _THUMBPRINT_MEMBERS.get(str(jwk.get("kty")))
    if members is None:
        raise KeyFormatError(f"cannot compute thumbprint of kty {jwk.get('kty')!r}")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def public_key_from_jwk(jwk: Mapping[str, Any]) -> tuple[Algorithm, PublicKey]:
    """Parse a public JWK, refusing private members and anything but Ed25519 / P-256."""
    if "d" in jwk:
        raise KeyFormatError("JWK contains private key material")
    kty, crv = jwk.get("kty"), jwk.get("crv")
    try:
        if kty == "OKP" and crv == "Ed25519":
            key: Any = OKPAlgorithm.from_jwk(dict(jwk))
        elif kty == "EC" and crv == "P-256":
            key = ECAlgorithm.from_jwk(dict(jwk))
        else:
            raise KeyFormatError(f"unsupported JWK kty={kty!r} crv={crv!r}")
    except (ValueError, TypeError, InvalidKeyError) as exc:
        raise KeyFormatError(f"malformed JWK: {exc}") from exc
    alg = algorithm_of(key)
    if "alg" in jwk and jwk["alg"] != alg:
        raise KeyFormatError(f"JWK alg {jwk['alg']!r} does not match its key type ({alg})")
    return alg, key


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A private key with the kid and alg it signs under."""

    kid: str
    alg: Algorithm
    private_key: PrivateKey

    @classmethod
    def from_private_key(cls, key: PrivateKey, kid: str | None = None) -> SigningKey:
        jwk = public_jwk(key.public_key(), kid=kid)
        return cls(kid=jwk["kid"], alg=algorithm_of(key), private_key=key)

    @classmethod
    def generate(cls, alg: Algorithm) -> SigningKey:
        return cls.from_private_key(generate_private_key(alg))

    @property
    def public_key(self) -> PublicKey:
        return self.private_key.public_key()

    def jwk(self) -> dict[str, str]:
        return public_jwk(self.public_key, kid=self.kid)


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write a file so readers see the old or the new content, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
