"""What the broker reads from a registered self-description: pure, no I/O.

A registration body is an RDF self-description (Turtle or JSON-LD; JSON-LD is expanded with the
offline loader only, so a hostile ``@context`` URL is never fetched). From its graph the broker
takes:

* the connector: the one node typed ``ids:BaseConnector``, ``ids:TrustedConnector`` or
  ``ids:Connector``; its IRI identifies the registration;
* who it belongs to: ``dspace:participantId`` on the connector (as connectors of this project
  write it) and the connector's ``ids:curator`` / ``ids:maintainer`` (as other IDS connectors
  name their participant); the registering DAT's subject must be one of them;
* its DSP endpoint: ``ids:hasDefaultEndpoint`` (else an ``ids:hasEndpoint``) with
  ``ids:accessURL`` or ``dcat:endpointURL``;
* the datasets: nodes typed ``dcat:Dataset`` or ``ids:Resource`` / ``ids:DataResource``, with
  title, description, keywords and publisher (DCAT/DCT or IDS terms) and the filter terms:
  theme, license, format (``dct:format``, ``dcat:mediaType`` on distributions or IDS
  representations).

What cannot be indexed (no connector, several connectors, no endpoint) is refused with the list
of problems (:class:`DescriptionRefused`). Unambiguous losses of the Java information model's
JSON-LD are coerced (:func:`coerce`): a plain-string ``ids:keyValue`` that is valid base64 gets
its ``xsd:base64Binary`` datatype back.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from dataclasses import dataclass

import pyoxigraph as ox
from rdflib import RDF, BNode, Graph, Literal, URIRef
from rdflib.term import Node

from connector.odrl.parse import PolicyError, jsonld_to_graph
from connector.vocab import DCAT, DCT, DSPACE, IDS, XSD

__all__ = [
    "CONNECTOR_TYPES",
    "DatasetEntry",
    "Described",
    "DescriptionRefused",
    "coerce",
    "describe",
    "owner_problem",
    "parse_description",
]

CONNECTOR_TYPES = (IDS.BaseConnector, IDS.TrustedConnector, IDS.Connector)
DATASET_TYPES = (DCAT.Dataset, IDS.Resource, IDS.DataResource)
IANA_MEDIA_TYPES = "https://www.iana.org/assignments/media-types/"
# template: the policy template of an offer (connector.broker.templates), from crawled catalogs
FILTER_KINDS = ("theme", "license", "format", "publisher", "template")
MAX_TEXT = 4096  # characters kept of one title / description for the index


class DescriptionRefused(Exception):
    """The description cannot be indexed; ``problems`` says why (one line each)."""

    status = 400

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(self.problems))


@dataclass(frozen=True, slots=True)
class DatasetEntry:
    id: str
    title: str
    description: str
    keywords: tuple[str, ...]
    publisher: str
    themes: tuple[str, ...]
    licenses: tuple[str, ...]
    formats: tuple[str, ...]
    templates: tuple[str, ...] = ()

    def terms(self) -> list[tuple[str, str]]:
        """(kind, value) pairs the filters match exactly."""
        out = [("theme", t) for t in self.themes] + [("license", x) for x in self.licenses]
        out += [("format", f) for f in self.formats]
        out += [("template", t) for t in self.templates]
        if self.publisher:
            out.append(("publisher", self.publisher))
        return sorted(set(out))


@dataclass(frozen=True, slots=True)
class Described:
    connector: str
    participants: frozenset[str]
    title: str
    endpoint: str
    datasets: tuple[DatasetEntry, ...]


# --------------------------------------------------------------------------- parsing

TURTLE_TYPES = ("text/turtle", "application/x-turtle")
JSONLD_TYPES = ("application/ld+json", "application/json")


def parse_description(body: bytes, content_type: str, *, max_triples: int) -> Graph:
    """The graph of a registration body; DescriptionRefused if it is not Turtle or JSON-LD."""
    media = content_type.split(";", 1)[0].strip().lower()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise DescriptionRefused(["the body is not UTF-8"]) from None
    if media in TURTLE_TYPES:
        g = Graph()
        try:
            # pyoxigraph's parser (Rust) is ~10x rdflib's for Turtle; terms mapped to rdflib's
            g.addN((*_triple(t), g) for t in ox.parse(body, format=ox.RdfFormat.TURTLE))
        except SyntaxError as exc:
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else "syntax error"
            raise DescriptionRefused([f"invalid Turtle: {first}"]) from None
    elif media in JSONLD_TYPES:
        try:
            document = json.loads(text)
        except (ValueError, RecursionError):
            raise DescriptionRefused(["invalid JSON"]) from None
        try:
            g = jsonld_to_graph(document, "the self-description")
        except PolicyError as exc:
            raise DescriptionRefused([str(exc)]) from None
    else:
        raise DescriptionRefused(
            [
                f"Content-Type {media or '(none)'} is not a self-description: "
                "send text/turtle or application/ld+json"
            ]
        )
    if len(g) > max_triples:
        raise DescriptionRefused(
            [
                f"the description has {len(g)} triples, more than the broker "
                f"indexes ({max_triples}, broker.max_triples)"
            ]
        )
    return g


_XSD_STRING = str(XSD.string)


def _term(t: ox.NamedNode | ox.BlankNode | ox.Literal | ox.Triple) -> Node:
    if isinstance(t, ox.NamedNode):
        return URIRef(t.value)
    if isinstance(t, ox.BlankNode):
        return BNode(t.value)
    if isinstance(t, ox.Literal):
        if t.language:
            return Literal(t.value, lang=t.language)
        dt = t.datatype.value
        return Literal(t.value, datatype=None if dt == _XSD_STRING else URIRef(dt))
    raise DescriptionRefused(["RDF-star quoted triples are not supported"])


def _triple(q: ox.Quad | ox.Triple) -> tuple[Node, Node, Node]:
    return _term(q.subject), _term(q.predicate), _term(q.object)


def coerce(g: Graph) -> list[str]:
    """Restore datatypes the Java information model's JSON-LD loses, in place; what was done."""
    done = []
    for s, o in list(g.subject_objects(IDS.keyValue)):
        if isinstance(o, Literal) and o.datatype is None and o.language is None:
            try:
                base64.b64decode(str(o), validate=True)
            except (binascii.Error, ValueError):
                continue
            g.remove((s, IDS.keyValue, o))
            g.add((s, IDS.keyValue, Literal(str(o), datatype=XSD.base64Binary)))
            done.append(f"{s}: ids:keyValue typed xsd:base64Binary")
    return done


# --------------------------------------------------------------------------- reading


def _texts(g: Graph, node: Node, *predicates: URIRef) -> list[str]:
    """Literal values, English or untagged first (stable order)."""
    found: list[tuple[int, str]] = []
    for p in predicates:
        for o in g.objects(node, p):
            if isinstance(o, Literal):
                rank = 0 if o.language in (None, "en") else 1
                found.append((rank, str(o).strip()))
    return [t for _, t in sorted(found) if t]


def _values(g: Graph, node: Node, *predicates: URIRef) -> list[str]:
    """IRIs and literals as strings (IRIs as they are)."""
    out = []
    for p in predicates:
        for o in g.objects(node, p):
            if isinstance(o, URIRef | Literal) and str(o).strip():
                out.append(str(o).strip())
    return out


def _first(texts: list[str]) -> str:
    return texts[0][:MAX_TEXT] if texts else ""


def _endpoint(g: Graph, connector: Node) -> str | None:
    candidates = list(g.objects(connector, IDS.hasDefaultEndpoint)) + list(
        g.objects(connector, IDS.hasEndpoint)
    )
    for endpoint in candidates:
        for url in _values(g, endpoint, IDS.accessURL, DCAT.endpointURL):
            if url.startswith(("https://", "http://")):
                return url
    return None


def _formats(g: Graph, dataset: Node) -> list[str]:
    out: list[str] = []
    for dist in list(g.objects(dataset, DCAT.distribution)) + list(g.objects(dataset, IDS.representation)):
        for value in _values(g, dist, DCT["format"], DCAT.mediaType, IDS.mediaType):
            out.append(value)
            if value.startswith(IANA_MEDIA_TYPES):  # text/csv as well as its IANA IRI
                out.append(value[len(IANA_MEDIA_TYPES) :])
    return out


def _dataset(g: Graph, node: Node) -> DatasetEntry:
    publisher = _values(g, node, DCT.publisher, IDS.publisher)
    return DatasetEntry(
        id=str(node),
        title=_first(_texts(g, node, DCT["title"], IDS["title"])) or str(node),
        description=_first(_texts(g, node, DCT.description, IDS.description)),
        keywords=tuple(sorted({k[:256] for k in _texts(g, node, DCAT.keyword, IDS.keyword)})),
        publisher=publisher[0] if publisher else "",
        themes=tuple(sorted(set(_values(g, node, DCAT.theme, IDS.theme)))),
        licenses=tuple(sorted(set(_values(g, node, DCT.license, IDS.standardLicense)))),
        formats=tuple(sorted(set(_formats(g, node)))),
    )


def describe(g: Graph, *, max_datasets: int) -> Described:
    """The index entry of a description, or DescriptionRefused with every problem."""
    connectors = sorted({s for t in CONNECTOR_TYPES for s in g.subjects(RDF.type, t)}, key=str)
    if not connectors:
        raise DescriptionRefused(
            ["no connector: nothing is typed ids:BaseConnector, ids:TrustedConnector or ids:Connector"]
        )
    if len(connectors) > 1:
        raise DescriptionRefused(
            [f"{len(connectors)} connectors in one description: register each connector on its own"]
        )
    connector = connectors[0]
    problems = []
    if not isinstance(connector, URIRef):
        problems.append("the connector is a blank node: it needs an IRI to be registered")
    endpoint = _endpoint(g, connector)
    if endpoint is None:
        problems.append(
            "no endpoint: the connector has no ids:hasDefaultEndpoint or "
            "ids:hasEndpoint with an http(s) ids:accessURL or dcat:endpointURL"
        )
    participants = frozenset(_values(g, connector, DSPACE.participantId, IDS.curator, IDS.maintainer))
    nodes = sorted(
        {s for t in DATASET_TYPES for s in g.subjects(RDF.type, t) if isinstance(s, URIRef)}, key=str
    )
    if len(nodes) > max_datasets:
        problems.append(
            f"{len(nodes)} datasets, more than the broker indexes per connector "
            f"({max_datasets}, broker.max_datasets)"
        )
    if problems:
        raise DescriptionRefused(problems)
    assert endpoint is not None
    return Described(
        connector=str(connector),
        participants=participants,
        title=_first(_texts(g, connector, IDS["title"], DCT["title"])) or str(connector),
        endpoint=endpoint.rstrip("/"),
        datasets=tuple(_dataset(g, n) for n in nodes),
    )


def owner_problem(described: Described, subject: str) -> str | None:
    """None if the token's subject may register this description, else why not."""
    if subject in described.participants:
        return None
    if not described.participants:
        return (
            "the description names no participant (dspace:participantId, ids:curator or "
            "ids:maintainer on the connector): it cannot be tied to the token's subject"
        )
    named = ", ".join(sorted(described.participants))
    return (
        f"the description is about {named}, not about the token's subject {subject}: a "
        "participant registers only its own connectors"
    )
