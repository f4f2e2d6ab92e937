"""The data-space authority (DAPS-like): DAT issuance, JWKS, metadata, admin API.

`Authority` is the core (no sockets): it turns a token request into a DAT or a typed error.
`create_app` is the thin aiohttp edge around it. Every refusal is an OAuth error body with a
4xx status; a request that fails changes nothing (the client assertion's jti is recorded only
once every check has passed). The authority's state is files (`AuthorityStore`): a write they
cannot take (a full disk, a read-only file system) is 503 ``temporarily_unavailable`` with a
``Retry-After`` (connector.http.errors); the atomic writes leave the old state in place.

Client assertions are one-time: their jti is remembered until they expire (at most
`assertion_max_lifetime` = 5 min). The memory is not persisted; instead an assertion issued
before this process started is refused, so a restart cannot reopen a replay window.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import signal
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from connector.faults import StoreUnavailable, from_os_error
from connector.http.errors import storage_fault
from connector.http.limits import (
    DEFAULT_LIMITS,
    WATCHDOG_MARGIN,
    LimitError,
    Limits,
    ShutdownWatchdog,
    load_json,
    one_header,
    read_body,
    start_site,
    stop_sites,
)
from connector.identity import jose
from connector.identity.errors import (
    IdentityError,
    InvalidClient,
    InvalidRequest,
    InvalidScope,
    InvalidToken,
    Unauthorized,
    UnsupportedGrantType,
)
from connector.identity.jose import TokenRules
from connector.identity.keys import SigningKey
from connector.identity.registry import (
    attribute_changes,
    create_group,
    delete_group,
    group_views,
    participant_view,
    prepare_next_key,
    register_participant,
    retire_previous_keys,
    revoke_participant,
    rotate_signing_key,
    set_membership,
    update_attributes,
)
from connector.identity.store import AuthorityStore, ParticipantAttributes, admin_token_hash
from connector.identity.tokens import DEFAULT_SCOPE, IdFactory, build_dat_payload, new_jti
from connector.identity.verify import ReplayCache
from connector.wireformat import WallClock

log = logging.getLogger(__name__)

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SCOPES = frozenset({DEFAULT_SCOPE})


# --- boundary models -----------------------------------------------------------------------


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    grant_type: str | None = None
    client_assertion_type: str | None = None
    client_assertion: str | None = None
    client_id: str | None = None
    scope: str | None = None


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
    scope: str


class RegisterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    csr: str | None = Field(default=None, max_length=32_768)
    certificate: str | None = Field(default=None, max_length=32_768)
    attributes: ParticipantAttributes = ParticipantAttributes()  # frozen: safe to share


class RevokeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    participant_id: str = Field(min_length=1, max_length=512)
    reason: str = Field(default="", max_length=500)


class AttributesRequest(BaseModel):
    """New values for some attested attributes (None: back to the default)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    security_profile: Any = Field(default=None, alias="securityProfile")
    membership: Any = None
    roles: Any = None
    referring_connector: Any = Field(default=None, alias="referringConnector")
    jurisdiction: Any = None
    certifications: Any = None
    groups: Any = None

    def changes(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, include=self.model_fields_set)


class GroupRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=63)
    description: str = Field(default="", max_length=500)


class MemberRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    participant_id: str = Field(min_length=1, max_length=512)


class RotateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    overlap_seconds: int | None = Field(default=None, ge=0, le=30 * 86400)


# --- core ----------------------------------------------------------------------------------


class Authority:
    def __init__(
        self,
        store: AuthorityStore,
        *,
        issuer: str,
        clock: WallClock = time.time,
        new_id: IdFactory = new_jti,
        replay_cache_size: int = 250_000,
    ):
        self.store = store
        self.issuer = issuer.rstrip("/")
        self.token_endpoint = f"{self.issuer}/token"
        self._clock = clock
        self._new_id = new_id
        self.started_at = clock()
        self.replay = ReplayCache(replay_cache_size)
        self.issued = 0
        cfg = store.config
        self._assertion_rules = TokenRules(
            label="client assertion",
            typ=frozenset({None, "JWT"}),
            issuer=None,  # iss = sub = the client; checked against the registry
            audience=frozenset({self.issuer, self.token_endpoint}),
            leeway=cfg.leeway,
            max_lifetime=cfg.assertion_max_lifetime,
            required=("iss", "sub", "aud", "iat", "exp", "jti"),
            require_kid=False,
        )

    # -- public documents -------------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        """RFC 8414 authorization server metadata."""
        return {
            "issuer": self.issuer,
            "token_endpoint": self.token_endpoint,
            "jwks_uri": f"{self.issuer}/.well-known/jwks.json",
            "revocation_list_uri": f"{self.issuer}/revocations",
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": sorted(jose.ALLOWED_ALGORITHMS),
            "response_types_supported": ["token"],
            "scopes_supported": sorted(SCOPES),
            "dat_audience": self.store.config.audience,
        }

    def jwks(self) -> dict[str, Any]:
        now = self._clock()
        return {"keys": [k.jwk for k in self.store.state().published_keys(now)]}

    def revocation_list(self) -> str:
        """The revoked participant ids, signed, so connectors can fetch them over any channel."""
        state = self.store.state()
        now = int(self._clock())
        payload = {
            "iss": self.issuer,
            "iat": now,
            "exp": now + 3600,
            "jti": self._new_id(),
            "seq": state.revocation_seq,
            "revoked": sorted(pid for pid, p in state.participants.items() if p.revoked_at is not None),
            # participant id -> when its attested attributes changed: DATs issued before are
            # stale. Older changes than a DAT's lifetime concern no live DAT and are left out.
            "changed": attribute_changes(
                state, since=now - self.store.config.dat_lifetime - self.store.config.leeway
            ),
        }
        return jose.encode(payload, self._current_key(), typ=jose.REVOCATION_LIST_TYP)

    def _current_key(self) -> SigningKey:
        record = self.store.state().key_with("current")
        if record is None:
            raise IdentityError("authority has no current signing key", status=500)
        return self.store.signing_key(record.kid)

    # -- token endpoint ---------------------------------------------------------------------

    def issue_token(self, request: TokenRequest) -> TokenResponse:
        now = self._clock()
        if request.grant_type is None:
            raise InvalidRequest("missing grant_type")
        if request.grant_type != "client_credentials":
            raise UnsupportedGrantType(
                f"grant_type {request.grant_type[:60]!r} is not supported; use client_credentials"
            )
        if request.client_assertion_type != JWT_BEARER:
            raise InvalidClient(f"client_assertion_type must be {JWT_BEARER}")
        if not request.client_assertion:
            raise InvalidClient("missing client_assertion")
        scopes = (request.scope or DEFAULT_SCOPE).split()
        unknown = [s for s in scopes if s not in SCOPES]
        if unknown or not scopes:
            raise InvalidScope(f"unknown scope {unknown[:3]!r}; supported: {sorted(SCOPES)}")

        token, rules = request.client_assertion, self._assertion_rules
        try:
            header = jose.parse_header(token, rules)
            claimed = jose.unverified_payload(token, rules.label)
            iss, sub = claimed.get("iss"), claimed.get("sub")
            if not isinstance(iss, str) or iss != sub:
                raise InvalidToken("client assertion: iss and sub must both be the participant id")
            if request.client_id is not None and request.client_id != iss:
                raise InvalidToken("client assertion: client_id does not match iss")
            state = self.store.state()
            record = state.participants.get(iss)
            if record is None:
                raise InvalidToken(f"client assertion: unknown client {iss[:200]!r}")
            if record.revoked_at is not None:
                raise InvalidToken(f"client assertion: participant {iss!r} is revoked")
            entry = self.store.participant_key(iss)
            if entry is None:  # removed by a concurrent state reload
                raise InvalidToken(f"client assertion: unknown client {iss[:200]!r}")
            key, cert = entry
            payload = jose.verify_signature(token, header, key, rules.label)
            if payload.get("iss") != iss or payload.get("sub") != iss:
                raise InvalidToken("client assertion: iss and sub must both be the participant id")
            jose.check_claims(payload, rules, now)
            if payload["iat"] < int(self.started_at):
                raise InvalidToken("client assertion: issued before the authority started; send a fresh one")
            if payload["exp"] - now > rules.max_lifetime + rules.leeway:
                raise InvalidToken("client assertion: exp is more than 5 minutes away")
            if not (cert.not_valid_before_utc.timestamp() <= now < cert.not_valid_after_utc.timestamp()):
                raise InvalidToken("client assertion: the participant's certificate is not valid now")
            replay_key = ReplayCache.key(iss, payload["jti"])
            self.replay.check(replay_key, now)
        except InvalidToken as exc:
            raise InvalidClient(exc.description) from exc
        # every check passed: from here on, state changes (a full cache refuses with 503)
        self.replay.add(replay_key, payload["exp"] + rules.leeway, now)

        cfg = self.store.config
        dat = build_dat_payload(
            issuer=self.issuer,
            participant_id=iss,
            attributes=record.attributes.claims(record.name),
            audience=cfg.audience,
            scopes=scopes,
            # never older than the last change of the attributes it attests (that time is a
            # whole second, at most one ahead of now: within every verifier's leeway)
            now=max(now, record.attributes_changed_at or 0),
            lifetime=cfg.dat_lifetime,
            jti=self._new_id(),
        )
        access = jose.encode(dat, self._current_key(), typ=jose.DAT_TYP)
        self.issued += 1
        return TokenResponse(access_token=access, expires_in=cfg.dat_lifetime, scope=" ".join(scopes))

    # -- admin ------------------------------------------------------------------------------

    def check_admin(self, authorization: str | None) -> None:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("admin API requires 'Authorization: Bearer <admin token>'")
        expected = self.store.config.admin_token_sha256
        if not hmac.compare_digest(admin_token_hash(token.strip()), expected):
            raise Unauthorized("invalid admin token")

    def register(self, request: RegisterRequest) -> dict[str, Any]:
        if (request.csr is None) == (request.certificate is None):
            raise InvalidRequest("give exactly one of 'csr' or 'certificate' (PEM)")
        pem = (request.csr or request.certificate or "").encode()
        record = register_participant(self.store, pem, now=self._clock(), attributes=request.attributes)
        return participant_view(record)

    def revoke(self, request: RevokeRequest) -> dict[str, Any]:
        record = revoke_participant(
            self.store, request.participant_id, now=self._clock(), reason=request.reason
        )
        return participant_view(record)

    def update_attributes(self, pid: str, request: AttributesRequest) -> dict[str, Any]:
        record = update_attributes(self.store, pid, request.changes(), now=self._clock())
        return participant_view(record)

    def groups(self) -> list[dict[str, Any]]:
        return group_views(self.store.state())

    def create_group(self, request: GroupRequest) -> dict[str, Any]:
        group = create_group(self.store, request.name, now=self._clock(), description=request.description)
        return group.model_dump()

    def delete_group(self, name: str) -> dict[str, Any]:
        return {"deleted": name, "left": delete_group(self.store, name, now=self._clock())}

    def set_membership(self, name: str, pid: str, *, member: bool) -> dict[str, Any]:
        record = set_membership(self.store, name, pid, member=member, now=self._clock())
        return participant_view(record)

    def participants(self) -> list[dict[str, Any]]:
        return [participant_view(p) for p in self.store.state().participants.values()]

    def revocations(self) -> dict[str, Any]:
        state = self.store.state()
        return {
            "seq": state.revocation_seq,
            "revoked": [
                {
                    "participant_id": p.participant_id,
                    "name": p.name,
                    "revoked_at": p.revoked_at,
                    "reason": p.revocation_reason,
                }
                for p in state.participants.values()
                if p.revoked_at is not None
            ],
        }

    def rotate(self, request: RotateRequest) -> dict[str, Any]:
        return rotate_signing_key(self.store, now=self._clock(), overlap=request.overlap_seconds)

    def prepare_next(self) -> dict[str, Any]:
        record = prepare_next_key(self.store, now=self._clock())
        return {"next": record.kid}

    def retire(self) -> dict[str, Any]:
        return {"retired": retire_previous_keys(self.store, now=self._clock())}


# --- HTTP edge -----------------------------------------------------------------------------

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _error_response(exc: IdentityError) -> web.Response:
    headers = dict(_NO_STORE)
    if exc.status == 401:
        headers["WWW-Authenticate"] = f'Bearer error="{exc.error}"'
    return web.json_response(exc.to_oauth(), status=exc.status, headers=headers)


def _validation_summary(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except IdentityError as exc:
        return _error_response(exc)
    except ValidationError as exc:
        return _error_response(InvalidRequest(f"invalid request: {_validation_summary(exc)}"))
    except (StoreUnavailable, OSError) as exc:
        fault = exc if isinstance(exc, StoreUnavailable) else from_os_error(exc, "the authority's files")
        if fault is None:
            log.exception("unexpected error on %s %s", request.method, request.path)
            return web.json_response(
                {"error": "server_error", "error_description": "internal error"}, status=500
            )
        answer = storage_fault(fault, where=f"authority {request.method} {request.path}")
        return web.json_response(
            {"error": "temporarily_unavailable", "error_description": answer.reason},
            status=answer.status,
            headers={**_NO_STORE, **answer.headers},
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        error = "invalid_request" if exc.status < 500 else "server_error"
        text = exc.text or ""
        description = exc.reason if not text or text.startswith(str(exc.status)) else text
        return web.json_response({"error": error, "error_description": description}, status=exc.status)
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return web.json_response({"error": "server_error", "error_description": "internal error"}, status=500)


def _parse_form(body: bytes) -> dict[str, str]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest("request body is not UTF-8") from exc
    try:
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=20)
    except ValueError as exc:
        raise InvalidRequest("too many form parameters") from exc
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise InvalidRequest(f"parameter {name[:40]!r} is repeated")
        form[name] = value
    return form


def create_app(authority: Authority, limits: Limits = DEFAULT_LIMITS) -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=limits.authority_body_bytes)

    async def body(request: web.Request) -> bytes:
        try:
            return await read_body(
                request,
                max_bytes=limits.authority_body_bytes,
                timeout=limits.body_timeout,
                key="limits.authority_body_bytes",
            )
        except LimitError as exc:
            raise InvalidRequest(exc.reason, status=exc.status) from exc

    async def token(request: web.Request) -> web.Response:
        if request.content_type != "application/x-www-form-urlencoded":
            raise InvalidRequest("token requests must be application/x-www-form-urlencoded")
        form = _parse_form(await body(request))
        response = authority.issue_token(TokenRequest.model_validate(form))
        return web.json_response(response.model_dump(), headers=_NO_STORE)

    async def jwks(request: web.Request) -> web.Response:
        return web.json_response(authority.jwks(), headers={"Cache-Control": "max-age=60"})

    async def metadata(request: web.Request) -> web.Response:
        return web.json_response(authority.metadata())

    async def revocations_public(request: web.Request) -> web.Response:
        return web.Response(
            text=authority.revocation_list(), content_type="application/jwt", headers=_NO_STORE
        )

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "live", "issuer": authority.issuer})

    async def admin_body(request: web.Request, model: type[BaseModel]) -> Any:
        authority.check_admin(one_header(request, "Authorization") or None)
        if request.content_type != "application/json":
            raise InvalidRequest("admin requests must be application/json")
        raw = await body(request)
        try:
            data = load_json(raw, limits) if raw.strip() else {}
        except LimitError as exc:
            raise InvalidRequest(f"invalid request: {exc.reason}", status=exc.status) from exc
        return model.model_validate(data)

    async def register(request: web.Request) -> web.Response:
        body = await admin_body(request, RegisterRequest)
        return web.json_response(authority.register(body), status=201)

    async def list_participants(request: web.Request) -> web.Response:
        authority.check_admin(one_header(request, "Authorization") or None)
        return web.json_response({"participants": authority.participants()})

    async def revoke(request: web.Request) -> web.Response:
        body = await admin_body(request, RevokeRequest)
        return web.json_response(authority.revoke(body))

    async def update_attrs(request: web.Request) -> web.Response:
        body = await admin_body(request, AttributesRequest)
        return web.json_response(authority.update_attributes(request.match_info["pid"], body))

    async def list_groups(request: web.Request) -> web.Response:
        authority.check_admin(one_header(request, "Authorization") or None)
        return web.json_response({"groups": authority.groups()})

    async def create_grp(request: web.Request) -> web.Response:
        body = await admin_body(request, GroupRequest)
        return web.json_response(authority.create_group(body), status=201)

    async def delete_grp(request: web.Request) -> web.Response:
        authority.check_admin(one_header(request, "Authorization") or None)
        return web.json_response(authority.delete_group(request.match_info["name"]))

    async def add_member(request: web.Request) -> web.Response:
        body = await admin_body(request, MemberRequest)
        return web.json_response(
            authority.set_membership(request.match_info["name"], body.participant_id, member=True)
        )

    async def remove_member(request: web.Request) -> web.Response:
        authority.check_admin(one_header(request, "Authorization") or None)
        return web.json_response(
            authority.set_membership(request.match_info["name"], request.match_info["pid"], member=False)
        )

    async def list_revocations(request: web.Request) -> web.Response:
        authority.check_admin(one_header(request, "Authorization") or None)
        return web.json_response(authority.revocations())

    async def rotate(request: web.Request) -> web.Response:
        body = await admin_body(request, RotateRequest)
        return web.json_response(authority.rotate(body))

    async def next_key(request: web.Request) -> web.Response:
        authority.check_admin(one_header(request, "Authorization") or None)
        return web.json_response(authority.prepare_next())

    async def retire(request: web.Request) -> web.Response:
        authority.check_admin(one_header(request, "Authorization") or None)
        return web.json_response(authority.retire())

    app.add_routes(
        [
            web.post("/token", token),
            web.get("/.well-known/jwks.json", jwks),
            web.get("/.well-known/oauth-authorization-server", metadata),
            web.get("/revocations", revocations_public),
            web.get("/health", health),
            web.post("/admin/participants", register),
            web.get("/admin/participants", list_participants),
            web.patch("/admin/participants/{pid}/attributes", update_attrs),
            web.get("/admin/groups", list_groups),
            web.post("/admin/groups", create_grp),
            web.delete("/admin/groups/{name}", delete_grp),
            web.post("/admin/groups/{name}/members", add_member),
            web.delete("/admin/groups/{name}/members/{pid}", remove_member),
            web.post("/admin/revocations", revoke),
            web.get("/admin/revocations", list_revocations),
            web.post("/admin/keys/rotate", rotate),
            web.post("/admin/keys/next", next_key),
            web.post("/admin/keys/retire", retire),
        ]
    )
    return app


async def serve(
    app: web.Application,
    host: str,
    port: int,
    *,
    limits: Limits = DEFAULT_LIMITS,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the authority until SIGTERM or SIGINT, then stop within the shutdown grace."""
    listening = await start_site(app, host, port, limits=limits)
    if ready is not None:
        ready(listening.url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    watchdog = ShutdownWatchdog(limits.shutdown_grace + WATCHDOG_MARGIN).start()
    try:
        await stop_sites([listening.runner], limits)
    finally:
        watchdog.cancel()
