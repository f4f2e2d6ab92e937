"""The management API: plain JSON over HTTP on its own port, for the provider's and consumer's
own systems. API-key protected (``X-Api-Key``); OpenAPI 3.1 at ``/api/openapi.json``.

Every operation is one entry of the route table at the end of `management_app`: its path, handler,
body and query models, and every status it answers; the router and the OpenAPI document are both
generated from that table (`connector.http.routes`), the answers' shapes are the models of
`connector.http.views`. An id in a path is one percent-encoded segment and may hold any character.

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
import re
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    field_validator,
    model_validator,
)

from connector.assets import DataRoots, PathRefused, path_problem
from connector.audit.timeline import select, to_view
from connector.consumer import Denied
from connector.faults import StoreUnavailable
from connector.http import dataspace
from connector.http.errors import storage_fault
from connector.http.limits import (
    DEFAULT_LIMITS,
    LIMITS,
    LimitError,
    Limits,
    load_json,
    one_header,
    read_body,
)
from connector.http.outbound import OutboundRefused, parse_url
from connector.http.routes import (
    BLANK,
    ApiError,
    Csv,
    Handler,
    HeaderParam,
    Operation,
    add_routes,
    body_of,
    error_response,
    openapi_document,
    public_paths,
    query_of,
)
from connector.http.views import (
    AgreementStatus,
    AgreementView,
    AssetView,
    AuditEntryView,
    CatalogView,
    FactView,
    NegotiationView,
    NegotiationWireState,
    OfferView,
    PaymentView,
    PolicyView,
    PullJobView,
    TransferView,
    VaultCopyView,
    VaultItemView,
)
from connector.ids import ID_RULE, IdKind, InvalidId, new_id, resolve_id
from connector.odrl.model import Policy
from connector.odrl.parse import PolicyError
from connector.odrl.plain import policy_document as plain_policy_document
from connector.odrl.templates import TemplateError, fill
from connector.odrl.wire import wire_rules
from connector.protocol import negotiation as neg
from connector.protocol import transfer as xfer
from connector.protocol.errors import ProtocolError
from connector.protocol.messages import CatalogRequestMessage, check_policy, standalone_policy
from connector.protocol.negotiation import NegotiationState
from connector.runtime import ControlPlane, policy_problems, row_to_negotiation, row_to_transfer
from connector.store import DuplicateKey, ReferenceViolation, StillReferenced
from connector.store.rows import (
    AgreementRow,
    AssetRow,
    HeldFact,
    NegotiationRow,
    OfferRow,
    Payment,
    PolicyRow,
    TransferRow,
)
from connector.usage import pipeline
from connector.usage.export import VaultExport
from connector.usage.held import HeldFacts, UnknownOperand
from connector.usage.lifecycle import agreement_status
from connector.usage.payments import PaymentError, currency_iri, parse_amount

API_VERSION = "0.2.0"
API_DESCRIPTION = (
    "The connector's management API: plain JSON, every call but this document with the "
    "`X-Api-Key` header. An id in a path is one percent-encoded segment (an IRI with `/`, `?`, "
    "`#`, `{`, `}` or non-ASCII characters too). Every error answers `{\"error\": ..., "
    "\"details\": [...]}`; a 503 (the store is unavailable) carries `Retry-After`.")

# what an operation's own error statuses mean (the common ones are in connector.http.routes)
NO_NEGOTIATION = "No such negotiation"
NO_TRANSFER = "No such transfer of this connector"
NO_VAULT = "This connector keeps no vault"
NOT_NOW = "The process's current state does not allow this command"
IN_USE = "It is still in use (an offer or a live agreement depends on it)"
PEER_FAILED = "The peer could not be reached or did not answer with a catalog"
PURPOSE_HEADER = HeaderParam("X-Purpose", "the purpose of this use (or the `purpose` parameter)", 2000)
# the facts a local use states, by header (or the query parameter of the same name)
STATED_HEADERS = {
    "purpose": PURPOSE_HEADER,
    "application": HeaderParam("X-Application", "the application that uses the copy "
                               "(or the `application` parameter)", 2000),
    "event": HeaderParam("X-Event", "an event under way (or the `event` parameter)", 2000),
    "location": HeaderParam("X-Location", "the place of use (or the `location` parameter)", 2000),
}


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# a file path the connector opens: NUL cannot be in a path name on any system it runs on
PATH_PATTERN = r"^[^\x00]+$"


class FileAddressIn(_In):
    """The data is a file the data plane reads."""

    type: Literal["file"]
    path: str = Field(min_length=1, max_length=4096, description=(
        "an absolute path inside one of the connector's data roots ([assets] roots); "
        "'..' and symlinks are resolved before the check"))

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        problem = path_problem(v)
        if problem is not None:
            raise ValueError(problem)
        return v


class HttpAddressIn(_In):
    """The data is fetched from an HTTP(S) upstream, with these request headers (secrets kept,
    never echoed)."""

    type: Literal["http"]
    url: str = Field(pattern=r"^https?://[^/?#\s]+")
    headers: dict[str, str] = Field(default_factory=dict)


# the address's shape follows its `type` (file: `path`, http: an http(s) `url`)
DataAddressIn = Annotated[FileAddressIn | HttpAddressIn, Field(discriminator="type")]


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


class StatedIn(_In):
    """The facts a use states for the provider's (or this connector's) decision: each an IRI
    or a CURIE (``dpv:ScientificResearch``), expanded as the policy's are."""

    purpose: str | None = Field(default=None, max_length=2000)
    application: str | None = Field(default=None, max_length=2000,
                                    description="the registered application that uses the data")
    event: str | None = Field(default=None, max_length=2000, description="an event under way")
    location: str | None = Field(default=None, max_length=2000,
                                 description="the place of use (odrl:spatial)")

    def stated(self) -> dict[str, str]:
        return {k: v for k, v in (("application", self.application), ("event", self.event),
                                  ("location", self.location)) if v}


class TransferIn(StatedIn):
    agreement_id: str = Field(alias="agreementId")
    format: Literal["HttpData-PULL", "HttpData-PUSH"] = "HttpData-PULL"
    # push: the stated facts go in the push address, for the provider's decision


class PullIn(StatedIn):
    out: str | None = Field(default=None, max_length=4096, pattern=PATH_PATTERN,
                            description="an absolute path to write the data to (default: the vault)")
    complete: bool = True


class ReasonIn(_In):
    reason: str = Field(default="", max_length=2000)


class CounterOfferIn(_In):
    """The consumer's answer to a provider's offer: other terms (plain ODRL rules)."""

    terms: dict[str, Any]


class CopyIn(_In):
    """A file pulled outside the connector, now held under the transfer's agreement."""

    path: str = Field(min_length=1, max_length=4096, pattern=PATH_PATTERN)
    transfer_id: str = Field(alias="transferId")


class VaultExportIn(_In):
    """Where a vault copy goes: the recipient's certificate (issued by the data-space CA); the
    copy leaves encrypted to its key. ``plain`` only where the agreement permits it."""

    recipient_certificate: str | None = Field(
        default=None, alias="recipientCertificate", max_length=64 * 1024,
        description="the recipient's X.509 certificate (PEM), issued by the data-space CA")
    plain: bool = Field(default=False, description=(
        "export the copy unencrypted: refused when the agreement requires encryption"))


# ------------------------------------------------------------------ query parameters


class _Query(BaseModel):
    # other parameters are ignored, as HTTP APIs commonly do
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


MAX_PAGE = 500
MAX_OFFSET = 1_000_000_000  # far beyond any store; keeps the SQL OFFSET within 64 bits


class PageQuery(_Query):
    limit: int = Field(default=50, ge=1, le=MAX_PAGE, description="at most this many items")
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET, description="skip this many items first")


class NegotiationListQuery(PageQuery):
    state: NegotiationWireState | None = Field(  # type: ignore[valid-type]
        default=None, description="only negotiations in this (DSP) state")


MAX_WAIT_NEGOTIATION = 60.0
MAX_WAIT_PULL = 30.0


class NegotiationWaitQuery(_Query):
    wait_for: Annotated[list[NegotiationState], Csv()] = Field(
        default_factory=list, alias="waitFor",
        description="wait until the negotiation is in one of these states (comma-separated)")
    timeout: float = Field(default=10.0, ge=0, le=MAX_WAIT_NEGOTIATION, allow_inf_nan=False,
                           description="seconds to wait at most (with waitFor)")


class PullWaitQuery(_Query):
    wait: float = Field(default=0.0, ge=0, le=MAX_WAIT_PULL, allow_inf_nan=False,
                        description="seconds to wait for the pull's end")


RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)")


class AuditQuery(PageQuery):
    kind: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list,
                            description="only entries of these kinds (a prefix: `negotiation` "
                                        "matches `negotiation.finalized`); repeat for several")
    since: AwareDatetime | None = Field(default=None, description="only entries at or after this time")

    @field_validator("since", mode="before")
    @classmethod
    def _rfc3339(cls, v: Any) -> Any:
        # an RFC 3339 time with its offset, as the schema's date-time says: not a Unix time
        if isinstance(v, str) and not RFC3339.fullmatch(v):
            raise ValueError("give an RFC 3339 time, e.g. 2025-01-31T12:00:00Z")
        return v


def _rfc3339_time(v: Any) -> Any:
    # an RFC 3339 time with its offset, as the schema's date-time says: not a Unix time
    if isinstance(v, str) and not RFC3339.fullmatch(v):
        raise ValueError("give an RFC 3339 time, e.g. 2025-01-31T12:00:00Z")
    return v


FactValue = Annotated[str, Field(min_length=1, max_length=2000)] | StrictInt | StrictFloat


class FactIn(_In):
    """A provider-held fact: its values (IRIs, CURIEs or literals), until an optional time."""

    values: list[FactValue] = Field(min_length=1, max_length=100)
    until: AwareDatetime | None = Field(default=None, description="when the fact expires")

    _until = field_validator("until", mode="before")(_rfc3339_time)


class PaymentIn(_In):
    """A payment received under an agreement of this provider."""

    agreement: str = Field(min_length=1, max_length=2000, description="the agreement's id")
    amount: Annotated[str, Field(min_length=1, max_length=64)] | StrictInt | StrictFloat = Field(
        description="the exact decimal amount (a string keeps every digit)")
    currency: str = Field(min_length=1, max_length=2000,
                          description="an ISO 4217 code (EUR, USD, ...) or the currency's IRI")
    paid_at: AwareDatetime | None = Field(default=None, alias="paidAt",
                                          description="when it was paid (default: now)")
    reference: str | None = Field(default=None, max_length=2000)
    receipt: str | None = Field(default=None, max_length=16_000,
                                description="a signed payment receipt (compact JWS), kept as evidence")

    _paid_at = field_validator("paid_at", mode="before")(_rfc3339_time)


class PaymentQuery(PageQuery):
    agreement: str | None = Field(default=None, min_length=1, max_length=2000,
                                  description="only this agreement's payments")


class RetireIn(_In):
    reason: str = Field(min_length=1, max_length=2000)


class VaultUseQuery(_Query):
    purpose: str | None = Field(default=None, max_length=2000,
                                description="the purpose of this use (or the X-Purpose header)")
    application: str | None = Field(default=None, max_length=2000,
                                    description="the application that uses the copy (or X-Application)")
    event: str | None = Field(default=None, max_length=2000,
                              description="an event under way (or the X-Event header)")
    location: str | None = Field(default=None, max_length=2000,
                                 description="the place of use (or the X-Location header)")


def _take(pieces: Iterator[bytes], limit: int) -> bytes:
    """The next pieces of a blocking stream, up to about ``limit`` bytes (b"" at its end)."""
    out = bytearray()
    for piece in pieces:
        out += piece
        if len(out) >= limit:
            break
    return bytes(out)


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


def terms_on_the_wire(terms: dict[str, Any]) -> dict[str, Any]:
    """Plain rules a consumer asks for, as they go in a DSP message: full IRIs for every term
    the DSP contexts do not define (connector.odrl.wire), so the provider reads
    ``idsc:SECURITY_LEVEL`` as the IDS operand."""
    rules = {k: v for k, v in terms.items() if k in ("permission", "prohibition", "obligation")}
    doc = plain_policy_document(rules, "urn:uuid:terms")
    problems = policy_problems(doc)
    if problems:
        raise ApiError(400, "the terms cannot be read", problems)
    try:
        wire = wire_rules(doc)
        check_policy({"@id": "urn:uuid:terms", "@type": "Offer", **wire}, "Offer", target=False,
                     where="terms")
    except (PolicyError, ValueError) as exc:
        raise ApiError(400, f"the terms cannot be read: {exc}") from exc
    return wire


def policy_document(p: PolicyIn, policy_id: str) -> dict[str, Any]:
    """A template filled, or plain rules / JSON-LD as the policy engine reads them
    (connector.odrl.plain: the one conversion, shared with `connector policy check`)."""
    if p.template is not None:
        try:
            return fill(p.template, p.params, policy_id=policy_id)
        except TemplateError as exc:
            raise ApiError(400, str(exc)) from exc
    assert p.policy is not None
    return plain_policy_document(p.policy, policy_id)


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


def agreement_view(a: AgreementRow, status: AgreementStatus) -> dict[str, Any]:
    return {"id": a.id, "providerId": a.provider_id, "consumerId": a.consumer_id,
            "target": a.target, "policy": a.policy, "signedAt": _iso(a.signed_at),
            "negotiationId": a.negotiation_id, "status": status,
            "retiredAt": _iso(a.retired_at), "retiredReason": a.retired_reason}


def fact_view(f: HeldFact) -> dict[str, Any]:
    return {"name": f.name, "values": list(f.values), "until": _iso(f.until),
            "setAt": _iso(f.set_at)}


def payment_view(p: Payment) -> dict[str, Any]:
    return {"id": p.id, "agreementId": p.agreement_id, "amount": format(p.amount, "f"),
            "currency": p.currency, "paidAt": _iso(p.paid_at), "recordedAt": _iso(p.recorded_at),
            "reference": p.reference, "receipt": p.receipt}


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
                   limits: Limits = DEFAULT_LIMITS,
                   held: HeldFacts | None = None,
                   export: VaultExport | None = None) -> web.Application:
    """``downloads`` (connector.consumer.Downloads): pulls run by the connector; ``local``
    (connector.consumer.LocalUse): governed reads of the vault's copies; ``data_roots``: where
    file assets may lie (none: file assets are refused); ``held``: the provider's held facts and
    payments (shared with the data plane of this process, so a change counts there at once);
    ``export``: copies leaving the vault (connector.usage.export)."""
    roots = data_roots or DataRoots()
    store = cp.store
    facts = held if held is not None else HeldFacts(store)
    terms: dict[str, Policy | None] = {}  # agreement id -> its terms (they never change)
    document: dict[str, Any] = {}

    async def read_json(request: web.Request) -> Any:
        """The JSON body within the limits (connector.http.limits); BLANK if it is empty."""
        try:
            raw = await read_body(request, max_bytes=limits.management_body_bytes,
                                  timeout=limits.body_timeout, key="limits.management_body_bytes")
            return load_json(raw, limits) if raw.strip() else BLANK
        except LimitError as exc:
            raise ApiError(exc.status, exc.reason) from exc

    def crud(repo: str, view: Callable[[Any], dict[str, Any]], noun: str, *,
             changes_catalog: bool = False, in_use: str = "it is still in use") -> tuple[Handler, ...]:
        """list, get and delete handlers of one resource."""
        async def list_(request: web.Request) -> web.Response:
            page = query_of(request, PageQuery)
            async with store.transaction(readonly=True) as tx:
                rows = await getattr(tx, repo).list(limit=page.limit, offset=page.offset)
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
    def agreement_terms(a: AgreementRow) -> Policy | None:
        if a.id not in terms:
            if len(terms) > 10_000:
                terms.clear()
            try:
                terms[a.id] = standalone_policy(a.policy)
            except ProtocolError:  # unreadable terms: no window to expire, shown active
                terms[a.id] = None
        return terms[a.id]

    def agreement_now(a: AgreementRow) -> dict[str, Any]:
        policy = agreement_terms(a)
        now = cp.clock()
        if policy is None:
            status: AgreementStatus = "retired" if a.retired_at is not None else "active"
        else:
            status = agreement_status(policy, a.retired_at, now)
        return agreement_view(a, status)

    list_agreements, get_agreement, _ = crud("agreements", agreement_now, "agreement")

    async def retire_agreement(request: web.Request) -> web.Response:
        r = body_of(request, RetireIn)
        row = await cp.retire_agreement(request.match_info["id"], r.reason)
        return web.json_response(agreement_now(row))

    # -- provider-held facts and payments
    async def list_facts(request: web.Request) -> web.Response:
        now = cp.clock()
        return web.json_response([fact_view(f) for f in await facts.held() if f.active(now)])

    async def set_fact(request: web.Request) -> web.Response:
        f = body_of(request, FactIn)
        try:
            fact = await facts.set(request.match_info["name"], f.values, until=f.until,
                                   now=cp.clock())
        except UnknownOperand as exc:
            raise ApiError(404, f"no such operand: {exc}") from exc
        except PolicyError as exc:
            raise ApiError(400, f"invalid fact: {exc}") from exc
        return web.json_response(fact_view(fact))

    async def unset_fact(request: web.Request) -> web.Response:
        try:
            found = await facts.unset(request.match_info["name"])
        except PolicyError as exc:
            raise ApiError(400, f"invalid fact: {exc}") from exc
        if not found:
            raise ApiError(404, "no such fact")
        return web.Response(status=204)

    async def provider_agreement(agreement_id: str) -> AgreementRow:
        async with store.transaction(readonly=True) as tx:
            row = await tx.agreements.get(agreement_id)
            negotiation = (await tx.negotiations.get(row.negotiation_id)
                           if row is not None and row.negotiation_id else None)
        if row is None or negotiation is None or negotiation.role != "provider":
            raise ApiError(404, f"no agreement {agreement_id} of this provider")
        return row

    async def list_payments(request: web.Request) -> web.Response:
        q = query_of(request, PaymentQuery)
        async with store.transaction(readonly=True) as tx:
            rows = await tx.payments.list(agreement_id=q.agreement, limit=q.limit, offset=q.offset)
        return web.json_response([payment_view(p) for p in rows])

    async def record_payment(request: web.Request) -> web.Response:
        p = body_of(request, PaymentIn)
        try:
            amount, currency = parse_amount(p.amount), currency_iri(p.currency)
        except PaymentError as exc:
            raise ApiError(400, str(exc)) from exc
        agreement = await provider_agreement(p.agreement)
        now = cp.clock()
        payment = Payment(id=f"urn:payment:{uuid.uuid4()}", agreement_id=agreement.id,
                          amount=amount, currency=currency,
                          paid_at=p.paid_at.astimezone(UTC) if p.paid_at else now,
                          recorded_at=now, reference=p.reference, receipt=p.receipt)
        try:
            await facts.record(payment)
        except ReferenceViolation as exc:  # the agreement went away meanwhile
            raise ApiError(404, f"no agreement {p.agreement} of this provider") from exc
        if audit is not None:
            await audit.aappend("payment.recorded", {
                "amount": payment_view(payment)["amount"], "currency": currency,
                "paidAt": _iso(payment.paid_at), "reference": p.reference,
                "payment": payment.id}, agreement_id=agreement.id,
                participant_id=agreement.consumer_id)
        return web.json_response(payment_view(payment), status=201)
    list_transfers, get_transfer, _ = crud("transfers", transfer_view, "transfer")

    async def start_transfer(request: web.Request) -> web.Response:
        t = body_of(request, TransferIn)
        started = await cp.request_transfer(t.agreement_id, t.format, purpose=t.purpose,
                                            stated=t.stated())
        async with store.transaction(readonly=True) as tx:
            row = await tx.transfers.get(started.id)
        assert row is not None
        return web.json_response(transfer_view(row), status=201)

    def transfer_action(make: Callable[[str], Any]) -> Handler:
        async def handle(request: web.Request) -> web.Response:
            r = body_of(request, ReasonIn)
            t = await cp.transfer_command(request.match_info["id"], make(r.reason or "by operator"))
            async with store.transaction(readonly=True) as tx:
                row = await tx.transfers.get(t.id)
            assert row is not None
            return web.json_response(transfer_view(row))
        return handle

    # -- assets
    async def add_asset(request: web.Request) -> web.Response:
        a = body_of(request, AssetIn)
        asset_id = _new_id(a.id, "asset")
        if isinstance(a.data_address, FileAddressIn):
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
        p = body_of(request, PolicyIn)
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
        o = body_of(request, OfferIn)
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
        c = body_of(request, CatalogIn)
        dsp = await fetch_catalog(c.peer_url)
        return web.json_response({**catalog_view(dsp), "dsp": dsp})

    # -- negotiations
    async def start_negotiation(request: web.Request) -> web.Response:
        n = body_of(request, NegotiationIn)
        dsp = await fetch_catalog(n.peer_url)
        provider_id = dsp.get("participantId")
        if n.terms is not None:
            rules = terms_on_the_wire(n.terms)
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
        q = query_of(request, NegotiationListQuery)
        async with store.transaction(readonly=True) as tx:
            rows = await tx.negotiations.list(limit=q.limit, offset=q.offset)
        views = [negotiation_view(r) for r in rows]
        if q.state:
            views = [v for v in views if v["state"] == q.state]
        return web.json_response(views)

    async def get_negotiation(request: web.Request) -> web.Response:
        nid = request.match_info["id"]
        q = query_of(request, NegotiationWaitQuery)
        if q.wait_for:
            row = await cp.wait_for(nid, {s.value for s in q.wait_for}, q.timeout)
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
        t = body_of(request, TerminateIn)
        return await after(neg.Terminate(t.reason), request.match_info["id"])

    async def accept_offer(request: web.Request) -> web.Response:
        return await after(neg.Accept(), request.match_info["id"])

    async def counter_offer(request: web.Request) -> web.Response:
        c = body_of(request, CounterOfferIn)
        nid = request.match_info["id"]
        async with store.transaction(readonly=True) as tx:
            row = await tx.negotiations.get(nid)
        if row is None:
            raise ApiError(404, "no such negotiation")
        current = row.offer or {}
        rules = terms_on_the_wire(c.terms)
        offer = {"@id": f"urn:uuid:{uuid.uuid4()}", "@type": "Offer",
                 "target": current.get("target"), **rules}
        return await after(neg.CounterOffer(offer), nid)

    async def audit_timeline(request: web.Request) -> web.Response:
        """The connector's audit trail, oldest first (``kind`` prefix, ``since`` ISO time)."""
        if audit is None:
            raise ApiError(404, "this connector keeps no audit log")
        q = query_of(request, AuditQuery)
        rows = list(select(audit.entries(), kinds=q.kind, since=q.since))[q.offset:q.offset + q.limit]
        return web.json_response([to_view(e) for e in rows])

    async def refresh_transfer(request: web.Request) -> web.Response:
        t = await cp.refresh_pull_token(request.match_info["id"])
        async with store.transaction(readonly=True) as tx:
            row = await tx.transfers.get(t.id)
        assert row is not None
        return web.json_response(transfer_view(row))

    async def register_copy(request: web.Request) -> web.Response:
        c = body_of(request, CopyIn)
        try:
            item = await cp.register_local_copy(Path(c.path), c.transfer_id)
        except OSError as exc:  # missing, unreadable: the caller's path, not our fault
            raise ApiError(400, f"cannot register {c.path}: {exc.strerror or exc}") from exc
        return web.json_response({"path": item.path, "agreementId": item.agreement_id,
                                  "deleteAt": item.delete_at, "sha256": item.sha256}, status=201)

    async def start_pull(request: web.Request) -> web.Response:
        if downloads is None:
            raise ApiError(404, "this connector runs no pulls (no data-space CA)")
        p = body_of(request, PullIn)
        job = await downloads.start(request.match_info["id"], out=p.out, purpose=p.purpose,
                                    complete=p.complete, stated=p.stated())
        return web.json_response(job.to_json(), status=202)

    async def pull_status(request: web.Request) -> web.Response:
        if downloads is None:
            raise ApiError(404, "this connector runs no pulls (no data-space CA)")
        q = query_of(request, PullWaitQuery)
        job = await downloads.wait(request.match_info["id"], q.wait)
        if job is None:
            raise ApiError(404, "no pull of this transfer")
        return web.json_response(job.to_json())

    def vault_guard(fn: Handler) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
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
        q = query_of(request, VaultUseQuery)
        given = {name: request.headers.get(h.name) or getattr(q, name)
                 for name, h in STATED_HEADERS.items()}
        try:
            stated = pipeline.stated(**given)
        except PolicyError as exc:
            raise ApiError(400, f"a stated fact cannot be read: {exc}") from exc
        item, path = await local.use(request.match_info["vid"], stated=stated)
        return web.FileResponse(path, headers={"X-Use-Number": str(item.uses),
                                               "Content-Type": "application/octet-stream"})

    async def export_vault_item(request: web.Request) -> web.StreamResponse:
        """A copy leaves the vault as the agreement says: encrypted to the named recipient."""
        if export is None:
            raise ApiError(404, "this connector keeps no vault")
        e = body_of(request, VaultExportIn)
        try:
            decided = await export.prepare(request.match_info["vid"],
                                           recipient_pem=e.recipient_certificate, plain=e.plain)
        except Denied as exc:
            raise ApiError(exc.status, exc.reason) from exc
        headers = {"Content-Type": "application/octet-stream",
                   "X-Export-Encrypted": "true" if decided.encrypted else "false"}
        if decided.next_policy is not None:
            named = str(decided.next_policy.get("@id", ""))
            headers["X-Next-Policy"] = named if named.isascii() and named.isprintable() and (
                named) else "(in the envelope)"
        if decided.note:
            headers["X-Export-Note"] = decided.note
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        pieces = decided.stream()
        while block := await asyncio.to_thread(_take, pieces, 1 << 20):
            await response.write(block)
        await response.write_eof()
        return response

    async def openapi(request: web.Request) -> web.Response:
        return web.json_response(document)

    def transfer_command(action: str, make: Callable[[str], Any], what: str) -> Operation:
        return Operation("POST", f"/api/transfers/{{id}}/{action}", transfer_action(make),
                         f"{action}Transfer", what, "transfers", body=ReasonIn, body_optional=True,
                         response=TransferView, errors={404: NO_TRANSFER, 409: NOT_NOW})

    operations: list[Operation] = [
        Operation("GET", "/api/openapi.json", openapi, "getOpenApi",
                  "This document", "meta", public=True, uses_store=False),
        # assets
        Operation("POST", "/api/assets", add_asset, "addAsset", "Add an asset", "assets",
                  status=201, body=AssetIn, response=AssetView,
                  errors={409: "An asset with this id exists"}),
        Operation("GET", "/api/assets", list_assets, "listAssets", "List assets (secrets masked)",
                  "assets", query=PageQuery, response=list[AssetView]),
        Operation("GET", "/api/assets/{id}", get_asset, "getAsset", "Get an asset (secrets masked)",
                  "assets", response=AssetView, errors={404: "No such asset"}),
        Operation("DELETE", "/api/assets/{id}", delete_asset, "deleteAsset", "Delete an asset",
                  "assets", status=204, errors={404: "No such asset", 409: IN_USE}),
        # policies
        Operation("POST", "/api/policies", add_policy, "addPolicy",
                  "Add a policy (a template, plain ODRL rules or JSON-LD)", "policies", status=201,
                  body=PolicyIn, response=PolicyView, errors={409: "A policy with this id exists"}),
        Operation("GET", "/api/policies", list_policies, "listPolicies", "List policies", "policies",
                  query=PageQuery, response=list[PolicyView]),
        Operation("GET", "/api/policies/{id}", get_policy, "getPolicy", "Get a policy", "policies",
                  response=PolicyView, errors={404: "No such policy"}),
        Operation("DELETE", "/api/policies/{id}", delete_policy, "deletePolicy", "Delete a policy",
                  "policies", status=204, errors={404: "No such policy", 409: IN_USE}),
        # offers
        Operation("POST", "/api/offers", add_offer, "addOffer",
                  "Offer assets under an access and a contract policy", "offers", status=201,
                  body=OfferIn, response=OfferView, errors={409: "An offer with this id exists"}),
        Operation("GET", "/api/offers", list_offers, "listOffers", "List offers", "offers",
                  query=PageQuery, response=list[OfferView]),
        Operation("GET", "/api/offers/{id}", get_offer, "getOffer", "Get an offer", "offers",
                  response=OfferView, errors={404: "No such offer"}),
        Operation("DELETE", "/api/offers/{id}", delete_offer, "deleteOffer", "Withdraw an offer",
                  "offers", status=204, errors={404: "No such offer", 409: IN_USE}),
        # a peer's catalog
        Operation("POST", "/api/catalog", peer_catalog, "peerCatalog",
                  "A peer's catalog, as this connector may see it", "catalog", body=CatalogIn,
                  response=CatalogView, errors={502: PEER_FAILED}),
        dataspace.operation(cp),  # every page of a peer's catalog (connector.http.dataspace)
        # negotiations
        Operation("POST", "/api/negotiations", start_negotiation, "startNegotiation",
                  "Negotiate a peer's offer", "negotiations", status=201, body=NegotiationIn,
                  response=NegotiationView,
                  errors={404: "The peer offers no such offer to this connector", 502: PEER_FAILED}),
        Operation("GET", "/api/negotiations", list_negotiations, "listNegotiations",
                  "List negotiations", "negotiations", query=NegotiationListQuery,
                  response=list[NegotiationView]),
        Operation("GET", "/api/negotiations/{id}", get_negotiation, "getNegotiation",
                  "Get a negotiation; with waitFor, wait (up to timeout) for one of those states",
                  "negotiations", query=NegotiationWaitQuery, response=NegotiationView,
                  errors={404: NO_NEGOTIATION}),
        Operation("POST", "/api/negotiations/{id}/terminate", terminate_negotiation,
                  "terminateNegotiation", "Terminate a negotiation", "negotiations",
                  body=TerminateIn, response=NegotiationView,
                  errors={404: NO_NEGOTIATION, 409: NOT_NOW}),
        Operation("POST", "/api/negotiations/{id}/accept", accept_offer, "acceptOffer",
                  "Consumer: accept the provider's offer", "negotiations", response=NegotiationView,
                  errors={404: NO_NEGOTIATION, 409: NOT_NOW}),
        Operation("POST", "/api/negotiations/{id}/counter-offer", counter_offer, "counterOffer",
                  "Consumer: answer the provider's offer with other terms", "negotiations",
                  body=CounterOfferIn, response=NegotiationView,
                  errors={404: NO_NEGOTIATION, 409: NOT_NOW}),
        # agreements
        Operation("GET", "/api/agreements", list_agreements, "listAgreements", "List agreements",
                  "agreements", query=PageQuery, response=list[AgreementView]),
        Operation("GET", "/api/agreements/{id}", get_agreement, "getAgreement", "Get an agreement",
                  "agreements", response=AgreementView, errors={404: "No such agreement"}),
        Operation("POST", "/api/agreements/{id}/retire", retire_agreement, "retireAgreement",
                  "Provider: retire an agreement (its running transfers are terminated, new ones "
                  "refused)", "agreements", body=RetireIn, response=AgreementView,
                  errors={404: "No such agreement of this provider"}),
        # provider-held facts and payments
        Operation("GET", "/api/facts", list_facts, "listFacts",
                  "The facts this provider holds now (state, active events)", "facts",
                  response=list[FactView]),
        Operation("PUT", "/api/facts/{name}", set_fact, "setFact",
                  "Set (replace) a held fact: an operand such as idsc:STATE or odrl:event",
                  "facts", body=FactIn, response=FactView,
                  errors={404: "No such operand (no policy can test it)"},
                  path_params={"name": "the operand (a CURIE, an IDS code or the full IRI)"}),
        Operation("DELETE", "/api/facts/{name}", unset_fact, "unsetFact", "Unset a held fact",
                  "facts", status=204, errors={404: "No such fact"},
                  path_params={"name": "the operand (a CURIE, an IDS code or the full IRI)"}),
        Operation("GET", "/api/payments", list_payments, "listPayments",
                  "Payments received, oldest first", "payments", query=PaymentQuery,
                  response=list[PaymentView]),
        Operation("POST", "/api/payments", record_payment, "recordPayment",
                  "Provider: record a payment received under an agreement", "payments",
                  status=201, body=PaymentIn, response=PaymentView,
                  errors={404: "No such agreement of this provider"}),
        # transfers
        Operation("POST", "/api/transfers", start_transfer, "startTransfer",
                  "Request a transfer under an agreement", "transfers", status=201,
                  body=TransferIn, response=TransferView,
                  errors={404: "No such agreement of this consumer",
                          409: "The agreement is not finalized, or this connector takes no pushes"}),
        Operation("GET", "/api/transfers", list_transfers, "listTransfers", "List transfers",
                  "transfers", query=PageQuery, response=list[TransferView]),
        Operation("GET", "/api/transfers/{id}", get_transfer, "getTransfer",
                  "Get a transfer (the consumer sees the endpoint and token to pull from)",
                  "transfers", response=TransferView, errors={404: NO_TRANSFER}),
        transfer_command("suspend", lambda why: xfer.Suspend(why), "Suspend a transfer"),
        transfer_command("resume", lambda why: xfer.Resume(), "Resume a suspended transfer"),
        transfer_command("complete", lambda why: xfer.Complete(), "Complete a transfer"),
        transfer_command("terminate", lambda why: xfer.Terminate(why), "Terminate a transfer"),
        Operation("POST", "/api/transfers/{id}/refresh", refresh_transfer, "refreshTransfer",
                  "Consumer: exchange the pull's refresh token for a new access token",
                  "transfers", response=TransferView,
                  errors={404: NO_TRANSFER, 409: "The transfer has no refresh token or has ended",
                          502: "The provider refused the refresh or could not be reached"}),
        # pulls and the vault (consumer)
        Operation("POST", "/api/transfers/{id}/pull", start_pull, "startPull",
                  "Consumer: pull a STARTED transfer's data into the vault (or `out`), verify the "
                  "provider's receipts and log them", "pulls", status=202, body=PullIn,
                  body_optional=True, response=PullJobView,
                  errors={404: NO_TRANSFER + ", or this connector runs no pulls",
                          409: "The transfer is not a STARTED pull, or is being pulled already"}),
        Operation("GET", "/api/transfers/{id}/pull", pull_status, "pullStatus",
                  "Consumer: the pull's progress and outcome (`wait` seconds for its end)", "pulls",
                  query=PullWaitQuery, response=PullJobView,
                  errors={404: "No pull of this transfer, or this connector runs no pulls"}),
        Operation("POST", "/api/vault", register_copy, "registerCopy",
                  "Consumer: register a local copy (its delete duty is enforced)", "vault",
                  status=201, body=CopyIn, response=VaultCopyView,
                  errors={404: NO_TRANSFER + ", or this connector keeps no vault"}),
        Operation("GET", "/api/vault", vault_guard(list_vault), "listVault",
                  "Consumer: the local copies held under agreements", "vault",
                  response=list[VaultItemView], errors={404: NO_VAULT}),
        Operation("GET", "/api/vault/{vid}", vault_guard(get_vault_item), "getVaultItem",
                  "One local copy: its agreement, duties and local use count", "vault",
                  response=VaultItemView, errors={404: "No such copy, " + NO_VAULT.lower()},
                  path_params={"vid": "the vault item's id"}),
        # no HEAD: a use is counted and reported only when the data is served
        Operation("GET", "/api/vault/{vid}/data", vault_guard(read_vault_item), "useVaultItem",
                  "Consumer: one governed local use of a copy", "vault", query=VaultUseQuery,
                  headers=tuple(STATED_HEADERS.values()), media_type="application/octet-stream",
                  description="The agreement decides, its duties (log, inform the provider) are "
                              "fulfilled first, and the use counts (`X-Use-Number`).",
                  errors={403: "The agreement denies this use", 404: "No such copy, " + NO_VAULT.lower(),
                          410: "The copy was deleted under its agreement's duty"},
                  path_params={"vid": "the vault item's id"}, allow_head=False),
        Operation("POST", "/api/vault/{vid}/export", export_vault_item, "exportVaultItem",
                  "Consumer: a copy leaves the vault, as its agreement says", "vault",
                  body=VaultExportIn, media_type="application/octet-stream",
                  description="Decided on the agreement's `distribute` permission: the copy "
                              "leaves encrypted to the recipient's certificate "
                              "(connector.usage.envelope), with the next policy when the "
                              "agreement requires one, and is logged (`vault.distributed`).",
                  errors={403: "The agreement does not permit this distribution",
                          404: "No such copy, " + NO_VAULT.lower(),
                          409: "The copy on disk is not the one registered",
                          410: "The copy was deleted under its agreement's duty"},
                  path_params={"vid": "the vault item's id"}),
        # audit
        Operation("GET", "/api/audit", audit_timeline, "auditTimeline",
                  "The audit trail, oldest first", "audit", query=AuditQuery,
                  response=list[AuditEntryView], errors={404: "This connector keeps no audit log"}),
    ]
    document.update(openapi_document(operations, title="Connector management API",
                                     version=API_VERSION, description=API_DESCRIPTION))
    public = public_paths(operations)
    key = api_key.encode()

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            if request.path not in public:
                given = one_header(request, "X-Api-Key").encode()  # two keys: refused
                if not given or not hmac.compare_digest(given, key):
                    raise ApiError(401, "missing or wrong X-Api-Key")
            return await handler(request)
        except ApiError as exc:
            return error_response(exc.status, exc.message, exc.details, exc.headers)
        except ProtocolError as exc:
            status = exc.status if 400 <= exc.status < 600 else 400
            return error_response(status, "; ".join(exc.reasons) or exc.code)
        except StoreUnavailable as exc:
            fault = storage_fault(exc, where=f"{request.method} {request.path}")
            return error_response(fault.status, fault.reason, headers=fault.headers)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            # the router's 404 and 405 and the body limit's 413, in the API's error body
            allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            return error_response(exc.status, exc.text or exc.reason, headers=allow)

    app = web.Application(middlewares=[guard], client_max_size=limits.management_body_bytes)
    app[LIMITS] = limits
    add_routes(app, operations, read_json)
    return app
