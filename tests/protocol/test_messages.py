"""The message models against the official DSP 2025-1 examples and schemas, and the errors they
give on bad input."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from dsp_schema import EXAMPLES, assert_valid, errors, example
from protocol_testlib import SCHEMA_OF, assert_wire_valid

from connector.odrl import terms as T
from connector.protocol import messages as m
from connector.protocol.errors import ProtocolError
from connector.protocol.ids import MAX_IRI_LENGTH, MAX_PROCESS_ID_LENGTH

EXAMPLE_MODELS: dict[str, type[m.DspModel]] = {
    "catalog/catalog-error": m.CatalogError,
    "catalog/catalog-request-message": m.CatalogRequestMessage,
    "catalog/catalog": m.Catalog,
    "catalog/dataset-request-message": m.DatasetRequestMessage,
    "catalog/dataset": m.Dataset,
    "catalog/nested-catalog": m.Catalog,
    "common/protocol-version": m.VersionResponse,
    "negotiation/contract-agreement-message-full": m.ContractAgreementMessage,
    "negotiation/contract-agreement-message": m.ContractAgreementMessage,
    "negotiation/contract-agreement-verification-message": m.ContractAgreementVerificationMessage,
    "negotiation/contract-negotiation-error": m.ContractNegotiationError,
    "negotiation/contract-negotiation-event-message": m.ContractNegotiationEventMessage,
    "negotiation/contract-negotiation-termination-message": m.ContractNegotiationTerminationMessage,
    "negotiation/contract-negotiation": m.ContractNegotiation,
    "negotiation/contract-offer-message": m.ContractOfferMessage,
    "negotiation/contract-offer-message_initial": m.ContractOfferMessage,
    "negotiation/contract-request-message": m.ContractRequestMessage,
    "negotiation/contract-request-message_initial": m.ContractRequestMessage,
    "transfer/transfer-completion-message": m.TransferCompletionMessage,
    "transfer/transfer-error": m.TransferError,
    "transfer/transfer-process": m.TransferProcess,
    "transfer/transfer-request-message": m.TransferRequestMessage,
    "transfer/transfer-start-message": m.TransferStartMessage,
    "transfer/transfer-suspension-message": m.TransferSuspensionMessage,
    "transfer/transfer-termination-message": m.TransferTerminationMessage,
}


def test_every_official_example_is_covered() -> None:
    on_disk = {p.relative_to(EXAMPLES).as_posix().removesuffix(".json") for p in EXAMPLES.rglob("*.json")}
    # the DID service entries are DID documents' parts, not DSP messages
    assert on_disk - set(EXAMPLE_MODELS) == {
        "common/catalogservice-did-service",
        "common/dataservice-did-service",
    }


@pytest.mark.parametrize("name", sorted(EXAMPLE_MODELS))
def test_official_examples_round_trip(name: str) -> None:
    doc = example(name)
    model = EXAMPLE_MODELS[name].parse(doc)
    wire = model.to_wire()
    assert_valid(wire, SCHEMA_OF[type(model)])
    assert wire == doc  # nothing lost, nothing added
    if "@type" in doc:
        assert m.parse_message(wire) == model


def test_string_context_is_invalid_and_never_written() -> None:
    doc = example("negotiation/contract-negotiation")
    doc["@context"] = m.CONTEXT[0]
    assert errors(doc, "negotiation/contract-negotiation-schema")  # SOURCE.md quirk 3
    with pytest.raises(ProtocolError, match=r"@context: must be an array"):
        m.ContractNegotiation.parse(doc)
    ack = m.ContractNegotiation(provider_pid="a", consumer_pid="b", state="AGREED")
    assert ack.to_wire()["@context"] == ["https://w3id.org/dspace/2025/1/context.jsonld"]


def bad(name: str, change: Any) -> tuple[str, dict[str, Any]]:
    doc = copy.deepcopy(example(name))
    change(doc)
    return name, doc


def _set(path: str, value: Any) -> Any:
    def change(doc: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        node: Any = doc
        for p in parents:
            node = node[int(p)] if p.isdigit() else node[p]
        if value is KeyError:
            del node[last]
        else:
            node[last] = value

    return change


REQ, OFFER, AGR = (
    "negotiation/contract-request-message",
    "negotiation/contract-offer-message",
    "negotiation/contract-agreement-message",
)
BAD_INPUT = [
    (bad(REQ, _set("@type", "dspace:ContractRequestMessage")), "@type: expected the compacted term"),
    (
        bad(REQ, _set("@type", "https://w3id.org/dspace/2025/1/ContractRequestMessage")),
        "@type: expected the compacted term",
    ),
    (bad(REQ, _set("@type", "ContractOfferMessage")), "@type: Input should be 'ContractRequestMessage'"),
    (bad(REQ, _set("@context", KeyError)), "@context: must be an array"),
    (bad(REQ, _set("@context", ["https://w3id.org/dspace/2024/1/context.json"])), "@context"),
    (bad(REQ, _set("consumerPid", KeyError)), "ContractRequestMessage.consumerPid: Field required"),
    (bad(REQ, _set("consumerPid", 42)), "consumerPid: Input should be a valid string"),
    (bad(REQ, _set("callbackAddress", "https://c.example")), "exactly one of providerPid"),
    (
        bad("negotiation/contract-request-message_initial", _set("callbackAddress", KeyError)),
        "exactly one of providerPid",
    ),
    (bad(REQ, _set("offer/target", KeyError)), "offer: target: required"),
    (bad(REQ, _set("offer/@id", KeyError)), "offer: @id: required"),
    (bad(REQ, _set("offer/@type", "Agreement")), "offer: @type: must be 'Offer'"),
    (bad(REQ, _set("offer/permission", [])), "offer: permission: must be a non-empty array"),
    (bad(REQ, _set("offer/permission/0/action", KeyError)), "offer: permission[0].action: required"),
    (bad(REQ, _set("offer/permission/0/target", "urn:x")), "rules must not name a target"),
    (
        bad(REQ, _set("offer/permission/0/constraint/0/operator", "lessThan")),
        "permission[0].constraint[0].operator: 'lessThan' is not an ODRL operator",
    ),
    (bad(REQ, _set("offer/permission/0/constraint/0/rightOperand", 5)), "rightOperand: must be a string"),
    (bad(REQ, _set("offer/permission/0/constraint/0/and", [])), "either logical"),
    (bad(REQ, _set("offer/permission/0/constraint/0/leftOperand", KeyError)), "missing leftOperand"),
    (bad(OFFER, _set("consumerPid", KeyError)), "exactly one of consumerPid"),
    (bad(AGR, _set("agreement/timestamp", KeyError)), "agreement: timestamp: required"),
    (bad(AGR, _set("agreement/timestamp", "yesterday")), "agreement: timestamp: required"),
    (bad(AGR, _set("agreement/assignee", KeyError)), "agreement: assignee: required"),
    (
        bad("negotiation/contract-negotiation-event-message", _set("eventType", "dspace:ACCEPTED")),
        "eventType: Input should be 'ACCEPTED' or 'FINALIZED'",
    ),
    (bad("negotiation/contract-negotiation", _set("state", "REQUESTING")), "state: Input should be"),
    (
        bad("negotiation/contract-negotiation-termination-message", _set("reason", [])),
        "TerminationMessage.reason: must be a non-empty array",
    ),
    (bad("catalog/dataset", _set("hasPolicy/0/target", "urn:x")), "must not name a target"),
    (bad("catalog/dataset", _set("distribution", [])), "distribution: must be a non-empty array"),
    (bad("catalog/catalog", _set("participantId", KeyError)), "participantId: required on the root"),
    (bad("catalog/catalog", _set("hasPolicy", [])), "a catalog has no hasPolicy"),
    (bad("catalog/dataset-request-message", _set("dataset", KeyError)), "dataset: Field required"),
    (
        bad("transfer/transfer-request-message", _set("dataAddress/endpointProperties", [])),
        "dataAddress.endpointProperties: must be omitted or a non-empty array",
    ),
    (
        bad("transfer/transfer-request-message", _set("dataAddress/@type", "Address")),
        "dataAddress.@type: Input should be 'DataAddress'",
    ),
    (
        bad("transfer/transfer-start-message", _set("dataAddress/endpointProperties/0/value", 7)),
        "dataAddress.endpointProperties.0.value: Input should be a valid string",
    ),
    (bad("common/protocol-version", _set("protocolVersions", [])), "must list at least one version"),
]


@pytest.mark.parametrize(("case", "text"), BAD_INPUT, ids=[t for _, t in BAD_INPUT])
def test_bad_input_is_a_400_naming_the_field(case: tuple[str, dict[str, Any]], text: str) -> None:
    name, doc = case
    with pytest.raises(ProtocolError) as exc:
        EXAMPLE_MODELS[name].parse(doc)
    assert exc.value.status == 400 and exc.value.code == "400"
    assert any(text in r for r in exc.value.reasons), exc.value.reasons


def test_not_an_object() -> None:
    data: Any
    for data in ([], "x", None, 3):
        with pytest.raises(ProtocolError, match="expected a JSON object"):
            m.ContractNegotiation.parse(data)
    with pytest.raises(ProtocolError, match="expected one of"):
        m.parse_message({"@type": "ContractRequest"})
    with pytest.raises(ProtocolError, match="expected one of ContractNegotiation"):
        m.parse_message(example(REQ), expected=(m.ContractNegotiation,))


def test_fingerprint_ignores_key_order_not_content() -> None:
    doc = example(REQ)
    shuffled = json.loads(json.dumps(dict(reversed(list(doc.items())))))
    a, b = m.ContractRequestMessage.parse(doc), m.ContractRequestMessage.parse(shuffled)
    assert a.fingerprint() == b.fingerprint()
    other = copy.deepcopy(doc)
    other["offer"]["permission"][0]["constraint"][0]["rightOperand"] = "2024-12-31T06:00Z"
    assert m.ContractRequestMessage.parse(other).fingerprint() != a.fingerprint()


def test_offer_and_agreement_policies() -> None:
    msg = m.ContractRequestMessage.parse(example(REQ))
    pol = m.offer_policy(msg)
    assert pol.id == msg.offer["@id"] and pol.type == T.O + "Offer"
    (perm,) = pol.permissions
    assert perm.actions[0].iri == T.USE and perm.targets[0].iri == msg.offer["target"]
    assert perm.constraints[0].left_operand == T.DATE_TIME  # type: ignore[union-attr]
    agr = m.agreement_policy(m.ContractAgreementMessage.parse(example("contract-agreement-message-full")))
    assert agr.type == T.O + "Agreement" and len(agr.permissions) == 7
    assert agr.permissions[0].assignees[0].iri == "http://example.com/Consumer"
    offered = m.offer_policy(m.ContractOfferMessage.parse(example("contract-offer-message_initial")))
    assert offered.permissions[0].targets[0].iri == "urn:uuid:3dd1add8-4d2d-569e-d634-8394a8836a88"


def test_standalone_policy_for_a_catalog_offer() -> None:
    ds = example("catalog/dataset")
    pol = m.standalone_policy(ds["hasPolicy"][0], ds["@id"])
    assert pol.permissions[0].targets[0].iri == ds["@id"]
    with pytest.raises(ProtocolError):
        m.standalone_policy({"@type": "Set", "@id": "urn:x"})


def test_version_response_and_nested_models() -> None:
    v = m.VersionResponse(protocol_versions=[m.Version(version="2025-1", path="/dsp", service_id="svc")])
    wire = assert_wire_valid(v)
    assert wire == {
        "protocolVersions": [{"version": "2025-1", "path": "/dsp", "binding": "HTTPS", "serviceId": "svc"}]
    }
    da = m.DataAddress(endpoint_type="https://w3id.org/idsa/v4.1/HTTP", endpoint="https://x.example")
    assert "@context" not in da.to_wire()
    assert_valid(da.to_wire(), "data-address")


# ----------------------------------------------------------------------------- identifiers (issue 9)

PIDS = {"providerPid": "urn:uuid:pp", "consumerPid": "urn:uuid:cp"}


def _verification(**pids: str) -> dict[str, Any]:
    return {"@context": list(m.CONTEXT), "@type": "ContractAgreementVerificationMessage", **PIDS, **pids}


@pytest.mark.parametrize(
    "pid",
    [
        "x" * (MAX_PROCESS_ID_LENGTH + 1),
        "x" * 1_000_000,
        "",
        "a/b",
        "a?b",
        "a#b",
        "a%2Fb",
        "a b",
        "a{b}",
        "é",
        "..",
        ".",
        "a\nb",
        "a\\b",
    ],
)
def test_a_process_id_is_short_and_safe_in_a_url_path(pid: str) -> None:
    for name in ("consumerPid", "providerPid"):
        with pytest.raises(ProtocolError) as exc:
            m.ContractAgreementVerificationMessage.parse(_verification(**{name: pid}))
        assert exc.value.status == 400 and exc.value.reasons[0].startswith(
            f"ContractAgreementVerificationMessage.{name}: "
        )
        assert len(exc.value.reasons[0]) < 300  # the reason does not echo a huge id
    request = {
        "@context": list(m.CONTEXT),
        "@type": "TransferRequestMessage",
        "consumerPid": pid,
        "agreementId": "urn:uuid:a",
        "format": m.PULL,
        "callbackAddress": "https://c.example/cb",
    }
    with pytest.raises(ProtocolError, match="consumerPid"):
        m.TransferRequestMessage.parse(request)


def test_process_ids_of_the_path_segment_alphabet_are_taken() -> None:
    longest = "urn:" + "a" * (MAX_PROCESS_ID_LENGTH - 4)
    for pid in (longest, "urn:uuid:3f9e-AZ_az.09~!$&'()*+,;=:@", "..."):
        msg = m.ContractAgreementVerificationMessage.parse(_verification(consumerPid=pid))
        assert msg.consumer_pid == pid


def test_other_identifiers_are_bounded() -> None:
    huge = "urn:x:" + "y" * MAX_IRI_LENGTH
    body = {
        "@context": list(m.CONTEXT),
        "@type": "TransferRequestMessage",
        "consumerPid": "urn:uuid:c",
        "agreementId": huge,
        "format": m.PULL,
        "callbackAddress": "https://c.example/cb",
    }
    with pytest.raises(ProtocolError, match=r"TransferRequestMessage\.agreementId: longer than"):
        m.TransferRequestMessage.parse(body)
    for key in ("@id", "target"):
        req = example("contract-request-message_initial")
        req["offer"][key] = huge
        with pytest.raises(ProtocolError, match=rf"ContractRequestMessage\.offer\.{key}: longer than"):
            m.ContractRequestMessage.parse(req)
    with pytest.raises(ProtocolError, match=r"DatasetRequestMessage\.dataset"):
        m.DatasetRequestMessage.parse(
            {"@context": list(m.CONTEXT), "@type": "DatasetRequestMessage", "dataset": huge}
        )


def test_an_error_body_may_leave_a_process_id_empty() -> None:
    body = {
        "@context": list(m.CONTEXT),
        "@type": "ContractNegotiationError",
        "providerPid": "",
        "consumerPid": "urn:uuid:cp",
        "code": "400",
        "reason": ["x"],
    }
    assert m.ContractNegotiationError.parse(body).provider_pid == ""
    with pytest.raises(ProtocolError):
        m.ContractNegotiationError.parse({**body, "consumerPid": "a/b"})
    with pytest.raises(ProtocolError):
        m.ContractNegotiation.parse({**body, "@type": "ContractNegotiation", "state": "REQUESTED"})


def test_a_top_level_body_without_its_type_is_refused_where_the_schema_requires_it() -> None:
    # found by the DSP fuzz: a CatalogRequestMessage without @type was answered 200
    with pytest.raises(ProtocolError, match=r"CatalogRequestMessage\.@type: required"):
        m.CatalogRequestMessage.parse({"@context": list(m.CONTEXT)})
    body = {k: v for k, v in example("transfer-completion-message").items() if k != "@type"}
    with pytest.raises(ProtocolError):
        m.TransferCompletionMessage.parse(body)
    dataset = {k: v for k, v in example("catalog/dataset").items() if k != "@type"}
    assert errors(dataset, "catalog/dataset-schema") == []  # the Dataset schema does not require it
    assert m.Dataset.parse(dataset).id == dataset["@id"]
