"""The participant side: its identity files and a DAT client with single-flight refresh.

`connector init DIR --name NAME` writes DIR/participant.key (0600), DIR/participant.csr and
DIR/participant.json; the operator's certificate goes to DIR/participant.crt.

`DatClient.token()` returns a cached DAT and refreshes it `refresh_margin` before expiry. However
many callers ask at once, one request is in flight (they all await it, shielded from each
other's cancellation). If a refresh fails or its response is lost, callers keep the still-valid
DAT and the next attempt (after `retry_interval`) uses a fresh client assertion, so the
authority's one-time jti rule never bites a retry.

A cached DAT goes stale when the authority changes what it attests about this participant
(its jurisdiction, groups, ...): relying connectors then refuse DATs issued before the change
(401, connector.identity.errors.AttributesChanged). `renew()` fetches a fresh one at once; and
with `changed_at` (this participant's change time from a revocation list this connector polls),
`token()` drops a cached DAT issued before it without waiting to be refused.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from connector.identity import jose
from connector.identity.ca import (
    common_name,
    create_csr,
    create_tls_csr,
    participant_id,
    validate_name,
)
from connector.identity.errors import IdentityError, TokenUnavailable
from connector.identity.keys import (
    Algorithm,
    SigningKey,
    algorithm_of,
    atomic_write,
    generate_private_key,
    load_private_key_pem,
    private_key_to_pem,
)
from connector.identity.tokens import IdFactory, new_jti
from connector.metrics import DAT_REFRESHES
from connector.wireformat import WallClock

log = logging.getLogger(__name__)

KEY_FILE = "participant.key"
CSR_FILE = "participant.csr"
CERT_FILE = "participant.crt"
INFO_FILE = "participant.json"
TLS_KEY_FILE = "tls.key"
TLS_CSR_FILE = "tls.csr"
TLS_CERT_FILE = "tls.crt"


def init_participant(
    directory: Path | str, name: str, *, alg: Algorithm = "EdDSA", tls_hosts: tuple[str, ...] = ()
) -> Path:
    """Create a participant's key pair and CSR; refuses to overwrite an existing key.

    With ``tls_hosts``, also a TLS key (ECDSA P-256, what every TLS stack speaks) and a CSR
    naming those hosts, for the certificate the connector serves DSP with.
    """
    root = Path(directory)
    validate_name(name)
    if (root / KEY_FILE).exists():
        raise IdentityError(f"{root / KEY_FILE} already exists; refusing to overwrite a key")
    key = generate_private_key(alg)
    csr = create_csr(key, name)
    atomic_write(root / KEY_FILE, private_key_to_pem(key), mode=0o600)
    atomic_write(root / CSR_FILE, csr.public_bytes(serialization.Encoding.PEM))
    if tls_hosts:
        tls_key = generate_private_key("ES256")
        tls_csr = create_tls_csr(tls_key, name, list(tls_hosts))
        atomic_write(root / TLS_KEY_FILE, private_key_to_pem(tls_key), mode=0o600)
        atomic_write(root / TLS_CSR_FILE, tls_csr.public_bytes(serialization.Encoding.PEM))
    atomic_write(root / INFO_FILE, json.dumps({"name": name, "alg": alg}, indent=1).encode())
    return root / CSR_FILE


@dataclass(frozen=True, slots=True)
class ParticipantIdentity:
    """A participant's key and certificate; signs its client assertions."""

    participant_id: str
    name: str
    key: SigningKey
    certificate: x509.Certificate

    @classmethod
    def load(cls, directory: Path | str) -> ParticipantIdentity:
        root = Path(directory)
        private = load_private_key_pem((root / KEY_FILE).read_bytes())
        cert_path = root / CERT_FILE
        if not cert_path.is_file():
            raise IdentityError(f"{cert_path} is missing: have the operator register {root / CSR_FILE}")
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        return cls.from_parts(private, cert)

    @classmethod
    def from_parts(cls, private: Any, cert: x509.Certificate) -> ParticipantIdentity:
        pub = serialization.PublicFormat.SubjectPublicKeyInfo
        der = serialization.Encoding.DER
        if private.public_key().public_bytes(der, pub) != cert.public_key().public_bytes(der, pub):
            raise IdentityError("the certificate does not belong to this participant's key")
        return cls(
            participant_id=participant_id(cert),
            name=common_name(cert.subject) or "",
            key=SigningKey(kid="", alg=algorithm_of(private), private_key=private),
            certificate=cert,
        )

    def client_assertion(self, audience: str, *, now: float, jti: str, lifetime: int = 60) -> str:
        """RFC 7523 client assertion: iss = sub = participant id, aud = the authority."""
        iat = int(now)
        payload = {
            "iss": self.participant_id,
            "sub": self.participant_id,
            "aud": audience,
            "iat": iat,
            "nbf": iat,
            "exp": iat + lifetime,
            "jti": jti,
        }
        return jose.encode(payload, self.key, typ="JWT", with_kid=False)


TokenTransport = Callable[[Mapping[str, str]], Awaitable[Mapping[str, Any]]]


class HttpTokenTransport:
    """POST the form to the token endpoint; OAuth error bodies become IdentityError."""

    def __init__(self, session: aiohttp.ClientSession, url: str, *, timeout: float = 10.0):
        self._session = session
        self.url = url
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def __call__(self, form: Mapping[str, str]) -> Mapping[str, Any]:
        async with self._session.post(
            self.url, data=dict(form), timeout=self._timeout, allow_redirects=False
        ) as resp:
            try:
                body = await resp.json(content_type=None)
            except (ValueError, aiohttp.ContentTypeError) as exc:
                raise IdentityError(f"token endpoint answered {resp.status} without JSON") from exc
            if resp.status != 200 or not isinstance(body, dict):
                if isinstance(body, dict) and "error" in body:
                    raise IdentityError(
                        str(body.get("error_description", body["error"])),
                        error=str(body["error"]),
                        status=resp.status,
                    )
                raise IdentityError(f"token endpoint answered {resp.status}")
            return body


@dataclass(frozen=True, slots=True)
class _Cached:
    token: str
    refresh_at: float
    expires_at: float
    issued_at: float


class DatClient:
    def __init__(
        self,
        identity: ParticipantIdentity,
        *,
        audience: str,
        transport: TokenTransport,
        clock: WallClock = time.time,
        new_id: IdFactory = new_jti,
        refresh_margin: float = 60.0,
        retry_interval: float = 5.0,
        scope: str | None = None,
        changed_at: Callable[[], float | None] | None = None,
    ):
        self.identity = identity
        self.audience = audience
        self._transport = transport
        self._clock = clock
        self._new_id = new_id
        self.refresh_margin = refresh_margin
        self.retry_interval = retry_interval
        self._scope = scope
        self.changed_at = changed_at
        self._cached: _Cached | None = None
        self._inflight: asyncio.Future[_Cached] | None = None
        self._retry_after = -math.inf
        self.requests = 0
        self.last_error: str | None = None

    @classmethod
    async def discover(
        cls,
        session: aiohttp.ClientSession,
        authority_url: str,
        identity: ParticipantIdentity,
        **kwargs: Any,
    ) -> DatClient:
        url = authority_url.rstrip("/") + "/.well-known/oauth-authorization-server"
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as resp:
            resp.raise_for_status()
            meta = await resp.json()
        return cls(
            identity,
            audience=meta["issuer"],
            transport=HttpTokenTransport(session, meta["token_endpoint"]),
            **kwargs,
        )

    async def token(self) -> str:
        now = self._clock()
        cached = self._cached
        if cached is not None and self.changed_at is not None:
            changed = self.changed_at()
            if changed is not None and cached.issued_at < changed:
                self._cached = cached = None  # the authority attests something new now
        if cached is not None and now < cached.refresh_at:
            return cached.token
        usable = cached is not None and now < cached.expires_at
        if self._inflight is None:
            if usable and now < self._retry_after:
                assert cached is not None
                return cached.token
            self._inflight = asyncio.ensure_future(self._fetch())
            self._inflight.add_done_callback(self._done)
        try:
            fresh = await asyncio.shield(self._inflight)
        except Exception as exc:
            if usable and cached is not None and self._clock() < cached.expires_at:
                return cached.token
            raise TokenUnavailable(f"could not obtain a DAT: {exc}") from exc
        return fresh.token

    async def renew(self, stale: str | None = None) -> str:
        """A fresh DAT: the cached one is dropped (when it is `stale`, the token a peer just
        refused; None: whatever is cached) and a new one fetched (single flight)."""
        cached = self._cached
        if cached is not None and (stale is None or cached.token == stale):
            self._cached = None
            self._retry_after = -math.inf
        return await self.token()

    def _done(self, fut: asyncio.Future[_Cached]) -> None:
        self._inflight = None
        if fut.cancelled():
            self._retry_after = self._clock() + self.retry_interval
            return
        exc = fut.exception()
        if exc is not None:
            self.last_error = str(exc) or type(exc).__name__
            self._retry_after = self._clock() + self.retry_interval
            log.warning("DAT refresh failed: %s", self.last_error)
        else:
            self._cached = fut.result()

    async def _fetch(self) -> _Cached:
        try:
            cached = await self._fetch_once()
        except Exception:
            DAT_REFRESHES.labels("failed").inc()
            raise
        DAT_REFRESHES.labels("ok").inc()
        return cached

    async def _fetch_once(self) -> _Cached:
        self.requests += 1
        sent_at = self._clock()
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": self.identity.client_assertion(
                self.audience, now=sent_at, jti=self._new_id()
            ),
        }
        if self._scope:
            form["scope"] = self._scope
        body = await self._transport(form)
        token, expires_in = body.get("access_token"), body.get("expires_in")
        if not isinstance(token, str) or type(expires_in) is not int or expires_in <= 0:
            raise IdentityError("token endpoint response lacks access_token / expires_in")
        # Measured from when the request was sent, so a slow response errs on the early side.
        expires_at = sent_at + expires_in
        margin = min(self.refresh_margin, expires_in / 2)
        try:  # our own token: its iat only serves to tell it stale (see `changed_at`)
            iat = jose.unverified_payload(token, "DAT").get("iat")
        except IdentityError:
            iat = None
        issued_at = float(iat) if isinstance(iat, (int, float)) else sent_at
        return _Cached(
            token=token, refresh_at=expires_at - margin, expires_at=expires_at, issued_at=issued_at
        )
