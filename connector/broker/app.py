"""The broker's HTTP edge: parse, authenticate, call the core (connector.broker.service), answer.

Routes:

* ``GET /``: the broker's self-description (``ids:Broker``; Turtle, JSON-LD, N-Triples), or for
  ``Accept: text/html`` a page listing the connectors and, with ``?q=``, datasets found;
* ``POST /registrations``: a self-description (``text/turtle`` or ``application/ld+json``) with
  the registering connector's DAT (``Authorization: Bearer``): 201 (new) or 200 (replaced) with
  the entry, the listed violations and what was coerced; ``Location`` names the entry;
* ``GET /registrations``, ``GET /registrations/{id}``: the entries (public);
* ``DELETE /registrations/{id}``: the owner's DAT only: 204;
* ``GET /search?q=&theme=&license=&format=&publisher=&template=&sort=&limit=&offset=&all=``:
  datasets of available connectors, from their descriptions and crawled catalogs (``all=true``:
  unavailable ones too); ``template`` is an offer's policy template (connector.broker.templates);
  a filter given several times matches any of its values; ``sort`` is ``relevance``
  (default), ``title`` or ``-title``;
* ``GET|POST /sparql``: the SPARQL 1.1 Protocol, queries only;
* ``GET /crawls``: the federated crawl of each registration (connector.broker.crawl): its state
  (``pending``, ``crawled``, ``failing``), failures in a row, the last error, when it is next due;
* ``POST /catalog/request``: the DSP catalog request (DAT-authenticated as at a connector, DSP
  errors): a catalog of the crawled catalogs, paged (connector.broker.catalogs);
* ``POST /products`` (a DAT; ``{"datasetId", "title", "license", "contentSha256"}``): 201 with
  the data product's signed certificate and earlier registrations of the same content by others
  (connector.broker.products); ``GET /products/{id}``: the certificate;
* ``GET /metrics``: Prometheus metrics, only with a configured key (connector.broker.metrics).

Where a DAT is taken, its certificate binding is checked as the ``tls_mode`` says (one
`ClientCertificates`, connector.http.clientcert, as at a connector's DSP port).

Every refusal is ``{"error": reason}`` (registrations refused as not indexable add
``"problems"``), never a 500 for bad input.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web
from pydantic import ValidationError

from connector.broker import catalogs
from connector.broker.description import FILTER_KINDS, JSONLD_TYPES, DescriptionRefused
from connector.broker.metrics import SEARCHES, metrics_route
from connector.broker.pages import broker_graph, html_page
from connector.broker.products import ProductIn
from connector.broker.service import Broker, NotYours, ProductsOff
from connector.broker.sparql import SparqlRefused, negotiate_result, serialize_result
from connector.broker.store import SORTS, OwnedByAnother, SearchQuery
from connector.faults import StoreUnavailable
from connector.http import dsp
from connector.http.clientcert import BindingRefused, CertificateHeaderError, ClientCertificates, bound_claims
from connector.http.errors import storage_fault
from connector.http.limits import (
    LIMITS,
    LimitError,
    Limits,
    load_json,
    one_header,
    query_int,
    read_body,
    read_json,
)
from connector.identity.errors import IdentityError
from connector.identity.verify import Verifier
from connector.protocol.errors import ProtocolError
from connector.protocol.messages import CatalogRequestMessage
from connector.selfdescription import MEDIA_TYPES, negotiate, serialize

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class About:
    """What the broker says about itself."""

    title: str = "Data space broker"
    public_url: str | None = None  # default: the scheme and Host of the request
    participant_id: str | None = None
    curator: str = "https://example.org/"  # the participants responsible for the broker
    maintainer: str = "https://example.org/"
    security_profile: str = "https://w3id.org/idsa/code/BASE_SECURITY_PROFILE"
    catalog_page_size: int = catalogs.DEFAULT_PAGE_SIZE  # of its DSP catalog of catalogs


BROKER = web.AppKey("broker", Broker)
VERIFIER = web.AppKey("verifier", Verifier)
BODY_BYTES = web.AppKey("body_bytes", int)
CLIENT_CERTS = web.AppKey("client_certs", ClientCertificates)
ABOUT = web.AppKey("about", About)
MAX_QUERY_CHARS = 100_000
MAX_FILTER_VALUES = 20
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, reason: str, **extra: Any) -> web.Response:
    return web.json_response({"error": reason, **extra}, status=status)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.content_type != "application/json":
            kept = {k: v for k, v in exc.headers.items() if k.lower() == "www-authenticate"}
            return web.json_response({"error": exc.reason}, status=exc.status, headers=kept)
        raise
    except DescriptionRefused as exc:
        return _error(400, "the description cannot be registered", problems=list(exc.problems))
    except (NotYours, SparqlRefused, ProductsOff) as exc:
        return _error(exc.status, exc.reason)
    except OwnedByAnother as exc:
        return _error(exc.status, str(exc))
    except LimitError as exc:
        return _error(exc.status, exc.reason)
    except ValidationError as exc:
        return _error(
            400,
            "invalid request",
            problems=[f"{'.'.join(str(x) for x in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()],
        )
    except IdentityError as exc:
        return _error(exc.status if exc.status == 503 else 401, f"DAT refused: {exc.description}")
    except StoreUnavailable as exc:
        fault = storage_fault(exc, where=f"{request.method} {request.path}")
        return web.json_response({"error": fault.reason}, status=fault.status, headers=fault.headers)


async def _subject(request: web.Request) -> str:
    header = one_header(request, "Authorization")
    if header[:7].lower() != "bearer " or not header[7:].strip():
        raise web.HTTPUnauthorized(
            reason="a DAT is required: Authorization: Bearer <DAT>", headers={"WWW-Authenticate": "Bearer"}
        )
    try:  # IdentityError: answered by the error middleware
        claims = await bound_claims(
            request.app[VERIFIER], request.app[CLIENT_CERTS], request, header[7:].strip()
        )
    except CertificateHeaderError as exc:  # a trusted proxy's unreadable header: never guessed
        log.warning("%s %s: %s", request.method, request.path, exc)
        raise web.HTTPUnauthorized(reason=str(exc)) from exc
    except BindingRefused as exc:
        raise web.HTTPUnauthorized(reason=exc.reason) from exc
    return claims.subject


async def register(request: web.Request) -> web.Response:
    subject = await _subject(request)
    limits: Limits = request.app[LIMITS]
    body = await read_body(
        request, max_bytes=request.app[BODY_BYTES], timeout=limits.body_timeout, key="broker.max_body_bytes"
    )
    content_type = request.headers.get("Content-Type", "")
    if content_type.split(";", 1)[0].strip().lower() in JSONLD_TYPES:
        load_json(body, limits)  # depth, sizes and NaN refused before the JSON-LD processor
    done = await request.app[BROKER].register(subject, body, content_type)
    broker = request.app[BROKER]
    view = done.registration.view(broker.clock(), broker.settings.ttl)
    return web.json_response(
        {**view, "coerced": list(done.coerced)},
        status=201 if done.created else 200,
        headers={"Location": f"/registrations/{done.registration.id}"},
    )


async def unregister(request: web.Request) -> web.Response:
    subject = await _subject(request)
    try:
        await request.app[BROKER].unregister(subject, request.match_info["id"])
    except KeyError:
        return _error(404, "no such registration")
    return web.Response(status=204)


async def list_registrations(request: web.Request) -> web.Response:
    broker = request.app[BROKER]
    now = broker.clock()
    return web.json_response(
        {"registrations": [r.view(now, broker.settings.ttl) for r in await broker.registrations()]}
    )


async def get_registration(request: web.Request) -> web.Response:
    broker = request.app[BROKER]
    reg = await broker.get(request.match_info["id"])
    if reg is None:
        return _error(404, "no such registration")
    return web.json_response(reg.view(broker.clock(), broker.settings.ttl))


def search_query(params: Any) -> SearchQuery:
    """The search request from query parameters; LimitError (400) for bad ones."""
    known = {"q", "limit", "offset", "all", "sort", *FILTER_KINDS}
    unknown = sorted(set(params) - known)
    if unknown:
        raise LimitError(f"unknown parameter {unknown[0][:40]!r}: use {', '.join(sorted(known))}")
    texts = params.getall("q", [])
    if len(texts) > 1:
        raise LimitError("give q once")
    text = texts[0] if texts else ""
    if len(text) > 1000:
        raise LimitError("q is longer than 1000 characters")
    filters: dict[str, list[str]] = {}
    for kind in FILTER_KINDS:
        values = params.getall(kind, [])
        if len(values) > MAX_FILTER_VALUES or any(len(v) > 2000 for v in values):
            raise LimitError(f"{kind}: at most {MAX_FILTER_VALUES} values of 2000 characters")
        if values:
            filters[kind] = values
    sorts = params.getall("sort", [])
    if len(sorts) > 1 or (sorts and sorts[0] not in SORTS):
        raise LimitError(f"sort must be one of {', '.join(SORTS)}")
    everything = params.getall("all", [])
    if everything not in ([], ["true"], ["false"]):
        raise LimitError("all must be true or false")
    return SearchQuery(
        text=text,
        filters=filters,
        limit=query_int(params, "limit", 20, minimum=1, maximum=200),
        offset=query_int(params, "offset", 0, minimum=0, maximum=100_000),
        include_unavailable=everything == ["true"],
        sort=sorts[0] if sorts else "relevance",
    )


async def search(request: web.Request) -> web.Response:
    query = search_query(request.query)
    page = await request.app[BROKER].search(query)
    SEARCHES.labels("search").inc()
    return web.json_response(
        {
            "total": page.total,
            "limit": query.limit,
            "offset": query.offset,
            "results": [h.view() for h in page.hits],
        }
    )


async def _sparql_text(request: web.Request) -> str:
    """The query of a SPARQL 1.1 Protocol request; updates and malformed requests refused."""
    if request.method == "GET":
        params: dict[str, list[str]] = {k: request.query.getall(k) for k in request.query}
    else:
        limits: Limits = request.app[LIMITS]
        raw = await read_body(request, max_bytes=MAX_QUERY_CHARS * 4, timeout=limits.body_timeout)
        media = request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise LimitError("the body is not UTF-8") from None
        if media == "application/sparql-update":
            raise SparqlRefused("updates are refused: this SPARQL endpoint is read-only")
        if media == "application/sparql-query":
            params = {"query": [text]}
        elif media == "application/x-www-form-urlencoded":
            params = parse_qs(text, keep_blank_values=True, max_num_fields=100)
        else:
            raise web.HTTPUnsupportedMediaType(
                reason="send application/sparql-query or application/x-www-form-urlencoded"
            )
    if "update" in params:
        raise SparqlRefused("updates are refused: this SPARQL endpoint is read-only")
    queries = params.get("query", [])
    if len(queries) != 1 or not queries[0].strip():
        raise LimitError("give one query (the query parameter)")
    if "default-graph-uri" in params or "named-graph-uri" in params:
        raise LimitError(
            "default-graph-uri and named-graph-uri are not supported: the default "
            "graph is the union of all registered descriptions"
        )
    if len(queries[0]) > MAX_QUERY_CHARS:
        raise LimitError(f"the query is longer than {MAX_QUERY_CHARS} characters")
    return queries[0]


async def sparql(request: web.Request) -> web.Response:
    text = await _sparql_text(request)
    result = await request.app[BROKER].index.query(text)
    SEARCHES.labels("sparql").inc()
    media = negotiate_result(request.headers.get("Accept"), result.kind)
    if media is None:
        return _error(406, f"cannot answer a {result.kind} result in the accepted media types")
    body = serialize_result(result, media)
    charset = None if media == "application/n-triples" else "utf-8"
    return web.Response(body=body, content_type=media, charset=charset)


async def register_product(request: web.Request) -> web.Response:
    subject = await _subject(request)
    limits: Limits = request.app[LIMITS]
    body = await read_body(request, max_bytes=64 * 1024, timeout=limits.body_timeout)
    product = ProductIn.model_validate(load_json(body, limits))
    done = await request.app[BROKER].register_product(subject, product)
    return web.json_response(
        {"id": done.id, "certificate": done.certificate, "duplicateOf": list(done.duplicate_of)},
        status=201,
        headers={"Location": f"/products/{done.id}"},
    )


async def get_product(request: web.Request) -> web.Response:
    certificate = await request.app[BROKER].product_certificate(request.match_info["id"])
    if certificate is None:
        return _error(404, "no such data product")
    return web.json_response({"id": request.match_info["id"], "certificate": certificate})


async def list_crawls(request: web.Request) -> web.Response:
    return web.json_response({"crawls": [c.view() for c in await request.app[BROKER].crawls()]})


def _public_url(request: web.Request) -> str:
    about: About = request.config_dict[ABOUT]
    return about.public_url or f"{request.scheme}://{request.host}"


async def catalog_request(request: web.Request) -> web.Response:
    """DSP: the catalog of the crawled catalogs (the sender is authenticated by the DSP
    middleware, connector.http.dsp, as at a connector)."""
    limits: Limits = request.config_dict[LIMITS]
    try:
        body = await read_json(
            request, max_bytes=limits.dsp_body_bytes, limits=limits, key="limits.dsp_body_bytes"
        )
        page_size = query_int(
            request.query,
            "pageSize",
            request.config_dict[ABOUT].catalog_page_size,
            minimum=1,
            maximum=catalogs.MAX_PAGE_SIZE,
        )
    except LimitError as exc:
        raise ProtocolError(exc.status, str(exc.status), [exc.reason]) from exc
    if CatalogRequestMessage.parse(body).filter:
        raise ProtocolError(400, "400", ["catalog filters are not supported"])
    after = catalogs.read_cursor(request.query.get("cursor"))
    broker: Broker = request.config_dict[BROKER]
    entries = await broker.crawled_page(after, page_size + 1)
    SEARCHES.labels("catalog").inc()
    public = _public_url(request)
    about: About = request.config_dict[ABOUT]
    wire = catalogs.catalog_of_catalogs(
        entries[:page_size], catalog_id=f"{public}/catalog", participant_id=about.participant_id or public
    )
    resp = web.json_response(wire)
    if len(entries) > page_size:
        resp.headers["Link"] = catalogs.next_link(
            f"{public}/catalog/request", page_size, entries[page_size - 1]
        )
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        resp.enable_compression()
    return resp


def _wants_html(accept: str | None) -> bool:
    """A browser's Accept (text/html named before any RDF type)."""
    for part in (accept or "").split(","):
        media = part.split(";", 1)[0].strip().lower()
        if media in ("text/html", "application/xhtml+xml"):
            return True
        if media in MEDIA_TYPES:
            return False
    return False


async def root(request: web.Request) -> web.Response:
    broker = request.app[BROKER]
    about: About = request.app[ABOUT]
    accept = request.headers.get("Accept")
    if _wants_html(accept):
        query = request.query.get("q", "")[:1000]
        found = None
        if query:
            found = await broker.search(SearchQuery(text=query, limit=50))
            SEARCHES.labels("page").inc()
        page = html_page(
            about.title, await broker.registrations(), broker.clock(), broker.settings.ttl, query, found
        )
        return web.Response(
            text=page, content_type="text/html", headers={"Content-Security-Policy": "default-src 'none'"}
        )
    media = negotiate(accept)
    if media is None:
        return _error(406, f"the self-description is served as {', '.join(MEDIA_TYPES)} or text/html")
    public = about.public_url or f"{request.scheme}://{request.host}"
    body = serialize(
        broker_graph(
            public,
            about.title,
            about.participant_id,
            curator=about.curator,
            maintainer=about.maintainer,
            security_profile=about.security_profile,
        ),
        media,
    )
    return web.Response(
        body=body, content_type=media, charset=None if media == "application/n-triples" else "utf-8"
    )


def broker_app(
    broker: Broker,
    verifier: Verifier,
    *,
    limits: Limits,
    body_bytes: int,
    client_certs: ClientCertificates,
    about: About | None = None,
    metrics_key: str | None = None,
) -> web.Application:
    """The broker's routes; ``client_certs``: where a request's client certificate comes from
    ([broker] tls_mode); ``metrics_key``: GET /metrics behind it (None: no such route)."""
    app = web.Application(middlewares=[errors], client_max_size=body_bytes)
    app[BROKER] = broker
    app[VERIFIER] = verifier
    app[LIMITS] = limits
    app[BODY_BYTES] = body_bytes
    app[CLIENT_CERTS] = client_certs
    app[ABOUT] = about or About()
    app.router.add_get("/", root)
    app.router.add_post("/registrations", register)
    app.router.add_get("/registrations", list_registrations)
    app.router.add_get("/registrations/{id}", get_registration)
    app.router.add_delete("/registrations/{id}", unregister)
    app.router.add_get("/search", search)
    app.router.add_get("/sparql", sparql)
    app.router.add_post("/sparql", sparql)
    app.router.add_post("/products", register_product)
    app.router.add_get("/products/{id}", get_product)
    app.router.add_get("/crawls", list_crawls)
    if metrics_key is not None:
        app.router.add_routes([metrics_route(metrics_key, broker.availability)])
    # DSP, as a connector serves it: DAT (and its TLS binding) checked, DSP error bodies
    catalog = web.Application(
        middlewares=[dsp.errors, dsp.auth_middleware(verifier, client_certs=client_certs)],
        client_max_size=body_bytes,
    )
    catalog[LIMITS] = limits
    catalog.router.add_post("/request", catalog_request)
    app.add_subapp("/catalog", catalog)
    return app
