"""What the broker says about itself at ``GET /``: its self-description (an ``ids:Broker``, in
Turtle, JSON-LD or N-Triples by ``Accept``), or for a browser (``Accept: text/html``) a page
listing the registered connectors and, with ``?q=``, the datasets found. Pure: rendering only;
every user-supplied or registered text is HTML-escaped."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from rdflib import RDF, Graph, Literal, URIRef

from connector.broker.store import Registration, SearchPage
from connector.selfdescription import IDS_MODEL_VERSION, PREFIXES
from connector.vocab import DSPACE, IDS

__all__ = ["broker_graph", "html_page"]


def broker_graph(
    public_url: str,
    title: str,
    participant_id: str | None,
    *,
    curator: str = "https://example.org/",
    maintainer: str = "https://example.org/",
    security_profile: str = "https://w3id.org/idsa/code/BASE_SECURITY_PROFILE",
) -> Graph:
    """The broker's ``ids:Broker`` description, valid against the IDS 4.2.0 shapes."""
    g = Graph(bind_namespaces="none")
    for prefix, ns in PREFIXES.items():
        g.bind(prefix, ns)
    base = public_url.rstrip("/")
    broker = URIRef(f"{base}/")
    endpoint = URIRef(f"{base}/#registrations")
    g.add((broker, RDF.type, IDS.Broker))
    g.add((broker, IDS["title"], Literal(title)))
    g.add((broker, IDS.inboundModelVersion, Literal(IDS_MODEL_VERSION)))
    g.add((broker, IDS.outboundModelVersion, Literal(IDS_MODEL_VERSION)))
    g.add((broker, IDS.curator, URIRef(curator)))
    g.add((broker, IDS.maintainer, URIRef(maintainer)))
    g.add((broker, IDS.securityProfile, URIRef(security_profile)))
    if participant_id:
        g.add((broker, DSPACE.participantId, Literal(participant_id)))
    g.add((broker, IDS.hasDefaultEndpoint, endpoint))
    g.add((endpoint, RDF.type, IDS.ConnectorEndpoint))
    g.add((endpoint, IDS.accessURL, URIRef(f"{base}/registrations")))
    g.add(
        (
            endpoint,
            IDS.endpointInformation,
            Literal("Registrations (POST, with a DAT), GET /search, GET|POST /sparql", lang="en"),
        )
    )
    return g


def html_page(
    title: str,
    registrations: Sequence[Registration],
    now: float,
    ttl: float,
    query: str = "",
    found: SearchPage | None = None,
) -> str:
    rows = "".join(
        f"<tr><td>{escape(r.title)}</td><td><code>{escape(r.owner)}</code></td>"
        f"<td><code>{escape(r.endpoint)}</code></td><td>{r.datasets}</td>"
        f"<td>{'yes' if r.available(now, ttl) else 'no'}</td></tr>"
        for r in registrations
    )
    results = ""
    if found is not None:
        hits = "".join(
            f"<li><b>{escape(h.title)}</b> <code>{escape(h.dataset_id)}</code> at "
            f"<code>{escape(h.endpoint)}</code><br>{escape(h.description)}</li>"
            for h in found.hits
        )
        results = f"<h2>{found.total} datasets found</h2><ol>{hits}</ol>"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        "</head><body>"
        f"<h1>{escape(title)}</h1>"
        f"<form method='get' action='/'><input name='q' value='{escape(query, quote=True)}'>"
        "<button>Search datasets</button></form>"
        f"{results}<h2>{len(registrations)} connectors</h2>"
        "<table><tr><th>connector</th><th>participant</th><th>DSP endpoint</th>"
        f"<th>datasets</th><th>available</th></tr>{rows}</table></body></html>"
    )
