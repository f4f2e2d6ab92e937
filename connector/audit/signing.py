"""Canonical JSON and detached compact JWS, the two primitives of the audit trail.

Signature format (RFC 7515 compact serialization with a detached payload, Appendix F):
``BASE64URL(header) + ".." + BASE64URL(signature)``, where the header is exactly
``{"alg": <EdDSA|ES256>, "typ": <typ>}`` and the signing input is
``BASE64URL(header) + "." + BASE64URL(payload)``. An ES256 signature is the raw 64-byte ``r || s``
as JOSE requires. Any JOSE library can check an entry: re-attach the payload and verify.

The header is fixed per (algorithm, typ), so a verifier compares it byte for byte instead of
trusting anything it says: the algorithm comes from the verifier's public key, and ``typ``
separates audit entries, head anchors and usage receipts, so a signature made for one can
never be replayed as another.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any, Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

from connector.identity.keys import Algorithm, PrivateKey, PublicKey, SigningKey, algorithm_of

ENTRY_TYP = "audit-entry+jws"
HEAD_TYP = "audit-head+jws"

_ALGORITHMS: dict[str, Any] = {"EdDSA": OKPAlgorithm(), "ES256": ECAlgorithm(ECAlgorithm.SHA256)}


def canonical(obj: Any) -> bytes:
    """The bytes every hash and signature in the audit trail is computed over."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


@runtime_checkable
class Signer(Protocol):
    """Whatever holds the connector's private key: an HSM, a KMS client, or `KeySigner`.

    `sign` returns the signature in JOSE form for `alg` (raw ``r || s`` for ES256).
    """

    @property
    def alg(self) -> Algorithm: ...

    def sign(self, data: bytes) -> bytes: ...


class KeySigner:
    """A `Signer` over an in-process Ed25519 or P-256 private key."""

    __slots__ = ("_alg", "_impl", "_key")

    def __init__(self, key: PrivateKey | SigningKey):
        private = key.private_key if isinstance(key, SigningKey) else key
        self._alg: Algorithm = algorithm_of(private)
        self._key = private
        self._impl = _ALGORITHMS[self._alg]

    @property
    def alg(self) -> Algorithm:
        return self._alg

    @property
    def public_key(self) -> PublicKey:
        return self._key.public_key()

    def sign(self, data: bytes) -> bytes:
        return bytes(self._impl.sign(data, self._key))


def as_signer(signer: Signer | PrivateKey | SigningKey) -> Signer:
    if isinstance(signer, SigningKey) or not isinstance(signer, Signer):
        return KeySigner(signer)  # type: ignore[arg-type]
    return signer


def _header(alg: str, typ: str) -> str:
    return b64url(canonical({"alg": alg, "typ": typ}))


def sign_detached(signer: Signer, payload: bytes, typ: str) -> str:
    header = _header(signer.alg, typ)
    signature = signer.sign(f"{header}.{b64url(payload)}".encode("ascii"))
    return f"{header}..{b64url(signature)}"


def verify_detached(token: object, payload: bytes, public_key: PublicKey, typ: str) -> bool:
    """True only for a well-formed detached JWS with the expected header and a valid signature."""
    if not isinstance(token, str):
        return False
    parts = token.split(".")
    if len(parts) != 3 or parts[1] != "":
        return False
    try:
        alg = algorithm_of(public_key)
    except ValueError:
        return False
    header = _header(alg, typ)
    if parts[0] != header:
        return False
    try:
        signature = b64url_decode(parts[2])
    except (binascii.Error, ValueError):
        return False
    if b64url(signature) != parts[2]:
        return False  # non-canonical base64url: spare bits set, so the text was altered
    signing_input = f"{header}.{b64url(payload)}".encode("ascii")
    try:
        return bool(_ALGORITHMS[alg].verify(signing_input, public_key, signature))
    except (InvalidSignature, ValueError, TypeError):
        return False
