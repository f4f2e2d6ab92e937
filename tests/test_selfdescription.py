"""The connector's RDF self-description: IDS shapes, serializations, negotiation, offers."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from rdflib import RDF, Graph, Literal, URIRef
from rdflib.compare import isomorphic
from rdflib.term import Node

from connector.broker.service import violation_lines
from connector.identity.keys import generate_private_key, public_jwk, public_key_to_pem
from connector.odrl.model import Constraint
from connector.odrl.parse import jsonld_to_graph, policy_from_graph
from connector.selfdescription import (
    JSON_LD,
    MEDIA_TYPES,
    N_TRIPLES,
    OFFER_CONTEXT,
    TURTLE,
    ConnectorInfo,
    DatasetInfo,
    DistributionInfo,
    SelfDescriptionError,
    dsp_spec_iri,
    dsp_version_metadata,
    negotiate,
    self_description_graph,
    serialize,
    validate_ids,
)
from connector.vocab import DCAT, DCT, DSPACE, IDS, IDSC, ODRL, XSD, vocab_dir

DSP_URL = "https://provider.example/api/dsp"
BASE = "https://w3id.org/idsa/code/"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", autouse=True)
def network_attempts() -> Iterator[list[Any]]:
    """Every test here (and the module fixtures) runs with the network refused."""
    attempts: list[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        attempts.append(args)
        raise AssertionError(f"network access attempted: {args!r}")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket.socket, "connect_ex", refuse)
        mp.setattr(socket, "getaddrinfo", refuse)
        mp.setattr(socket, "create_connection", refuse)
        yield attempts
    assert attempts == []


@pytest.fixture(scope="module")
def key_pem() -> str:
    return public_key_to_pem(generate_private_key("EdDSA").public_key()).decode()


@pytest.fixture(scope="module")
def info(key_pem: str) -> ConnectorInfo:
    return ConnectorInfo(
        id="https://provider.example/connector",
        participant_id="3F:1A:9C:keyid:D2:77:0B",  # begins with a digit: not an IRI
        title="Provider A connector",
        description="Sells weather observations.",
        curator="https://provider.example/org",
        maintainer="https://operator.example/org",
        security_profile=BASE + "BASE_SECURITY_PROFILE",
        public_key_pem=key_pem,
        dsp_base_url=DSP_URL,
        self_description_url="https://provider.example/",
    )


OFFER_RESEARCH: dict[str, Any] = {
    "@id": "urn:uuid:offer-research",
    "@type": "Offer",
    "permission": [
        {
            "action": "use",
            "constraint": [
                {"leftOperand": "purpose", "operator": "eq", "rightOperand": "research"},
                {
                    "leftOperand": "dateTime",
                    "operator": "lt",
                    "rightOperand": {"@value": "2030-01-01T00:00:00Z", "@type": "xsd:dateTime"},
                },
            ],
        }
    ],
}
OFFER_COUNT: dict[str, Any] = {
    "@id": "urn:uuid:offer-count",
    "@type": "Offer",
    "permission": [
        {"action": "use", "constraint": [{"leftOperand": "count", "operator": "lteq", "rightOperand": 10}]}
    ],
    "prohibition": [{"action": "distribute"}],
}
OFFER_EU: dict[str, Any] = {
    "@id": "urn:uuid:offer-eu",
    "@type": "Offer",
    "permission": [
        {
            "action": "use",
            "constraint": [
                {
                    "or": [
                        {"leftOperand": "spatial", "operator": "eq", "rightOperand": "http://example.org/EU"},
                        {"leftOperand": "purpose", "operator": "isAnyOf", "rightOperand": ["ads", "stats"]},
                    ]
                }
            ],
        }
    ],
}
OFFERS = {o["@id"]: o for o in (OFFER_RESEARCH, OFFER_COUNT, OFFER_EU)}


@pytest.fixture(scope="module")
def datasets() -> list[DatasetInfo]:
    return [
        DatasetInfo(
            id="urn:uuid:dataset-weather",
            title="Weather observations",
            description="Hourly observations, 2010-2024.",
            keywords=("weather", "climate"),
            media_type="text/csv",
            distributions=(DistributionInfo("HttpData-PULL", DSP_URL), ("HttpData-PUSH", DSP_URL)),
            offers=(OFFER_RESEARCH, OFFER_COUNT),
        ),
        DatasetInfo(
            id="https://provider.example/datasets/stations",
            title="Stations",
            keywords=["stations"],
            media_type="application/json",
            distributions=[("HttpData-PULL", "https://data.provider.example/pull")],
            offers=[OFFER_EU],
        ),
    ]


@pytest.fixture(scope="module")
def graph(info: ConnectorInfo, datasets: list[DatasetInfo]) -> Graph:
    return self_description_graph(info, datasets)


@pytest.fixture(scope="module")
def validation(graph: Graph, conformance: Path) -> tuple[bool, str, float]:
    start = time.perf_counter()
    conforms, report = validate_ids(graph, conformance / "ids-infomodel")
    return conforms, report, time.perf_counter() - start


# --------------------------------------------------------------------------- IDS shapes


def test_self_description_conforms_to_the_ids_shapes(validation: tuple[bool, str, float]) -> None:
    conforms, report, seconds = validation
    assert conforms, report
    print(f"pyshacl on the IDS 4.2.0 shapes: {seconds:.2f} s (shapes and ontology loaded once)")


def test_the_shapes_are_not_vacuous(graph: Graph, conformance: Path) -> None:
    broken = Graph()
    broken += graph
    connector = URIRef("https://provider.example/connector")
    broken.remove((connector, IDS.maintainer, None))
    broken.remove((connector, IDS.hasDefaultEndpoint, None))
    broken.add((connector, RDF.type, IDS.Connector))  # abstract
    conforms, report = validate_ids(broken, conformance / "ids-infomodel")
    assert not conforms
    assert "ids:maintainer" in report
    assert "hasDefaultEndpoint" in report
    assert "abstract class" in report


def test_the_packaged_shapes_decide_as_the_conformance_copy(graph: Graph, conformance: Path) -> None:
    """The IDS shapes and ontology shipped in vocab/ids (a container has no checkout) give the
    same verdicts as the official copy, on a conforming and on a broken description."""
    packaged = vocab_dir() / "ids"
    assert validate_ids(graph, packaged)[0]
    broken = Graph()
    broken += graph
    connector = URIRef("https://provider.example/connector")
    broken.remove((connector, IDS.maintainer, None))
    conforms, report = validate_ids(broken, packaged)
    official = validate_ids(broken, conformance / "ids-infomodel")
    assert not conforms and not official[0] and "ids:maintainer" in report
    assert sorted(violation_lines(report)) == sorted(violation_lines(official[1]))


def test_connector_terms(graph: Graph) -> None:
    c = URIRef("https://provider.example/connector")
    assert (c, RDF.type, IDS.BaseConnector) in graph
    assert graph.value(c, IDS.title) == Literal("Provider A connector")
    assert graph.value(c, IDS.securityProfile) == IDSC.BASE_SECURITY_PROFILE
    assert graph.value(c, IDS.curator) == URIRef("https://provider.example/org")
    assert graph.value(c, IDS.maintainer) == URIRef("https://operator.example/org")
    assert graph.value(c, DSPACE.participantId) == Literal("3F:1A:9C:keyid:D2:77:0B")
    for prop in (IDS.inboundModelVersion, IDS.outboundModelVersion):
        assert graph.value(c, prop) == Literal("4.2.0")
    key = graph.value(c, IDS.publicKey)
    assert graph.value(key, IDS.keyType) == IDSC.ED25519
    assert graph.value(key, IDS.keyValue).datatype == XSD.base64Binary  # type: ignore[union-attr]
    dsp = graph.value(c, IDS.hasDefaultEndpoint)
    assert (c, IDS.hasEndpoint, dsp) in graph
    assert set(graph.objects(dsp, RDF.type)) == {IDS.ConnectorEndpoint, DCAT.DataService}
    assert graph.value(dsp, IDS.accessURL) == URIRef(DSP_URL)
    assert graph.value(dsp, DCT.conformsTo) == URIRef("https://w3id.org/dspace/2025/1")
    endpoints = {graph.value(e, IDS.accessURL) for e in graph.objects(c, IDS.hasEndpoint)}
    assert endpoints == {URIRef(DSP_URL), URIRef("https://provider.example/")}
    catalog = graph.value(c, IDS.resourceCatalog)
    assert (catalog, RDF.type, DCAT.Catalog) in graph
    assert (catalog, RDF.type, IDS.ResourceCatalog) in graph
    assert len(list(graph.objects(catalog, DCAT.dataset))) == 2
    assert len(list(graph.subjects(RDF.type, ODRL.Offer))) == 3


def test_catalog_terms(graph: Graph) -> None:
    ds = URIRef("urn:uuid:dataset-weather")
    assert graph.value(ds, DCT.title) == Literal("Weather observations")
    assert set(graph.objects(ds, DCAT.keyword)) == {Literal("weather"), Literal("climate")}
    dists = list(graph.objects(ds, DCAT.distribution))
    assert {graph.value(d, DCT["format"]) for d in dists} == {
        Literal("HttpData-PULL"),
        Literal("HttpData-PUSH"),
    }
    for d in dists:
        assert graph.value(d, DCAT.mediaType) == URIRef(
            "https://www.iana.org/assignments/media-types/text/csv"
        )
        service = graph.value(d, DCAT.accessService)
        assert graph.value(service, DCAT.endpointURL) == URIRef(DSP_URL)
    other = graph.value(
        next(iter(graph.objects(URIRef("https://provider.example/datasets/stations"), DCAT.distribution))),
        DCAT.accessService,
    )
    assert (other, RDF.type, DCAT.DataService) in graph
    assert graph.value(other, DCAT.endpointURL) == URIRef("https://data.provider.example/pull")


def test_trust_profiles_describe_a_trusted_connector(info: ConnectorInfo) -> None:
    for profile in ("TRUST_SECURITY_PROFILE", "TRUST_PLUS_SECURITY_PROFILE"):
        g = self_description_graph(dataclasses.replace(info, security_profile=BASE + profile), [])
        c = URIRef(info.id)
        assert set(g.objects(c, RDF.type)) == {IDS.TrustedConnector}
        assert g.value(c, IDS.securityProfile) == IDSC[profile]


def test_jwk_and_pem_describe_the_same_key(info: ConnectorInfo) -> None:
    key = generate_private_key("ES256").public_key()
    pem = public_key_to_pem(key).decode()
    by_pem = self_description_graph(dataclasses.replace(info, public_key_pem=pem), [])
    by_jwk = self_description_graph(
        dataclasses.replace(info, public_key_pem=None, public_key_jwk=public_jwk(key)), []
    )
    assert isomorphic(by_pem, by_jwk)
    assert IDSC.ECDSA in set(by_pem.objects(None, IDS.keyType))


# --------------------------------------------------------------------------- serializations


def _parse(data: bytes, media_type: str) -> Graph:
    if media_type == JSON_LD:
        return jsonld_to_graph(json.loads(data), "self-description")  # the offline loader
    return Graph().parse(data=data.decode("utf-8"), format="turtle" if media_type == TURTLE else "nt")


@pytest.mark.parametrize("media_type", MEDIA_TYPES)
def test_each_serialization_parses_back_to_an_isomorphic_graph(graph: Graph, media_type: str) -> None:
    data = serialize(graph, media_type)
    assert isomorphic(_parse(data, media_type), graph)


@pytest.mark.parametrize("media_type", MEDIA_TYPES)
def test_serializations_are_deterministic(
    info: ConnectorInfo, datasets: list[DatasetInfo], graph: Graph, media_type: str
) -> None:
    again = self_description_graph(info, datasets)
    assert serialize(again, media_type) == serialize(graph, media_type)


_DIGESTS = """
import hashlib, json, sys
from connector.selfdescription import *
info = ConnectorInfo(**json.loads(sys.argv[1]))
datasets = [DatasetInfo(**d) for d in json.loads(sys.argv[2])]
g = self_description_graph(info, datasets)
print(json.dumps([hashlib.sha256(serialize(g, m)).hexdigest() for m in MEDIA_TYPES]))
"""


def test_bytes_do_not_depend_on_the_process(info: ConnectorInfo, datasets: list[DatasetInfo]) -> None:
    """Equal input, equal bytes, whatever the hash seed: the edge can use them as an ETag."""
    args = [
        json.dumps(dataclasses.asdict(dataclasses.replace(info, public_key_pem=None))),
        json.dumps([dataclasses.asdict(d) for d in datasets]),
    ]
    runs = [
        subprocess.run(
            [sys.executable, "-c", _DIGESTS, *args],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    ]
    assert runs[0] == runs[1]


def test_json_ld_is_compacted_with_inline_prefixes(graph: Graph) -> None:
    doc = json.loads(serialize(graph, JSON_LD))
    ctx = doc["@context"]
    assert isinstance(ctx, dict)  # inline: nothing to fetch
    for prefix in ("ids", "idsc", "dcat", "dct", "odrl", "dspace"):
        assert prefix in ctx
    nodes = {n.get("@id"): n for n in doc["@graph"]}
    connector = nodes["https://provider.example/connector"]
    assert connector["@type"] == "ids:BaseConnector"
    assert connector["ids:securityProfile"] == {"@id": "idsc:BASE_SECURITY_PROFILE"}
    # blank nodes referenced once are nested, so an offer reads as in DSP
    offer = nodes["urn:uuid:offer-eu"]
    assert offer["odrl:permission"]["odrl:constraint"]["odrl:or"]
    assert not any(str(k).startswith("_:") for k in nodes)


def test_unsupported_media_type_is_refused(graph: Graph) -> None:
    with pytest.raises(ValueError):
        serialize(graph, "application/rdf+xml")


# --------------------------------------------------------------------------- negotiation


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, TURTLE),
        ("", TURTLE),
        ("text/turtle", TURTLE),
        ("application/ld+json", JSON_LD),
        ("application/n-triples", N_TRIPLES),
        ("*/*", TURTLE),
        ("text/*", TURTLE),
        ("application/*", JSON_LD),
        ("Application/LD+JSON; charset=utf-8", JSON_LD),
        ('application/ld+json; profile="http://www.w3.org/ns/json-ld#compacted"', JSON_LD),
        ("text/turtle;q=0.5, application/ld+json", JSON_LD),
        ("text/turtle;q=0.5, application/ld+json;q=0.8, application/n-triples;q=0.9", N_TRIPLES),
        ("application/n-triples;q=0.3, */*;q=0.1", N_TRIPLES),
        ("*/*, application/ld+json", JSON_LD),  # the more specific range wins a tie
        ("text/turtle;q=0, */*", JSON_LD),  # q=0 excludes Turtle only
        ("text/html, application/xhtml+xml, application/xml;q=0.9, */*;q=0.8", TURTLE),  # a browser
        ("application/ld+json;q=0.9, application/json", JSON_LD),
        ("application/json", None),
        ("text/html", None),
        ("application/rdf+xml, text/html;q=0.9", None),
        ("text/turtle;q=0", None),
        ("*/*;q=0", None),
        ("text/turtle;q=abc, application/n-triples", N_TRIPLES),  # a malformed range is ignored
        ("garbage", TURTLE),  # nothing parseable: as if absent
    ],
)
def test_accept_negotiation(accept: str | None, expected: str | None) -> None:
    assert negotiate(accept) == expected


# --------------------------------------------------------------------------- ODRL offers


def _shape(value: Any) -> Any:
    """A policy model without blank-node ids and without order (RDF has none)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return tuple(
            (f.name, _shape(getattr(value, f.name)))
            for f in dataclasses.fields(value)
            if not (f.name == "id" and str(getattr(value, f.name)).startswith("_:"))
        )
    if isinstance(value, tuple | list):
        return tuple(sorted((_shape(v) for v in value), key=repr))
    if isinstance(value, dict):
        return tuple(sorted((k, _shape(v)) for k, v in value.items()))
    return value


def test_offers_parse_back_to_the_same_policies(graph: Graph, datasets: list[DatasetInfo]) -> None:
    for ds in datasets:
        nodes: list[Node] = list(graph.objects(URIRef(ds.id), ODRL.hasPolicy))
        assert {str(n) for n in nodes} == {o["@id"] for o in ds.offers}
        for node in nodes:
            from_graph = policy_from_graph(graph, node, strict=True)
            original = policy_from_graph(
                jsonld_to_graph({"@context": list(OFFER_CONTEXT), **OFFERS[str(node)]}), strict=True
            )
            assert _shape(from_graph) == _shape(original)
            assert from_graph.permissions
            assert from_graph.type == str(ODRL.Offer)
    count = policy_from_graph(graph, "urn:uuid:offer-count", strict=True)
    limit = count.permissions[0].constraints[0]
    assert isinstance(limit, Constraint) and limit.right[0].py == 10
    assert count.prohibitions[0].actions[0].iri == str(ODRL.distribute)


def test_an_offer_shared_by_two_datasets_is_described_once(info: ConnectorInfo) -> None:
    shared = [
        DatasetInfo(
            id=f"urn:d{i}", title=f"D{i}", distributions=[("HttpData-PULL", DSP_URL)], offers=[OFFER_COUNT]
        )
        for i in (1, 2)
    ]
    g = self_description_graph(info, shared)
    policy = policy_from_graph(g, "urn:uuid:offer-count", strict=True)
    assert len(policy.permissions) == 1 and len(policy.prohibitions) == 1


# --------------------------------------------------------------------------- refusals


def _dataset(**changes: Any) -> DatasetInfo:
    base = DatasetInfo(
        id="urn:d", title="D", distributions=[("HttpData-PULL", DSP_URL)], offers=[OFFER_RESEARCH]
    )
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize(
    ("connector", "dataset", "message"),
    [
        ({"security_profile": BASE + "NO_PROFILE"}, None, "security_profile"),
        ({"curator": "Provider Org"}, None, "curator"),
        ({"dsp_base_url": "ftp://provider.example/dsp"}, None, "dsp_base_url"),
        ({"title": " "}, None, "title"),
        ({"dsp_versions": ("v9",)}, None, "dsp_versions"),
        ({"dsp_versions": "2025-1"}, None, "dsp_versions"),
        (
            {"public_key_pem": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"},
            None,
            "public key",
        ),
        ({}, {"offers": []}, "offer"),
        ({}, {"distributions": []}, "distribution"),
        ({}, {"id": "not an iri"}, "datasets[0].id"),
        ({}, {"media_type": "csv"}, "media_type"),
        ({}, {"keywords": "weather"}, "keywords"),
        ({}, {"offers": [dict(OFFER_RESEARCH, **{"@type": "Agreement"})]}, "Offer"),
        ({}, {"offers": [dict(OFFER_RESEARCH, **{"@id": "urn:d"})]}, "differ"),
        (
            {},
            {"offers": [OFFER_RESEARCH, dict(OFFER_COUNT, **{"@id": OFFER_RESEARCH["@id"]})]},
            "different terms",
        ),
        (
            {},
            {"offers": [dict(OFFER_RESEARCH, **{"@context": "https://evil.example/ctx.jsonld"})]},
            "refusing to load remote document",
        ),
    ],
)
def test_bad_configuration_is_refused(
    info: ConnectorInfo,
    connector: dict[str, Any],
    dataset: dict[str, Any] | None,
    message: str,
    network_attempts: list[Any],
) -> None:
    with pytest.raises(SelfDescriptionError) as err:
        self_description_graph(dataclasses.replace(info, **connector), [_dataset(**(dataset or {}))])
    assert message in str(err.value)
    assert network_attempts == []


# --------------------------------------------------------------------------- DSP versions


def test_dsp_spec_iris() -> None:
    assert dsp_spec_iri("2025-1") == URIRef("https://w3id.org/dspace/2025/1")
    assert dsp_spec_iri("2024-1") == URIRef("https://w3id.org/dspace/2024/1")
    with pytest.raises(SelfDescriptionError):
        dsp_spec_iri("latest")


def test_the_dsp_catalog_ids_and_several_versions_can_be_given(info: ConnectorInfo) -> None:
    g = self_description_graph(
        dataclasses.replace(
            info,
            catalog_id="urn:uuid:catalog-1",
            dsp_service_id="urn:uuid:service-1",
            dsp_versions=("2025-1", "2024-1"),
        ),
        [_dataset()],
    )
    connector = URIRef(info.id)
    assert g.value(connector, IDS.resourceCatalog) == URIRef("urn:uuid:catalog-1")
    service = URIRef("urn:uuid:service-1")
    assert g.value(connector, IDS.hasDefaultEndpoint) == service
    assert set(g.objects(service, DCT.conformsTo)) == {
        URIRef("https://w3id.org/dspace/2025/1"),
        URIRef("https://w3id.org/dspace/2024/1"),
    }
    assert g.value(g.value(URIRef("urn:d"), DCAT.distribution), DCAT.accessService) == service


def test_dsp_version_metadata_matches_the_dsp_schema(info: ConnectorInfo, conformance: Path) -> None:
    schema = json.loads((conformance / "dsp/schemas/common/protocol-version-schema.json").read_text())
    body = dsp_version_metadata(info)
    jsonschema.validate(body, schema)
    assert body == {"protocolVersions": [{"version": "2025-1", "path": "/api/dsp", "binding": "HTTPS"}]}
