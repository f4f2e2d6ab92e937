"""The connector's self-description: an RDF graph in the IDS Information Model 4.2.0 with the
connector's DCAT catalog and ODRL offers, served by ``GET /`` in Turtle, JSON-LD or N-Triples.

Pure: no I/O except reading the shipped vocabularies (and, for :func:`validate_ids`, the IDS
shapes). The graph has three parts:

* the connector: an ``ids:BaseConnector`` (``idsc:BASE_SECURITY_PROFILE``) or an
  ``ids:TrustedConnector`` (``idsc:TRUST_SECURITY_PROFILE``, ``idsc:TRUST_PLUS_SECURITY_PROFILE``)
  with ``ids:title``, ``ids:description``, ``ids:curator``, ``ids:maintainer``,
  ``ids:securityProfile``, ``ids:publicKey`` (an ``ids:PublicKey``: ``ids:keyType``
  ``idsc:ED25519`` / ``idsc:ECDSA``, ``ids:keyValue`` the DER SubjectPublicKeyInfo as
  ``xsd:base64Binary``), ``ids:inboundModelVersion`` / ``ids:outboundModelVersion`` "4.2.0",
  ``ids:hasDefaultEndpoint`` (the DSP endpoint) and ``ids:hasEndpoint`` (the DSP endpoint and the
  self-description), and ``dspace:participantId`` (the ``SKI:keyid:AKI`` id, a literal);
* the DSP endpoint: one node typed ``ids:ConnectorEndpoint`` and ``dcat:DataService``, with
  ``ids:accessURL`` and ``dcat:endpointURL`` = the DSP base URL. **The DSP versions spoken are
  stated as** ``dct:conformsTo <https://w3id.org/dspace/2025/1>`` (one per version) on that node:
  DCAT's own idiom for "the standard a data service conforms to"; neither the IDS model nor the
  DSP vocabulary has a dedicated term;
* the catalog: one node typed ``dcat:Catalog`` and ``ids:ResourceCatalog`` (linked by
  ``ids:resourceCatalog``) with ``dcat:service`` (the DSP endpoint), ``dspace:participantId`` and
  ``dcat:dataset`` -> ``dcat:Dataset`` (``dct:title``, ``dct:description``, ``dcat:keyword``,
  ``dcat:distribution`` -> ``dcat:Distribution`` with ``dct:format``, ``dcat:mediaType`` and
  ``dcat:accessService`` -> ``dcat:DataService`` with ``dcat:endpointURL``) and ``odrl:hasPolicy``
  -> the ODRL offers, read from their DSP compacted JSON-LD with the offline loader.

The graph is canonical: blank nodes get content-derived labels, so the same input always gives the
same bytes (usable as an ETag).

Where the IDS shapes and DSP disagree
-------------------------------------
1. *Usage terms.* IDS attaches offers as ``ids:contractOffer`` -> ``ids:ContractOffer`` whose
   rules are ``ids:Permission`` with ``ids:action idsc:USE`` and ``ids:Constraint`` with IDS left
   operands (``idsc:PURPOSE``, ...) and ``ids:BinaryOperator`` codes. DSP 2025-1 puts ODRL 2.2
   offers under ``odrl:hasPolicy`` in its ODRL profile (``odrl:use``, ``odrl:purpose``,
   ``odrl:eq``). We follow DSP: offers are ``odrl:Offer`` nodes under ``odrl:hasPolicy`` and
   datasets are ``dcat:Dataset`` only. They are *not* typed ``ids:Resource`` and there is no
   ``ids:contractOffer``: an IDS consumer would read a resource without IDS rules as "nothing
   offered", and a translation to IDS rules loses ODRL terms the IDS code lists lack.
2. *The catalog.* The shape on ``ids:resourceCatalog`` requires ``sh:class ids:ResourceCatalog``;
   DSP's catalog is a ``dcat:Catalog``. The catalog node carries both types, and links datasets
   with ``dcat:dataset`` (IDS itself declares ``ids:Catalog`` a subclass of ``dcat:Catalog`` and
   ``ids:offeredResource`` a subproperty of ``dcat:dataset``), so the shapes hold.
3. *The protocol.* ``ids:IdsProtocolSpecification`` lists only IDS-REST, IDS-CP, QUERY and
   MULTIPART and no property states a protocol version; DSP is stated with ``dct:conformsTo``.
4. *Endpoint URLs.* The shapes require ``ids:accessURL`` to be an IRI (the ontology says
   ``xsd:anyURI``), and DCAT 3 makes ``dcat:endpointURL`` an IRI too; the DSP context maps
   ``endpointURL`` without ``@type: @id``, so a DSP catalog on the wire expands it to a string
   literal. Here both are IRIs; the DSP catalog (built in ``connector.protocol``) keeps the
   string. SPARQL over both should compare ``STR(?url)``.
5. *Model versions.* The shapes require ``ids:inboundModelVersion`` / ``ids:outboundModelVersion``
   (the IDS message model a component speaks). DSP messages carry no IDS model version; the value
   "4.2.0" states the model of this description only.
6. *Identifiers and formats in DSP itself.* The DSP context types ``participantId`` as ``@id``
   but the schema says string, and ``SKI:keyid:AKI`` is not always an absolute IRI (the hex may
   begin with a digit): it is a literal here. DSP ``format`` values (``HttpData-PULL``) are not
   IRIs although the context coerces them to ``@vocab``: ``dct:format`` is a literal here unless
   an absolute IRI is given.

No well-known URI is registered for IDS self-descriptions, so it is served at ``/``;
``/.well-known/dspace-version`` is DSP's version metadata (:func:`dsp_version_metadata`).
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from pyld import jsonld
from rdflib import RDF, BNode, Graph, Literal, URIRef
from rdflib.compare import isomorphic, to_canonical_graph
from rdflib.term import Node

from connector.vocab import (
    DCAT,
    DCT,
    DSPACE,
    IDS,
    IDSC,
    ODRL,
    XSD,
    jsonld_call,
    vocab_dir,
)
from connector.wireformat import DSP_CONTEXT_URL, DSP_ODRL_PROFILE_URL

__all__ = [
    "IDS_MODEL_VERSION",
    "JSON_LD",
    "MEDIA_TYPES",
    "N_TRIPLES",
    "SECURITY_PROFILES",
    "TURTLE",
    "ConnectorInfo",
    "DatasetInfo",
    "DistributionInfo",
    "SelfDescriptionError",
    "dsp_spec_iri",
    "dsp_version_metadata",
    "negotiate",
    "self_description_graph",
    "serialize",
    "validate_ids",
]

IDS_MODEL_VERSION = "4.2.0"
OFFER_CONTEXT: tuple[str, ...] = (DSP_CONTEXT_URL, DSP_ODRL_PROFILE_URL)

TURTLE = "text/turtle"
JSON_LD = "application/ld+json"
N_TRIPLES = "application/n-triples"
MEDIA_TYPES: tuple[str, ...] = (TURTLE, JSON_LD, N_TRIPLES)  # server preference on equal q

SECURITY_PROFILES: dict[str, URIRef] = {
    str(IDSC.BASE_SECURITY_PROFILE): IDS.BaseConnector,
    str(IDSC.TRUST_SECURITY_PROFILE): IDS.TrustedConnector,
    str(IDSC.TRUST_PLUS_SECURITY_PROFILE): IDS.TrustedConnector,
}

# Prefixes of the Turtle output and the JSON-LD context (inline: readers need no loader).
PREFIXES: dict[str, str] = {
    "ids": str(IDS),
    "idsc": str(IDSC),
    "dcat": str(DCAT),
    "dct": str(DCT),
    "odrl": str(ODRL),
    "dspace": str(DSPACE),
    "xsd": str(XSD),
}
JSONLD_CONTEXT: dict[str, Any] = {"@version": 1.1, **PREFIXES}

INFOMODEL_DIR_ENV = "CONNECTOR_IDS_INFOMODEL_DIR"
_ONTOLOGY_PARTS = ("model", "codes", "taxonomies")
PACKAGED_ONTOLOGY = "ids-infomodel-4.2.0.ttl"  # vocab/ids: the ontology, codes and taxonomies
_ABSOLUTE_IRI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:[^\s<>\"{}|\\^`]+$")
_MEDIA_TYPE = re.compile(r"^[A-Za-z0-9][\w!#$&^.+-]*/[A-Za-z0-9][\w!#$&^.+-]*$")
_IANA_MEDIA_TYPES = "https://www.iana.org/assignments/media-types/"


class SelfDescriptionError(ValueError):
    """The connector or catalog configuration cannot be described (names the bad field)."""


class DistributionInfo(NamedTuple):
    """A dataset distribution: DSP transfer ``format`` and the access service's endpoint URL.

    A plain ``(format, endpoint_url)`` tuple is accepted wherever this is.
    """

    format: str
    endpoint_url: str


@dataclass(frozen=True)
class ConnectorInfo:
    id: str
    participant_id: str
    title: str
    curator: str
    maintainer: str
    security_profile: str
    dsp_base_url: str
    self_description_url: str
    description: str | None = None
    public_key_pem: str | None = None
    public_key_jwk: Mapping[str, Any] | None = None
    dsp_versions: tuple[str, ...] = ("2025-1",)
    inbound_model_version: str = IDS_MODEL_VERSION
    outbound_model_version: str = IDS_MODEL_VERSION
    catalog_id: str | None = None  # the DSP catalog's @id, so both views name the same node
    dsp_service_id: str | None = None  # the DSP catalog's DataService @id


@dataclass(frozen=True)
class DatasetInfo:
    id: str
    title: str
    description: str | None = None
    keywords: Sequence[str] = ()
    media_type: str | None = None
    distributions: Sequence[DistributionInfo | tuple[str, str]] = ()
    offers: Sequence[Mapping[str, Any]] = ()


# --------------------------------------------------------------------------- the graph


def dsp_spec_iri(version: str) -> URIRef:
    """The IRI identifying a DSP version: ``2025-1`` -> ``https://w3id.org/dspace/2025/1``."""
    m = re.fullmatch(r"(\d{4})-(\d+)", version)
    if m:
        return URIRef(f"https://w3id.org/dspace/{m[1]}/{m[2]}")
    if version == "0.8":
        return URIRef("https://w3id.org/dspace/v0.8")
    raise SelfDescriptionError(f"dsp_versions: unknown Dataspace Protocol version {version!r}")


def _iri(value: str, what: str) -> URIRef:
    if not isinstance(value, str) or not _ABSOLUTE_IRI.match(value):
        raise SelfDescriptionError(f"{what}: {value!r} is not an absolute IRI")
    return URIRef(value)


def _url(value: str, what: str) -> URIRef:
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("https", "http") or not parts.netloc:
        raise SelfDescriptionError(f"{what}: {value!r} is not an http(s) URL")
    return _iri(value, what)


def _optional_text(value: str | None, what: str) -> Literal | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise SelfDescriptionError(f"{what}: must be a string")
    return Literal(value)


def _text(value: str, what: str) -> Literal:
    lit = _optional_text(value, what)
    if lit is None:
        raise SelfDescriptionError(f"{what}: must not be empty")
    return lit


def _child(base: str, name: str) -> URIRef:
    return URIRef(f"{base}{'-' if '#' in base else '#'}{name}")


def _public_key(info: ConnectorInfo) -> tuple[URIRef, str] | None:
    """(ids:KeyType code, base64 DER SubjectPublicKeyInfo) of the configured key."""
    from cryptography.hazmat.primitives import serialization

    from connector.identity.keys import KeyFormatError, algorithm_of, public_key_from_jwk

    if info.public_key_pem is not None and info.public_key_jwk is not None:
        raise SelfDescriptionError("give public_key_pem or public_key_jwk, not both")
    try:
        if info.public_key_pem is not None:
            key: Any = serialization.load_pem_public_key(info.public_key_pem.encode("ascii"))
            alg = algorithm_of(key)
        elif info.public_key_jwk is not None:
            alg, key = public_key_from_jwk(info.public_key_jwk)
        else:
            return None
    except (KeyFormatError, ValueError, TypeError, UnicodeEncodeError) as exc:
        raise SelfDescriptionError(f"public key: {exc}") from exc
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    key_type = IDSC.ED25519 if alg == "EdDSA" else IDSC.ECDSA
    return key_type, base64.b64encode(der).decode("ascii")


def _offer_graph(offer: Mapping[str, Any], where: str) -> tuple[Graph, Node]:
    """The RDF of one DSP-form offer and its node (offline loader only; never fetches)."""
    from connector.odrl.parse import PolicyError, find_policy_nodes, jsonld_to_graph, policy_from_graph

    if not isinstance(offer, Mapping):
        raise SelfDescriptionError(f"{where}: an offer must be a JSON object")
    document = dict(offer)
    document.setdefault("@context", list(OFFER_CONTEXT))
    try:
        g = jsonld_to_graph(document, where)
        nodes = find_policy_nodes(g)
        if len(nodes) != 1:
            raise SelfDescriptionError(f"{where}: expected one ODRL offer, found {len(nodes)}")
        node = nodes[0]
        if (node, RDF.type, ODRL.Offer) not in g:
            raise SelfDescriptionError(f"{where}: the policy must be typed Offer (odrl:Offer)")
        policy_from_graph(g, node)  # structural problems fail here, at startup
    except PolicyError as exc:
        raise SelfDescriptionError(str(exc)) from exc
    return g, node


def self_description_graph(info: ConnectorInfo, datasets: Sequence[DatasetInfo]) -> Graph:
    """The connector's self-description (IDS Information Model 4.2.0 + DCAT 3 + ODRL 2.2).

    Raises :class:`SelfDescriptionError` naming the field that cannot be described. See the
    module docstring for the terms used and where the IDS shapes and DSP disagree.
    """
    g = Graph(bind_namespaces="none")
    connector = _iri(info.id, "id")
    profile = SECURITY_PROFILES.get(info.security_profile)
    if profile is None:
        raise SelfDescriptionError(
            f"security_profile: {info.security_profile!r} is not one of {', '.join(SECURITY_PROFILES)}"
        )
    if not info.dsp_versions or isinstance(info.dsp_versions, str):
        raise SelfDescriptionError("dsp_versions: a tuple of at least one Dataspace Protocol version")
    participant = _text(info.participant_id, "participant_id")
    title = _text(info.title, "title")
    description = _optional_text(info.description, "description")
    dsp_url = _url(info.dsp_base_url, "dsp_base_url")

    g.add((connector, RDF.type, profile))
    g.add((connector, IDS["title"], title))
    if description is not None:
        g.add((connector, IDS.description, description))
    g.add((connector, IDS.curator, _iri(info.curator, "curator")))
    g.add((connector, IDS.maintainer, _iri(info.maintainer, "maintainer")))
    g.add((connector, IDS.securityProfile, URIRef(info.security_profile)))
    g.add((connector, IDS.inboundModelVersion, Literal(info.inbound_model_version)))
    g.add((connector, IDS.outboundModelVersion, Literal(info.outbound_model_version)))
    g.add((connector, DSPACE.participantId, participant))

    key = _public_key(info)
    if key is not None:
        key_node = _child(info.id, "public-key")
        g.add((connector, IDS.publicKey, key_node))
        g.add((key_node, RDF.type, IDS.PublicKey))
        g.add((key_node, IDS.keyType, key[0]))
        g.add((key_node, IDS.keyValue, Literal(key[1], datatype=XSD.base64Binary)))

    dsp = (
        _iri(info.dsp_service_id, "dsp_service_id")
        if info.dsp_service_id
        else _child(info.id, "dsp-endpoint")
    )
    g.add((connector, IDS.hasDefaultEndpoint, dsp))
    g.add((connector, IDS.hasEndpoint, dsp))
    g.add((dsp, RDF.type, IDS.ConnectorEndpoint))
    g.add((dsp, RDF.type, DCAT.DataService))
    g.add((dsp, IDS.accessURL, dsp_url))
    g.add((dsp, DCAT.endpointURL, dsp_url))
    for version in info.dsp_versions:
        g.add((dsp, DCT.conformsTo, dsp_spec_iri(version)))
    g.add(
        (
            dsp,
            IDS.endpointInformation,
            Literal(f"Dataspace Protocol {', '.join(info.dsp_versions)}, HTTPS binding", lang="en"),
        )
    )

    sd = _child(info.id, "self-description")
    g.add((connector, IDS.hasEndpoint, sd))
    g.add((sd, RDF.type, IDS.ConnectorEndpoint))
    g.add((sd, IDS.accessURL, _url(info.self_description_url, "self_description_url")))
    g.add(
        (
            sd,
            IDS.endpointInformation,
            Literal(
                "This self-description (text/turtle, application/ld+json, application/n-triples)", lang="en"
            ),
        )
    )

    catalog = _iri(info.catalog_id, "catalog_id") if info.catalog_id else _child(info.id, "catalog")
    g.add((connector, IDS.resourceCatalog, catalog))
    g.add((catalog, RDF.type, DCAT.Catalog))
    g.add((catalog, RDF.type, IDS.ResourceCatalog))
    g.add((catalog, DCAT.service, dsp))
    g.add((catalog, DSPACE.participantId, participant))

    services: dict[str, URIRef] = {str(dsp_url): dsp}
    offers: dict[Node, Graph] = {}
    seen: set[str] = set()
    for n, ds in enumerate(datasets):
        _add_dataset(g, info, ds, f"datasets[{n}]", catalog, services, offers, seen)

    canonical = Graph(bind_namespaces="none")
    for prefix, ns in PREFIXES.items():
        canonical.bind(prefix, ns)
    canonical += to_canonical_graph(g)
    return canonical


def _add_dataset(
    g: Graph,
    info: ConnectorInfo,
    ds: DatasetInfo,
    where: str,
    catalog: URIRef,
    services: dict[str, URIRef],
    offers: dict[Node, Graph],
    seen: set[str],
) -> None:
    node = _iri(ds.id, f"{where}.id")
    if ds.id in seen:
        raise SelfDescriptionError(f"{where}.id: dataset {ds.id} is listed twice")
    seen.add(ds.id)
    # DSP's dataset schema requires at least one distribution and one offer.
    if not ds.distributions:
        raise SelfDescriptionError(f"{where}.distributions: DSP requires at least one distribution")
    if not ds.offers:
        raise SelfDescriptionError(f"{where}.offers: DSP requires at least one offer (hasPolicy)")
    g.add((catalog, DCAT.dataset, node))
    g.add((node, RDF.type, DCAT.Dataset))
    g.add((node, DCT["title"], _text(ds.title, f"{where}.title")))
    description = _optional_text(ds.description, f"{where}.description")
    if description is not None:
        g.add((node, DCT.description, description))
    if isinstance(ds.keywords, str):
        raise SelfDescriptionError(f"{where}.keywords: a list of strings, not one string")
    for k, word in enumerate(ds.keywords):
        lit = _optional_text(word, f"{where}.keywords[{k}]")
        if lit is not None:
            g.add((node, DCAT.keyword, lit))
    media_type: URIRef | None = None
    if ds.media_type is not None:
        if not _MEDIA_TYPE.match(ds.media_type):
            raise SelfDescriptionError(f"{where}.media_type: {ds.media_type!r} is not type/subtype")
        media_type = URIRef(_IANA_MEDIA_TYPES + ds.media_type.lower())

    for k, dist in enumerate(ds.distributions):
        here = f"{where}.distributions[{k}]"
        try:
            fmt, endpoint = DistributionInfo(*dist)
        except TypeError as exc:
            raise SelfDescriptionError(f"{here}: expected (format, endpoint_url)") from exc
        fmt_term = _text(fmt, f"{here}.format")
        url = _url(endpoint, f"{here}.endpoint_url")
        service = services.get(str(url))
        if service is None:
            service = _child(info.id, f"service-{len(services)}")
            services[str(url)] = service
            g.add((service, RDF.type, DCAT.DataService))
            g.add((service, DCAT.endpointURL, url))
        dnode = BNode()
        g.add((node, DCAT.distribution, dnode))
        g.add((dnode, RDF.type, DCAT.Distribution))
        g.add((dnode, DCT["format"], URIRef(fmt) if _ABSOLUTE_IRI.match(fmt) else fmt_term))
        g.add((dnode, DCAT.accessService, service))
        if media_type is not None:
            g.add((dnode, DCAT.mediaType, media_type))

    for k, offer in enumerate(ds.offers):
        here = f"{where}.offers[{k}]"
        og, onode = _offer_graph(offer, here)
        if onode == node:
            raise SelfDescriptionError(f"{here}: the offer's @id must differ from the dataset's id")
        previous = offers.get(onode) if isinstance(onode, URIRef) else None
        if previous is not None:
            if not isomorphic(previous, og):
                raise SelfDescriptionError(f"{here}: offer {onode} is given twice with different terms")
        else:
            if isinstance(onode, URIRef):
                offers[onode] = og
            g += og
        g.add((node, ODRL.hasPolicy, onode))


# --------------------------------------------------------------------------- serializations


def _media_ranges(header: str) -> list[tuple[str, str, float]]:
    ranges = []
    for part in header.split(","):
        fields = [f.strip() for f in part.split(";")]
        mtype = fields[0].lower()
        if mtype.count("/") != 1:
            continue
        main, sub = mtype.split("/")
        if not main or not sub or (main == "*" and sub != "*"):
            continue
        q = 1.0
        valid = True
        for param in fields[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    valid = False
                if not valid or not 0.0 <= q <= 1.0:
                    valid = False
        if valid:
            ranges.append((main, sub, q))
    return ranges


def negotiate(accept_header: str | None) -> str | None:
    """The media type to answer an ``Accept`` header with, or None (the edge answers 406).

    q-values are honoured; each type takes the q of its most specific matching range (RFC 9110
    12.5.1), ties go to the more specific range, then to Turtle, JSON-LD, N-Triples in that order.
    No header, or one with no parseable range, means Turtle.
    """
    if accept_header is None or not accept_header.strip():
        return TURTLE
    ranges = _media_ranges(accept_header)
    if not ranges:
        return TURTLE
    best: tuple[float, int, int] | None = None
    chosen: str | None = None
    for rank, media in enumerate(MEDIA_TYPES):
        main, sub = media.split("/")
        match: tuple[int, float] | None = None
        for rmain, rsub, q in ranges:
            if rmain == main and rsub == sub:
                specificity = 2
            elif rmain == main and rsub == "*":
                specificity = 1
            elif rmain == "*":
                specificity = 0
            else:
                continue
            if match is None or specificity > match[0]:
                match = (specificity, q)
        if match is None or match[1] <= 0.0:
            continue
        key = (match[1], match[0], -rank)
        if best is None or key > best:
            best, chosen = key, media
    return chosen


def serialize(graph: Graph, media_type: str) -> bytes:
    """The graph as UTF-8 bytes in ``media_type`` (one of :data:`MEDIA_TYPES`).

    JSON-LD is compacted with an inline context of the ids/idsc/dcat/dct/odrl/dspace/xsd prefixes,
    so a reader needs no context document; it expands back to an isomorphic graph.
    N-Triples lines are sorted, so equal graphs give equal bytes.
    """
    if media_type == TURTLE:
        bound = {str(ns) for _, ns in graph.namespaces()}
        if not bound.issuperset(PREFIXES.values()):  # a graph not made here: prefix a copy
            prefixed = Graph(bind_namespaces="none")
            for prefix, ns in PREFIXES.items():
                prefixed.bind(prefix, ns)
            prefixed += graph
            graph = prefixed
        return graph.serialize(format="turtle", encoding="utf-8")
    if media_type == N_TRIPLES:
        return _sorted_ntriples(graph)
    if media_type == JSON_LD:
        nquads = _sorted_ntriples(graph).decode("utf-8")  # sorted: pyld keeps the input order
        expanded = _embed_blank_nodes(jsonld.from_rdf(nquads, {"format": "application/n-quads"}))
        compacted = jsonld_call(jsonld.compact, expanded, {"@context": JSONLD_CONTEXT})
        return json.dumps(compacted, indent=2, ensure_ascii=False).encode("utf-8") + b"\n"
    raise ValueError(f"unsupported media type {media_type!r}; use one of {', '.join(MEDIA_TYPES)}")


def _sorted_ntriples(graph: Graph) -> bytes:
    lines = graph.serialize(format="nt", encoding="utf-8").splitlines(keepends=True)
    return b"".join(sorted(line for line in lines if line.strip()))


def _embed_blank_nodes(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Nest each blank node referenced exactly once into its referrer (offers then read as in DSP:
    permission -> constraint). Blank nodes only on a cycle stay at the top level with their id."""
    by_id = {n["@id"]: n for n in nodes}
    refs: dict[str, int] = {}
    for n in nodes:
        for key, values in n.items():
            if not key.startswith("@"):
                for v in values:
                    if "@id" in v:
                        refs[v["@id"]] = refs.get(v["@id"], 0) + 1
    inline = {i for i, count in refs.items() if count == 1 and i.startswith("_:") and i in by_id}
    placed: set[str] = set()

    def embed(node: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, values in node.items():
            if key.startswith("@"):
                out[key] = values
                continue
            new = []
            for v in values:
                ref = v.get("@id")
                if ref in inline and ref not in placed and set(v) == {"@id"}:
                    placed.add(ref)
                    child = embed(by_id[ref])
                    child.pop("@id")
                    new.append(child)
                else:
                    new.append(v)
            out[key] = new
        return out

    top = [embed(n) for n in nodes if n["@id"] not in inline]
    top.extend(embed(by_id[i]) for i in sorted(inline - placed))
    return top


# --------------------------------------------------------------------------- DSP version metadata


def dsp_version_metadata(info: ConnectorInfo) -> dict[str, Any]:
    """The body of DSP's ``/.well-known/dspace-version`` for this connector (DSP 2025-1 4.3)."""
    path = urlsplit(info.dsp_base_url).path or "/"
    return {"protocolVersions": [{"version": v, "path": path, "binding": "HTTPS"} for v in info.dsp_versions]}


# --------------------------------------------------------------------------- IDS SHACL validation


def infomodel_dir() -> Path:
    """Where the IDS Information Model ontology and shapes are: ``$CONNECTOR_IDS_INFOMODEL_DIR``;
    else ``../shared/conformance/ids-infomodel`` beside a checkout; else the copy shipped in the
    package (``vocab/ids``: the shapes under ``shapes/``, the ontology merged in one file), so
    an installed connector or broker (a container) validates without a checkout."""
    env = os.environ.get(INFOMODEL_DIR_ENV)
    if env:
        candidate = Path(env)
        if not (candidate / "testing").is_dir() and not (candidate / "shapes").is_dir():
            raise FileNotFoundError(
                f"IDS Information Model shapes not found at {candidate} ({INFOMODEL_DIR_ENV})"
            )
        return candidate
    checkout = Path(__file__).resolve().parents[2] / "shared" / "conformance" / "ids-infomodel"
    if (checkout / "testing").is_dir():
        return checkout
    packaged = vocab_dir() / "ids"
    if (packaged / "shapes").is_dir():
        return packaged
    raise FileNotFoundError(
        f"IDS Information Model shapes not found at {checkout} nor {packaged} (set {INFOMODEL_DIR_ENV})"
    )


@cache
def _ids_graphs(root: Path) -> tuple[Graph, Graph]:
    """(shapes, ontology): in the upstream layout the union of testing/**/*.ttl and
    Ontology.ttl + model + codes + taxonomies; in the packaged one shapes/**/*.ttl and the
    merged ontology file."""
    shapes = Graph()
    ontology = Graph()
    if (root / "testing").is_dir():
        for path in sorted((root / "testing").rglob("*.ttl")):
            shapes.parse(path, format="turtle")
        ontology.parse(root / "Ontology.ttl", format="turtle")
        for part in _ONTOLOGY_PARTS:
            for path in sorted((root / part).rglob("*.ttl")):
                ontology.parse(path, format="turtle")
        return shapes, ontology
    for path in sorted((root / "shapes").rglob("*.ttl")):
        shapes.parse(path, format="turtle")
    ontology.parse(root / PACKAGED_ONTOLOGY, format="turtle")
    return shapes, ontology


def validate_ids(graph: Graph, root: Path | None = None) -> tuple[bool, str]:
    """Validate against the IDS Information Model 4.2.0 SHACL shapes: (conforms, report text).

    The data graph is ``graph`` merged with the IDS ontology, with ``inference='none'``: passing
    the ontology as pyshacl's ``ont_graph`` leaves the ``idsc:`` individuals untyped, and RDFS
    inference trips the shapes' abstract-class checks. Needs pyshacl (a test extra).
    """
    import pyshacl  # lazy: a test/ops dependency, not a runtime one

    shapes, ontology = _ids_graphs((root or infomodel_dir()).resolve())
    data = Graph()
    data += ontology
    data += graph
    conforms, _, text = pyshacl.validate(
        data,
        shacl_graph=shapes,
        inference="none",
        abort_on_first=False,
        allow_warnings=False,
    )
    return bool(conforms), str(text)
