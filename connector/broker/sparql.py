"""The broker's SPARQL index: every registered description in an in-memory pyoxigraph store,
one named graph per registration (``urn:connector-broker:registration:<id>``), queried with the
default graph as the union of them all.

Read-only and bounded: only SPARQL queries parse (an update is refused, so is ``SERVICE``, which
pyoxigraph would otherwise follow over HTTP: a federated query is a request the broker would make
on a stranger's word); results beyond ``max_rows`` are refused with the limit named (the client
adds a LIMIT); a query runs in a worker thread with a deadline checked between solutions, and
its answer is abandoned at the deadline. A query blocked inside one step (a big ORDER BY) keeps
its thread until it ends: at most ``concurrency`` queries run at once, so such queries cannot
pile up, and a query waiting for a slot past the deadline is refused.

Results: SPARQL 1.1 Query Results JSON, XML and CSV for SELECT / ASK; Turtle and N-Triples for
CONSTRUCT / DESCRIBE.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

import pyoxigraph as ox

__all__ = ["SparqlIndex", "SparqlRefused", "SparqlResult", "graph_iri", "negotiate_result"]

RESULTS_JSON = "application/sparql-results+json"
RESULTS_XML = "application/sparql-results+xml"
CSV = "text/csv"
TURTLE = "text/turtle"
N_TRIPLES = "application/n-triples"
SOLUTION_TYPES = (RESULTS_JSON, RESULTS_XML, CSV)
GRAPH_TYPES = (TURTLE, N_TRIPLES)
_ALIASES = {"application/json": RESULTS_JSON, "application/xml": RESULTS_XML}
_XSD_STRING = "http://www.w3.org/2001/XMLSchema#string"
_LANG_STRING = "http://www.w3.org/1999/02/22-rdf-syntax-ns#langString"

# strings, IRIs and comments blanked before looking for the SERVICE keyword
_OPAQUE = re.compile(
    r'"""[\s\S]*?"""|\'\'\'[\s\S]*?\'\'\'|"(?:[^"\\\n]|\\.)*"|'
    r"'(?:[^'\\\n]|\\.)*'|<[^<>\"{}|^`\\\s]*>|#[^\n]*"
)
_SERVICE = re.compile(r"(?<![\w:?$])SERVICE\b", re.IGNORECASE)


class SparqlRefused(Exception):
    """A query the endpoint does not run; ``status`` and the reason go to the client."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True, slots=True)
class SparqlResult:
    kind: str  # "solutions", "boolean" or "triples"
    variables: tuple[str, ...] = ()
    rows: tuple[tuple[ox.NamedNode | ox.BlankNode | ox.Literal | None, ...], ...] = ()
    boolean: bool = False
    triples: tuple[ox.Triple, ...] = ()


def graph_iri(registration_id: str) -> ox.NamedNode:
    return ox.NamedNode(f"urn:connector-broker:registration:{registration_id}")


class SparqlIndex:
    def __init__(self, *, max_rows: int = 10_000, timeout: float = 10.0, concurrency: int = 2) -> None:
        self._store = ox.Store()
        self.max_rows = max_rows
        self.timeout = timeout
        self._slots = asyncio.Semaphore(concurrency)

    def __len__(self) -> int:
        return len(self._store)

    def replace(self, registration_id: str, ntriples: str) -> None:
        graph = graph_iri(registration_id)
        self._store.remove_graph(graph)
        self._store.load(ntriples.encode("utf-8"), format=ox.RdfFormat.N_TRIPLES, to_graph=graph)

    def remove(self, registration_id: str) -> None:
        self._store.remove_graph(graph_iri(registration_id))

    def rebuild(self, entries: Iterable[tuple[str, str]]) -> None:
        self._store.clear()
        for reg_id, ntriples in entries:
            self.replace(reg_id, ntriples)

    def _run(self, text: str, deadline: float) -> SparqlResult:
        try:
            result = self._store.query(text, use_default_graph_as_union=True)
        except SyntaxError as exc:
            reason = str(exc).splitlines()[0][:300] if str(exc) else "syntax error"
            if re.match(
                r"\s*(?:PREFIX\s+\S*\s*<[^>]*>\s*|BASE\s*<[^>]*>\s*)*(?:INSERT|DELETE|"
                r"LOAD|CLEAR|CREATE|DROP|COPY|MOVE|ADD|WITH)\b",
                text,
                re.IGNORECASE,
            ):
                reason = "updates are refused: this SPARQL endpoint is read-only"
            raise SparqlRefused(f"not a SPARQL query: {reason}") from None
        except OSError as exc:
            raise SparqlRefused(f"the query cannot be evaluated: {exc}") from None
        if isinstance(result, ox.QueryBoolean):
            return SparqlResult("boolean", boolean=bool(result))
        # pyoxigraph's result iterators must be dropped on the thread that made them: nothing
        # of them leaves this function (not even in a traceback)
        refusal: str | None = None
        variables: tuple[str, ...] = ()
        rows: list[tuple[ox.NamedNode | ox.BlankNode | ox.Literal | None, ...]] = []
        triples: list[ox.Triple] = []
        wanted: list[ox.Variable] = []
        item: object = None
        if isinstance(result, ox.QuerySolutions):
            variables = tuple(v.value for v in result.variables)
            wanted = list(result.variables)
        for n, item in enumerate(result):
            if n >= self.max_rows:
                refusal = (
                    f"the result has more than {self.max_rows} rows (broker.sparql_max_rows): add a LIMIT"
                )
                break
            if time.monotonic() > deadline:
                refusal = f"the query did not finish within {self.timeout:g} s (broker.sparql_timeout)"
                break
            if isinstance(item, ox.Triple):
                triples.append(item)
            else:
                rows.append(tuple(item[v] for v in wanted))  # type: ignore[index]
        kind = "solutions" if isinstance(result, ox.QuerySolutions) else "triples"
        del result, item
        if refusal is not None:
            raise SparqlRefused(refusal)
        return SparqlResult(kind, variables=variables, rows=tuple(rows), triples=tuple(triples))

    async def query(self, text: str) -> SparqlResult:
        scrubbed = _OPAQUE.sub(" ", text)
        if _SERVICE.search(scrubbed):
            raise SparqlRefused("SERVICE (federated query) is not allowed here")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        too_slow = SparqlRefused(
            f"the query did not finish within {self.timeout:g} s (broker.sparql_timeout)"
        )
        try:
            async with asyncio.timeout_at(deadline):
                await self._slots.acquire()
        except TimeoutError:
            raise SparqlRefused("too many SPARQL queries running, retry later", 503) from None
        try:
            # the thread may outlive an abandoned answer; the slot is held until it ends
            work = asyncio.ensure_future(asyncio.to_thread(self._run, text, time.monotonic() + self.timeout))
            work.add_done_callback(lambda _: self._slots.release())
        except BaseException:
            self._slots.release()
            raise
        try:
            async with asyncio.timeout_at(deadline):
                return await asyncio.shield(work)
        except TimeoutError:
            raise too_slow from None


# --------------------------------------------------------------------------- result formats


def _ranges(accept: str | None) -> list[tuple[float, int, str]]:
    out = []
    for n, part in enumerate((accept or "").split(",")):
        fields = [f.strip() for f in part.split(";")]
        q = 1.0
        for param in fields[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        media = fields[0].lower()
        if media and q > 0:
            out.append((-q, n, _ALIASES.get(media, media)))
    return sorted(out)


def negotiate_result(accept: str | None, kind: str) -> str | None:
    """The media type for a result of ``kind`` given an Accept header (None: 406)."""
    offered = GRAPH_TYPES if kind == "triples" else SOLUTION_TYPES
    ranges = _ranges(accept)
    if not ranges:
        return offered[0]
    for _, _, media in ranges:
        if media in offered:
            return media
        if media == "*/*" or (media.endswith("/*") and any(o.startswith(media[:-1]) for o in offered)):
            return next(o for o in offered if media == "*/*" or o.startswith(media[:-1]))
    if kind == "boolean" and any(m == CSV for _, _, m in ranges):
        return CSV
    return None


def _json_term(term: ox.NamedNode | ox.BlankNode | ox.Literal) -> dict[str, str]:
    if isinstance(term, ox.NamedNode):
        return {"type": "uri", "value": term.value}
    if isinstance(term, ox.BlankNode):
        return {"type": "bnode", "value": term.value}
    out = {"type": "literal", "value": term.value}
    if term.language:
        out["xml:lang"] = term.language
    elif term.datatype.value != _XSD_STRING:
        out["datatype"] = term.datatype.value
    return out


def _xml_term(term: ox.NamedNode | ox.BlankNode | ox.Literal) -> str:
    if isinstance(term, ox.NamedNode):
        return f"<uri>{escape(term.value)}</uri>"
    if isinstance(term, ox.BlankNode):
        return f"<bnode>{escape(term.value)}</bnode>"
    if term.language:
        return f"<literal xml:lang={quoteattr(term.language)}>{escape(term.value)}</literal>"
    if term.datatype.value not in (_XSD_STRING, _LANG_STRING):
        return f"<literal datatype={quoteattr(term.datatype.value)}>{escape(term.value)}</literal>"
    return f"<literal>{escape(term.value)}</literal>"


def serialize_result(result: SparqlResult, media: str) -> bytes:
    if result.kind == "triples":
        fmt = ox.RdfFormat.TURTLE if media == TURTLE else ox.RdfFormat.N_TRIPLES
        return ox.serialize(list(result.triples), format=fmt) or b""
    if media == RESULTS_JSON:
        if result.kind == "boolean":
            return json.dumps({"head": {}, "boolean": result.boolean}).encode()
        return json.dumps(
            {
                "head": {"vars": list(result.variables)},
                "results": {
                    "bindings": [
                        {
                            v: _json_term(t)
                            for v, t in zip(result.variables, row, strict=True)
                            if t is not None
                        }
                        for row in result.rows
                    ]
                },
            },
            ensure_ascii=False,
        ).encode("utf-8")
    if media == RESULTS_XML:
        head = '<?xml version="1.0"?>\n<sparql xmlns="http://www.w3.org/2005/sparql-results#">'
        if result.kind == "boolean":
            return f"{head}<head/><boolean>{str(result.boolean).lower()}</boolean></sparql>".encode()
        parts = [
            head,
            "<head>",
            *(f"<variable name={quoteattr(v)}/>" for v in result.variables),
            "</head><results>",
        ]
        for row in result.rows:
            parts.append("<result>")
            parts.extend(
                f"<binding name={quoteattr(v)}>{_xml_term(t)}</binding>"
                for v, t in zip(result.variables, row, strict=True)
                if t is not None
            )
            parts.append("</result>")
        parts.append("</results></sparql>")
        return "".join(parts).encode("utf-8")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    if result.kind == "boolean":
        writer.writerow(["boolean"])
        writer.writerow([str(result.boolean).lower()])
    else:
        writer.writerow(result.variables)
        writer.writerows(_csv_row(row) for row in result.rows)
    return out.getvalue().encode("utf-8")


def _csv_row(row: Sequence[ox.NamedNode | ox.BlankNode | ox.Literal | None]) -> list[str]:
    return ["" if t is None else (f"_:{t.value}" if isinstance(t, ox.BlankNode) else t.value) for t in row]
