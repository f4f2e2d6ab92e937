"""The management API: plain JSON over HTTP on its own port, for the provider's and consumer's
own systems. API-key protected (``X-Api-Key``); OpenAPI 3.1 at ``/api/openapi.json``.

Every operation is one entry of the route table at the end of `management_app`: its path, handler,
body and query models, and every status it answers; the router and the OpenAPI document are both
generated from that table (`connector.http.routes`), the answers' shapes are the models of
`connector.http.views`. An id in a path is one percent-encoded segment and may hold any character.
A handler parses and validates, calls one service of `connector.services` (where the business
logic is) and renders; a service's typed error becomes a status in `connector.http.errors`.

Callers never write JSON-LD: a policy is a template name with parameters, or plain ODRL rules
(``{"permission": [{"action": "use", "constraint": [...]}]}``) that the connector wraps in the
DSP profile context; full JSON-LD is accepted too. Every policy is validated strictly on input,
so an invalid one is refused here and can never break the catalog later. Data-address secrets
are stored but never echoed back.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Annotated, Any, Literal, TypeVar

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

from connector.assets import DataRoots, path_problem
from connector.audit.log import AuditLog
from connector.audit.timeline import to_view
from connector.consumer import Downloads, LocalUse
from connector.faults import StoreUnavailable
from connector.http.errors import service_fault, storage_fault
from connector.http.limits import (
    DEFAULT_LIMITS,
    LIMITS,
    LimitError,
    Limits,
    load_json,
    one_header,
    read_body,
    same_secret,
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
    TransferWireState,
    VaultCopyView,
    VaultItemView,
    WholeCatalogView,
)
from connector.ids import ID_RULE
from connector.odrl.parse import PolicyError
from connector.odrl.words import offer_in_words
from connector.protocol.negotiation import NegotiationState
from connector.runtime import ControlPlane, row_to_negotiation, row_to_transfer
from connector.services import policies
from connector.services.agreements import AgreementNow, Agreements
from connector.services.assets import Assets
from connector.services.audit import Timeline
from connector.services.catalog import PeerCatalog
from connector.services.errors import ServiceError, translated
from connector.services.held import Facts, NewPayment, Payments
from connector.services.negotiations import Negotiations
from connector.services.offers import Offers
from connector.services.policies import Policies
from connector.services.records import Page, RemovableRecords, iso_time
from connector.services.transfers import Transfers
from connector.services.vault import Pulls, Vault
from connector.store.rows import (
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
from connector.usage.held import HeldFacts

R = TypeVar("R")

API_VERSION = "0.2.0"
API_DESCRIPTION = (
    "The connector's management API: plain JSON, every call but this document with the "
    "`X-Api-Key` header. An id in a path is one percent-encoded segment (an IRI with `/`, `?`, "
    '`#`, `{`, `}` or non-ASCII characters too). Every error answers `{"error": ..., '
    '"details": [...]}`; a 503 (the store is unavailable) carries `Retry-After`.'
)

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
    "application": HeaderParam(
        "X-Application", "the application that uses the copy (or the `application` parameter)", 2000
    ),
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
    path: str = Field(
        min_length=1,
        max_length=4096,
        description=(
            "an absolute path inside one of the connector's data roots ([assets] roots); "
            "'..' and symlinks are resolved before the check"
        ),
    )

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
    application: str | None = Field(
        default=None, max_length=2000, description="the registered application that uses the data"
    )
    event: str | None = Field(default=None, max_length=2000, description="an event under way")
    location: str | None = Field(default=None, max_length=2000, description="the place of use (odrl:spatial)")

    def stated(self) -> dict[str, str]:
        return {
            k: v
            for k, v in (
                ("application", self.application),
                ("event", self.event),
                ("location", self.location),
            )
            if v
        }


class TransferIn(StatedIn):
    agreement_id: str = Field(alias="agreementId")
    format: Literal["HttpData-PULL", "HttpData-PUSH"] = "HttpData-PULL"
    # push: the stated facts go in the push address, for the provider's decision


class PullIn(StatedIn):
    out: str | None = Field(
        default=None,
        max_length=4096,
        pattern=PATH_PATTERN,
        description="an absolute path to write the data to (default: the vault)",
    )
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
        default=None,
        alias="recipientCertificate",
        max_length=64 * 1024,
        description="the recipient's X.509 certificate (PEM), issued by the data-space CA",
    )
    plain: bool = Field(
        default=False,
        description=("export the copy unencrypted: refused when the agreement requires encryption"),
    )


# ------------------------------------------------------------------ query parameters


class _Query(BaseModel):
    # other parameters are ignored, as HTTP APIs commonly do
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


MAX_PAGE = 500
MAX_OFFSET = 1_000_000_000  # far beyond any store; keeps the SQL OFFSET within 64 bits


class PageQuery(_Query):
    limit: int = Field(default=50, ge=1, le=MAX_PAGE, description="at most this many items")
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET, description="skip this many items first")


class ProcessListQuery(PageQuery):
    order: Literal["oldest", "newest"] = Field(
        default="oldest", description="oldest first (by creation), or newest first"
    )


class NegotiationListQuery(ProcessListQuery):
    state: NegotiationWireState | None = Field(  # type: ignore[valid-type]
        default=None, description="only negotiations in this (DSP) state"
    )


class TransferListQuery(ProcessListQuery):
    state: TransferWireState | None = Field(  # type: ignore[valid-type]
        default=None, description="only transfers in this (DSP) state"
    )


MAX_WAIT_NEGOTIATION = 60.0
MAX_WAIT_PULL = 30.0


class NegotiationWaitQuery(_Query):
    wait_for: Annotated[list[NegotiationState], Csv()] = Field(
        default_factory=list,
        alias="waitFor",
        description="wait until the negotiation is in one of these states (comma-separated)",
    )
    timeout: float = Field(
        default=10.0,
        ge=0,
        le=MAX_WAIT_NEGOTIATION,
        allow_inf_nan=False,
        description="seconds to wait at most (with waitFor)",
    )


class PullWaitQuery(_Query):
    wait: float = Field(
        default=0.0,
        ge=0,
        le=MAX_WAIT_PULL,
        allow_inf_nan=False,
        description="seconds to wait for the pull's end",
    )


RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)")


class AuditQuery(PageQuery):
    kind: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list,
        description="only entries of these kinds (a prefix: `negotiation` "
        "matches `negotiation.finalized`); repeat for several",
    )
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
        description="the exact decimal amount (a string keeps every digit)"
    )
    currency: str = Field(
        min_length=1, max_length=2000, description="an ISO 4217 code (EUR, USD, ...) or the currency's IRI"
    )
    paid_at: AwareDatetime | None = Field(
        default=None, alias="paidAt", description="when it was paid (default: now)"
    )
    reference: str | None = Field(default=None, max_length=2000)
    receipt: str | None = Field(
        default=None,
        max_length=16_000,
        description="a signed payment receipt (compact JWS), kept as evidence",
    )

    _paid_at = field_validator("paid_at", mode="before")(_rfc3339_time)


class PaymentQuery(PageQuery):
    agreement: str | None = Field(
        default=None, min_length=1, max_length=2000, description="only this agreement's payments"
    )


class RetireIn(_In):
    reason: str = Field(min_length=1, max_length=2000)


class VaultUseQuery(_Query):
    purpose: str | None = Field(
        default=None, max_length=2000, description="the purpose of this use (or the X-Purpose header)"
    )
    application: str | None = Field(
        default=None, max_length=2000, description="the application that uses the copy (or X-Application)"
    )
    event: str | None = Field(
        default=None, max_length=2000, description="an event under way (or the X-Event header)"
    )
    location: str | None = Field(
        default=None, max_length=2000, description="the place of use (or the X-Location header)"
    )


def _take(pieces: Iterator[bytes], limit: int) -> bytes:
    """The next pieces of a blocking stream, up to about ``limit`` bytes (b"" at its end)."""
    out = bytearray()
    for piece in pieces:
        out += piece
        if len(out) >= limit:
            break
    return bytes(out)


def policy_document(p: PolicyIn, policy_id: str) -> dict[str, Any]:
    """The policy a `PolicyIn` describes (connector.services.policies.policy_document)."""
    return policies.policy_document(policy_id, template=p.template, params=p.params, policy=p.policy)


def _page(q: PageQuery) -> Page:
    return Page(limit=q.limit, offset=q.offset)


def _process_page(q: ProcessListQuery) -> Page:
    return Page(limit=q.limit, offset=q.offset, newest_first=q.order == "newest")


# ------------------------------------------------------------------ views


def asset_view(a: AssetRow) -> dict[str, Any]:
    return {
        "id": a.id,
        "title": a.title,
        "description": a.description,
        "keywords": list(a.keywords),
        "contentType": a.content_type,
        "dataAddress": a.data_address,
        "createdAt": iso_time(a.created_at),
    }


def policy_view(p: PolicyRow) -> dict[str, Any]:
    return {"id": p.id, "policy": p.document(), "createdAt": iso_time(p.created_at)}


def offer_view(o: OfferRow) -> dict[str, Any]:
    sel = o.asset_selector if isinstance(o.asset_selector, dict) else {}
    return {
        "id": o.id,
        "assetIds": sel.get("assetIds"),
        "allAssets": bool(sel.get("all")),
        "accessPolicyId": o.access_policy_id,
        "contractPolicyId": o.contract_policy_id,
        "createdAt": iso_time(o.created_at),
    }


def negotiation_view(row: NegotiationRow) -> dict[str, Any]:
    n = row_to_negotiation(row)
    return {
        "id": n.id,
        "role": row.role,
        "state": n.wire_state.value,
        "internalState": n.state.value,
        "providerPid": n.provider_pid,
        "consumerPid": n.consumer_pid,
        "counterPartyId": n.counter_party_id,
        "counterPartyAddress": n.counter_party_address,
        "offer": dict(n.offer),
        "agreementId": row.agreement_id,
        "terminationReason": list(n.termination_reason) or None,
        "errorDetail": n.delivery_error,
        "createdAt": iso_time(row.created_at),
        "updatedAt": iso_time(row.updated_at),
    }


def transfer_view(row: TransferRow) -> dict[str, Any]:
    t = row_to_transfer(row)
    view: dict[str, Any] = {
        "id": t.id,
        "role": row.role,
        "state": t.wire_state.value,
        "internalState": t.state.value,
        "providerPid": t.provider_pid,
        "consumerPid": t.consumer_pid,
        "format": t.format,
        "agreementId": t.agreement_id,
        "counterPartyId": t.counter_party_id,
        "counterPartyAddress": t.counter_party_address,
        "suspendedBy": sorted(r.value for r in t.suspended_by) or None,
        "terminationReason": list(t.termination_reason) or None,
        "errorDetail": t.delivery_error,
        "createdAt": iso_time(row.created_at),
        "updatedAt": iso_time(row.updated_at),
    }
    if row.role == "consumer" and t.data_address is not None:
        # the endpoint data reference the provider handed over: where to pull, with which token
        view["endpoint"] = t.data_address.endpoint
        view["endpointProperties"] = {p.name: p.value for p in t.data_address.endpoint_properties or ()}
    return view


def agreement_view(a: AgreementNow) -> dict[str, Any]:
    row = a.row
    return {
        "id": row.id,
        "providerId": row.provider_id,
        "consumerId": row.consumer_id,
        "target": row.target,
        "policy": row.policy,
        "signedAt": iso_time(row.signed_at),
        "negotiationId": row.negotiation_id,
        "status": a.status,
        "retiredAt": iso_time(row.retired_at),
        "retiredReason": row.retired_reason,
    }


def fact_view(f: HeldFact) -> dict[str, Any]:
    return {"name": f.name, "values": list(f.values), "until": iso_time(f.until), "setAt": iso_time(f.set_at)}


def payment_view(p: Payment) -> dict[str, Any]:
    return {
        "id": p.id,
        "agreementId": p.agreement_id,
        "amount": format(p.amount, "f"),
        "currency": p.currency,
        "paidAt": iso_time(p.paid_at),
        "recordedAt": iso_time(p.recorded_at),
        "reference": p.reference,
        "receipt": p.receipt,
    }


def _text(d: dict[str, Any], *keys: str) -> Any:
    """The first of ``keys`` present (DSP sends ``dct:title``; a compacted catalog ``title``);
    a language-tagged value as its text."""
    for k in keys:
        v = d.get(k)
        if isinstance(v, dict):
            v = v.get("@value")
        if v is not None:
            return v
    return None


def catalog_view(dsp: dict[str, Any], pages: int = 1) -> dict[str, Any]:
    datasets = []
    for d in dsp.get("dataset", []) or []:
        if not isinstance(d, dict):
            continue
        offers = []
        for o in d.get("hasPolicy", []) or []:
            if not isinstance(o, dict):
                continue
            offers.append(
                {
                    "id": o.get("@id"),
                    "terms": offer_in_words(o),
                    "permission": o.get("permission"),
                    "prohibition": o.get("prohibition"),
                    "obligation": o.get("obligation"),
                }
            )
        keywords = d.get("dcat:keyword", d.get("keyword")) or []
        datasets.append(
            {
                "id": d.get("@id"),
                "title": _text(d, "dct:title", "title"),
                "description": _text(d, "dct:description", "description"),
                "keywords": [str(k) for k in (keywords if isinstance(keywords, list) else [keywords])],
                "formats": [x.get("format") for x in d.get("distribution", []) or [] if isinstance(x, dict)],
                "offers": offers,
            }
        )
    return {"participantId": dsp.get("participantId"), "pages": pages, "datasets": datasets}


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status)


# ------------------------------------------------------------------ the app


def management_app(
    cp: ControlPlane,
    api_key: str,
    *,
    audit: AuditLog | None = None,
    downloads: Downloads | None = None,
    local: LocalUse | None = None,
    data_roots: DataRoots | None = None,
    limits: Limits = DEFAULT_LIMITS,
    held: HeldFacts | None = None,
    export: VaultExport | None = None,
    observe: Sequence[Operation] = (),
    ui: web.Application | None = None,
) -> web.Application:
    """``downloads`` (connector.consumer.Downloads): pulls run by the connector; ``local``
    (connector.consumer.LocalUse): governed reads of the vault's copies; ``data_roots``: where
    file assets may lie (none: file assets are refused); ``held``: the provider's held facts and
    payments (shared with the data plane of this process, so a change counts there at once);
    ``export``: copies leaving the vault (connector.usage.export); ``ui``: a dashboard mounted
    at ``/ui`` (connector.ui.dashboard), outside the OpenAPI document, behind its own login (its
    pages skip the key check, nothing else does).

    Each handler parses the request, calls one service (connector.services) and renders."""
    store = cp.store
    held_facts = held if held is not None else HeldFacts(store)
    peer_catalog_service = PeerCatalog(cp.client)
    asset_service = Assets(store, cp.clock, data_roots or DataRoots(), cp.catalog_changed)
    policy_service = Policies(store, cp.clock)
    offer_service = Offers(store, cp.clock, cp.catalog_changed)
    negotiation_service = Negotiations(cp, peer_catalog_service)
    agreement_service = Agreements(cp)
    fact_service = Facts(held_facts, cp.clock)
    payment_service = Payments(store, held_facts, agreement_service, cp.clock, audit)
    transfer_service = Transfers(cp)
    pull_service = Pulls(downloads)
    vault_service = Vault(cp, local, export)
    timeline = Timeline(audit)
    document: dict[str, Any] = {}

    async def read_json(request: web.Request) -> Any:
        """The JSON body within the limits (connector.http.limits); BLANK if it is empty."""
        try:
            raw = await read_body(
                request,
                max_bytes=limits.management_body_bytes,
                timeout=limits.body_timeout,
                key="limits.management_body_bytes",
            )
            return load_json(raw, limits) if raw.strip() else BLANK
        except LimitError as exc:
            raise ApiError(exc.status, exc.reason) from exc

    def crud(
        records: RemovableRecords[R], view: Callable[[R], dict[str, Any]]
    ) -> tuple[Handler, Handler, Handler]:
        """list, get and delete handlers of one resource."""

        async def list_(request: web.Request) -> web.Response:
            page = _page(query_of(request, PageQuery))
            return _json([view(r) for r in await records.list(page)])

        async def get_(request: web.Request) -> web.Response:
            return _json(view(await records.get(request.match_info["id"])))

        async def delete_(request: web.Request) -> web.Response:
            await records.delete(request.match_info["id"])
            return web.Response(status=204)

        return list_, get_, delete_

    list_assets, get_asset, delete_asset = crud(asset_service, asset_view)
    list_policies, get_policy, delete_policy = crud(policy_service, policy_view)
    list_offers, get_offer, delete_offer = crud(offer_service, offer_view)

    # -- assets, policies, offers
    async def add_asset(request: web.Request) -> web.Response:
        a = body_of(request, AssetIn)
        row = await asset_service.add(
            asset_id=a.id,
            title=a.title,
            description=a.description,
            keywords=a.keywords,
            content_type=a.content_type,
            data_address=a.data_address.model_dump(exclude_none=True),
        )
        return _json(asset_view(row), 201)

    async def add_policy(request: web.Request) -> web.Response:
        p = body_of(request, PolicyIn)
        row = await policy_service.add(policy_id=p.id, template=p.template, params=p.params, policy=p.policy)
        return _json(policy_view(row), 201)

    async def add_offer(request: web.Request) -> web.Response:
        o = body_of(request, OfferIn)
        row = await offer_service.add(
            offer_id=o.id,
            asset_ids=o.asset_ids or (),
            all_assets=o.all_assets,
            access_policy_id=o.access_policy_id,
            contract_policy_id=o.contract_policy_id,
        )
        return _json(offer_view(row), 201)

    # -- agreements
    async def list_agreements(request: web.Request) -> web.Response:
        page = _page(query_of(request, PageQuery))
        return _json([agreement_view(a) for a in await agreement_service.list(page)])

    async def get_agreement(request: web.Request) -> web.Response:
        return _json(agreement_view(await agreement_service.get(request.match_info["id"])))

    async def retire_agreement(request: web.Request) -> web.Response:
        r = body_of(request, RetireIn)
        return _json(agreement_view(await agreement_service.retire(request.match_info["id"], r.reason)))

    # -- provider-held facts and payments
    async def list_facts(request: web.Request) -> web.Response:
        return _json([fact_view(f) for f in await fact_service.active()])

    async def set_fact(request: web.Request) -> web.Response:
        f = body_of(request, FactIn)
        return _json(fact_view(await fact_service.set(request.match_info["name"], f.values, f.until)))

    async def unset_fact(request: web.Request) -> web.Response:
        await fact_service.unset(request.match_info["name"])
        return web.Response(status=204)

    async def list_payments(request: web.Request) -> web.Response:
        q = query_of(request, PaymentQuery)
        return _json([payment_view(p) for p in await payment_service.list(q.agreement, _page(q))])

    async def record_payment(request: web.Request) -> web.Response:
        p = body_of(request, PaymentIn)
        payment = await payment_service.record(
            NewPayment(
                agreement_id=p.agreement,
                amount=p.amount,
                currency=p.currency,
                paid_at=p.paid_at,
                reference=p.reference,
                receipt=p.receipt,
            )
        )
        return _json(payment_view(payment), 201)

    # -- a peer's catalog, negotiations
    async def peer_catalog(request: web.Request) -> web.Response:
        c = body_of(request, CatalogIn)
        whole = await peer_catalog_service.fetch_all(c.peer_url)  # every page
        return _json({**catalog_view(whole.catalog, whole.pages), "dsp": whole.catalog})

    async def peer_catalog_all(request: web.Request) -> web.Response:
        """The pages as one DSP catalog (of a broker: the whole data space)."""
        whole = await peer_catalog_service.fetch_all(body_of(request, CatalogIn).peer_url)
        return _json({"pages": whole.pages, "dsp": whole.catalog})

    async def start_negotiation(request: web.Request) -> web.Response:
        n = body_of(request, NegotiationIn)
        row = await negotiation_service.start(
            peer_url=n.peer_url, offer_id=n.offer_id, dataset_id=n.dataset_id, terms=n.terms
        )
        return _json(negotiation_view(row), 201)

    async def list_negotiations(request: web.Request) -> web.Response:
        q = query_of(request, NegotiationListQuery)
        rows = await negotiation_service.list_in(q.state, _process_page(q))
        return _json([negotiation_view(r) for r in rows])

    async def get_negotiation(request: web.Request) -> web.Response:
        nid = request.match_info["id"]
        q = query_of(request, NegotiationWaitQuery)
        if q.wait_for:
            row = await negotiation_service.wait(nid, q.wait_for, q.timeout)
        else:
            row = await negotiation_service.get(nid)
        return _json(negotiation_view(row))

    async def terminate_negotiation(request: web.Request) -> web.Response:
        t = body_of(request, TerminateIn)
        return _json(
            negotiation_view(await negotiation_service.terminate(request.match_info["id"], t.reason))
        )

    async def accept_offer(request: web.Request) -> web.Response:
        return _json(negotiation_view(await negotiation_service.accept(request.match_info["id"])))

    async def counter_offer(request: web.Request) -> web.Response:
        c = body_of(request, CounterOfferIn)
        return _json(
            negotiation_view(await negotiation_service.counter_offer(request.match_info["id"], c.terms))
        )

    # -- transfers
    async def list_transfers(request: web.Request) -> web.Response:
        q = query_of(request, TransferListQuery)
        rows = await transfer_service.list_in(q.state, _process_page(q))
        return _json([transfer_view(r) for r in rows])

    async def get_transfer(request: web.Request) -> web.Response:
        return _json(transfer_view(await transfer_service.get(request.match_info["id"])))

    async def start_transfer(request: web.Request) -> web.Response:
        t = body_of(request, TransferIn)
        row = await transfer_service.start(t.agreement_id, t.format, purpose=t.purpose, stated=t.stated())
        return _json(transfer_view(row), 201)

    def transfer_action(action: str) -> Handler:
        async def handle(request: web.Request) -> web.Response:
            r = body_of(request, ReasonIn)
            row = await transfer_service.command(request.match_info["id"], action, r.reason)
            return _json(transfer_view(row))

        return handle

    async def refresh_transfer(request: web.Request) -> web.Response:
        return _json(transfer_view(await transfer_service.refresh(request.match_info["id"])))

    # -- pulls and the vault
    async def start_pull(request: web.Request) -> web.Response:
        pull_service.check()  # before the body: a connector without pulls has no such route
        p = body_of(request, PullIn)
        job = await pull_service.start(
            request.match_info["id"], out=p.out, purpose=p.purpose, complete=p.complete, stated=p.stated()
        )
        return _json(job.to_json(), 202)

    async def pull_status(request: web.Request) -> web.Response:
        pull_service.check()  # before the query, as start_pull
        q = query_of(request, PullWaitQuery)
        return _json((await pull_service.status(request.match_info["id"], q.wait)).to_json())

    async def register_copy(request: web.Request) -> web.Response:
        c = body_of(request, CopyIn)
        copy = await vault_service.register(c.path, c.transfer_id)
        return _json(
            {
                "path": copy.path,
                "agreementId": copy.agreement_id,
                "deleteAt": copy.delete_at,
                "sha256": copy.sha256,
            },
            201,
        )

    async def list_vault(request: web.Request) -> web.StreamResponse:
        return _json(await vault_service.items())

    async def get_vault_item(request: web.Request) -> web.StreamResponse:
        return _json(await vault_service.item(request.match_info["vid"]))

    async def read_vault_item(request: web.Request) -> web.StreamResponse:
        """One governed local use of a copy: decided on the agreement, duties fulfilled first."""
        vault_service.check_uses()  # before the query, as the other vault routes
        q = query_of(request, VaultUseQuery)
        given = {name: request.headers.get(h.name) or getattr(q, name) for name, h in STATED_HEADERS.items()}
        try:
            stated = pipeline.stated(**given)
        except PolicyError as exc:
            raise ApiError(400, f"a stated fact cannot be read: {exc}") from exc
        use = await vault_service.use(request.match_info["vid"], stated)
        return web.FileResponse(
            use.path, headers={"X-Use-Number": str(use.number), "Content-Type": "application/octet-stream"}
        )

    async def export_vault_item(request: web.Request) -> web.StreamResponse:
        """A copy leaves the vault as the agreement says: encrypted to the named recipient."""
        vault_service.check_exports()  # before the body, as the other vault routes
        e = body_of(request, VaultExportIn)
        decided = await vault_service.export(
            request.match_info["vid"], recipient_pem=e.recipient_certificate, plain=e.plain
        )
        headers = {
            "Content-Type": "application/octet-stream",
            "X-Export-Encrypted": "true" if decided.encrypted else "false",
        }
        if decided.next_policy is not None:
            named = str(decided.next_policy.get("@id", ""))
            headers["X-Next-Policy"] = (
                named if named.isascii() and named.isprintable() and (named) else "(in the envelope)"
            )
        if decided.note:
            headers["X-Export-Note"] = decided.note
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        pieces = decided.stream()
        while block := await asyncio.to_thread(_take, pieces, 1 << 20):
            await response.write(block)
        await response.write_eof()
        return response

    async def audit_timeline(request: web.Request) -> web.Response:
        """The connector's audit trail, oldest first (``kind`` prefix, ``since`` ISO time)."""
        timeline.check()  # before the query: a connector without a log has no such route
        q = query_of(request, AuditQuery)
        return _json([to_view(e) for e in timeline.entries(q.kind, q.since, _page(q))])

    async def openapi(request: web.Request) -> web.Response:
        return web.json_response(document)

    def transfer_command(action: str, what: str) -> Operation:
        return Operation(
            "POST",
            f"/api/transfers/{{id}}/{action}",
            transfer_action(action),
            f"{action}Transfer",
            what,
            "transfers",
            body=ReasonIn,
            body_optional=True,
            response=TransferView,
            errors={404: NO_TRANSFER, 409: NOT_NOW},
        )

    operations: list[Operation] = [
        Operation(
            "GET",
            "/api/openapi.json",
            openapi,
            "getOpenApi",
            "This document",
            "meta",
            public=True,
            uses_store=False,
        ),
        # assets
        Operation(
            "POST",
            "/api/assets",
            add_asset,
            "addAsset",
            "Add an asset",
            "assets",
            status=201,
            body=AssetIn,
            response=AssetView,
            errors={409: "An asset with this id exists"},
        ),
        Operation(
            "GET",
            "/api/assets",
            list_assets,
            "listAssets",
            "List assets (secrets masked)",
            "assets",
            query=PageQuery,
            response=list[AssetView],
        ),
        Operation(
            "GET",
            "/api/assets/{id}",
            get_asset,
            "getAsset",
            "Get an asset (secrets masked)",
            "assets",
            response=AssetView,
            errors={404: "No such asset"},
        ),
        Operation(
            "DELETE",
            "/api/assets/{id}",
            delete_asset,
            "deleteAsset",
            "Delete an asset",
            "assets",
            status=204,
            errors={404: "No such asset", 409: IN_USE},
        ),
        # policies
        Operation(
            "POST",
            "/api/policies",
            add_policy,
            "addPolicy",
            "Add a policy (a template, plain ODRL rules or JSON-LD)",
            "policies",
            status=201,
            body=PolicyIn,
            response=PolicyView,
            errors={409: "A policy with this id exists"},
        ),
        Operation(
            "GET",
            "/api/policies",
            list_policies,
            "listPolicies",
            "List policies",
            "policies",
            query=PageQuery,
            response=list[PolicyView],
        ),
        Operation(
            "GET",
            "/api/policies/{id}",
            get_policy,
            "getPolicy",
            "Get a policy",
            "policies",
            response=PolicyView,
            errors={404: "No such policy"},
        ),
        Operation(
            "DELETE",
            "/api/policies/{id}",
            delete_policy,
            "deletePolicy",
            "Delete a policy",
            "policies",
            status=204,
            errors={404: "No such policy", 409: IN_USE},
        ),
        # offers
        Operation(
            "POST",
            "/api/offers",
            add_offer,
            "addOffer",
            "Offer assets under an access and a contract policy",
            "offers",
            status=201,
            body=OfferIn,
            response=OfferView,
            errors={409: "An offer with this id exists"},
        ),
        Operation(
            "GET",
            "/api/offers",
            list_offers,
            "listOffers",
            "List offers",
            "offers",
            query=PageQuery,
            response=list[OfferView],
        ),
        Operation(
            "GET",
            "/api/offers/{id}",
            get_offer,
            "getOffer",
            "Get an offer",
            "offers",
            response=OfferView,
            errors={404: "No such offer"},
        ),
        Operation(
            "DELETE",
            "/api/offers/{id}",
            delete_offer,
            "deleteOffer",
            "Withdraw an offer",
            "offers",
            status=204,
            errors={404: "No such offer", 409: IN_USE},
        ),
        # a peer's catalog
        Operation(
            "POST",
            "/api/catalog",
            peer_catalog,
            "peerCatalog",
            "A peer's catalog, as this connector may see it",
            "catalog",
            body=CatalogIn,
            response=CatalogView,
            errors={502: PEER_FAILED},
        ),
        Operation(
            "POST",
            "/api/catalog/all",
            peer_catalog_all,
            "peerCatalogAll",
            "Every page of a peer's catalog as one (of a broker: the whole data space)",
            "catalog",
            body=CatalogIn,
            response=WholeCatalogView,
            errors={502: PEER_FAILED},
        ),
        # negotiations
        Operation(
            "POST",
            "/api/negotiations",
            start_negotiation,
            "startNegotiation",
            "Negotiate a peer's offer",
            "negotiations",
            status=201,
            body=NegotiationIn,
            response=NegotiationView,
            errors={404: "The peer offers no such offer to this connector", 502: PEER_FAILED},
        ),
        Operation(
            "GET",
            "/api/negotiations",
            list_negotiations,
            "listNegotiations",
            "List negotiations, oldest first (order=newest: newest first)",
            "negotiations",
            query=NegotiationListQuery,
            response=list[NegotiationView],
        ),
        Operation(
            "GET",
            "/api/negotiations/{id}",
            get_negotiation,
            "getNegotiation",
            "Get a negotiation; with waitFor, wait (up to timeout) for one of those states",
            "negotiations",
            query=NegotiationWaitQuery,
            response=NegotiationView,
            errors={404: NO_NEGOTIATION},
        ),
        Operation(
            "POST",
            "/api/negotiations/{id}/terminate",
            terminate_negotiation,
            "terminateNegotiation",
            "Terminate a negotiation",
            "negotiations",
            body=TerminateIn,
            response=NegotiationView,
            errors={404: NO_NEGOTIATION, 409: NOT_NOW},
        ),
        Operation(
            "POST",
            "/api/negotiations/{id}/accept",
            accept_offer,
            "acceptOffer",
            "Consumer: accept the provider's offer",
            "negotiations",
            response=NegotiationView,
            errors={404: NO_NEGOTIATION, 409: NOT_NOW},
        ),
        Operation(
            "POST",
            "/api/negotiations/{id}/counter-offer",
            counter_offer,
            "counterOffer",
            "Consumer: answer the provider's offer with other terms",
            "negotiations",
            body=CounterOfferIn,
            response=NegotiationView,
            errors={404: NO_NEGOTIATION, 409: NOT_NOW},
        ),
        # agreements
        Operation(
            "GET",
            "/api/agreements",
            list_agreements,
            "listAgreements",
            "List agreements",
            "agreements",
            query=PageQuery,
            response=list[AgreementView],
        ),
        Operation(
            "GET",
            "/api/agreements/{id}",
            get_agreement,
            "getAgreement",
            "Get an agreement",
            "agreements",
            response=AgreementView,
            errors={404: "No such agreement"},
        ),
        Operation(
            "POST",
            "/api/agreements/{id}/retire",
            retire_agreement,
            "retireAgreement",
            "Provider: retire an agreement (its running transfers are terminated, new ones refused)",
            "agreements",
            body=RetireIn,
            response=AgreementView,
            errors={404: "No such agreement of this provider"},
        ),
        # provider-held facts and payments
        Operation(
            "GET",
            "/api/facts",
            list_facts,
            "listFacts",
            "The facts this provider holds now (state, active events)",
            "facts",
            response=list[FactView],
        ),
        Operation(
            "PUT",
            "/api/facts/{name}",
            set_fact,
            "setFact",
            "Set (replace) a held fact: an operand such as idsc:STATE or odrl:event",
            "facts",
            body=FactIn,
            response=FactView,
            errors={404: "No such operand (no policy can test it)"},
            path_params={"name": "the operand (a CURIE, an IDS code or the full IRI)"},
        ),
        Operation(
            "DELETE",
            "/api/facts/{name}",
            unset_fact,
            "unsetFact",
            "Unset a held fact",
            "facts",
            status=204,
            errors={404: "No such fact"},
            path_params={"name": "the operand (a CURIE, an IDS code or the full IRI)"},
        ),
        Operation(
            "GET",
            "/api/payments",
            list_payments,
            "listPayments",
            "Payments received, oldest first",
            "payments",
            query=PaymentQuery,
            response=list[PaymentView],
        ),
        Operation(
            "POST",
            "/api/payments",
            record_payment,
            "recordPayment",
            "Provider: record a payment received under an agreement",
            "payments",
            status=201,
            body=PaymentIn,
            response=PaymentView,
            errors={404: "No such agreement of this provider"},
        ),
        # transfers
        Operation(
            "POST",
            "/api/transfers",
            start_transfer,
            "startTransfer",
            "Request a transfer under an agreement",
            "transfers",
            status=201,
            body=TransferIn,
            response=TransferView,
            errors={
                404: "No such agreement of this consumer",
                409: "The agreement is not finalized, or this connector takes no pushes",
            },
        ),
        Operation(
            "GET",
            "/api/transfers",
            list_transfers,
            "listTransfers",
            "List transfers, oldest first (order=newest: newest first)",
            "transfers",
            query=TransferListQuery,
            response=list[TransferView],
        ),
        Operation(
            "GET",
            "/api/transfers/{id}",
            get_transfer,
            "getTransfer",
            "Get a transfer (the consumer sees the endpoint and token to pull from)",
            "transfers",
            response=TransferView,
            errors={404: NO_TRANSFER},
        ),
        transfer_command("suspend", "Suspend a transfer"),
        transfer_command("resume", "Resume a suspended transfer"),
        transfer_command("complete", "Complete a transfer"),
        transfer_command("terminate", "Terminate a transfer"),
        Operation(
            "POST",
            "/api/transfers/{id}/refresh",
            refresh_transfer,
            "refreshTransfer",
            "Consumer: exchange the pull's refresh token for a new access token",
            "transfers",
            response=TransferView,
            errors={
                404: NO_TRANSFER,
                409: "The transfer has no refresh token or has ended",
                502: "The provider refused the refresh or could not be reached",
            },
        ),
        # pulls and the vault (consumer)
        Operation(
            "POST",
            "/api/transfers/{id}/pull",
            start_pull,
            "startPull",
            "Consumer: pull a STARTED transfer's data into the vault (or `out`), verify the "
            "provider's receipts and log them",
            "pulls",
            status=202,
            body=PullIn,
            body_optional=True,
            response=PullJobView,
            errors={
                404: NO_TRANSFER + ", or this connector runs no pulls",
                409: "The transfer is not a STARTED pull, or is being pulled already",
            },
        ),
        Operation(
            "GET",
            "/api/transfers/{id}/pull",
            pull_status,
            "pullStatus",
            "Consumer: the pull's progress and outcome (`wait` seconds for its end)",
            "pulls",
            query=PullWaitQuery,
            response=PullJobView,
            errors={404: "No pull of this transfer, or this connector runs no pulls"},
        ),
        Operation(
            "POST",
            "/api/vault",
            register_copy,
            "registerCopy",
            "Consumer: register a local copy (its delete duty is enforced)",
            "vault",
            status=201,
            body=CopyIn,
            response=VaultCopyView,
            errors={404: NO_TRANSFER + ", or this connector keeps no vault"},
        ),
        Operation(
            "GET",
            "/api/vault",
            list_vault,
            "listVault",
            "Consumer: the local copies held under agreements",
            "vault",
            response=list[VaultItemView],
            errors={404: NO_VAULT},
        ),
        Operation(
            "GET",
            "/api/vault/{vid}",
            get_vault_item,
            "getVaultItem",
            "One local copy: its agreement, duties and local use count",
            "vault",
            response=VaultItemView,
            errors={404: "No such copy, " + NO_VAULT.lower()},
            path_params={"vid": "the vault item's id"},
        ),
        # no HEAD: a use is counted and reported only when the data is served
        Operation(
            "GET",
            "/api/vault/{vid}/data",
            read_vault_item,
            "useVaultItem",
            "Consumer: one governed local use of a copy",
            "vault",
            query=VaultUseQuery,
            headers=tuple(STATED_HEADERS.values()),
            media_type="application/octet-stream",
            description="The agreement decides, its duties (log, inform the provider) are "
            "fulfilled first, and the use counts (`X-Use-Number`).",
            errors={
                403: "The agreement denies this use",
                404: "No such copy, " + NO_VAULT.lower(),
                410: "The copy was deleted under its agreement's duty",
            },
            path_params={"vid": "the vault item's id"},
            allow_head=False,
        ),
        Operation(
            "POST",
            "/api/vault/{vid}/export",
            export_vault_item,
            "exportVaultItem",
            "Consumer: a copy leaves the vault, as its agreement says",
            "vault",
            body=VaultExportIn,
            media_type="application/octet-stream",
            description="Decided on the agreement's `distribute` permission: the copy "
            "leaves encrypted to the recipient's certificate "
            "(connector.usage.envelope), with the next policy when the "
            "agreement requires one, and is logged (`vault.distributed`).",
            errors={
                403: "The agreement does not permit this distribution",
                404: "No such copy, " + NO_VAULT.lower(),
                409: "The copy on disk is not the one registered",
                410: "The copy was deleted under its agreement's duty",
            },
            path_params={"vid": "the vault item's id"},
        ),
        # audit
        Operation(
            "GET",
            "/api/audit",
            audit_timeline,
            "auditTimeline",
            "The audit trail, oldest first",
            "audit",
            query=AuditQuery,
            response=list[AuditEntryView],
            errors={404: "This connector keeps no audit log"},
        ),
        # health, readiness, metrics (connector.http.observe)
        *observe,
    ]
    document.update(
        openapi_document(
            operations, title="Connector management API", version=API_VERSION, description=API_DESCRIPTION
        )
    )
    public = public_paths(operations)
    key = api_key.encode()

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            if ui is not None and ui in request.match_info.apps:
                return await handler(request)  # the dashboard's own session check
            # two keys: refused (one_header gives "", which never matches)
            if request.path not in public and not same_secret(one_header(request, "X-Api-Key"), key):
                raise ApiError(401, "missing or wrong X-Api-Key")
            with translated():  # a control-plane ProtocolError no service translated: typed
                return await handler(request)
        except ApiError as exc:
            return error_response(exc.status, exc.message, exc.details, exc.headers)
        except ServiceError as exc:
            fault = service_fault(exc)
            return error_response(fault.status, fault.reason, list(fault.details), fault.headers)
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
    if ui is not None:
        app.add_subapp("/ui", ui)
    return app
