"""The table of bad tokens and requests: each refused with a clear reason and no state change.

Every row builds one bad input against a real authority, real keys and warm verifiers, takes a
snapshot of all mutable state (authority files, replay caches, claims caches, JWKS and revocation
fetch counts, tokens issued), submits the input, checks the reason, and checks the snapshot.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from identity_testlib import ADMIN_TOKEN, ISSUER, Env, make_env
from jwt.algorithms import ECAlgorithm

from connector.identity.authority import JWT_BEARER, create_app
from connector.identity.ca import CertificateAuthority, create_csr
from connector.identity.errors import IdentityError, InvalidToken
from connector.identity.keys import SigningKey, generate_private_key, public_key_to_pem
from connector.identity.registry import (
    register_participant,
    retire_previous_keys,
    revoke_participant,
    rotate_signing_key,
)
from connector.identity.tokens import TransferTokenIssuer, TransferTokens
from connector.identity.verify import DatVerifier, ReplayCache, TransferTokenVerifier

DATA_PLANE = "https://alice.example/dataplane"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def seg(obj: Any) -> str:
    return b64(obj if isinstance(obj, bytes) else json.dumps(obj).encode())


def craft(header: Any, payload: Any, key: Any = None, alg: str | None = None) -> str:
    """A JWS with any header and payload, signed by any key (or unsigned)."""
    signing_input = f"{seg(header)}.{seg(payload)}"
    alg = alg or (header.get("alg") if isinstance(header, dict) else None)
    if key is None:
        return signing_input + "."
    msg = signing_input.encode()
    if alg and alg.startswith("HS"):
        digest = {"HS256": hashlib.sha256, "HS512": hashlib.sha512}[alg]
        sig = hmac.new(key, msg, digest).digest()
    elif alg == "ES256":
        sig = ECAlgorithm(ECAlgorithm.SHA256).sign(msg, key)
    else:
        sig = key.sign(msg)
    return f"{signing_input}.{b64(sig)}"


B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def non_canonical(token: str) -> str:
    """Same signature bytes, other spelling: set an unused low bit of the last character."""
    last = B64URL.index(token[-1])
    return token[:-1] + B64URL[last ^ 1]


def flip(token: str, pos: int) -> str:
    c = token[pos]
    return token[:pos] + ("A" if c != "A" else "B") + token[pos + 1 :]


@dataclass
class Ctx:
    env: Env
    verifier: DatVerifier  # bearer-token verifier, warm (JWKS, revocations, one cached DAT)
    one_time: DatVerifier  # replay_protection=True, warm
    good: str
    payload: dict[str, Any]
    authority_key: SigningKey
    attacker: SigningKey
    provider: TransferTokenIssuer
    dataplane: TransferTokenVerifier
    transfer: TransferTokens

    @property
    def kid(self) -> str:
        return self.authority_key.kid

    def dat(self, header: dict[str, Any] | None = None, **claims: Any) -> str:
        """A DAT signed by the real authority key, with claims changed (None deletes)."""
        payload = {**self.payload, "jti": self.env.new_id()}
        for name, value in claims.items():
            if value is None:
                payload.pop(name, None)
            else:
                payload[name] = value
        head = {"alg": self.authority_key.alg, "kid": self.kid, "typ": "at+jwt", **(header or {})}
        return craft(head, payload, self.authority_key.private_key, self.authority_key.alg)

    def attacker_dat(self, **header: Any) -> str:
        head = {"alg": "EdDSA", "kid": self.kid, "typ": "at+jwt", **header}
        return craft(head, {**self.payload, "jti": "evil"}, self.attacker.private_key, "EdDSA")

    def assertion(self, who: Any = None, key: Any = None, header: Any = None, **claims: Any) -> str:
        who = who or self.env.alice
        now = int(self.env.clock())
        payload = {
            "iss": who.participant_id,
            "sub": who.participant_id,
            "aud": ISSUER,
            "iat": now,
            "nbf": now,
            "exp": now + 60,
            "jti": self.env.new_id(),
        }
        for name, value in claims.items():
            if value is None:
                payload.pop(name, None)
            else:
                payload[name] = value
        key = key or who.key.private_key
        if header is None:
            header = {"alg": "ES256" if hasattr(key, "curve") else "EdDSA", "typ": "JWT"}
        return craft(header, payload, key, header["alg"])


async def make_ctx(root: Path) -> Ctx:
    env = make_env(root)
    verifier = env.verifier()
    one_time = env.verifier(replay_protection=True)
    good = env.dat(env.alice)
    await verifier.verify(good)
    await one_time.verify(env.dat(env.alice))
    payload = json.loads(base64.urlsafe_b64decode(good.split(".")[1] + "=="))
    provider_key = SigningKey.from_private_key(env.alice.key.private_key)
    provider = TransferTokenIssuer(
        provider_key,
        env.alice.participant_id,
        replay=ReplayCache(),
        clock=env.clock,
        new_id=env.new_id,
    )
    dataplane = TransferTokenVerifier(
        {provider_key.kid: provider.verification_key},
        provider_id=env.alice.participant_id,
        audience=DATA_PLANE,
        clock=env.clock,
    )
    transfer = provider.issue(
        agreement_id="agr-1",
        transfer_id="tp-1",
        consumer_id=env.bob.participant_id,
        audience=DATA_PLANE,
    )
    await dataplane.verify(transfer.access_token)
    return Ctx(
        env=env,
        verifier=verifier,
        one_time=one_time,
        good=good,
        payload=payload,
        authority_key=env.current_signing_key(),
        attacker=SigningKey.generate("EdDSA"),
        provider=provider,
        dataplane=dataplane,
        transfer=transfer,
    )


def snapshot(ctx: Ctx) -> tuple[Any, ...]:
    env, root = ctx.env, ctx.env.root / "authority"
    return (
        (root / "state.json").read_bytes(),
        sorted(p.name for p in (root / "signing").iterdir()),
        len(env.authority.replay),
        env.authority.issued,
        len(ctx.verifier.cache or ()),
        len(ctx.one_time.replay or ()),
        env.jwks_fetch.calls,
        env.revocation_fetch.calls,
        tuple(sorted(ctx.verifier.jwks.keys)),
        ctx.verifier.revocations.revoked,
        len(ctx.provider._replay),
        len(ctx.dataplane.cache or ()),
    )


# --- helpers for rows that need preparation -------------------------------------------------


def other_ca_certificate(ctx: Ctx, name: str = "Mallory") -> bytes:
    other = CertificateAuthority.create(generate_private_key("EdDSA"), "Test Space", now=ctx.env.clock())
    cert = other.sign_csr(create_csr(generate_private_key("EdDSA"), name), now=ctx.env.clock())
    return cert.public_bytes(Encoding.PEM)


def self_signed(ctx: Ctx) -> bytes:
    key = generate_private_key("EdDSA")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Selfie")])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    import datetime as dt

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(dt.datetime(2040, 1, 1, tzinfo=dt.UTC))
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, None)
    )
    return cert.public_bytes(Encoding.PEM)


def tampered_csr(ctx: Ctx) -> bytes:
    der = bytearray(create_csr(generate_private_key("EdDSA"), "Tampered").public_bytes(Encoding.DER))
    der[-3] ^= 0x01
    csr = x509.load_der_x509_csr(bytes(der))
    return csr.public_bytes(Encoding.PEM)


def expired_cert_of_this_ca(ctx: Ctx) -> bytes:
    long_ago = ctx.env.clock() - 2 * 365 * 86400
    cert = ctx.env.store.ca.sign_csr(create_csr(generate_private_key("EdDSA"), "Oldtimer"), now=long_ago)
    return cert.public_bytes(Encoding.PEM)


async def revoked_carol_dat(ctx: Ctx) -> str:
    carol = ctx.env.participant("Carol")
    token = ctx.env.dat(carol)
    revoke_participant(ctx.env.store, carol.participant_id, now=ctx.env.clock())
    ctx.env.clock.advance(61)  # past the poll interval: the verifier re-polls
    await ctx.verifier.verify(ctx.good)
    return token


async def revoked_carol_assertion(ctx: Ctx) -> dict[str, str]:
    carol = ctx.env.participant("Carol")
    revoke_participant(ctx.env.store, carol.participant_id, now=ctx.env.clock())
    return form(ctx.assertion(carol))


async def retired_key_dat(ctx: Ctx) -> str:
    rotate_signing_key(ctx.env.store, now=ctx.env.clock(), overlap=600)
    retire_previous_keys(ctx.env.store, now=ctx.env.clock())
    await ctx.verifier.jwks.refresh()
    return ctx.good


async def replayed_dat(ctx: Ctx) -> str:
    token = ctx.env.dat(ctx.env.alice)
    await ctx.one_time.verify(token)
    return token


async def replayed_assertion(ctx: Ctx) -> dict[str, str]:
    assertion = ctx.assertion()
    ctx.env.authority.issue_token(ctx.env.token_request(assertion))
    return form(assertion)


async def used_refresh_token(ctx: Ctx) -> str:
    ctx.provider.refresh(ctx.transfer.refresh_token, consumer_id=ctx.env.bob.participant_id)
    return ctx.transfer.refresh_token


def form(assertion: str, **fields: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_assertion_type": JWT_BEARER,
        "client_assertion": assertion,
        **fields,
    }


# --- the table ---------------------------------------------------------------------------------

Make = Callable[[Ctx], Any]


@dataclass(frozen=True)
class Bad:
    id: str
    target: str  # dat | one_time | token | register | admin | transfer | refresh
    make: Make
    reason: str
    status: int | None = None
    error: str | None = None


def _cert_public_pem(ctx: Ctx) -> bytes:
    return public_key_to_pem(ctx.env.alice.certificate.public_key())  # type: ignore[arg-type]


def _pem(ctx: Ctx) -> bytes:
    return public_key_to_pem(ctx.authority_key.public_key)


def _x(ctx: Ctx) -> bytes:
    return base64.urlsafe_b64decode(ctx.authority_key.jwk()["x"] + "==")


DAT_CASES = [
    Bad("forged-signature", "dat", lambda c: flip(c.good, -20), "signature verification failed"),
    Bad("non-canonical-signature", "dat", lambda c: non_canonical(c.good), "non-canonical"),
    Bad("attacker-key-authority-kid", "dat", lambda c: c.attacker_dat(), "signature verification"),
    Bad("empty-signature", "dat", lambda c: c.good.rsplit(".", 1)[0] + ".", "signature"),
    Bad(
        "alg-none-unsigned",
        "dat",
        lambda c: craft({"alg": "none", "kid": c.kid}, c.payload),
        "alg 'none' is not allowed",
    ),
    Bad(
        "alg-none-with-signature",
        "dat",
        lambda c: craft({"alg": "none", "kid": c.kid}, c.payload) + "c2ln",
        "unsigned tokens",
    ),
    Bad("alg-None-mixed-case", "dat", lambda c: craft({"alg": "None"}, c.payload), "unsigned"),
    Bad(
        "hs256-public-key-pem-as-secret",
        "dat",
        lambda c: craft({"alg": "HS256", "kid": c.kid, "typ": "at+jwt"}, c.payload, _pem(c)),
        "symmetric (HMAC) algorithms are never accepted",
    ),
    Bad(
        "hs256-raw-public-key-as-secret",
        "dat",
        lambda c: craft({"alg": "HS256", "kid": c.kid, "typ": "at+jwt"}, c.payload, _x(c)),
        "symmetric",
    ),
    Bad(
        "hs512",
        "dat",
        lambda c: craft({"alg": "HS512", "kid": c.kid}, c.payload, b"secret"),
        "symmetric",
    ),
    Bad(
        "rs256",
        "dat",
        lambda c: craft({"alg": "RS256", "kid": c.kid}, c.payload) + "AAAA",
        "alg 'RS256' is not allowed",
    ),
    Bad(
        "alg-not-a-string",
        "dat",
        lambda c: craft({"alg": ["EdDSA"]}, c.payload) + "AA",
        "'alg' missing or not a string",
    ),
    Bad(
        "es256-header-on-eddsa-key",
        "dat",
        lambda c: c.dat({"alg": "ES256"}),
        "does not match the key",
    ),
    Bad(
        "expired",
        "dat",
        lambda c: c.dat(
            iat=int(c.env.clock()) - 7200,
            nbf=int(c.env.clock()) - 7200,
            exp=int(c.env.clock()) - 3600,
        ),
        "token expired",
    ),
    Bad("not-yet-valid", "dat", lambda c: c.dat(nbf=int(c.env.clock()) + 600), "not yet valid"),
    Bad(
        "issued-in-future",
        "dat",
        lambda c: c.dat(iat=int(c.env.clock()) + 600),
        "issued in the future",
    ),
    Bad(
        "lifetime-too-long",
        "dat",
        lambda c: c.dat(exp=int(c.env.clock()) + 10 * 86400),
        "exceeds the maximum",
    ),
    Bad("wrong-audience", "dat", lambda c: c.dat(aud="idsc:SOMEONE_ELSE"), "wrong audience"),
    Bad("audience-list-without-ours", "dat", lambda c: c.dat(aud=["a", "b"]), "wrong audience"),
    Bad("audience-empty-list", "dat", lambda c: c.dat(aud=[]), "'aud' must be"),
    Bad("missing-aud", "dat", lambda c: c.dat(aud=None), "missing required claim 'aud'"),
    Bad("wrong-issuer", "dat", lambda c: c.dat(iss="https://evil.example"), "wrong issuer"),
    Bad("missing-iss", "dat", lambda c: c.dat(iss=None), "missing required claim 'iss'"),
    Bad("missing-exp", "dat", lambda c: c.dat(exp=None), "missing required claim 'exp'"),
    Bad("missing-nbf", "dat", lambda c: c.dat(nbf=None), "missing required claim 'nbf'"),
    Bad("missing-jti", "dat", lambda c: c.dat(jti=None), "missing required claim 'jti'"),
    Bad("missing-sub", "dat", lambda c: c.dat(sub=None), "missing required claim 'sub'"),
    Bad("sub-not-a-string", "dat", lambda c: c.dat(sub=42), "'sub' must be a non-empty string"),
    Bad("exp-a-string", "dat", lambda c: c.dat(exp="tomorrow"), "'exp' must be a number"),
    Bad("exp-a-boolean", "dat", lambda c: c.dat(exp=True), "'exp' must be a number"),
    Bad("jti-too-long", "dat", lambda c: c.dat(jti="j" * 200), "'jti' must be"),
    Bad("membership-not-boolean", "dat", lambda c: c.dat(membership="yes"), "'membership'"),
    Bad("scopes-not-strings", "dat", lambda c: c.dat(scopes=[1, 2]), "'scopes'"),
    Bad("unknown-kid", "dat", lambda c: c.attacker_dat(kid=c.attacker.kid), "unknown kid"),
    Bad(
        "missing-kid",
        "dat",
        lambda c: craft({"alg": "EdDSA", "typ": "at+jwt"}, c.payload, c.attacker.private_key),
        "no 'kid'",
    ),
    Bad(
        "kid-path-traversal",
        "dat",
        lambda c: c.attacker_dat(kid="../../../../etc/passwd"),
        "invalid kid",
    ),
    Bad("kid-sql-injection", "dat", lambda c: c.attacker_dat(kid="' OR '1'='1' --"), "invalid kid"),
    Bad(
        "kid-sql-union",
        "dat",
        lambda c: c.attacker_dat(kid="x' UNION SELECT key FROM keys;--"),
        "invalid kid",
    ),
    Bad("kid-nul-byte", "dat", lambda c: c.attacker_dat(kid="abc\x00def"), "invalid kid"),
    Bad("kid-too-long", "dat", lambda c: c.attacker_dat(kid="k" * 129), "invalid kid"),
    Bad("kid-not-a-string", "dat", lambda c: c.attacker_dat(kid=42), "invalid kid"),
    Bad("kid-url", "dat", lambda c: c.attacker_dat(kid="https://evil.example/k"), "invalid kid"),
    Bad("revoked-participant", "dat", revoked_carol_dat, "is revoked"),
    Bad("truncated-signature", "dat", lambda c: c.good[:-30], "signature verification failed"),
    Bad("truncated-to-two-segments", "dat", lambda c: c.good.rsplit(".", 1)[0], "malformed token"),
    Bad("truncated-inside-header", "dat", lambda c: c.good[:10], "malformed token"),
    Bad("oversized", "dat", lambda c: c.dat(pad="x" * 9000), "token too large"),
    Bad("empty", "dat", lambda c: "", "empty token"),
    Bad("not-a-string", "dat", lambda c: c.good.encode(), "token must be a string"),
    Bad(
        "non-json-header",
        "dat",
        lambda c: craft(b"not json at all", c.payload) + "AA",
        "header is not valid JSON",
    ),
    Bad(
        "header-json-array",
        "dat",
        lambda c: craft(["alg", "EdDSA"], c.payload) + "AA",
        "header is not a JSON object",
    ),
    Bad("header-bad-base64", "dat", lambda c: "@@@." + c.good.split(".", 1)[1], "malformed token"),
    Bad(
        "payload-not-json-signed",
        "dat",
        lambda c: craft(
            {"alg": c.authority_key.alg, "kid": c.kid, "typ": "at+jwt"},
            b"{not json",
            c.authority_key.private_key,
        ),
        "payload is not valid JSON",
    ),
    Bad(
        "payload-nan-signed",
        "dat",
        lambda c: craft(
            {"alg": c.authority_key.alg, "kid": c.kid, "typ": "at+jwt"},
            json.dumps({**c.payload, "exp": float("nan")}).encode(),
            c.authority_key.private_key,
        ),
        "payload is not valid JSON",
    ),
    Bad(
        "payload-array-signed",
        "dat",
        lambda c: craft(
            {"alg": c.authority_key.alg, "kid": c.kid, "typ": "at+jwt"},
            [1, 2],
            c.authority_key.private_key,
        ),
        "payload is not a JSON object",
    ),
    Bad(
        "jku-pointing-elsewhere",
        "dat",
        lambda c: c.attacker_dat(kid=c.attacker.kid, jku="https://evil.example/jwks.json"),
        "unknown kid",
    ),
    Bad(
        "x5u-pointing-elsewhere",
        "dat",
        lambda c: c.attacker_dat(kid=c.attacker.kid, x5u="https://evil.example/cert.pem"),
        "unknown kid",
    ),
    Bad(
        "embedded-jwk-attacker-key",
        "dat",
        lambda c: c.attacker_dat(jwk=c.attacker.jwk()),
        "signature verification failed",
    ),
    Bad(
        "embedded-x5c-attacker-cert",
        "dat",
        lambda c: c.attacker_dat(x5c=["MIIB..."]),
        "signature verification failed",
    ),
    Bad(
        "crit-header",
        "dat",
        lambda c: c.dat({"crit": ["exp"], "exp": 1}),
        "'crit' is not supported",
    ),
    Bad(
        "b64-false-header",
        "dat",
        lambda c: c.dat({"b64": False, "crit": ["b64"]}),
        "is not supported",
    ),
    Bad("transfer-token-as-dat", "dat", lambda c: c.transfer.access_token, "unexpected typ"),
    Bad("client-assertion-as-dat", "dat", lambda c: c.assertion(), "unexpected typ"),
    Bad(
        "missing-typ",
        "dat",
        lambda c: craft({"alg": "EdDSA", "kid": c.kid}, c.payload, c.authority_key.private_key),
        "unexpected typ absent",
    ),
    Bad("whitespace-inside", "dat", lambda c: c.good[:30] + " " + c.good[30:], "malformed"),
    Bad("bearer-prefix", "dat", lambda c: "Bearer " + c.good, "malformed"),
    Bad("five-segments-jwe", "dat", lambda c: c.good + ".AAAA.BBBB", "malformed"),
    Bad("non-ascii", "dat", lambda c: c.good[:40] + "é" + c.good[41:], "malformed"),
    Bad("old-key-after-overlap", "dat", retired_key_dat, "unknown kid"),
    Bad("replayed-jti", "one_time", replayed_dat, "token replayed"),
]

TOKEN_CASES = [
    Bad(
        "missing-grant-type",
        "token",
        lambda c: {k: v for k, v in form(c.assertion()).items() if k != "grant_type"},
        "missing grant_type",
        400,
        "invalid_request",
    ),
    Bad(
        "password-grant",
        "token",
        lambda c: form(c.assertion(), grant_type="password"),
        "not supported",
        400,
        "unsupported_grant_type",
    ),
    Bad(
        "wrong-assertion-type",
        "token",
        lambda c: form(c.assertion(), client_assertion_type="urn:x:saml2-bearer"),
        "client_assertion_type must be",
        401,
        "invalid_client",
    ),
    Bad("missing-assertion", "token", lambda c: form(""), "missing client_assertion", 401),
    Bad(
        "assertion-signed-by-other-participant",
        "token",
        lambda c: form(c.assertion(c.env.alice, key=c.env.bob.key.private_key)),
        "alg 'ES256' does not match the key",
        401,
        "invalid_client",
    ),
    Bad(
        "assertion-signed-by-other-eddsa-participant",
        "token",
        lambda c: form(c.assertion(c.env.alice, key=c.attacker.private_key)),
        "signature verification failed",
        401,
        "invalid_client",
    ),
    Bad(
        "iss-differs-from-sub",
        "token",
        lambda c: form(c.assertion(sub=c.env.bob.participant_id)),
        "iss and sub",
        401,
    ),
    Bad("iss-not-a-string", "token", lambda c: form(c.assertion(iss=7, sub=7)), "iss and sub", 401),
    Bad(
        "unknown-participant",
        "token",
        lambda c: form(c.assertion(iss="AA:keyid:BB", sub="AA:keyid:BB")),
        "unknown client",
        401,
    ),
    Bad("assertion-revoked-participant", "token", revoked_carol_assertion, "is revoked", 401),
    Bad(
        "assertion-wrong-audience",
        "token",
        lambda c: form(c.assertion(aud="https://other-authority.example")),
        "wrong audience",
        401,
    ),
    Bad(
        "assertion-lifetime-over-5-min",
        "token",
        lambda c: form(c.assertion(exp=int(c.env.clock()) + 600)),
        "exceeds the maximum",
        401,
    ),
    Bad(
        "assertion-expired",
        "token",
        lambda c: form(c.assertion(iat=int(c.env.clock()) - 200, exp=int(c.env.clock()) - 100)),
        "expired",
        401,
    ),
    Bad(
        "assertion-not-yet-valid",
        "token",
        lambda c: form(c.assertion(nbf=int(c.env.clock()) + 120)),
        "not yet valid",
        401,
    ),
    Bad(
        "assertion-missing-jti",
        "token",
        lambda c: form(c.assertion(jti=None)),
        "missing required claim 'jti'",
        401,
    ),
    Bad("assertion-replayed", "token", replayed_assertion, "replayed", 401, "invalid_client"),
    Bad(
        "assertion-before-authority-start",
        "token",
        lambda c: form(c.assertion(iat=int(c.env.authority.started_at) - 5)),
        "before the authority started",
        401,
    ),
    Bad(
        "assertion-alg-none",
        "token",
        lambda c: form(craft({"alg": "none"}, {"iss": c.env.alice.participant_id})),
        "alg 'none' is not allowed",
        401,
    ),
    Bad(
        "assertion-hs256-with-cert-public-key",
        "token",
        lambda c: form(c.assertion(header={"alg": "HS256"}, key=_cert_public_pem(c))),
        "symmetric (HMAC) algorithms are never accepted",
        401,
    ),
    Bad(
        "assertion-oversized",
        "token",
        lambda c: form(c.assertion(pad="p" * 9000)),
        "token too large",
        401,
    ),
    Bad(
        "assertion-non-json-header",
        "token",
        lambda c: form(craft(b"\xff\xfe", {"iss": "x"}) + "AA"),
        "header is not valid JSON",
        401,
    ),
    Bad("assertion-garbage", "token", lambda c: form("not-a-jwt"), "malformed token", 401),
    Bad(
        "invalid-scope",
        "token",
        lambda c: form(c.assertion(), scope="admin"),
        "unknown scope",
        400,
        "invalid_scope",
    ),
    Bad(
        "client-id-mismatch",
        "token",
        lambda c: form(c.assertion(), client_id=c.env.bob.participant_id),
        "client_id does not match",
        401,
    ),
    Bad(
        "json-body",
        "token",
        lambda c: ("application/json", json.dumps(form(c.assertion()))),
        "x-www-form-urlencoded",
        400,
        "invalid_request",
    ),
    Bad(
        "repeated-parameter",
        "token",
        lambda c: (
            "application/x-www-form-urlencoded",
            "grant_type=client_credentials&grant_type=client_credentials",
        ),
        "is repeated",
        400,
    ),
    Bad(
        "non-utf8-body",
        "token",
        lambda c: ("application/x-www-form-urlencoded", b"grant_type=\xff\xfe"),
        "not UTF-8",
        400,
    ),
    Bad(
        "body-over-64k",
        "token",
        lambda c: ("application/x-www-form-urlencoded", "a=" + "b" * 70_000),
        "body size",
        413,
    ),
]

REGISTER_CASES = [
    Bad(
        "csr-name-taken",
        "register",
        lambda c: create_csr(generate_private_key("EdDSA"), "Alice").public_bytes(Encoding.PEM),
        "name 'Alice' is already taken",
    ),
    Bad(
        "csr-name-taken-other-case",
        "register",
        lambda c: create_csr(generate_private_key("ES256"), "ALICE").public_bytes(Encoding.PEM),
        "already taken",
    ),
    Bad("certificate-of-another-ca", "register", other_ca_certificate, "not issued by this CA"),
    Bad("self-signed-certificate", "register", self_signed, "not issued by this CA"),
    Bad("tampered-csr", "register", tampered_csr, "signature is invalid"),
    Bad("expired-certificate-of-this-ca", "register", expired_cert_of_this_ca, "expired"),
    Bad(
        "same-key-again",
        "register",
        lambda c: c.env.alice.certificate.public_bytes(Encoding.PEM),
        "already registered",
    ),
    Bad("not-pem", "register", lambda c: b"hello", "expected a PEM"),
    Bad(
        "broken-pem",
        "register",
        lambda c: b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        "malformed PEM",
    ),
    Bad(
        "csr-markup-name",
        "register",
        lambda c: _raw_csr("<script>alert(1)</script>"),
        "invalid participant name",
    ),
]

ADMIN_CASES = [
    Bad(
        "admin-no-token",
        "admin",
        lambda c: (None, "/admin/participants", {}),
        "requires 'Authorization",
        401,
    ),
    Bad(
        "admin-wrong-token",
        "admin",
        lambda c: ("Bearer nope", "/admin/revocations", {}),
        "invalid admin token",
        401,
    ),
    Bad(
        "admin-register-both",
        "admin",
        lambda c: (ADMIN_TOKEN, "/admin/participants", {"csr": "x", "certificate": "y"}),
        "exactly one",
        400,
    ),
    Bad(
        "admin-register-bad-role",
        "admin",
        lambda c: (
            ADMIN_TOKEN,
            "/admin/participants",
            {"csr": "x", "attributes": {"roles": ["god"]}},
        ),
        "attributes.roles",
        400,
    ),
    Bad(
        "admin-revoke-unknown",
        "admin",
        lambda c: (ADMIN_TOKEN, "/admin/revocations", {"participant_id": "AA:keyid:BB"}),
        "no participant",
        404,
    ),
    Bad(
        "admin-invalid-json",
        "admin",
        lambda c: (ADMIN_TOKEN, "/admin/revocations", "{oops"),
        "invalid request",
        400,
    ),
]

TRANSFER_CASES = [
    Bad(
        "transfer-wrong-data-plane",
        "transfer",
        lambda c: (
            c.provider.issue(
                agreement_id="a",
                transfer_id="t",
                consumer_id=c.env.bob.participant_id,
                audience="https://bob.example/dataplane",
            ).access_token
        ),
        "wrong audience",
    ),
    Bad("transfer-expired", "transfer", lambda c: _expired_transfer(c), "expired"),
    Bad(
        "refresh-token-as-access-token",
        "transfer",
        lambda c: c.transfer.refresh_token,
        "unexpected typ",
    ),
    Bad(
        "transfer-signed-by-another-participant",
        "transfer",
        lambda c: (
            TransferTokenIssuer(
                SigningKey.from_private_key(c.env.bob.key.private_key),
                c.env.alice.participant_id,
                replay=ReplayCache(),
                clock=c.env.clock,
            )
            .issue(
                agreement_id="a",
                transfer_id="t",
                consumer_id=c.env.bob.participant_id,
                audience=DATA_PLANE,
            )
            .access_token
        ),
        "unknown kid",
    ),
    Bad(
        "transfer-forged-signature",
        "transfer",
        lambda c: flip(c.transfer.access_token, -20),
        "signature verification failed",
    ),
    Bad("refresh-with-access-token", "refresh", lambda c: c.transfer.access_token, "unexpected typ"),
    Bad("refresh-replayed", "refresh", used_refresh_token, "replayed"),
    Bad(
        "refresh-by-other-consumer",
        "refresh",
        lambda c: (
            c.provider.issue(
                agreement_id="a",
                transfer_id="t",
                consumer_id=c.env.alice.participant_id,
                audience=DATA_PLANE,
            ).refresh_token
        ),
        "issued to another consumer",
    ),
    Bad("refresh-forged", "refresh", lambda c: flip(c.transfer.refresh_token, -20), "signature"),
]


def _raw_csr(name: str) -> bytes:
    key = generate_private_key("EdDSA")
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .sign(key, None)
    )
    return csr.public_bytes(Encoding.PEM)


def _expired_transfer(c: Ctx) -> str:
    c.env.clock.advance(-400)
    try:
        return c.provider.issue(
            agreement_id="a",
            transfer_id="t",
            consumer_id=c.env.bob.participant_id,
            audience=DATA_PLANE,
        ).access_token
    finally:
        c.env.clock.advance(400)


ALL_CASES = DAT_CASES + TOKEN_CASES + REGISTER_CASES + ADMIN_CASES + TRANSFER_CASES


def test_table_is_large_and_distinct() -> None:
    assert len(ALL_CASES) >= 50
    assert len({c.id for c in ALL_CASES}) == len(ALL_CASES)


async def _submit(ctx: Ctx, case: Bad, data: Any) -> str:
    """Submit `data`; return the refusal's description (fails the test if accepted)."""
    env = ctx.env
    if case.target in ("dat", "one_time", "transfer"):
        verifier = {"dat": ctx.verifier, "one_time": ctx.one_time, "transfer": ctx.dataplane}[case.target]
        with pytest.raises(InvalidToken) as info:
            await verifier.verify(data)
        return info.value.description
    if case.target == "refresh":
        with pytest.raises(IdentityError) as info:
            ctx.provider.refresh(data, consumer_id=env.bob.participant_id)
        assert info.value.error == "invalid_grant"
        return info.value.description
    if case.target == "register":
        with pytest.raises(IdentityError) as info:
            register_participant(env.store, data, now=env.clock())
        return info.value.description
    async with TestClient(TestServer(create_app(env.authority))) as client:
        if case.target == "token":
            if isinstance(data, tuple):
                content_type, body = data
                resp = await client.post("/token", data=body, headers={"Content-Type": content_type})
            else:
                resp = await client.post("/token", data=data)
        else:
            auth, path, body = data
            headers = {"Content-Type": "application/json"}
            if auth:
                headers["Authorization"] = auth if " " in auth else f"Bearer {auth}"
            payload = body if isinstance(body, str) else json.dumps(body)
            resp = await client.post(path, data=payload, headers=headers)
        body = await resp.json()
        assert resp.status == case.status, body
        assert resp.headers.get("Cache-Control") in ("no-store", None)
        assert set(body) == {"error", "error_description"}
        if case.error:
            assert body["error"] == case.error
        return str(body["error_description"])


@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: c.id)
async def test_bad_input_refused_without_state_change(case: Bad, tmp_path: Path) -> None:
    ctx = await make_ctx(tmp_path)
    made = case.make(ctx)
    data = await made if isinstance(made, Awaitable) else made
    before = snapshot(ctx)
    reason = await _submit(ctx, case, data)
    assert case.reason in reason, f"{case.id}: reason {reason!r} lacks {case.reason!r}"
    assert snapshot(ctx) == before, f"{case.id}: state changed"
    # the system still works for honest callers afterwards
    assert (await ctx.verifier.verify(ctx.env.dat(ctx.env.alice))).subject
