"""Pydantic models of every DSP 2025-1 message and response body (catalog, contract negotiation,
transfer process, version discovery), read from and written to the compacted JSON-LD form of the
DSP context exactly as the official schemas and examples have it.

``Model.parse(data)`` takes the decoded JSON of the wire and raises ``ProtocolError`` (status
400) naming the offending field; ``model.to_wire()`` gives the JSON to send, which validates
against the official schema. Only the compacted form the specification mandates is read:
``"@type": "ContractRequestMessage"``, not ``"dspace:ContractRequestMessage"`` nor the full IRI,
and ``@context`` as an array holding the DSP context.

ODRL offers and agreements stay plain JSON dicts in the DSP form (``"permission": [{"action":
"use", ...}]``), checked here for the shape the schema requires; ``offer_policy`` and
``agreement_policy`` turn them into engine policies.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, Self
from urllib.parse import urljoin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from rdflib import RDF, URIRef
from rdflib.term import Node

from connector.http.outbound import OutboundRefused, parse_url
from connector.odrl.model import Policy
from connector.odrl.parse import (
    JSONLD_BASE,
    PolicyError,
    find_policy_nodes,
    jsonld_to_graph,
    policy_from_graph,
)
from connector.protocol.errors import ProtocolError
from connector.protocol.ids import message_id_problems
from connector.vocab import ODRL
from connector.wireformat import DSP_CONTEXT_URL, DSP_ODRL_PROFILE_URL

CONTEXT: list[str] = [DSP_CONTEXT_URL]
PULL, PUSH = "HttpData-PULL", "HttpData-PUSH"

OPERATORS = frozenset(
    {
        "eq",
        "gt",
        "gteq",
        "lteq",
        "hasPart",
        "isA",
        "isAllOf",
        "isAnyOf",
        "isNoneOf",
        "isPartOf",
        "lt",
        "term-lteq",
        "neq",
    }
)
LOGICAL = ("and", "andSequence", "or", "xone")
MAX_POLICY_DEPTH = 32
# xsd:dateTime as the Agreement schema's timestamp pattern has it
_TIMESTAMP = re.compile(
    r"-?([1-9][0-9]{3,}|0[0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T(([01][0-9]|2[0-3]):"
    r"[0-5][0-9]:[0-5][0-9](\.[0-9]+)?|(24:00:00(\.0+)?))(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))?"
)


# ----------------------------------------------------------------------------- ODRL shape


def _fail(where: str, msg: str) -> None:
    raise ValueError(f"{where}: {msg}" if where else msg)


def _at(where: str, key: str) -> str:
    return f"{where}.{key}" if where and not key.startswith("[") else f"{where}{key}"


def _check_constraint(c: Any, where: str, depth: int) -> None:
    if depth > MAX_POLICY_DEPTH:
        _fail(where, f"constraints nested deeper than {MAX_POLICY_DEPTH} levels")
    if not isinstance(c, dict):
        _fail(where, "a constraint must be a JSON object")
    logical = [k for k in LOGICAL if k in c]
    atomic = [k for k in ("leftOperand", "operator", "rightOperand") if k in c]
    if logical and atomic:
        _fail(where, "a constraint is either logical (and/or/xone/andSequence) or atomic, not both")
    if len(logical) > 1:
        _fail(where, f"a logical constraint has one operator, not {', '.join(logical)}")
    if logical:
        operands = c[logical[0]]
        if not isinstance(operands, list):
            _fail(_at(where, logical[0]), "must be an array of constraints")
        for i, o in enumerate(operands):
            _check_constraint(o, _at(where, f"{logical[0]}[{i}]"), depth + 1)
        return
    missing = [k for k in ("leftOperand", "operator", "rightOperand") if k not in c]
    if missing:
        _fail(where, f"missing {', '.join(missing)}")
    if not isinstance(c["leftOperand"], str):
        _fail(_at(where, "leftOperand"), "must be a string")
    if c["operator"] not in OPERATORS:
        _fail(_at(where, "operator"), f"{c['operator']!r} is not an ODRL operator of the DSP profile")
    if not isinstance(c["rightOperand"], (str, dict, list)):
        _fail(
            _at(where, "rightOperand"),
            "must be a string, an object or an array (write numbers as "
            'strings or {"@value": ..., "@type": ...})',
        )


# a nextPolicy duty names its target: the policy that third parties get (ODRL 2.2, 2.6.3)
_NEXT_POLICY = frozenset(
    {
        "nextPolicy",
        "odrl:nextPolicy",
        "http://www.w3.org/ns/odrl/2/nextPolicy",
        "idsc:NEXT_POLICY",
        "https://w3id.org/idsa/code/NEXT_POLICY",
    }
)


def _check_rule(r: Any, where: str, depth: int = 0) -> None:
    if not isinstance(r, dict):
        _fail(where, "a rule must be a JSON object")
    if not isinstance(r.get("action"), str):
        _fail(_at(where, "action"), 'required, a string (e.g. "use")')
    if "target" in r and not (depth > 0 and r["action"] in _NEXT_POLICY):
        _fail(_at(where, "target"), "rules must not name a target; the policy's target applies")
    constraints = r.get("constraint", [])
    if not isinstance(constraints, list):
        _fail(_at(where, "constraint"), "must be an array")
    for i, c in enumerate(constraints):
        _check_constraint(c, _at(where, f"constraint[{i}]"), depth)
    duties = r.get("duty", [])
    if not isinstance(duties, list):
        _fail(_at(where, "duty"), "must be an array")
    for i, d in enumerate(duties):
        _check_rule(d, _at(where, f"duty[{i}]"), depth + 1)


def check_policy(
    p: Any, kind: Literal["Offer", "Agreement"], *, target: bool | None, where: str = "policy"
) -> dict[str, Any]:
    """Check an ODRL policy dict in the DSP form; ``target`` True = required, False = forbidden."""
    if not isinstance(p, dict):
        _fail(where, f"must be a JSON object (an ODRL {kind})")
    if p.get("@type") != kind:
        _fail(_at(where, "@type"), f"must be {kind!r}, got {p.get('@type')!r}")
    if not isinstance(p.get("@id"), str) or not p["@id"]:
        _fail(_at(where, "@id"), "required, a string (a URI such as urn:uuid:...)")
    if target is True and not isinstance(p.get("target"), str):
        _fail(_at(where, "target"), "required, the dataset id as a string")
    if target is False and "target" in p:
        _fail(_at(where, "target"), "an offer inside a dataset must not name a target")
    profile = p.get("profile")
    if profile is not None and not (
        isinstance(profile, str) or (isinstance(profile, list) and all(isinstance(x, str) for x in profile))
    ):
        _fail(_at(where, "profile"), "must be a string or an array of strings")
    for key in ("permission", "prohibition", "obligation"):
        if key in p:
            rules = p[key]
            if not isinstance(rules, list) or not rules:
                _fail(_at(where, key), "must be a non-empty array")
            for i, r in enumerate(rules):
                _check_rule(r, _at(where, f"{key}[{i}]"))
    if "permission" not in p and "prohibition" not in p:
        _fail(where, "needs a permission or a prohibition")
    if kind == "Agreement":
        for key in ("assigner", "assignee"):
            if not isinstance(p.get(key), str):
                _fail(_at(where, key), "required, a participant id as a string")
        ts = p.get("timestamp")
        if not isinstance(ts, str) or not _TIMESTAMP.fullmatch(ts):
            _fail(_at(where, "timestamp"), "required, an xsd:dateTime such as 2025-01-01T00:00:00Z")
    checked: dict[str, Any] = p
    return checked


# ----------------------------------------------------------------------------- models


def _format_errors(cls_name: str, exc: ValidationError) -> list[str]:
    out = []
    for e in exc.errors(include_url=False):
        loc = ".".join(str(x) for x in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        out.append(f"{cls_name}.{loc}: {msg}" if loc else f"{cls_name}: {msg}")
    return out or [f"{cls_name}: invalid"]


class DspModel(BaseModel):
    """Base of every DSP body: strict types, camelCase on the wire, immutable."""

    model_config = ConfigDict(
        validate_by_name=True, validate_by_alias=True, frozen=True, strict=True, extra="ignore"
    )
    TYPE: ClassVar[str] = ""
    WITH_CONTEXT: ClassVar[bool] = True  # a top-level JSON-LD body carries the DSP @context
    EMPTY_PIDS: ClassVar[bool] = False  # an error body names the processes it knows, others ""
    TYPE_REQUIRED: ClassVar[bool] = True  # its schema requires @type (all top-level bodies but Dataset)

    @field_validator("type_", mode="before", check_fields=False)
    @classmethod
    def _compact_type(cls, v: Any) -> Any:
        if (
            isinstance(v, str)
            and v != cls.TYPE
            and v.endswith(cls.TYPE)
            and v[: -len(cls.TYPE)][-1:] in (":", "/", "#")
        ):
            raise ValueError(f"expected the compacted term {cls.TYPE!r} of the DSP 2025-1 context, not {v!r}")
        return v

    @classmethod
    def parse(cls, data: Any) -> Self:
        """The model of a decoded JSON body; ``ProtocolError`` (400) naming the bad field."""
        name = cls.TYPE or cls.__name__
        if not isinstance(data, dict):
            raise ProtocolError(400, "400", [f"{name}: expected a JSON object, got {type(data).__name__}"])
        if cls.WITH_CONTEXT:
            if cls.TYPE_REQUIRED and "@type" not in data:  # even where the endpoint implies it
                raise ProtocolError(400, "400", [f"{name}.@type: required, {cls.TYPE!r}"])
            ctx = data.get("@context")
            if (
                not isinstance(ctx, list)
                or DSP_CONTEXT_URL not in ctx
                or not all(isinstance(c, str) for c in ctx)
            ):
                raise ProtocolError(
                    400,
                    "400",
                    [
                        f"{name}.@context: must be an array of strings containing {DSP_CONTEXT_URL!r}, "
                        f"got {json.dumps(ctx)[:200]}"
                    ],
                )
        try:
            # the wire uses the DSP names only (Python code may construct with field names)
            message = cls.model_validate(data, by_alias=True, by_name=False)
        except ValidationError as exc:
            raise ProtocolError(400, "400", _format_errors(name, exc)) from exc
        problems = message_id_problems(name, message, empty_pids=cls.EMPTY_PIDS)
        if problems:
            raise ProtocolError(400, "400", problems)
        return message

    def to_json(self) -> dict[str, Any]:
        """The compacted JSON of this node, without @context (for nesting)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def to_wire(self) -> dict[str, Any]:
        """The compacted JSON-LD body to send (with the DSP @context where the schema wants it)."""
        body = self.to_json()
        return {"@context": list(CONTEXT), **body} if self.WITH_CONTEXT else body

    def fingerprint(self) -> str:
        """A digest of the message's content: equal for a retried identical message."""
        canon = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canon.encode("utf-8")).hexdigest()[:32]


def _callback_address(v: str) -> str:
    """An absolute http(s) base URL with a host, without credentials, query or fragment, of
    bounded length; whether this connector may call it is decided on receipt (the outbound
    policy: addresses, and https unless plain HTTP is allowed)."""
    try:
        parse_url(v, base=True)
    except OutboundRefused as exc:
        raise ValueError(exc.reason) from None
    return v


def _reasons(v: Any) -> Any:
    if v is not None and (not isinstance(v, list) or not v):
        raise ValueError("must be a non-empty array")
    return v


# --- catalog ---------------------------------------------------------------------------------


class CatalogRequestMessage(DspModel):
    TYPE: ClassVar[str] = "CatalogRequestMessage"
    type_: Literal["CatalogRequestMessage"] = Field(
        default="CatalogRequestMessage", validation_alias="@type", serialization_alias="@type"
    )
    filter: list[Any] | None = None


class DatasetRequestMessage(DspModel):
    TYPE: ClassVar[str] = "DatasetRequestMessage"
    type_: Literal["DatasetRequestMessage"] = Field(
        default="DatasetRequestMessage", validation_alias="@type", serialization_alias="@type"
    )
    dataset: str


class DataService(DspModel):
    TYPE: ClassVar[str] = "DataService"
    WITH_CONTEXT: ClassVar[bool] = False
    id: str = Field(validation_alias="@id", serialization_alias="@id")
    type_: Literal["DataService"] = Field(
        default="DataService", validation_alias="@type", serialization_alias="@type"
    )
    endpoint_url: str = Field(validation_alias="endpointURL", serialization_alias="endpointURL")
    endpoint_description: str | None = Field(
        default=None, validation_alias="endpointDescription", serialization_alias="endpointDescription"
    )


def _offers(v: Any) -> Any:
    if v is None:
        return v
    if not isinstance(v, list) or not v:
        raise ValueError("must be a non-empty array of offers")
    for i, o in enumerate(v):
        check_policy(o, "Offer", target=False, where=f"[{i}]")
    return v


class Distribution(DspModel):
    TYPE: ClassVar[str] = "Distribution"
    WITH_CONTEXT: ClassVar[bool] = False
    type_: Literal["Distribution"] = Field(
        default="Distribution", validation_alias="@type", serialization_alias="@type"
    )
    format: str
    access_service: str | DataService = Field(
        validation_alias="accessService", serialization_alias="accessService", union_mode="left_to_right"
    )
    has_policy: list[dict[str, Any]] | None = Field(
        default=None, validation_alias="hasPolicy", serialization_alias="hasPolicy"
    )

    @field_validator("has_policy")
    @classmethod
    def _check_offers(cls, v: Any) -> Any:
        return _offers(v)


class Dataset(DspModel):
    """A dataset with the offers the requester may negotiate (the single-dataset response)."""

    TYPE: ClassVar[str] = "Dataset"
    TYPE_REQUIRED: ClassVar[bool] = False
    id: str = Field(validation_alias="@id", serialization_alias="@id")
    type_: Literal["Dataset"] = Field(
        default="Dataset", validation_alias="@type", serialization_alias="@type"
    )
    title: str | None = Field(default=None, validation_alias="dct:title", serialization_alias="dct:title")
    description: str | None = Field(
        default=None, validation_alias="dct:description", serialization_alias="dct:description"
    )
    keyword: list[str] | None = Field(
        default=None, validation_alias="dcat:keyword", serialization_alias="dcat:keyword"
    )
    has_policy: list[dict[str, Any]] = Field(validation_alias="hasPolicy", serialization_alias="hasPolicy")
    distribution: list[Distribution]

    @field_validator("has_policy")
    @classmethod
    def _check_offers(cls, v: Any) -> Any:
        return _offers(v)

    @field_validator("distribution")
    @classmethod
    def _non_empty(cls, v: list[Distribution]) -> list[Distribution]:
        if not v:
            raise ValueError("must be a non-empty array")
        return v


class Catalog(DspModel):
    """A (possibly nested) DCAT catalog; ``participant_id`` is required at the root."""

    TYPE: ClassVar[str] = "Catalog"
    id: str = Field(validation_alias="@id", serialization_alias="@id")
    type_: Literal["Catalog"] = Field(
        default="Catalog", validation_alias="@type", serialization_alias="@type"
    )
    participant_id: str | None = Field(
        default=None, validation_alias="participantId", serialization_alias="participantId"
    )
    title: str | None = Field(default=None, validation_alias="dct:title", serialization_alias="dct:title")
    description: str | None = Field(
        default=None, validation_alias="dct:description", serialization_alias="dct:description"
    )
    dataset: list[Dataset] | None = None
    catalog: list[Catalog] | None = None
    service: list[DataService] | None = None
    distribution: list[Distribution] | None = None

    @field_validator("dataset", "catalog", "service", "distribution")
    @classmethod
    def _non_empty(cls, v: Any) -> Any:
        if v is not None and not v:
            raise ValueError("must be omitted or a non-empty array")
        return v

    @model_validator(mode="before")
    @classmethod
    def _no_policy(cls, data: Any) -> Any:
        if isinstance(data, dict) and "hasPolicy" in data:
            raise ValueError("a catalog has no hasPolicy (offers belong to its datasets)")
        return data

    @classmethod
    def parse(cls, data: Any) -> Self:
        cat = super().parse(data)
        if cat.participant_id is None:
            raise ProtocolError(400, "400", ["Catalog.participantId: required on the root catalog"])
        return cat


class CatalogError(DspModel):
    TYPE: ClassVar[str] = "CatalogError"
    type_: Literal["CatalogError"] = Field(
        default="CatalogError", validation_alias="@type", serialization_alias="@type"
    )
    code: str | None = None
    reason: list[Any] | None = None


# --- contract negotiation ---------------------------------------------------------------------


class ContractRequestMessage(DspModel):
    """Initial (no ``providerPid``, with ``callbackAddress``) or a counter-request."""

    TYPE: ClassVar[str] = "ContractRequestMessage"
    type_: Literal["ContractRequestMessage"] = Field(
        default="ContractRequestMessage", validation_alias="@type", serialization_alias="@type"
    )
    provider_pid: str | None = Field(
        default=None, validation_alias="providerPid", serialization_alias="providerPid"
    )
    consumer_pid: str = Field(validation_alias="consumerPid", serialization_alias="consumerPid")
    offer: dict[str, Any]
    callback_address: str | None = Field(
        default=None, validation_alias="callbackAddress", serialization_alias="callbackAddress"
    )

    @field_validator("callback_address")
    @classmethod
    def _callback(cls, v: str | None) -> str | None:
        return None if v is None else _callback_address(v)

    @field_validator("offer")
    @classmethod
    def _offer(cls, v: Any) -> Any:
        return check_policy(v, "Offer", target=True, where="")

    @model_validator(mode="after")
    def _one_of(self) -> Self:
        # the schema's oneOf: an initial request has a callbackAddress, a later one a providerPid
        if (self.provider_pid is None) == (self.callback_address is None):
            raise ValueError(
                "exactly one of providerPid (a request in an existing negotiation) and "
                "callbackAddress (the initial request) must be present"
            )
        return self

    @property
    def is_initial(self) -> bool:
        return self.provider_pid is None


class ContractOfferMessage(DspModel):
    """Initial (no ``consumerPid``, with ``callbackAddress``) or a counter-offer."""

    TYPE: ClassVar[str] = "ContractOfferMessage"
    type_: Literal["ContractOfferMessage"] = Field(
        default="ContractOfferMessage", validation_alias="@type", serialization_alias="@type"
    )
    provider_pid: str = Field(validation_alias="providerPid", serialization_alias="providerPid")
    consumer_pid: str | None = Field(
        default=None, validation_alias="consumerPid", serialization_alias="consumerPid"
    )
    offer: dict[str, Any]
    callback_address: str | None = Field(
        default=None, validation_alias="callbackAddress", serialization_alias="callbackAddress"
    )

    @field_validator("callback_address")
    @classmethod
    def _callback(cls, v: str | None) -> str | None:
        return None if v is None else _callback_address(v)

    @field_validator("offer")
    @classmethod
    def _offer(cls, v: Any) -> Any:
        return check_policy(v, "Offer", target=True, where="")

    @model_validator(mode="after")
    def _one_of(self) -> Self:
        if (self.consumer_pid is None) == (self.callback_address is None):
            raise ValueError(
                "exactly one of consumerPid (an offer in an existing negotiation) and "
                "callbackAddress (the initial offer) must be present"
            )
        return self

    @property
    def is_initial(self) -> bool:
        return self.consumer_pid is None


class ContractAgreementMessage(DspModel):
    TYPE: ClassVar[str] = "ContractAgreementMessage"
    type_: Literal["ContractAgreementMessage"] = Field(
        default="ContractAgreementMessage", validation_alias="@type", serialization_alias="@type"
    )
    provider_pid: str = Field(validation_alias="providerPid", serialization_alias="providerPid")
    consumer_pid: str = Field(validation_alias="consumerPid", serialization_alias="consumerPid")
    agreement: dict[str, Any]

    @field_validator("agreement")
    @classmethod
    def _agreement(cls, v: Any) -> Any:
        return check_policy(v, "Agreement", target=True, where="")


class ContractAgreementVerificationMessage(DspModel):
    TYPE: ClassVar[str] = "ContractAgreementVerificationMessage"
    type_: Literal["ContractAgreementVerificationMessage"] = Field(
        default="ContractAgreementVerificationMessage", validation_alias="@type", serialization_alias="@type"
    )
    provider_pid: str = Field(validation_alias="providerPid", serialization_alias="providerPid")
    consumer_pid: str = Field(validation_alias="consumerPid", serialization_alias="consumerPid")


class ContractNegotiationEventMessage(DspModel):
    TYPE: ClassVar[str] = "ContractNegotiationEventMessage"
    type_: Literal["ContractNegotiationEventMessage"] = Field(
        default="ContractNegotiationEventMessage", validation_alias="@type", serialization_alias="@type"
    )
    provider_pid: str = Field(validation_alias="providerPid", serialization_alias="providerPid")
    consumer_pid: str = Field(validation_alias="consumerPid", serialization_alias="consumerPid")
    event_type: Literal["ACCEPTED", "FINALIZED"] = Field(
        validation_alias="eventType", serialization_alias="eventType"
    )


class ContractNegotiationTerminationMessage(DspModel):
    TYPE: ClassVar[str] = "ContractNegotiationTerminationMessage"
    type_: Literal["ContractNegotiationTerminationMessage"] = Field(
        default="ContractNegotiationTerminationMessage", validation_alias="@type", serialization_alias="@type"
    )
    provider_pid: str = Field(validation_alias="providerPid", serialization_alias="providerPid")
    consumer_pid: str = Field(validation_alias="consumerPid", serialization_alias="consumerPid")
    code: str | None = None
    reason: list[Any] | None = None

    @field_validator("reason")
    @classmethod
    def _check_reason(cls, v: Any) -> Any:
        return _reasons(v)


NegotiationStateName = Literal[
    "REQUESTED", "OFFERED", "ACCEPTED", "AGREED", "VERIFIED", "FINALIZED", "TERMINATED"
]


class ContractNegotiation(DspModel):
    """The ACK body: the negotiation's DSP state."""

    TYPE: ClassVar[str] = "ContractNegotiation"
    type_: Literal["ContractNegotiation"] = Field(
        default="ContractNegotiation", validation_alias="@type", serialization_alias="@type"
    )
    provider_pid: str = Field(validation_alias="providerPid", serialization_alias="providerPid")
    consumer_pid: str = Field(validation_alias="consumerPid", serialization_alias="consumerPid")
    state: NegotiationStateName


class ContractNegotiationError(DspModel):
    TYPE: ClassVar[str] = "ContractNegotiationError"
    EMPTY_PIDS: ClassVar[bool] = True
    type_: Literal["ContractNegotiationError"] = Field(
        default="ContractNegotiationError", validation_alias="@type", serialization_alias="@type"
    )
    provider_pid: str = Field(validation_alias="providerPid", serialization_alias="providerPid")
    consumer_pid: str = Field(validation_alias="consumerPid", serialization_alias="consumerPid")
    code: str | None = None
    reason: list[Any] | None = None

    @field_validator("reason")
    @classmethod
    def _check_reason(cls, v: Any) -> Any:
        return _reasons(v)


# --- transfer process -------------------------------------------------------------------------


class EndpointProperty(DspModel):
    TYPE: ClassVar[str] = "EndpointProperty"
    WITH_CONTEXT: ClassVar[bool] = False
    type_: Literal["EndpointProperty"] = Field(
        default="EndpointProperty", validation_alias="@type", serialization_alias="@type"
    )
    name: str
    value: str


class DataAddress(DspModel):
    """Where and how to reach the data (nested in transfer messages: no @context of its own)."""

    TYPE: ClassVar[str] = "DataAddress"
    WITH_CONTEXT: ClassVar[bool] = False
    type_: Literal["DataAddress"] = Field(
        default="DataAddress", validation_alias="@type", serialization_alias="@type"
    )
    endpoint_type: str = Field(validation_alias="endpointType", serialization_alias="endpointType")
    endpoint: str | None = None
    endpoint_properties: list[EndpointProperty] | None = Field(
        default=None, validation_alias="endpointProperties", serialization_alias="endpointProperties"
    )

    @field_validator("endpoint_properties")
    @classmethod
    def _non_empty(cls, v: Any) -> Any:
        if v is not None and not v:
            raise ValueError("must be omitted or a non-empty array")
        return v

    def property(self, name: str) -> str | None:
        return next((p.value for p in self.endpoint_properties or () if p.name == name), None)


class TransferRequestMessage(DspModel):
    TYPE: ClassVar[str] = "TransferRequestMessage"
    type_: Literal["TransferRequestMessage"] = Field(
        default="TransferRequestMessage", validation_alias="@type", serialization_alias="@type"
    )
    consumer_pid: str = Field(validation_alias="consumerPid", serialization_alias="consumerPid")
    agreement_id: str = Field(validation_alias="agreementId", serialization_alias="agreementId")
    format: str
    data_address: DataAddress | None = Field(
        default=None, validation_alias="dataAddress", serialization_alias="dataAddress"
    )
    callback_address: str = Field(validation_alias="callbackAddress", serialization_alias="callbackAddress")

    @field_validator("callback_address")
    @classmethod
    def _callback(cls, v: str) -> str:
        return _callback_address(v)


class TransferStartMessage(DspModel):
    TYPE: ClassVar[str] = "TransferStartMessage"
    type_: Literal["TransferStartMessage"] = Field(
        default="TransferStartMessage", validation_alias="@type", serialization_alias="@type"
    )
    provider_pid: str = Field(validation_alias="providerPid", serialization_alias="providerPid")
    consumer_pid: str = Field(validation_alias="consumerPid", serialization_alias="consumerPid")
    data_address: DataAddress | None = Field(
        default=None, validation_alias="dataAddress", serialization_alias="dataAddress"
    )


class TransferSuspensionMessage(DspModel):
    TYPE: ClassVar[str] = "TransferSuspensionMessage"
    type_: Literal["TransferSuspensionMessage"] = Field(
        default="TransferSuspensionMessage", validation_alias="@type", serialization_alias="@type"
    )
    provider_pid: str = Field(validation_alias="providerPid", serialization_alias="providerPid")
    consumer_pid: str = Field(validation_alias="consumerPid", serialization_alias="consumerPid")
    code: str | None = None
    reason: list[Any] | None = None

    @field_validator("reason")
    @classmethod
    def _check_reason(cls, v: Any) -> Any:
        return _reasons(v)


class TransferCompletionMessage(DspModel):
    TYPE: ClassVar[str] = "TransferCompletionMessage"
    type_: Literal["TransferCompletionMessage"] = Field(
        default="TransferCompletionMessage", validation_alias="@type", serialization_alias="@type"
    )
    provider_pid: str = Field(validation_alias="providerPid", serialization_alias="providerPid")
    consumer_pid: str = Field(validation_alias="consumerPid", serialization_alias="consumerPid")


class TransferTerminationMessage(DspModel):
    TYPE: ClassVar[str] = "TransferTerminationMessage"
    type_: Literal["TransferTerminationMessage"] = Field(
        default="TransferTerminationMessage", validation_alias="@type", serialization_alias="@type"
    )
    provider_pid: str = Field(validation_alias="providerPid", serialization_alias="providerPid")
    consumer_pid: str = Field(validation_alias="consumerPid", serialization_alias="consumerPid")
    code: str | None = None
    reason: list[Any] | None = None

    @field_validator("reason")
    @classmethod
    def _check_reason(cls, v: Any) -> Any:
        return _reasons(v)


TransferStateName = Literal["REQUESTED", "STARTED", "TERMINATED", "COMPLETED", "SUSPENDED"]


class TransferProcess(DspModel):
    TYPE: ClassVar[str] = "TransferProcess"
    type_: Literal["TransferProcess"] = Field(
        default="TransferProcess", validation_alias="@type", serialization_alias="@type"
    )
    provider_pid: str = Field(validation_alias="providerPid", serialization_alias="providerPid")
    consumer_pid: str = Field(validation_alias="consumerPid", serialization_alias="consumerPid")
    state: TransferStateName


class TransferError(DspModel):
    TYPE: ClassVar[str] = "TransferError"
    EMPTY_PIDS: ClassVar[bool] = True
    type_: Literal["TransferError"] = Field(
        default="TransferError", validation_alias="@type", serialization_alias="@type"
    )
    provider_pid: str = Field(validation_alias="providerPid", serialization_alias="providerPid")
    consumer_pid: str = Field(validation_alias="consumerPid", serialization_alias="consumerPid")
    code: str | None = None
    reason: list[Any] | None = None

    @field_validator("reason")
    @classmethod
    def _check_reason(cls, v: Any) -> Any:
        return _reasons(v)


# --- version discovery ------------------------------------------------------------------------


class VersionAuth(DspModel):
    WITH_CONTEXT: ClassVar[bool] = False
    protocol: str
    version: str
    profile: list[str] | None = None


class Version(DspModel):
    WITH_CONTEXT: ClassVar[bool] = False
    version: str
    path: str
    binding: Literal["HTTPS"] = "HTTPS"
    identifier_type: str | None = Field(
        default=None, validation_alias="identifierType", serialization_alias="identifierType"
    )
    service_id: str | None = Field(
        default=None, validation_alias="serviceId", serialization_alias="serviceId"
    )
    auth: VersionAuth | None = None


class VersionResponse(DspModel):
    """The body of ``/.well-known/dspace-version`` (plain JSON: no @context, no @type)."""

    TYPE: ClassVar[str] = "VersionResponse"
    WITH_CONTEXT: ClassVar[bool] = False
    protocol_versions: list[Version] = Field(
        validation_alias="protocolVersions", serialization_alias="protocolVersions"
    )

    @field_validator("protocol_versions")
    @classmethod
    def _non_empty(cls, v: list[Version]) -> list[Version]:
        if not v:
            raise ValueError("must list at least one version")
        return v


# ----------------------------------------------------------------------------- dispatch

NegotiationMessage = (
    ContractRequestMessage
    | ContractOfferMessage
    | ContractAgreementMessage
    | ContractAgreementVerificationMessage
    | ContractNegotiationEventMessage
    | ContractNegotiationTerminationMessage
)
TransferMessage = (
    TransferRequestMessage
    | TransferStartMessage
    | TransferSuspensionMessage
    | TransferCompletionMessage
    | TransferTerminationMessage
)

MESSAGE_TYPES: dict[str, type[DspModel]] = {
    cls.TYPE: cls
    for cls in (
        CatalogRequestMessage,
        DatasetRequestMessage,
        Catalog,
        Dataset,
        CatalogError,
        ContractRequestMessage,
        ContractOfferMessage,
        ContractAgreementMessage,
        ContractAgreementVerificationMessage,
        ContractNegotiationEventMessage,
        ContractNegotiationTerminationMessage,
        ContractNegotiation,
        ContractNegotiationError,
        TransferRequestMessage,
        TransferStartMessage,
        TransferSuspensionMessage,
        TransferCompletionMessage,
        TransferTerminationMessage,
        TransferProcess,
        TransferError,
    )
}


def parse_message(data: Any, expected: tuple[type[DspModel], ...] | None = None) -> DspModel:
    """Parse any DSP body by its ``@type`` (optionally only one of ``expected``)."""
    t = data.get("@type") if isinstance(data, dict) else None
    cls = MESSAGE_TYPES.get(t) if isinstance(t, str) else None
    if cls is None or (expected and cls not in expected):
        allowed = [c.TYPE for c in expected] if expected else sorted(MESSAGE_TYPES)
        raise ProtocolError(
            400,
            "400",
            [
                f"@type: expected one of {', '.join(allowed)} (the compacted "
                f"terms of the DSP 2025-1 context), got {t!r}"
            ],
        )
    return cls.parse(data)


# ----------------------------------------------------------------------------- ODRL policies


def _node_iri(policy_id: str) -> str:
    return policy_id if ":" in policy_id else urljoin(JSONLD_BASE, policy_id)


def _policy_in(document: Mapping[str, Any], policy_id: str, kind: str, what: str) -> Policy:
    try:
        g = jsonld_to_graph(dict(document), what)
        node: Node = URIRef(_node_iri(policy_id))
        if (node, RDF.type, ODRL[kind]) not in g:
            # blank-node ids are relabelled by JSON-LD: take the one policy of that kind
            nodes = [n for n in find_policy_nodes(g) if (n, RDF.type, ODRL[kind]) in g]
            if len(nodes) != 1:
                raise PolicyError(f"{what}: no single odrl:{kind} {policy_id!r} found")
            node = nodes[0]
        return policy_from_graph(g, node)
    except PolicyError as exc:
        raise ProtocolError(400, "400", [str(exc)]) from exc


def offer_policy(msg: ContractRequestMessage | ContractOfferMessage) -> Policy:
    """The engine policy of the offer in a negotiation message (read with the DSP context)."""
    return _policy_in(msg.to_wire(), msg.offer["@id"], "Offer", f"{msg.TYPE}.offer")


def agreement_policy(msg: ContractAgreementMessage) -> Policy:
    """The engine policy of the agreement in a ContractAgreementMessage."""
    return _policy_in(msg.to_wire(), msg.agreement["@id"], "Agreement", f"{msg.TYPE}.agreement")


def standalone_policy(policy: Mapping[str, Any], target: str | None = None) -> Policy:
    """The engine policy of an offer or agreement dict in the DSP form outside a message (a
    catalog offer, a stored agreement); ``target`` is set when the dict names none."""
    kind = policy.get("@type")
    if kind not in ("Offer", "Agreement"):
        raise ProtocolError(400, "400", [f"policy.@type: expected 'Offer' or 'Agreement', got {kind!r}"])
    doc: dict[str, Any] = {"@context": [DSP_CONTEXT_URL, DSP_ODRL_PROFILE_URL], **policy}
    if target is not None and "target" not in doc:
        doc["target"] = target
    return _policy_in(doc, str(policy.get("@id", "")), kind, f"{kind} {policy.get('@id')}")
