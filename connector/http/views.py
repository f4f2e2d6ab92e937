"""The management API's answers as pydantic models: the OpenAPI document's response schemas.

The handlers build their answers with the view functions of `connector.http.management`; these
models state their shape. The tests validate every view against its model, and schemathesis
checks every live answer against the document, so a view and its model cannot part unnoticed.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from connector.protocol.negotiation import NegotiationState
from connector.protocol.transfer import TransferState
from connector.usage.lifecycle import STATUSES
from connector.wireformat import ProcessRole

NegotiationStateName = Literal[tuple(s.value for s in NegotiationState)]  # type: ignore[valid-type]
TransferStateName = Literal[tuple(s.value for s in TransferState)]  # type: ignore[valid-type]
AgreementStatus = Literal[STATUSES]  # type: ignore[valid-type]
# the DSP states, as the wire sees a process (internal "sending" states are not among them)
NegotiationWireState = Literal[  # type: ignore[valid-type]
    tuple(s.value for s in NegotiationState if not s.is_sending)
]
TransferWireState = Literal[  # type: ignore[valid-type]
    tuple(s.value for s in TransferState if not s.is_sending)
]


class _View(BaseModel):
    model_config = ConfigDict(populate_by_name=True)


class AssetView(_View):
    id: str
    title: str | None
    description: str | None
    keywords: list[str]
    content_type: str | None = Field(alias="contentType")
    data_address: dict[str, Any] = Field(
        alias="dataAddress", description="where the data is; secret values are masked"
    )
    created_at: str | None = Field(alias="createdAt")


class PolicyView(_View):
    id: str
    policy: dict[str, Any] = Field(description="the ODRL policy (JSON-LD) as stored")
    created_at: str | None = Field(alias="createdAt")


class OfferView(_View):
    id: str
    asset_ids: list[str] | None = Field(alias="assetIds")
    all_assets: bool = Field(alias="allAssets")
    access_policy_id: str = Field(alias="accessPolicyId")
    contract_policy_id: str = Field(alias="contractPolicyId")
    created_at: str | None = Field(alias="createdAt")


class NegotiationView(_View):
    id: str
    role: ProcessRole
    state: NegotiationWireState  # type: ignore[valid-type]
    internal_state: NegotiationStateName = Field(alias="internalState")  # type: ignore[valid-type]
    provider_pid: str | None = Field(alias="providerPid")
    consumer_pid: str | None = Field(alias="consumerPid")
    counter_party_id: str | None = Field(alias="counterPartyId")
    counter_party_address: str | None = Field(alias="counterPartyAddress")
    offer: dict[str, Any]
    agreement_id: str | None = Field(alias="agreementId")
    termination_reason: list[str] | None = Field(alias="terminationReason")
    error_detail: str | None = Field(alias="errorDetail")
    created_at: str | None = Field(alias="createdAt")
    updated_at: str | None = Field(alias="updatedAt")


class TransferView(_View):
    id: str
    role: ProcessRole
    state: TransferWireState  # type: ignore[valid-type]
    internal_state: TransferStateName = Field(alias="internalState")  # type: ignore[valid-type]
    provider_pid: str | None = Field(alias="providerPid")
    consumer_pid: str | None = Field(alias="consumerPid")
    format: str
    agreement_id: str = Field(alias="agreementId")
    counter_party_id: str | None = Field(alias="counterPartyId")
    counter_party_address: str | None = Field(
        default=None,
        alias="counterPartyAddress",
        description="the counter-party's DSP base URL (for a consumer: the provider's)",
    )
    suspended_by: list[str] | None = Field(alias="suspendedBy")
    termination_reason: list[str] | None = Field(alias="terminationReason")
    error_detail: str | None = Field(
        default=None,
        alias="errorDetail",
        description="why the last message to the counter-party is not delivered yet (retried)",
    )
    created_at: str | None = Field(alias="createdAt")
    updated_at: str | None = Field(alias="updatedAt")
    endpoint: str | None = Field(default=None, description="consumer: where to pull from")
    endpoint_properties: dict[str, str] | None = Field(
        default=None,
        alias="endpointProperties",
        description="consumer: the pull's token (`authorization`) and its properties",
    )


class AgreementView(_View):
    id: str
    provider_id: str = Field(alias="providerId")
    consumer_id: str = Field(alias="consumerId")
    target: str
    policy: dict[str, Any]
    signed_at: str | None = Field(alias="signedAt")
    negotiation_id: str | None = Field(alias="negotiationId")
    status: AgreementStatus = Field(  # type: ignore[valid-type]
        description="active; retired by the provider; or expired (its time window has passed)"
    )
    retired_at: str | None = Field(alias="retiredAt")
    retired_reason: str | None = Field(alias="retiredReason")


class FactView(_View):
    """A fact the provider holds (provider-side state, an active event)."""

    name: str = Field(description="the operand's full IRI")
    values: list[Any] = Field(description="full IRIs or literals")
    until: str | None = Field(description="when it expires (none: when unset)")
    set_at: str = Field(alias="setAt")


class PaymentView(_View):
    id: str
    agreement_id: str = Field(alias="agreementId")
    amount: str = Field(description="the exact decimal amount")
    currency: str = Field(description="the currency's IRI")
    paid_at: str = Field(alias="paidAt")
    recorded_at: str = Field(alias="recordedAt")
    reference: str | None
    receipt: str | None = Field(description="a signed payment receipt (compact JWS), if given")


class CatalogOfferView(_View):
    id: str | None = Field(description="the id to negotiate (`connector negotiate PEER ID`)")
    terms: list[str] = Field(
        default_factory=list, description="the offer's rules in words, one line per rule"
    )
    permission: Any = None
    prohibition: Any = None
    obligation: Any = None


class CatalogDatasetView(_View):
    id: str | None
    title: Any = None
    description: Any = None
    keywords: list[str] = Field(default_factory=list)
    formats: list[Any]
    offers: list[CatalogOfferView]


class CatalogView(_View):
    participant_id: Any = Field(alias="participantId")
    pages: int = Field(default=1, description="the peer's catalog pages read (all of them)")
    datasets: list[CatalogDatasetView]
    dsp: dict[str, Any] = Field(description="the catalog as the peer sent it, its pages as one (DSP JSON-LD)")


class WholeCatalogView(_View):
    pages: int = Field(description="the peer's catalog pages read")
    dsp: dict[str, Any] = Field(description="the pages as one catalog (DSP JSON-LD)")


class PullJobView(_View):
    transfer_id: str = Field(alias="transferId")
    agreement_id: str = Field(alias="agreementId")
    path: str
    state: Literal["running", "done", "failed"]
    bytes: int
    total: int | None
    sha256: str
    receipts: int
    responses: int
    error: str | None
    vault_id: str | None = Field(alias="vaultId")
    delete_at: str | None = Field(alias="deleteAt")
    stored_sha256: str | None = Field(
        default=None,
        alias="storedSha256",
        description="SHA-256 of the copy as stored; differs from sha256 (the bytes received, "
        "which the receipts cover) when the agreement has the copy modified at rest",
    )


class VaultCopyView(_View):
    """A local copy just registered."""

    path: str
    agreement_id: str = Field(alias="agreementId")
    delete_at: str | None = Field(alias="deleteAt")
    sha256: str


class VaultItemView(_View):
    id: str
    path: str
    agreement_id: str = Field(alias="agreementId")
    transfer_id: str = Field(alias="transferId")
    provider_id: str = Field(alias="providerId")
    sha256: str
    delete_at: str | None = Field(alias="deleteAt")
    registered_at: str = Field(alias="registeredAt")
    deleted_at: str | None = Field(alias="deletedAt")
    notice_sent: bool = Field(alias="noticeSent")
    uses: int


class AuditEntryView(_View):
    seq: int
    time: str
    kind: str
    process_id: str | None = Field(default=None, alias="processId")
    agreement_id: str | None = Field(default=None, alias="agreementId")
    transfer_id: str | None = Field(default=None, alias="transferId")
    participant_id: str | None = Field(default=None, alias="participantId")
    summary: str
    data: dict[str, Any]
    hash: str
