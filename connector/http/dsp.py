"""The DSP HTTPS binding (2025-1): thin aiohttp handlers around the control plane.

Every DSP call but the version document and the self-description must carry a DAT in
``Authorization``; an unauthenticated or unauthorised call gets 404, as the DSP bindings ask
(the reason is logged, never told), except when no DAT can be checked at all for a while (the
authority's revocation list cannot be refreshed): that is a 503 with ``Retry-After``, which a
sender retries, not a refusal it would take as final. A DAT bound to a TLS certificate must arrive
with that certificate as the TLS mode has it (connector.http.clientcert: over mutual TLS always;
otherwise where a certificate is presented); a trusted proxy's unreadable certificate header is a
401 with the reason. Protocol errors become the DSP error body of
the area (CatalogError, ContractNegotiationError) with their status; malformed JSON is a 400.
A storage fault is 503 with a ``Retry-After`` and the error body of the area (connector.http.errors).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from connector.faults import StoreUnavailable
from connector.http.clientcert import BindingRefused, CertificateHeaderError, ClientCertificates, bound_claims
from connector.http.errors import storage_fault
from connector.http.limits import (
    DEFAULT_LIMITS,
    LIMITS,
    LimitError,
    Limits,
    limits_of,
    one_header,
    query_int,
    read_json,
)
from connector.identity.errors import AttributesChanged, IdentityError
from connector.identity.tokens import Claims
from connector.identity.verify import Verifier
from connector.protocol import messages as M
from connector.protocol import wirecheck
from connector.protocol.catalog import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from connector.protocol.decide import Requester
from connector.protocol.errors import ProtocolError
from connector.protocol.negotiation import negotiation_error
from connector.protocol.transfer import transfer_error
from connector.runtime import ControlPlane

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PUBLIC = {"/.well-known/dspace-version", "/"}
PUSH_PREFIX = "/push/"  # a consumer's endpoint for HttpData-PUSH (connector.dataplane.receiver)
RETRY_AFTER = "5"  # seconds, when DATs cannot be checked for now (the verifier's retry pace)


def _error_body(request: web.Request, err: ProtocolError) -> dict[str, Any]:
    path = request.path
    if path.startswith("/catalog"):
        return M.CatalogError(code=err.code, reason=list(err.reasons)).to_wire()
    if path.startswith("/negotiations"):
        pp = request.match_info.get("pid")
        return negotiation_error(err, pp, None).to_wire()
    if path.startswith("/transfers"):
        return transfer_error(err, request.match_info.get("pid"), None).to_wire()
    return {"code": err.code, "reason": list(err.reasons)}


def _not_found(request: web.Request) -> web.Response:
    err = ProtocolError(404, "404", ["not found"])
    return web.json_response(_error_body(request, err), status=404)


def _stale(request: web.Request, exc: AttributesChanged) -> web.Response:
    """The DAT is genuine but predates a change of what it attests: say so (401), so the
    sender's connector fetches a fresh DAT and retries (connector.http.client)."""
    err = ProtocolError(401, "401", [exc.description])
    return web.json_response(
        _error_body(request, err), status=401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
    )


def _unavailable(request: web.Request) -> web.Response:
    err = ProtocolError(503, "503", ["credentials cannot be checked now; try again later"])
    return web.json_response(_error_body(request, err), status=503, headers={"Retry-After": RETRY_AFTER})


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        resp = await handler(request)
        if (
            wirecheck.enabled()
            and isinstance(resp, web.Response)
            and resp.content_type == "application/json"
            and isinstance(resp.body, bytes | bytearray)
            and resp.body
        ):
            wirecheck.check(json.loads(resp.body), "returned")  # only with CONNECTOR_DSP_SCHEMAS
        return resp
    except ProtocolError as err:
        status = err.status if 400 <= err.status < 600 else 400
        body = _error_body(request, err)
        wirecheck.check(body, "returned")
        return web.json_response(body, status=status)
    except StoreUnavailable as exc:
        fault = storage_fault(exc, where=f"DSP {request.method} {request.path}")
        body = _error_body(request, ProtocolError(fault.status, str(fault.status), [fault.reason]))
        wirecheck.check(body, "returned")
        return web.json_response(body, status=fault.status, headers=fault.headers)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("DSP handler failed: %s %s", request.method, request.path)
        internal = ProtocolError(500, "500", ["internal error"])
        return web.json_response(_error_body(request, internal), status=500)


def _bad_certificate_header(request: web.Request, reason: str) -> web.Response:
    """A trusted proxy's client certificate header that cannot be read: 401 with the reason
    (the proxy's operator must fix it), never a guess and never a 500."""
    err = ProtocolError(401, "401", [reason])
    return web.json_response(_error_body(request, err), status=401)


def auth_middleware(verifier: Verifier, *, client_certs: ClientCertificates) -> Any:
    """The DAT in ``Authorization`` on every call but the public ones; its certificate binding
    as ``client_certs`` (connector.http.clientcert: the TLS mode) decides."""

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in PUBLIC or request.path.startswith(PUSH_PREFIX):
            # the push endpoint: the provider authenticates with the transfer's own secret
            return await handler(request)
        # Exactly one (connector.http.limits.one_header): two count as none, refused as
        # unauthenticated (404, as DSP has it), so the caller learns no more than with no token.
        header = one_header(request, "Authorization")
        token = header[7:].strip() if header[:7].lower() == "bearer " else header.strip()
        if not token:
            log.info(
                "DSP %s %s: no DAT (or more than one Authorization header)", request.method, request.path
            )
            return _not_found(request)
        try:
            claims = await bound_claims(verifier, client_certs, request, token)
        except IdentityError as exc:
            log.info("DSP %s %s: DAT refused: %s", request.method, request.path, exc)
            if isinstance(exc, AttributesChanged):
                return _stale(request, exc)
            # transient (e.g. the revocation list cannot be refreshed): the sender retries
            return _unavailable(request) if exc.status == 503 else _not_found(request)
        except CertificateHeaderError as exc:
            log.warning("DSP %s %s: %s", request.method, request.path, exc)
            return _bad_certificate_header(request, str(exc))
        except BindingRefused as exc:
            log.info("DSP %s %s: %s", request.method, request.path, exc.reason)
            return _not_found(request)
        request["claims"] = claims
        return await handler(request)

    return authenticate


def _refused(exc: LimitError) -> ProtocolError:
    return ProtocolError(exc.status, str(exc.status), [exc.reason])


async def _json(request: web.Request) -> Any:
    """The body as JSON within the limits (connector.http.limits); a DSP error otherwise."""
    limits = limits_of(request)
    try:
        return await read_json(
            request, max_bytes=limits.dsp_body_bytes, limits=limits, key="limits.dsp_body_bytes"
        )
    except LimitError as exc:
        raise _refused(exc) from exc


def _sender(request: web.Request) -> tuple[str, Any]:
    claims: Claims = request["claims"]
    return claims.subject, claims.attributes


def dsp_app(
    cp: ControlPlane,
    verifier: Verifier,
    *,
    client_certs: ClientCertificates,
    version_document: dict[str, Any],
    self_description: Callable[[str | None], Awaitable[tuple[bytes, str] | None]],
    limits: Limits = DEFAULT_LIMITS,
) -> web.Application:
    app = web.Application(
        middlewares=[errors, auth_middleware(verifier, client_certs=client_certs)],
        client_max_size=limits.dsp_body_bytes,
    )
    app[LIMITS] = limits

    async def version(request: web.Request) -> web.Response:
        return web.json_response(version_document)

    async def root(request: web.Request) -> web.Response:
        found = await self_description(request.headers.get("Accept"))
        if found is None:
            return web.Response(
                status=406, text="supported: text/turtle, application/ld+json, application/n-triples"
            )
        body, media_type = found
        return web.Response(body=body, content_type=media_type, headers={"Vary": "Accept"})

    async def catalog_request(request: web.Request) -> web.StreamResponse:
        msg = M.CatalogRequestMessage.parse(await _json(request))
        if msg.filter:
            raise ProtocolError(400, "400", ["catalog filters are not supported"])
        sender, attrs = _sender(request)
        snap = await cp.catalog()
        try:
            page_size = query_int(
                request.query, "pageSize", DEFAULT_PAGE_SIZE, minimum=1, maximum=MAX_PAGE_SIZE
            )
        except LimitError as exc:
            raise _refused(exc) from exc
        page = snap.builder.catalog(
            Requester.of(sender, await cp.requester_facts(attrs)),
            cp.clock(),
            page_size=page_size,
            cursor=request.query.get("cursor"),
            base_url=f"{cp.dsp_url}/catalog/request",
        )
        resp = web.json_response(page.wire)
        if page.links:
            resp.headers["Link"] = ", ".join(page.links)
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            resp.enable_compression()
        return resp

    async def dataset(request: web.Request) -> web.Response:
        sender, attrs = _sender(request)
        snap = await cp.catalog()
        ds = snap.builder.dataset(
            request.match_info["id"], Requester.of(sender, await cp.requester_facts(attrs)), cp.clock()
        )
        return web.json_response(ds.to_wire())

    def message(expected: tuple[type, ...], with_pid: bool) -> Handler:
        async def handle(request: web.Request) -> web.Response:
            body = await _json(request)
            sender, attrs = _sender(request)
            pid = request.match_info.get("pid") if with_pid else None
            status, out = await cp.negotiation_message(body, sender, attrs, pid, expected)
            return web.json_response(out, status=status)

        return handle

    def transfer(expected: tuple[type, ...], with_pid: bool) -> Handler:
        async def handle(request: web.Request) -> web.Response:
            body = await _json(request)
            sender, _ = _sender(request)
            pid = request.match_info.get("pid") if with_pid else None
            status, out = await cp.transfer_message(body, sender, pid, expected, attested=request["claims"])
            return web.json_response(out, status=status)

        return handle

    async def refresh_token(request: web.Request) -> web.Response:
        body = await _json(request)
        if not isinstance(body, dict) or not isinstance(body.get("refreshToken"), str):
            raise ProtocolError(400, "400", ["give the refreshToken of the transfer"])
        sender, _ = _sender(request)
        return web.json_response(
            await cp.refresh_transfer_token(
                request.match_info["pid"], body["refreshToken"], sender, attested=request["claims"]
            )
        )

    async def notice(request: web.Request) -> web.Response:
        sender, _ = _sender(request)
        return web.json_response(await cp.deletion_notice(await _json(request), sender))

    async def get_transfer(request: web.Request) -> web.Response:
        sender, _ = _sender(request)
        return web.json_response(await cp.get_transfer(request.match_info["pid"], sender))

    async def get_negotiation(request: web.Request) -> web.Response:
        sender, _ = _sender(request)
        return web.json_response(await cp.get_negotiation(request.match_info["pid"], sender))

    r = app.router
    r.add_get("/.well-known/dspace-version", version)
    r.add_get("/", root)
    r.add_post("/catalog/request", catalog_request)
    r.add_get("/catalog/datasets/{id}", dataset)
    r.add_post("/negotiations/request", message((M.ContractRequestMessage,), False))
    r.add_post("/negotiations/offers", message((M.ContractOfferMessage,), False))
    r.add_get("/negotiations/{pid}", get_negotiation)
    r.add_post("/negotiations/{pid}/request", message((M.ContractRequestMessage,), True))
    r.add_post("/negotiations/{pid}/offers", message((M.ContractOfferMessage,), True))
    r.add_post("/negotiations/{pid}/events", message((M.ContractNegotiationEventMessage,), True))
    r.add_post("/negotiations/{pid}/agreement", message((M.ContractAgreementMessage,), True))
    r.add_post(
        "/negotiations/{pid}/agreement/verification", message((M.ContractAgreementVerificationMessage,), True)
    )
    r.add_post("/negotiations/{pid}/termination", message((M.ContractNegotiationTerminationMessage,), True))
    r.add_post("/transfers/request", transfer((M.TransferRequestMessage,), False))
    r.add_get("/transfers/{pid}", get_transfer)
    # not DSP: the pull's token refresh, authenticated like DSP (the consumer's DAT)
    r.add_post("/transfers/{pid}/token", refresh_token)
    # not DSP: a consumer's signed deletion notice (duty evidence), DAT-authenticated
    r.add_post("/notices", notice)
    r.add_post("/transfers/{pid}/start", transfer((M.TransferStartMessage,), True))
    r.add_post("/transfers/{pid}/completion", transfer((M.TransferCompletionMessage,), True))
    r.add_post("/transfers/{pid}/termination", transfer((M.TransferTerminationMessage,), True))
    r.add_post("/transfers/{pid}/suspension", transfer((M.TransferSuspensionMessage,), True))
    return app
