"""Fail-closed JWS/JWT primitives shared by every token type of the data space.

The steps are split so callers can order them (the authority must read an unverified `iss` to
find the client's key): `parse_header` (size, shape, JSON, `alg` allow-list, `typ`, `kid` format),
`verify_signature` (pyjwt with the one algorithm bound to the key), `check_claims` (time, issuer,
audience, jti, lifetime, with the injected `now`).

Header parameters that point at keys (`jku`, `x5u`, `jwk`, `x5c`, `x5t`) are ignored: keys only ever
come from the verifier's own trust source. `crit` and `b64` are refused outright.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

from connector.identity.errors import InvalidToken
from connector.identity.keys import ALGORITHMS, Algorithm, PublicKey, SigningKey

MAX_TOKEN_BYTES = 8192
ALLOWED_ALGORITHMS: frozenset[str] = frozenset(ALGORITHMS)
DAT_TYP = "at+jwt"
TRANSFER_TYP = "transfer+jwt"
TRANSFER_REFRESH_TYP = "transfer-refresh+jwt"
REVOCATION_LIST_TYP = "revocation-list+jwt"
ALL_CLAIMS: tuple[str, ...] = ("iss", "sub", "aud", "iat", "nbf", "exp", "jti")

# An empty signature segment parses, so `alg: none` tokens are refused for what they are.
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_KID_RE = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_REFUSED_HEADERS = ("crit", "b64")
# The only algorithm objects verification can reach: no HS*, no none, whatever a header says.
_SIGNERS: dict[str, Any] = {"EdDSA": OKPAlgorithm(), "ES256": ECAlgorithm(ECAlgorithm.SHA256)}


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A trusted public key and the single algorithm it verifies."""

    kid: str | None
    alg: Algorithm
    key: PublicKey


@dataclass(frozen=True, slots=True)
class TokenRules:
    """What a token type must look like. `issuer`/`audience` None means the caller checks it."""

    label: str
    typ: frozenset[str | None]
    issuer: str | None = None
    audience: frozenset[str] | None = None
    leeway: float = 30.0
    max_lifetime: float = 3600.0
    required: tuple[str, ...] = ALL_CLAIMS
    require_kid: bool = True
    max_bytes: int = MAX_TOKEN_BYTES


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name} is not allowed")


def loads(data: bytes | str) -> Any:
    """json.loads without NaN/Infinity, which would defeat every time comparison."""
    return json.loads(data, parse_constant=_reject_constant)


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def parse_header(token: object, rules: TokenRules) -> dict[str, Any]:
    """Check the token's shape and protected header before any key is looked up."""
    label = rules.label
    if not isinstance(token, str):
        raise InvalidToken(f"{label}: token must be a string")
    if not token:
        raise InvalidToken(f"{label}: empty token")
    if len(token) > rules.max_bytes:
        raise InvalidToken(f"{label}: token too large ({len(token)} > {rules.max_bytes} bytes)")
    if not _TOKEN_RE.fullmatch(token):
        raise InvalidToken(
            f"{label}: malformed token: expected three base64url segments (JWS compact serialization)"
        )
    try:
        header = loads(_b64decode(token[: token.index(".")]))
    except (ValueError, binascii.Error, RecursionError) as exc:
        raise InvalidToken(f"{label}: malformed token: header is not valid JSON") from exc
    if not isinstance(header, dict):
        raise InvalidToken(f"{label}: malformed token: header is not a JSON object")
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise InvalidToken(f"{label}: header 'alg' missing or not a string")
    if alg not in ALLOWED_ALGORITHMS:
        if alg.lower() == "none":
            why = "unsigned tokens are never accepted"
        elif alg.upper().startswith("HS"):
            why = "symmetric (HMAC) algorithms are never accepted"
        else:
            why = f"allowed: {', '.join(sorted(ALLOWED_ALGORITHMS))}"
        raise InvalidToken(f"{label}: alg {alg[:20]!r} is not allowed ({why})")
    for name in _REFUSED_HEADERS:
        if name in header:
            raise InvalidToken(f"{label}: header parameter {name!r} is not supported")
    if header.get("typ") not in rules.typ:
        expected = " or ".join(repr(t) if t else "absent" for t in sorted(rules.typ, key=str))
        typ = header.get("typ")
        shown = repr(typ)[:40] if typ is not None else "absent"
        raise InvalidToken(f"{label}: unexpected typ {shown} (expected {expected})")
    if "kid" in header:
        kid = header["kid"]
        if not isinstance(kid, str) or not _KID_RE.fullmatch(kid):
            raise InvalidToken(f"{label}: invalid kid: must be 1-128 characters of [A-Za-z0-9_.-]")
    elif rules.require_kid:
        raise InvalidToken(f"{label}: header has no 'kid'")
    return header


def unverified_payload(token: str, label: str) -> dict[str, Any]:
    """The payload before its signature is checked: only for choosing the key to check it with."""
    try:
        payload = loads(_b64decode(token.split(".")[1]))
    except (ValueError, binascii.Error, RecursionError, IndexError) as exc:
        raise InvalidToken(f"{label}: malformed token: payload is not valid JSON") from exc
    if not isinstance(payload, dict):
        raise InvalidToken(f"{label}: malformed token: payload is not a JSON object")
    return payload


def verify_signature(
    token: str, header: Mapping[str, Any], key: VerificationKey, label: str
) -> dict[str, Any]:
    """Verify the signature with `key` under its own algorithm; return the payload object.

    Only for tokens that passed `parse_header` (so: ASCII, three base64url segments). The
    signature check itself is pyjwt's algorithm object for the key's one algorithm; the
    compact-form split is done here once instead of again inside PyJWS, which keeps a full
    verification as fast as a bare `jwt.decode`.
    """
    if header["alg"] != key.alg:
        raise InvalidToken(f"{label}: alg {header['alg']!r} does not match the key ({key.alg})")
    signing_input, _, signature_segment = token.rpartition(".")
    try:
        signature = _b64decode(signature_segment)
        payload_bytes = _b64decode(signing_input[signing_input.index(".") + 1 :])
    except (binascii.Error, ValueError) as exc:
        raise InvalidToken(f"{label}: malformed token: bad base64url") from exc
    # one signature, one encoding: no malleable variants of a token (the claims cache keys on it)
    if base64.urlsafe_b64encode(signature).rstrip(b"=").decode() != signature_segment:
        raise InvalidToken(f"{label}: malformed token: non-canonical signature encoding")
    if not _SIGNERS[key.alg].verify(signing_input.encode(), key.key, signature):
        raise InvalidToken(f"{label}: signature verification failed")
    try:
        payload = loads(payload_bytes)
    except (ValueError, RecursionError) as exc:
        raise InvalidToken(f"{label}: payload is not valid JSON") from exc
    if not isinstance(payload, dict):
        raise InvalidToken(f"{label}: payload is not a JSON object")
    return payload


def _number(payload: Mapping[str, Any], name: str, label: str) -> float | None:
    value = payload.get(name)
    if value is None:
        return None
    # bool is an int subclass: `"exp": true` must not pass as 1.
    if type(value) not in (int, float) or not math.isfinite(value):
        raise InvalidToken(f"{label}: claim {name!r} must be a number (seconds since epoch)")
    return float(value)


def check_claims(payload: Mapping[str, Any], rules: TokenRules, now: float) -> None:
    """Time window, issuer, audience, jti and lifetime; raises InvalidToken with the reason."""
    label, leeway = rules.label, rules.leeway
    for name in rules.required:
        if name not in payload:
            raise InvalidToken(f"{label}: missing required claim {name!r}")
    exp = _number(payload, "exp", label)
    nbf = _number(payload, "nbf", label)
    iat = _number(payload, "iat", label)
    if exp is not None and now >= exp + leeway:
        raise InvalidToken(f"{label}: token expired at {exp:.0f} (now {now:.0f}, leeway {leeway}s)")
    if nbf is not None and nbf > now + leeway:
        raise InvalidToken(f"{label}: token not yet valid (nbf {nbf:.0f}, now {now:.0f})")
    if iat is not None and iat > now + leeway:
        raise InvalidToken(f"{label}: token issued in the future (iat {iat:.0f}, now {now:.0f})")
    if exp is not None and iat is not None and exp - iat > rules.max_lifetime:
        raise InvalidToken(
            f"{label}: token lifetime {exp - iat:.0f}s exceeds the maximum {rules.max_lifetime:.0f}s"
        )
    for name in ("iss", "sub"):
        if name in payload:
            value = payload[name]
            if not isinstance(value, str) or not value or len(value) > 512:
                raise InvalidToken(f"{label}: claim {name!r} must be a non-empty string")
    if rules.issuer is not None and payload.get("iss") != rules.issuer:
        raise InvalidToken(
            f"{label}: wrong issuer {str(payload.get('iss'))[:100]!r} (expected {rules.issuer!r})"
        )
    if "aud" in payload:
        aud = payload["aud"]
        auds = [aud] if isinstance(aud, str) else aud
        if not isinstance(auds, list) or not auds or not all(isinstance(a, str) and a for a in auds):
            raise InvalidToken(f"{label}: claim 'aud' must be a string or a list of strings")
        if rules.audience is not None and rules.audience.isdisjoint(auds):
            raise InvalidToken(f"{label}: wrong audience {auds!r:.120} (expected {sorted(rules.audience)!r})")
    elif rules.audience is not None:
        raise InvalidToken(f"{label}: missing required claim 'aud'")
    if "jti" in payload:
        jti = payload["jti"]
        if not isinstance(jti, str) or not 0 < len(jti) <= 128:
            raise InvalidToken(f"{label}: claim 'jti' must be a non-empty string of at most 128 characters")


def audiences(payload: Mapping[str, Any]) -> tuple[str, ...]:
    aud = payload.get("aud")
    if isinstance(aud, str):
        return (aud,)
    return tuple(aud) if isinstance(aud, list) else ()


def encode(payload: Mapping[str, Any], key: SigningKey, *, typ: str | None, with_kid: bool = True) -> str:
    headers: dict[str, Any] = {}
    if with_kid:
        headers["kid"] = key.kid
    if typ is not None:
        headers["typ"] = typ
    return jwt.encode(dict(payload), key.private_key, algorithm=key.alg, headers=headers)
