"""The management API: plain JSON over HTTP on its own port, for the provider's and consumer's
own systems. API-key protected (``X-Api-Key``); OpenAPI 3.1 at ``/api/openapi.json``.

Callers never write JSON-LD: a policy is a template name with parameters, or plain ODRL rules
(``{"permission": [{"action": "use", "constraint": [...]}]}``) that the connector wraps in the
DSP profile context; full JSON-LD is accepted too. Every policy is validated strictly on input,
so an invalid one is refused here and can never break the catalog later. Data-address secrets
are stored but never echoed back.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from connector.assets import DataRoots, PathRefused, path_problem
from connector.faults import StoreUnavailable
from connector.http.errors import storage_fault
from connector.http.limits import (
    DEFAULT_LIMITS,
    LIMITS,
    LimitError,
    Limits,
    load_json,
    query_int,
    query_number,
    read_body,
)
from connector.http.outbound import OutboundRefused, parse_url
from connector.ids import ID_RULE, IdKind, InvalidId, new_id, resolve_id
from connector.odrl.plain import PREFIXES, expand_term
from connector.odrl.templates import TemplateError, fill
from connector.protocol import negotiation as neg
from connector.protocol import transfer as xfer
from connector.protocol.errors import ProtocolError
from connector.protocol.messages import CatalogRequestMessage
from connector.protocol.negotiation import NegotiationState
from connector.runtime import ControlPlane, policy_problems, row_to_negotiation, row_to_transfer
from connector.store import DuplicateKey, ReferenceViolation, StillReferenced
from connector.store.rows import AgreementRow, AssetRow, NegotiationRow, OfferRow, PolicyRow, TransferRow

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
DEFAULT_PAGE, MAX_PAGE, MAX_OFFSET = 50, 500, 10**12  # list paging (limit, offset)
MAX_NEGOTIATION_WAIT = 60.0  # seconds a GET of a negotiation may wait (waitFor, timeout)
MAX_PULL_WAIT = 30.0  # seconds a GET of a pull may wait for its end (wait)
POLICY_CONTEXT = ["https://w3id.org/dspace/2025/1/context.jsonld",
                  "https://w3id.org/dspace/2025/1/odrl-profile.jsonld",
                  {k: v for k, v in PREFIXES.items() if k in ("idsc", "dsc", "dpv", "xsd")}]


class ApiError(Exception):
    def __init__(self, status: int, message: str, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.details = status, message, details or []


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class DataAddressIn(_In):
    type: Literal["file", "http"]
    path: str | None = Field(default=None, description=(
        "file: an absolute path inside one of the connector's data roots ([assets] roots); "
        "'..' and symlinks are resolved before the check"))
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _shape(self) -> DataAddressIn:
        if self.type == "file" and not self.path:
            raise ValueError("a file data address needs 'path'")
        if self.type == "file" and self.path:
            problem = path_problem(self.path)
            if problem is not None:
                raise ValueError(problem)
        if self.type == "http" and not (self.url and self.url.startswith(("http://", "https://"))):
            raise ValueError("an http data address needs an http(s) 'url'")
        return self


ID_DESCRIPTION = f"optional; {ID_RULE}; none: urn:<kind>:<uuid>"


class AssetIn(_In):
    id: str | None = Field(default=None, description=ID_DESCRIPTION)
    title: str | None = None
    description: str | None = None
    keywords: list[str] = Field(default_factory=list)
    content_type: str | None = Field(default=None, alias="contentType")
    data_address: DataAddressIn = Field(alias="dataAddress")


class PolicyIn(_In):
    id: str | None = Field(default=None, description=ID_DESCRIPTION)
    template: str | None = None
    params: dict[str, str] = Field(default_factory=dict)
    policy: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one(self) -> PolicyIn:
        if (self.template is None) == (self.policy is None):
            raise ValueError("give either 'template' (with 'params') or 'policy'")
        return self


class OfferIn(_In):
    id: str | None = Field(default=None, description=ID_DESCRIPTION)
    asset_ids: list[str] | None = Field(default=None, alias="assetIds")
    all_assets: bool = Field(default=False, alias="allAssets")
    access_policy_id: str = Field(alias="accessPolicyId")
    contract_policy_id: str = Field(alias="contractPolicyId")

    @model_validator(mode="after")
    def _selector(self) -> OfferIn:
        if bool(self.asset_ids) == self.all_assets:
            raise ValueError("give either 'assetIds' (non-empty) or 'allAssets': true")
        return self


def _peer_url(v: str) -> str:
    """A peer's DSP base URL: its syntax here (400 with the reason); its address is checked
    against `[dsp] peer_allow` when it is called (a refusal is a 400 too)."""
    try:
        parse_url(v, base=True)
    except OutboundRefused as exc:
        raise ValueError(exc.reason) from None
    return v


PeerUrl = Annotated[str, AfterValidator(_peer_url)]


class CatalogIn(_In):
    peer_url: PeerUrl = Field(alias="peerUrl")


class NegotiationIn(_In):
    """Negotiate an offer of the peer's catalog (``offerId``), or ask for terms of one's own
    (``terms``: plain ODRL rules, a counter-offer, for dataset ``datasetId``)."""

    peer_url: PeerUrl = Field(alias="peerUrl")
    offer_id: str = Field(alias="offerId")
    dataset_id: str | None = Field(default=None, alias="datasetId")
    terms: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _terms(self) -> NegotiationIn:
        if self.terms is not None:
            if not self.dataset_id:
                raise ValueError("'terms' need the 'datasetId' they are for")
            if not any(k in self.terms for k in ("permission", "prohibition", "obligation")):
                raise ValueError("'terms' need a permission, prohibition or obligation")
        return self


class TerminateIn(_In):
    reason: str = Field(min_length=1, max_length=2000)


class TransferIn(_In):
    agreement_id: str = Field(alias="agreementId")
    format: Literal["HttpData-PULL", "HttpData-PUSH"] = "HttpData-PULL"
    # push: the purpose of the use, stated in the push address for the provider's decision
    purpose: str | None = Field(default=None, max_length=2000)


class PullIn(_In):
    out: str | None = Field(default=None, max_length=4096)
    purpose: str | None = Field(default=None, max_length=2000)
    complete: bool = True


class ReasonIn(_In):
    reason: str = Field(default="", max_length=2000)


class CounterOfferIn(_In):
    """The consumer's answer to a provider's offer: other terms (plain ODRL rules)."""

    terms: dict[str, Any]


MODELS: dict[str, type[BaseModel]] = {
    "Asset": AssetIn, "Policy": PolicyIn, "Offer": OfferIn, "CatalogRequest": CatalogIn,
    "NegotiationRequest": NegotiationIn, "Termination": TerminateIn,
    "CounterOffer": CounterOfferIn, "TransferRequest": TransferIn, "Reason": ReasonIn,
    "PullRequest": PullIn,
}


def _parse(model: type[BaseModel], data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        details = [f"{'.'.join(str(x) for x in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()]
        raise ApiError(400, f"invalid {model.__name__.removesuffix('In').lower()}", details) from exc


def _new_id(given: str | None, kind: IdKind) -> str:
    try:
        return new_id(given, kind)
    except InvalidId as exc:
        raise ApiError(400, str(exc)) from exc


def _ref(given: str, kind: IdKind) -> str:
    """A reference to an asset or policy, by the same rule as its id (``weather`` ->
    ``urn:asset:weather``)."""
    try:
        return resolve_id(given, kind)
    except InvalidId as exc:
        raise ApiError(400, str(exc)) from exc


# ------------------------------------------------------------------ policies in plain JSON


def _jsonld_rules(node: Any) -> Any:
    """Plain rules -> DSP-profile JSON-LD: IRI-looking right operands become {"@id": ...}."""
    if isinstance(node, list):
        return [_jsonld_rules(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for k, v in node.items():
        if k == "rightOperand":
            out[k] = _right(v)
        else:
            out[k] = _jsonld_rules(v)
    return out


XSD = "http://www.w3.org/2001/XMLSchema#"


def _right(v: Any) -> Any:
    if isinstance(v, list):
        return [_right(x) for x in v]
    # DSP wants a right operand as a string, an object or an array: numbers become typed values
    if isinstance(v, bool):
        return {"@value": "true" if v else "false", "@type": XSD + "boolean"}
    if isinstance(v, int):
        return {"@value": str(v), "@type": XSD + "integer"}
    if isinstance(v, float):
        return {"@value": repr(v), "@type": XSD + "decimal"}
    if isinstance(v, str):
        iri = expand_term(v) if ":" in v else v
        if iri.startswith(("http://", "https://", "urn:")):
            return {"@id": iri}
    return v


def policy_document(p: PolicyIn, policy_id: str) -> dict[str, Any]:
    if p.template is not None:
        try:
            return fill(p.template, p.params, policy_id=policy_id)
        except TemplateError as exc:
            raise ApiError(400, str(exc)) from exc
    assert p.policy is not None
    doc = dict(p.policy)
    if "@context" not in doc:
        doc = {"@context": POLICY_CONTEXT, "@type": doc.pop("@type", "Set"),
               **_jsonld_rules(doc)}
    doc["@id"] = policy_id
    return doc


# ------------------------------------------------------------------ views


def _iso(t: datetime | None) -> str | None:
    return t.isoformat().replace("+00:00", "Z") if t else None


def asset_view(a: AssetRow) -> dict[str, Any]:
    return {"id": a.id, "title": a.title, "description": a.description,
            "keywords": list(a.keywords), "contentType": a.content_type,
            "dataAddress": a.data_address, "createdAt": _iso(a.created_at)}


def policy_view(p: PolicyRow) -> dict[str, Any]:
    return {"id": p.id, "policy": p.document(), "createdAt": _iso(p.created_at)}


def offer_view(o: OfferRow) -> dict[str, Any]:
    sel = o.asset_selector if isinstance(o.asset_selector, dict) else {}
    return {"id": o.id, "assetIds": sel.get("assetIds"), "allAssets": bool(sel.get("all")),
            "accessPolicyId": o.access_policy_id, "contractPolicyId": o.contract_policy_id,
            "createdAt": _iso(o.created_at)}


def negotiation_view(row: NegotiationRow) -> dict[str, Any]:
    n = row_to_negotiation(row)
    return {"id": n.id, "role": row.role, "state": n.wire_state.value, "internalState": n.state.value,
            "providerPid": n.provider_pid, "consumerPid": n.consumer_pid,
            "counterPartyId": n.counter_party_id, "counterPartyAddress": n.counter_party_address,
            "offer": dict(n.offer), "agreementId": row.agreement_id,
            "terminationReason": list(n.termination_reason) or None,
            "errorDetail": n.delivery_error,
            "createdAt": _iso(row.created_at), "updatedAt": _iso(row.updated_at)}


def transfer_view(row: TransferRow) -> dict[str, Any]:
    t = row_to_transfer(row)
    view: dict[str, Any] = {
        "id": t.id, "role": row.role, "state": t.wire_state.value, "internalState": t.state.value,
        "providerPid": t.provider_pid, "consumerPid": t.consumer_pid, "format": t.format,
        "agreementId": t.agreement_id, "counterPartyId": t.counter_party_id,
        "suspendedBy": sorted(r.value for r in t.suspended_by) or None,
        "terminationReason": list(t.termination_reason) or None,
        "createdAt": _iso(row.created_at), "updatedAt": _iso(row.updated_at)}
    if row.role == "consumer" and t.data_address is not None:
        # the endpoint data reference the provider handed over: where to pull, with which token
        view["endpoint"] = t.data_address.endpoint
        view["endpointProperties"] = {p.name: p.value for p in t.data_address.endpoint_properties or ()}
    return view


def agreement_view(a: AgreementRow) -> dict[str, Any]:
    return {"id": a.id, "providerId": a.provider_id, "consumerId": a.consumer_id,
            "target": a.target, "policy": a.policy, "signedAt": _iso(a.signed_at),
            "negotiationId": a.negotiation_id}


def catalog_view(dsp: dict[str, Any]) -> dict[str, Any]:
    datasets = []
    for d in dsp.get("dataset", []) or []:
        offers = []
        for o in d.get("hasPolicy", []) or []:
            offers.append({"id": o.get("@id"), "permission": o.get("permission"),
                           "prohibition": o.get("prohibition"), "obligation": o.get("obligation")})
        datasets.append({"id": d.get("@id"), "title": d.get("title"),
                         "description": d.get("description"),
                         "formats": [x.get("format") for x in d.get("distribution", []) or []],
                         "offers": offers})
    return {"participantId": dsp.get("participantId"), "datasets": datasets}


# ------------------------------------------------------------------ the app


def management_app(cp: ControlPlane, api_key: str, *, audit: Any = None,
                   downloads: Any = None, local: Any = None,
                   data_roots: DataRoots | None = None,
                   limits: Limits = DEFAULT_LIMITS) -> web.Application:
    """``downloads`` (connector.consumer.Downloads): pulls run by the connector; ``local``
    (connector.consumer.LocalUse): governed reads of the vault's copies; ``data_roots``: where
    file assets may lie (none: file assets are refused)."""
    roots = data_roots or DataRoots()
    key = api_key.encode()

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            if request.path != "/api/openapi.json":
                keys = request.headers.getall("X-Api-Key", [])  # two keys: ambiguous, refused
                given = keys[0].encode() if len(keys) == 1 else b""
                if not given or not hmac.compare_digest(given, key):
                    raise ApiError(401, "missing or wrong X-Api-Key")
            return await handler(request)
        except ApiError as exc:
            return web.json_response({"error": exc.message, "details": exc.details}, status=exc.status)
        except ProtocolError as exc:
            status = exc.status if 400 <= exc.status < 600 else 400
            return web.json_response({"error": "; ".join(exc.reasons) or exc.code}, status=status)
        except StoreUnavailable as exc:
            fault = storage_fault(exc, where=f"{request.method} {request.path}")
            return web.json_response({"error": fault.reason, "details": []}, status=fault.status,
                                     headers=fault.headers)

    app = web.Application(middlewares=[guard], client_max_size=limits.management_body_bytes)
    app[LIMITS] = limits
    store = cp.store

    async def optional_body(request: web.Request) -> Any | None:
        """The JSON body within the limits (connector.http.limits); None if it is blank."""
        try:
            raw = await read_body(request, max_bytes=limits.management_body_bytes,
                                  timeout=limits.body_timeout, key="limits.management_body_bytes")
            return load_json(raw, limits) if raw.strip() else None
        except LimitError as exc:
            raise ApiError(exc.status, exc.reason) from exc

    async def body(request: web.Request) -> Any:
        data = await optional_body(request)
        if data is None:
            raise ApiError(400, "the body is empty: send a JSON object")
        return data

    def number(request: web.Request, name: str, default: float, maximum: float) -> float:
        """A number of seconds from the query: finite, 0..maximum."""
        try:
            return query_number(request.query, name, default, minimum=0.0, maximum=maximum)
        except LimitError as exc:
            raise ApiError(exc.status, exc.reason) from exc

    def paging(request: web.Request) -> tuple[int, int]:
        try:
            limit = query_int(request.query, "limit", DEFAULT_PAGE, minimum=1, maximum=MAX_PAGE)
            offset = query_int(request.query, "offset", 0, minimum=0, maximum=MAX_OFFSET)
        except LimitError as exc:
            raise ApiError(exc.status, exc.reason) from exc
        return limit, offset

    def crud(repo: str, view: Callable[[Any], dict[str, Any]], noun: str, *,
             changes_catalog: bool = False, in_use: str = "it is still in use") -> tuple[Handler, ...]:
        """list, get and delete handlers of one resource."""
        async def list_(request: web.Request) -> web.Response:
            limit, offset = paging(request)
            async with store.transaction(readonly=True) as tx:
                rows = await getattr(tx, repo).list(limit=limit, offset=offset)
            return web.json_response([view(r) for r in rows])

        async def get_(request: web.Request) -> web.Response:
            async with store.transaction(readonly=True) as tx:
                row = await getattr(tx, repo).get(request.match_info["id"])
            if row is None:
                raise ApiError(404, f"no such {noun}")
            return web.json_response(view(row))

        async def delete_(request: web.Request) -> web.Response:
            try:
                async with store.transaction() as tx:
                    found = await getattr(tx, repo).delete(request.match_info["id"])
            except StillReferenced as exc:
                raise ApiError(409, f"cannot delete the {noun}: {exc}", [
                    f"{kind}: {i}" for kind, ids in exc.referrers.items() for i in ids]) from exc
            except ReferenceViolation as exc:
                raise ApiError(409, f"cannot delete the {noun}: {in_use}") from exc
            if not found:
                raise ApiError(404, f"no such {noun}")
            if changes_catalog:
                cp.catalog_changed()
            return web.Response(status=204)
        return list_, get_, delete_

    list_assets, get_asset, delete_asset = crud("assets", asset_view, "asset", changes_catalog=True)
    list_policies, get_policy, delete_policy = crud("policies", policy_view, "policy",
                                                    in_use="an offer still uses this policy")
    list_offers, get_offer, delete_offer = crud("offers", offer_view, "offer", changes_catalog=True)
    list_agreements, get_agreement, _ = crud("agreements", agreement_view, "agreement")
    list_transfers, get_transfer, _ = crud("transfers", transfer_view, "transfer")

    async def start_transfer(request: web.Request) -> web.Response:
        t = _parse(TransferIn, await body(request))
        started = await cp.request_transfer(t.agreement_id, t.format, purpose=t.purpose)
        async with store.transaction(readonly=True) as tx:
            row = await tx.transfers.get(started.id)
        assert row is not None
        return web.json_response(transfer_view(row), status=201)

    def transfer_action(make: Callable[[str], Any]) -> Handler:
        async def handle(request: web.Request) -> web.Response:
            data = await optional_body(request)
            r = _parse(ReasonIn, data) if data is not None else ReasonIn()
            t = await cp.transfer_command(request.match_info["id"], make(r.reason or "by operator"))
            async with store.transaction(readonly=True) as tx:
                row = await tx.transfers.get(t.id)
            assert row is not None
            return web.json_response(transfer_view(row))
        return handle

    # -- assets
    async def add_asset(request: web.Request) -> web.Response:
        a = _parse(AssetIn, await body(request))
        asset_id = _new_id(a.id, "asset")
        if a.data_address.type == "file" and a.data_address.path is not None:
            try:  # resolves symlinks and opens the file: blocking, off the loop
                await asyncio.get_running_loop().run_in_executor(
                    None, roots.admit, a.data_address.path)
            except PathRefused as exc:
                raise ApiError(400, f"invalid file data address: {exc}") from exc
        row = AssetRow(id=asset_id, created_at=cp.clock(), title=a.title,
                       description=a.description, keywords=tuple(a.keywords),
                       content_type=a.content_type,
                       data_address=a.data_address.model_dump(exclude_none=True))
        try:
            async with store.transaction() as tx:
                await tx.assets.add(row)
                saved = await tx.assets.get(row.id)
        except DuplicateKey as exc:
            raise ApiError(409, f"asset {row.id} exists") from exc
        cp.catalog_changed()
        assert saved is not None
        return web.json_response(asset_view(saved), status=201)

    # -- policies
    async def add_policy(request: web.Request) -> web.Response:
        p = _parse(PolicyIn, await body(request))
        pid = _new_id(p.id, "policy")
        doc = policy_document(p, pid)
        problems = policy_problems(doc)
        if problems:
            raise ApiError(400, "invalid policy", problems)
        row = PolicyRow(id=pid, body=json.dumps(doc), created_at=cp.clock())
        try:
            async with store.transaction() as tx:
                await tx.policies.add(row)
        except DuplicateKey as exc:
            raise ApiError(409, f"policy {pid} exists") from exc
        return web.json_response(policy_view(row), status=201)

    # -- offers
    async def add_offer(request: web.Request) -> web.Response:
        o = _parse(OfferIn, await body(request))
        asset_ids = list(dict.fromkeys(_ref(a, "asset") for a in o.asset_ids or ()))
        access, contract = _ref(o.access_policy_id, "policy"), _ref(o.contract_policy_id, "policy")
        selector = {"all": True} if o.all_assets else {"assetIds": asset_ids}
        row = OfferRow(id=_new_id(o.id, "offer"), access_policy_id=access,
                       contract_policy_id=contract, created_at=cp.clock(),
                       asset_selector=selector)
        async with store.transaction() as tx:
            for pid in (access, contract):
                if await tx.policies.get(pid) is None:
                    raise ApiError(400, f"no policy {pid}")
            if asset_ids:
                # share-locked: an asset cannot be deleted while this offer is being added
                known = set(await tx.assets.lock(asset_ids))
                missing = [a for a in asset_ids if a not in known]
                if missing:
                    raise ApiError(400, f"no asset {', '.join(missing)}")
            try:
                await tx.offers.add(row)
            except DuplicateKey as exc:
                raise ApiError(409, f"offer {row.id} exists") from exc
        cp.catalog_changed()
        return web.json_response(offer_view(row), status=201)

    # -- a peer's catalog
    async def fetch_catalog(peer_url: str) -> dict[str, Any]:
        d = await cp.client.post(peer_url.rstrip("/") + "/catalog/request",
                                 CatalogRequestMessage().to_wire())
        if d.refused:
            raise ApiError(400, f"peerUrl: {d.reason}")
        if not d.ok or not isinstance(d.body, dict):
            raise ApiError(502, f"the peer's catalog could not be read: {d.reason}")
        return d.body

    async def peer_catalog(request: web.Request) -> web.Response:
        c = _parse(CatalogIn, await body(request))
        dsp = await fetch_catalog(c.peer_url)
        return web.json_response({**catalog_view(dsp), "dsp": dsp})

    # -- negotiations
    async def start_negotiation(request: web.Request) -> web.Response:
        n = _parse(NegotiationIn, await body(request))
        dsp = await fetch_catalog(n.peer_url)
        provider_id = dsp.get("participantId")
        if n.terms is not None:
            rules = _jsonld_rules({k: v for k, v in n.terms.items()
                                   if k in ("permission", "prohibition", "obligation")})
            offer = {"@id": n.offer_id, "@type": "Offer", "target": n.dataset_id, **rules}
            started = await cp.request_offer(provider_url=n.peer_url.rstrip("/"),
                                             provider_id=str(provider_id), offer=offer)
            async with store.transaction(readonly=True) as tx:
                row = await tx.negotiations.get(started.id)
            assert row is not None
            return web.json_response(negotiation_view(row), status=201)
        for d in dsp.get("dataset", []) or []:
            if n.dataset_id and d.get("@id") != n.dataset_id:
                continue
            for o in d.get("hasPolicy", []) or []:
                if o.get("@id") == n.offer_id:
                    offer = {**o, "target": d.get("@id")}
                    started = await cp.request_offer(provider_url=n.peer_url.rstrip("/"),
                                                     provider_id=str(provider_id), offer=offer)
                    async with store.transaction(readonly=True) as tx:
                        row = await tx.negotiations.get(started.id)
                    assert row is not None
                    return web.json_response(negotiation_view(row), status=201)
        raise ApiError(404, f"the peer offers no {n.offer_id} to this connector")

    async def list_negotiations(request: web.Request) -> web.Response:
        limit, offset = paging(request)
        state = request.query.get("state")
        async with store.transaction(readonly=True) as tx:
            rows = await tx.negotiations.list(limit=limit, offset=offset)
        views = [negotiation_view(r) for r in rows]
        if state:
            views = [v for v in views if v["state"] == state]
        return web.json_response(views)

    async def get_negotiation(request: web.Request) -> web.Response:
        nid = request.match_info["id"]
        wait = request.query.get("waitFor")
        if wait:
            states = {s.value for s in NegotiationState if s.value in wait.split(",")}
            timeout = number(request, "timeout", 10.0, MAX_NEGOTIATION_WAIT)
            row = await cp.wait_for(nid, states, timeout)
        else:
            async with store.transaction(readonly=True) as tx:
                row = await tx.negotiations.get(nid)
        if row is None:
            raise ApiError(404, "no such negotiation")
        return web.json_response(negotiation_view(row))

    async def after(command: Any, nid: str) -> web.Response:
        n = await cp.command(nid, command)
        async with store.transaction(readonly=True) as tx:
            row = await tx.negotiations.get(n.id)
        assert row is not None
        return web.json_response(negotiation_view(row))

    async def terminate_negotiation(request: web.Request) -> web.Response:
        t = _parse(TerminateIn, await body(request))
        return await after(neg.Terminate(t.reason), request.match_info["id"])

    async def accept_offer(request: web.Request) -> web.Response:
        return await after(neg.Accept(), request.match_info["id"])

    async def counter_offer(request: web.Request) -> web.Response:
        c = _parse(CounterOfferIn, await body(request))
        nid = request.match_info["id"]
        async with store.transaction(readonly=True) as tx:
            row = await tx.negotiations.get(nid)
        if row is None:
            raise ApiError(404, "no such negotiation")
        current = row.offer or {}
        rules = _jsonld_rules({k: v for k, v in c.terms.items()
                               if k in ("permission", "prohibition", "obligation")})
        offer = {"@id": f"urn:uuid:{uuid.uuid4()}", "@type": "Offer",
                 "target": current.get("target"), **rules}
        return await after(neg.CounterOffer(offer), nid)

    async def openapi(request: web.Request) -> web.Response:
        return web.json_response(openapi_document())

    async def audit_timeline(request: web.Request) -> web.Response:
        """The connector's audit trail, oldest first (``kind`` prefix, ``since`` ISO time)."""
        from connector.audit.timeline import select, to_view

        if audit is None:
            raise ApiError(404, "this connector keeps no audit log")
        since = None
        if request.query.get("since"):
            try:
                since = datetime.fromisoformat(request.query["since"].replace("Z", "+00:00"))
            except ValueError as exc:
                raise ApiError(400, "since must be an ISO 8601 time") from exc
        kinds = [k for k in request.query.getall("kind", []) if k]
        limit, offset = paging(request)
        rows = list(select(audit.entries(), kinds=kinds, since=since))[offset:offset + limit]
        return web.json_response([to_view(e) for e in rows])

    r = app.router
    r.add_get("/api/openapi.json", openapi)
    r.add_post("/api/assets", add_asset)
    r.add_get("/api/assets", list_assets)
    r.add_get("/api/assets/{id}", get_asset)
    r.add_delete("/api/assets/{id}", delete_asset)
    r.add_post("/api/policies", add_policy)
    r.add_get("/api/policies", list_policies)
    r.add_get("/api/policies/{id}", get_policy)
    r.add_delete("/api/policies/{id}", delete_policy)
    r.add_post("/api/offers", add_offer)
    r.add_get("/api/offers", list_offers)
    r.add_get("/api/offers/{id}", get_offer)
    r.add_delete("/api/offers/{id}", delete_offer)
    r.add_post("/api/catalog", peer_catalog)
    r.add_post("/api/negotiations", start_negotiation)
    r.add_get("/api/negotiations", list_negotiations)
    r.add_get("/api/negotiations/{id}", get_negotiation)
    r.add_post("/api/negotiations/{id}/terminate", terminate_negotiation)
    r.add_post("/api/negotiations/{id}/accept", accept_offer)
    r.add_post("/api/negotiations/{id}/counter-offer", counter_offer)
    r.add_post("/api/transfers", start_transfer)
    r.add_get("/api/transfers", list_transfers)
    r.add_get("/api/transfers/{id}", get_transfer)
    async def refresh_transfer(request: web.Request) -> web.Response:
        t = await cp.refresh_pull_token(request.match_info["id"])
        async with store.transaction(readonly=True) as tx:
            row = await tx.transfers.get(t.id)
        assert row is not None
        return web.json_response(transfer_view(row))

    async def register_copy(request: web.Request) -> web.Response:
        data = await body(request)
        if not isinstance(data, dict) or not isinstance(data.get("path"), str) or not isinstance(
                data.get("transferId"), str):
            raise ApiError(400, "give 'path' (the local copy) and 'transferId'")
        try:
            item = await cp.register_local_copy(Path(data["path"]), data["transferId"])
        except FileNotFoundError as exc:
            raise ApiError(400, str(exc)) from exc
        return web.json_response({"path": item.path, "agreementId": item.agreement_id,
                                  "deleteAt": item.delete_at, "sha256": item.sha256}, status=201)

    async def start_pull(request: web.Request) -> web.Response:
        if downloads is None:
            raise ApiError(404, "this connector runs no pulls (no data-space CA)")
        data = await optional_body(request)
        p = _parse(PullIn, data) if data is not None else PullIn()
        job = await downloads.start(request.match_info["id"], out=p.out, purpose=p.purpose,
                                    complete=p.complete)
        return web.json_response(job.to_json(), status=202)

    async def pull_status(request: web.Request) -> web.Response:
        if downloads is None:
            raise ApiError(404, "this connector runs no pulls (no data-space CA)")
        wait = number(request, "wait", 0.0, MAX_PULL_WAIT)
        job = await downloads.wait(request.match_info["id"], wait)
        if job is None:
            raise ApiError(404, "no pull of this transfer")
        return web.json_response(job.to_json())

    def vault_guard(fn: Handler) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            from connector.consumer import Denied

            if local is None:
                raise ApiError(404, "this connector keeps no vault")
            try:
                return await fn(request)
            except Denied as exc:
                raise ApiError(exc.status, exc.reason) from exc
        return handle

    async def list_vault(request: web.Request) -> web.StreamResponse:
        return web.json_response(local.items())

    async def get_vault_item(request: web.Request) -> web.StreamResponse:
        return web.json_response(local.get(request.match_info["vid"]).to_json())

    async def read_vault_item(request: web.Request) -> web.StreamResponse:
        """One governed local use of a copy: decided on the agreement, duties fulfilled first."""
        purpose = request.headers.get("X-Purpose") or request.query.get("purpose") or None
        item, path = await local.use(request.match_info["vid"], purpose)
        return web.FileResponse(path, headers={"X-Use-Number": str(item.uses),
                                               "Content-Type": "application/octet-stream"})

    r.add_post("/api/vault", register_copy)
    r.add_get("/api/vault", vault_guard(list_vault))
    r.add_get("/api/vault/{vid}", vault_guard(get_vault_item))
    # no HEAD: a use is counted and reported only when the data is served
    r.add_get("/api/vault/{vid}/data", vault_guard(read_vault_item), allow_head=False)
    r.add_post("/api/transfers/{id}/pull", start_pull)
    r.add_get("/api/transfers/{id}/pull", pull_status)
    r.add_post("/api/transfers/{id}/refresh", refresh_transfer)
    r.add_post("/api/transfers/{id}/suspend", transfer_action(lambda why: xfer.Suspend(why)))
    r.add_post("/api/transfers/{id}/resume", transfer_action(lambda why: xfer.Resume()))
    r.add_post("/api/transfers/{id}/complete", transfer_action(lambda why: xfer.Complete()))
    r.add_post("/api/transfers/{id}/terminate", transfer_action(lambda why: xfer.Terminate(why)))
    r.add_get("/api/audit", audit_timeline)
    r.add_get("/api/agreements", list_agreements)
    r.add_get("/api/agreements/{id}", get_agreement)
    return app


def openapi_document() -> dict[str, Any]:
    schemas = {name: m.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
               for name, m in MODELS.items()}
    for s in list(schemas.values()):
        schemas.update(s.pop("$defs", {}))

    def op(summary: str, body: str | None = None, ok: int = 200) -> dict[str, Any]:
        o: dict[str, Any] = {"summary": summary, "responses": {
            str(ok): {"description": "OK"}, "400": {"description": "invalid input, with reasons"},
            "401": {"description": "missing or wrong X-Api-Key"}}}
        if body:
            o["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{body}"}}}}
        return o

    idp = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]
    vid = {"name": "vid", "in": "path", "required": True, "schema": {"type": "string"}}
    paths = {
        "/api/assets": {"post": op("Add an asset", "Asset", 201), "get": op("List assets")},
        "/api/assets/{id}": {"parameters": idp, "get": op("Get an asset (secrets masked)"),
                             "delete": op("Delete an asset", ok=204)},
        "/api/policies": {"post": op("Add a policy (template, plain rules or JSON-LD)", "Policy", 201),
                          "get": op("List policies")},
        "/api/policies/{id}": {"parameters": idp, "get": op("Get a policy"),
                               "delete": op("Delete a policy", ok=204)},
        "/api/offers": {"post": op("Offer assets under an access and a contract policy", "Offer", 201),
                        "get": op("List offers")},
        "/api/offers/{id}": {"parameters": idp, "get": op("Get an offer"),
                             "delete": op("Withdraw an offer", ok=204)},
        "/api/catalog": {"post": op("A peer's catalog, as this connector may see it", "CatalogRequest")},
        "/api/negotiations": {"post": op("Negotiate a peer's offer", "NegotiationRequest", 201),
                              "get": op("List negotiations")},
        "/api/negotiations/{id}": {"parameters": idp, "get": op(
            "Get a negotiation (waitFor=FINALIZED,TERMINATED&timeout=s to wait)")},
        "/api/negotiations/{id}/terminate": {"parameters": idp,
                                             "post": op("Terminate a negotiation", "Termination")},
        "/api/negotiations/{id}/accept": {"parameters": idp,
                                          "post": op("Consumer: accept the provider's offer")},
        "/api/negotiations/{id}/counter-offer": {"parameters": idp, "post": op(
            "Consumer: answer the provider's offer with other terms", "CounterOffer")},
        "/api/transfers": {"post": op("Request a transfer under an agreement", "TransferRequest", 201),
                           "get": op("List transfers")},
        "/api/transfers/{id}": {"parameters": idp, "get": op(
            "Get a transfer (the consumer sees the endpoint and token to pull from)")},
        **{f"/api/transfers/{{id}}/{action}": {"parameters": idp, "post": op(
            f"{action.capitalize()} a transfer", "Reason")}
           for action in ("suspend", "resume", "complete", "terminate")},
        "/api/transfers/{id}/refresh": {"parameters": idp, "post": op(
            "Consumer: exchange the pull's refresh token for a new access token")},
        "/api/vault": {"post": op("Consumer: register a local copy (its delete duty is enforced)"),
                       "get": op("Consumer: the local copies held under agreements")},
        "/api/vault/{vid}": {"parameters": [vid], "get": op("One local copy: its agreement, "
                                                            "duties and local use count")},
        "/api/vault/{vid}/data": {"parameters": [vid], "get": op(
            "Consumer: one governed local use of a copy (X-Purpose header): the agreement "
            "decides, its duties (log, inform the provider) are fulfilled first, the use counts")},
        "/api/transfers/{id}/pull": {"parameters": idp, "post": op(
            "Consumer: pull a STARTED transfer's data into the vault (or `out`), verify the "
            "provider's receipts and log them", "PullRequest", 202),
            "get": op("Consumer: the pull's progress and outcome (`wait` seconds for its end)")},
        "/api/audit": {"get": op("The audit trail (kind=prefix, since=ISO time, limit, offset)")},
        "/api/agreements": {"get": op("List agreements")},
        "/api/agreements/{id}": {"parameters": idp, "get": op("Get an agreement")},
    }
    return {"openapi": "3.1.0",
            "info": {"title": "Connector management API", "version": "0.1.0"},
            "components": {"schemas": schemas, "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"}}},
            "security": [{"apiKey": []}], "paths": paths}
