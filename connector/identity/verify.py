"""Token verification for connectors, brokers and data planes.

Callers depend on one seam, `Verifier.verify(token) -> Claims`. Behind it:

* `DatVerifier`: DATs signed by the data-space authority, keys from its JWKS (cached, refreshed
  on an unknown `kid` at most once per `jwks_min_refresh_interval`, and when older than
  `jwks_max_age`), participants checked against the authority's signed revocation list (polled;
  a list older than `revocation_poll_interval` that cannot be refreshed fails closed).
* `TransferTokenVerifier`: provider-signed transfer tokens at the data plane.

Verified-token cache: a DAT is a bearer token reused on many calls until it expires, so by
default a verifier caches its claims under sha256(token) until `exp` and skips the signature on
repeats (the kid must still be published and the subject not revoked). `jti` replay checking is
opt-in (`replay_protection=True`) for places that require one-time tokens; it disables the claims
cache, since a cache hit would be a replay. Client assertions at the authority are always
one-time (see authority.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

import aiohttp
from pydantic import BaseModel, ConfigDict, Field

from connector.identity import jose
from connector.identity.errors import AttributesChanged, InvalidToken
from connector.identity.jose import TokenRules, VerificationKey
from connector.identity.keys import KeyFormatError, public_key_from_jwk
from connector.identity.tokens import (
    DAT_AUDIENCE,
    Claims,
    dat_claims,
    transfer_access_rules,
    transfer_claims,
)
from connector.wireformat import WallClock

log = logging.getLogger(__name__)

Fetch = Callable[[], Awaitable[Any]]


@runtime_checkable
class Verifier(Protocol):
    """The one verification seam: a token in, vouched-for claims out, or InvalidToken."""

    async def verify(self, token: str) -> Claims: ...


# --- bounded caches ----------------------------------------------------------------------


class ReplayCacheFull(InvalidToken):
    """Too many live one-time tokens: refuse new ones rather than forget unexpired ids."""

    error = "temporarily_unavailable"
    status = 503


class RevocationUnavailable(InvalidToken):
    """The revocation list is older than its poll interval and cannot be refreshed (the
    authority is unreachable): no token can be checked now. Transient: answer 503, not a
    refusal the caller would take as final."""

    error = "temporarily_unavailable"
    status = 503


class ReplayCache:
    """Seen token ids until their expiry; bounded, and full means refuse (never forget early).

    Entries are keyed by sha256(issuer, jti), so an entry's size does not depend on what a
    client chose to put in its token (about 200 bytes each: 100,000 entries ~ 20 MB).
    """

    @staticmethod
    def key(issuer: str, jti: str) -> bytes:
        return hashlib.sha256(f"{issuer}\x00{jti}".encode()).digest()

    def __init__(self, max_entries: int = 100_000):
        if max_entries <= 0:
            raise ValueError("max_entries must be positive")
        self.max_entries = max_entries
        self._expiry: dict[bytes, float] = {}
        self._heap: list[tuple[float, bytes]] = []

    def __len__(self) -> int:
        return len(self._expiry)

    def __contains__(self, key: object) -> bool:
        return key in self._expiry

    def check(self, key: bytes, now: float) -> None:
        """Raise if `key` was used and has not expired; changes nothing."""
        expires = self._expiry.get(key)
        if expires is not None and expires > now:
            raise InvalidToken("token replayed: its jti was already used")

    def add(self, key: bytes, expires_at: float, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            exp, old = heapq.heappop(heap)
            if self._expiry.get(old) == exp:
                del self._expiry[old]
        if len(self._expiry) >= self.max_entries:
            raise ReplayCacheFull("replay cache full: refusing one-time tokens until earlier ones expire")
        self._expiry[key] = expires_at
        heapq.heappush(heap, (expires_at, key))


class ClaimsCache:
    """sha256(token) -> Claims until exp; evicting early is always safe (it just re-verifies)."""

    def __init__(self, max_entries: int = 10_000):
        self.max_entries = max_entries
        self._entries: dict[bytes, Claims] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, digest: bytes) -> Claims | None:
        return self._entries.get(digest)

    def put(self, digest: bytes, claims: Claims) -> None:
        entries = self._entries
        if len(entries) >= self.max_entries:
            del entries[next(iter(entries))]
        entries[digest] = claims

    def discard(self, digest: bytes) -> None:
        self._entries.pop(digest, None)


# --- JWKS ----------------------------------------------------------------------------------


def parse_jwks(doc: Any) -> dict[str, VerificationKey]:
    """Usable signature keys of a JWKS by kid; unusable entries are skipped, never guessed."""
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise InvalidToken("JWKS malformed: expected an object with a 'keys' list")
    keys: dict[str, VerificationKey] = {}
    for jwk in doc["keys"]:
        if not isinstance(jwk, dict):
            continue
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not jose._KID_RE.fullmatch(kid) or kid in keys:
            continue
        if jwk.get("use", "sig") != "sig":
            continue
        try:
            alg, key = public_key_from_jwk(jwk)
        except KeyFormatError as exc:
            log.warning("ignoring JWKS key %r: %s", kid, exc)
            continue
        keys[kid] = VerificationKey(kid=kid, alg=alg, key=key)
    return keys


class JwksCache:
    """The authority's keys, fetched on demand; one fetch in flight; unknown kids rate-limited."""

    def __init__(
        self,
        fetch: Fetch,
        *,
        clock: WallClock = time.time,
        min_refresh_interval: float = 30.0,
        max_age: float = 300.0,
    ):
        self._fetch = fetch
        self._clock = clock
        self.min_refresh_interval = min_refresh_interval
        self.max_age = max_age
        self.keys: dict[str, VerificationKey] = {}
        self.fetched_at = -math.inf
        self.fetch_count = 0
        self.last_error: str | None = None
        self._last_attempt = -math.inf
        self._inflight: asyncio.Future[None] | None = None

    async def get(self, kid: str) -> VerificationKey | None:
        now = self._clock()
        key = self.keys.get(kid)
        may_fetch = now - self._last_attempt >= self.min_refresh_interval
        if key is not None and (now - self.fetched_at < self.max_age or not may_fetch):
            return key
        if key is None and not may_fetch and self._inflight is None:
            return None
        await self.refresh(quiet=True)
        return self.keys.get(kid)

    async def refresh_if_old(self) -> None:
        """Refresh when older than `max_age` (rate-limited), so a withdrawn key stops working
        within `max_age` even for tokens only ever served from a verified-token cache."""
        now = self._clock()
        if now - self.fetched_at >= self.max_age and now - self._last_attempt >= self.min_refresh_interval:
            await self.refresh(quiet=True)

    async def refresh(self, *, quiet: bool = False) -> None:
        if self._inflight is None:
            self._last_attempt = self._clock()
            self._inflight = asyncio.ensure_future(self._do_refresh())
            self._inflight.add_done_callback(self._clear)
        try:
            await asyncio.shield(self._inflight)
        except Exception as exc:
            if not quiet:
                raise
            log.warning("JWKS refresh failed: %s", exc)

    def _clear(self, fut: asyncio.Future[None]) -> None:
        self._inflight = None
        if not fut.cancelled() and fut.exception() is not None:
            self.last_error = str(fut.exception())

    async def _do_refresh(self) -> None:
        self.fetch_count += 1
        keys = parse_jwks(await self._fetch())
        self.keys = keys
        self.fetched_at = self._clock()
        self.last_error = None


# --- revocation ----------------------------------------------------------------------------


class RevocationStatus:
    """Revoked participant ids from the authority's signed list, kept at most `poll_interval` old.

    The list also says, per participant whose attested attributes (jurisdiction, groups,
    certifications, ...) changed recently, when (`changed`: id -> epoch seconds):
    `changed_at(pid)` gives it, and a token of that participant issued before is stale.

    `ensure_fresh` refreshes a stale list (one fetch in flight) and raises if it cannot: a
    connector refuses a revoked participant's tokens no later than its poll interval, even when
    an attacker blocks the way to the authority.
    """

    def __init__(
        self,
        fetch: Fetch | None,
        *,
        jwks: JwksCache | None,
        issuer: str,
        clock: WallClock = time.time,
        poll_interval: float = 60.0,
        min_retry_interval: float = 5.0,
        leeway: float = 30.0,
        revoked: frozenset[str] = frozenset(),
    ):
        if fetch is not None and jwks is None:
            raise ValueError("a fetched revocation list needs the JWKS to verify it")
        self._fetch = fetch
        self._jwks = jwks
        self._clock = clock
        self.poll_interval = poll_interval
        self.min_retry_interval = min_retry_interval
        self.revoked = revoked
        self.changed: Mapping[str, float] = {}
        self.seq = -1
        self.fetched_at = -math.inf
        self.fetch_count = 0
        self._last_failure = -math.inf
        self._last_error = "never fetched"
        self._inflight: asyncio.Future[None] | None = None
        self._rules = TokenRules(
            label="revocation list",
            typ=frozenset({jose.REVOCATION_LIST_TYP}),
            issuer=issuer,
            audience=None,
            leeway=leeway,
            max_lifetime=86400,
            required=("iss", "iat", "exp"),
        )

    @classmethod
    def static(cls, revoked: frozenset[str] = frozenset()) -> RevocationStatus:
        """A fixed list (tests, or schemes with no revocation source)."""
        return cls(None, jwks=None, issuer="static", revoked=revoked)

    def is_revoked(self, participant_id: str) -> bool:
        return participant_id in self.revoked

    def changed_at(self, participant_id: str) -> float | None:
        """When the participant's attested attributes last changed (None: not recently)."""
        return self.changed.get(participant_id)

    def check_current(self, participant_id: str, issued_at: float, label: str) -> None:
        """Refuse a token (or snapshot) of `participant_id` issued before its attributes
        changed."""
        changed = self.changed.get(participant_id)
        if changed is not None and issued_at < changed:
            raise AttributesChanged(
                f"{label}: attested attributes of {participant_id} changed at {changed:.0f}; "
                "a fresh token is needed",
                changed_at=changed,
            )

    async def ensure_fresh(self, now: float) -> None:
        if self._fetch is None or now - self.fetched_at < self.poll_interval:
            return
        # retries after a failure are rate-limited; a due poll after a success is not
        if self._inflight is None and now - self._last_failure >= self.min_retry_interval:
            self._inflight = asyncio.ensure_future(self._refresh())
            self._inflight.add_done_callback(self._clear)
        if self._inflight is not None:
            try:
                await asyncio.shield(self._inflight)
            except Exception as exc:
                self._last_error = str(exc) or type(exc).__name__
        if self._clock() - self.fetched_at >= self.poll_interval:
            raise RevocationUnavailable(
                "revocation status unavailable: the revocation list could not be refreshed "
                f"within the poll interval ({self.poll_interval:g}s): {self._last_error}"
            )

    def _clear(self, fut: asyncio.Future[None]) -> None:
        self._inflight = None
        if fut.cancelled() or fut.exception() is not None:
            self._last_failure = self._clock()

    async def _refresh(self) -> None:
        assert self._fetch is not None and self._jwks is not None
        self.fetch_count += 1
        token = await self._fetch()
        now = self._clock()
        rules = self._rules
        header = jose.parse_header(token, rules)
        key = await self._jwks.get(header["kid"])
        if key is None:
            raise InvalidToken(f"revocation list: unknown kid {header['kid']!r}")
        payload = jose.verify_signature(token, header, key, rules.label)
        jose.check_claims(payload, rules, now)
        if payload["iat"] < now - rules.leeway - self.poll_interval:
            raise InvalidToken("revocation list: stale list (iat too old), refusing a replay")
        seq, revoked = payload.get("seq"), payload.get("revoked")
        if type(seq) is not int or seq < self.seq:
            raise InvalidToken("revocation list: sequence number missing or rolled back")
        if not isinstance(revoked, list) or not all(isinstance(r, str) for r in revoked):
            raise InvalidToken("revocation list: 'revoked' must be a list of strings")
        changed = payload.get("changed", {})
        if not isinstance(changed, dict) or not all(
            isinstance(k, str) and type(v) in (int, float) and math.isfinite(v) for k, v in changed.items()
        ):
            raise InvalidToken("revocation list: 'changed' must map participant ids to times")
        self.changed = MappingProxyType({k: float(v) for k, v in changed.items()})
        self.revoked = frozenset(revoked)
        self.seq = seq
        self.fetched_at = now
        self._last_error = ""


# --- verifiers -----------------------------------------------------------------------------


class DatVerifierSettings(BaseModel):
    """Configuration of a DAT verifier (the connector's config file feeds this)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    issuer: str = Field(min_length=1)
    audience: str = DAT_AUDIENCE
    leeway: float = Field(default=30.0, ge=0, le=300)
    max_lifetime: float = Field(default=86400.0, gt=0)
    max_token_bytes: int = Field(default=jose.MAX_TOKEN_BYTES, ge=512, le=65536)
    cache_claims: bool = True
    claims_cache_size: int = Field(default=10_000, gt=0)
    replay_protection: bool = False
    replay_cache_size: int = Field(default=100_000, gt=0)
    jwks_min_refresh_interval: float = Field(default=30.0, ge=0)
    jwks_max_age: float = Field(default=300.0, gt=0)
    revocation_poll_interval: float = Field(default=60.0, gt=0)
    revocation_min_retry_interval: float = Field(default=5.0, ge=0)


class DatVerifier:
    """Verifies DATs issued by one data-space authority."""

    scheme = "dat"

    def __init__(
        self,
        settings: DatVerifierSettings,
        *,
        jwks: JwksCache,
        revocations: RevocationStatus,
        clock: WallClock = time.time,
    ):
        self.settings = settings
        self.jwks = jwks
        self.revocations = revocations
        self._clock = clock
        self._leeway = settings.leeway
        self.rules = TokenRules(
            label="DAT",
            typ=frozenset({jose.DAT_TYP}),
            issuer=settings.issuer,
            audience=frozenset({settings.audience}),
            leeway=settings.leeway,
            max_lifetime=settings.max_lifetime,
            max_bytes=settings.max_token_bytes,
        )
        self.replay = ReplayCache(settings.replay_cache_size) if settings.replay_protection else None
        self.cache = (
            ClaimsCache(settings.claims_cache_size)
            if settings.cache_claims and not settings.replay_protection
            else None
        )

    @classmethod
    def create(
        cls,
        settings: DatVerifierSettings,
        *,
        fetch_jwks: Fetch,
        fetch_revocations: Fetch | None,
        clock: WallClock = time.time,
    ) -> DatVerifier:
        jwks = JwksCache(
            fetch_jwks,
            clock=clock,
            min_refresh_interval=settings.jwks_min_refresh_interval,
            max_age=settings.jwks_max_age,
        )
        revocations = RevocationStatus(
            fetch_revocations,
            jwks=jwks,
            issuer=settings.issuer,
            clock=clock,
            poll_interval=settings.revocation_poll_interval,
            min_retry_interval=settings.revocation_min_retry_interval,
            leeway=settings.leeway,
        )
        return cls(settings, jwks=jwks, revocations=revocations, clock=clock)

    @classmethod
    async def from_authority(
        cls,
        session: aiohttp.ClientSession,
        authority_url: str,
        *,
        clock: WallClock = time.time,
        **settings: Any,
    ) -> DatVerifier:
        """Discover the authority (RFC 8414 metadata) and verify its DATs over HTTP."""
        meta = await HttpFetcher(
            session, authority_url.rstrip("/") + "/.well-known/oauth-authorization-server"
        )()
        if not isinstance(meta, dict) or not isinstance(meta.get("issuer"), str):
            raise InvalidToken("authority metadata malformed: no issuer")
        cfg = DatVerifierSettings(issuer=meta["issuer"], **settings)
        revocation_uri = meta.get("revocation_list_uri")
        return cls.create(
            cfg,
            fetch_jwks=HttpFetcher(session, meta["jwks_uri"]),
            fetch_revocations=HttpFetcher(session, revocation_uri, text=True)
            if isinstance(revocation_uri, str)
            else None,
            clock=clock,
        )

    async def verify(self, token: str) -> Claims:
        now = self._clock()
        await self.revocations.ensure_fresh(now)
        jwks = self.jwks
        if now - jwks.fetched_at >= jwks.max_age:
            await jwks.refresh_if_old()
        cache = self.cache
        digest = b""
        if cache is not None and type(token) is str:
            digest = hashlib.sha256(token.encode()).digest()
            hit = cache.get(digest)
            if (
                hit is not None
                and now < hit.expires_at + self._leeway
                and hit.key_id in jwks.keys
                and hit.subject not in self.revocations.revoked
                and hit.issued_at >= (self.revocations.changed.get(hit.subject) or -math.inf)
            ):
                return hit
            # otherwise verify in full, to report why it fails now; a stale entry is
            # overwritten or evicted later (touching the cache on refusal gains nothing)
        rules = self.rules
        header = jose.parse_header(token, rules)
        kid = header["kid"]
        key = await self.jwks.get(kid)
        if key is None:
            raise InvalidToken(f"DAT: unknown kid {kid!r} (not in the authority's JWKS)")
        payload = jose.verify_signature(token, header, key, "DAT")
        jose.check_claims(payload, rules, now)
        if payload["sub"] in self.revocations.revoked:
            raise InvalidToken(f"DAT: participant {payload['sub']!r} is revoked")
        self.revocations.check_current(payload["sub"], payload["iat"], "DAT")
        claims = dat_claims(payload, kid)
        if self.replay is not None:
            replay_key = ReplayCache.key(payload["iss"], payload["jti"])
            self.replay.check(replay_key, now)
            self.replay.add(replay_key, claims.expires_at + self._leeway, now)
        elif cache is not None:
            cache.put(digest, claims)
        return claims


class TransferTokenVerifier:
    """The data plane's check of provider-signed transfer tokens."""

    scheme = "transfer"

    def __init__(
        self,
        keys: Mapping[str, VerificationKey],
        *,
        provider_id: str,
        audience: str,
        clock: WallClock = time.time,
        leeway: float = 30.0,
        revocations: RevocationStatus | None = None,
        is_transfer_active: Callable[[str], bool] | None = None,
        cache_claims: bool = True,
    ):
        self._keys = dict(keys)
        self._clock = clock
        self._leeway = leeway
        self.rules = transfer_access_rules(provider_id=provider_id, audience=audience, leeway=leeway)
        self.revocations = revocations or RevocationStatus.static()
        self._is_active = is_transfer_active
        self.cache = ClaimsCache() if cache_claims else None

    async def verify(self, token: str) -> Claims:
        now = self._clock()
        await self.revocations.ensure_fresh(now)
        cache = self.cache
        digest = b""
        if cache is not None and type(token) is str:
            digest = hashlib.sha256(token.encode()).digest()
            hit = cache.get(digest)
            if hit is not None and now < hit.expires_at + self._leeway:
                self._check_live(hit)
                return hit
        rules = self.rules
        header = jose.parse_header(token, rules)
        key = self._keys.get(header["kid"])
        if key is None:
            raise InvalidToken(f"transfer token: unknown kid {header['kid']!r}")
        payload = jose.verify_signature(token, header, key, rules.label)
        jose.check_claims(payload, rules, now)
        claims = transfer_claims(payload, key.kid)
        self._check_live(claims)
        if cache is not None:
            cache.put(digest, claims)
        return claims

    def _check_live(self, claims: Claims) -> None:
        if claims.subject in self.revocations.revoked:
            raise InvalidToken(f"transfer token: consumer {claims.subject!r} is revoked")
        at = claims.attributes.get("attestedAt")
        if at is not None:  # the snapshot of a DAT now stale: refresh the transfer token
            self.revocations.check_current(claims.subject, at, "transfer token")
        if self._is_active is not None and not self._is_active(claims.attributes["transferId"]):
            raise InvalidToken("transfer token: the transfer is no longer active")


def check_transport_binding(claims: Claims, peer_certificate_der: bytes) -> None:
    """Where a DAT pins TLS certificates (`transportCertsSha256`), the peer must use one."""
    pinned = claims.attributes.get("transportCertsSha256") or ()
    if pinned and hashlib.sha256(peer_certificate_der).hexdigest() not in pinned:
        raise InvalidToken(
            "DAT: the TLS certificate presented is not one of the participant's transportCertsSha256"
        )


# --- HTTP ----------------------------------------------------------------------------------


class HttpFetcher:
    """GET a small JSON (or text) document; bounded size and time, clear errors."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        *,
        text: bool = False,
        timeout: float = 5.0,
        max_bytes: int = 256 * 1024,
    ):
        self._session = session
        self.url = url
        self._text = text
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_bytes = max_bytes

    async def __call__(self) -> Any:
        async with self._session.get(self.url, timeout=self._timeout, allow_redirects=False) as resp:
            if resp.status != 200:
                raise InvalidToken(f"GET {self.url} answered {resp.status}")
            body = await resp.content.read(self._max_bytes + 1)
            if len(body) > self._max_bytes:
                raise InvalidToken(f"GET {self.url}: response larger than {self._max_bytes} bytes")
        if self._text:
            return body.decode("ascii", errors="replace").strip()
        try:
            return jose.loads(body)
        except (ValueError, RecursionError) as exc:
            raise InvalidToken(f"GET {self.url}: response is not JSON") from exc
