"""Declarative routes of a JSON API over aiohttp: one `Operation` per method and path, from which
both the router (`add_routes`) and the OpenAPI 3.1 document (`openapi_document`) are generated,
so the document cannot drift from what the server does.

An operation declares its inputs as pydantic models (the request body, the query parameters)
and every status it answers. The endpoint the router installs parses and validates those inputs
before the handler runs (400 with the reasons otherwise) and hands them over typed (`body_of`,
`query_of` check that the handler reads the model its operation declares). The statuses that
follow from the shape of an operation are declared in one place (`common_errors`): 401 on every
protected operation, 400 where there is input to refuse, 413 where a body is read, 503 (with
``Retry-After``) where the store is used; an operation adds its own (404, 409, 502, ...).
Every error answers the same body, `ErrorBody`.

A path parameter matches one whole percent-encoded path segment: any id, including ids with
``/`` (sent as ``%2F``), ``{``, ``}``, ``:``, ``?``, ``#``, ``%`` or non-ASCII characters. aiohttp
matches routes on the path with every escape decoded except ``%2F`` and ``%25`` (so an encoded
``/`` stays inside its segment) and decodes those two in the value it hands over; its default
parameter pattern ``[^{}/]+`` would refuse ``{`` and ``}``, so ours is ``[^/]+``.
"""

from __future__ import annotations

import functools
import re
import typing
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.json_schema import models_json_schema

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ReadJson = Callable[[web.Request], Awaitable[Any]]


class _Blank:
    """What a ``ReadJson`` returns for an empty body (JSON ``null`` is a value, and refused
    where an object is expected)."""


BLANK = _Blank()
Method = Literal["GET", "POST", "PUT", "DELETE"]
M = TypeVar("M", bound=BaseModel)

JSON = "application/json"
TEXT = "text/plain"
REF = "#/components/schemas/{model}"
PATH_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
SEGMENT = "[^/]+"
# the seconds a client waits before retrying a 503 (the store or a process lease is busy)
RETRY_AFTER_SECONDS = 1

# the parsed inputs, for the handler (`body_of`, `query_of`)
_BODY = web.RequestKey("connector.routes.body", BaseModel)
_QUERY = web.RequestKey("connector.routes.query", BaseModel)


class ApiError(Exception):
    """An answer other than success: ``status``, a one-line ``message`` and ``details``."""

    def __init__(
        self,
        status: int,
        message: str,
        details: list[str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.details = status, message, details or []
        self.headers = dict(headers or {})


class ErrorBody(BaseModel):
    """The body of every error answer."""

    model_config = ConfigDict(extra="forbid")
    error: str
    details: list[str]


def error_response(
    status: int, message: str, details: list[str] | None = None, headers: Mapping[str, str] | None = None
) -> web.Response:
    headers = dict(headers or {})
    if status == 503:
        headers.setdefault("Retry-After", str(RETRY_AFTER_SECONDS))
    body = ErrorBody(error=message, details=details or [])
    return web.json_response(body.model_dump(), status=status, headers=headers)


class Csv:
    """Marks a list-typed query parameter sent as one comma-separated value (``a=x,y``), the
    OpenAPI ``style: form, explode: false``; other list parameters repeat (``a=x&a=y``)."""


@dataclass(frozen=True)
class HeaderParam:
    name: str
    description: str
    max_length: int


@dataclass(frozen=True)
class Operation:
    """One method on one path. ``path`` is the OpenAPI template (``/api/assets/{id}``);
    ``response`` a pydantic model or ``list[Model]`` (None: no body, or a non-JSON
    ``media_type``); ``errors`` the statuses this operation adds to `common_errors`."""

    method: Method
    path: str
    handler: Handler
    operation_id: str
    summary: str
    tag: str
    status: int = 200
    response: Any = None
    body: type[BaseModel] | None = None
    # an empty body stands for the body model's defaults
    body_optional: bool = False
    query: type[BaseModel] | None = None
    headers: tuple[HeaderParam, ...] = ()
    errors: Mapping[int, str] = field(default_factory=dict)
    media_type: str = JSON
    description: str | None = None
    path_params: Mapping[str, str] = field(default_factory=dict)
    # public: no API key (the OpenAPI document itself); no store behind it: no 503
    public: bool = False
    uses_store: bool = True
    allow_head: bool = True

    @property
    def path_names(self) -> list[str]:
        return PATH_PARAM.findall(self.path)

    @property
    def router_path(self) -> str:
        return PATH_PARAM.sub(lambda m: "{" + m.group(1) + ":" + SEGMENT + "}", self.path)


COMMON_ERRORS: Mapping[int, str] = {
    400: "Invalid input: a malformed body, parameter or value, or a request this state refuses; "
    "`details` gives the reasons",
    401: "Missing or wrong `X-Api-Key`",
    413: "The request body is larger than the limit",
    503: "The store is unavailable or busy (a full disk, a read-only or unreachable database); "
    "nothing was changed, retry after `Retry-After` seconds",
}


PARSER_REFUSAL = (
    "; or, as text/plain, the HTTP parser's refusal of a request it cannot read "
    "(a request line or header over the limit, a NUL in a header)"
)


def common_errors(op: Operation) -> dict[int, str]:
    """The statuses an operation answers because of its shape; see the module docstring."""
    out: dict[int, str] = {}
    if op.body is not None or op.query is not None or op.headers or op.path_names:
        out[400] = COMMON_ERRORS[400]
    if not op.public:
        out[401] = COMMON_ERRORS[401]
    if op.body is not None:
        out[413] = COMMON_ERRORS[413]
    if op.uses_store and not op.public:
        out[503] = COMMON_ERRORS[503]
    return out


def statuses(op: Operation) -> dict[int, str]:
    """Every status ``op`` answers, with what each means."""
    return {**common_errors(op), **op.errors}


# ------------------------------------------------------------------ inputs


def parse_model(model: type[M], data: Any, what: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        details = [f"{'.'.join(str(x) for x in e['loc']) or what}: {e['msg']}" for e in exc.errors()]
        raise ApiError(400, f"invalid {what}", details) from exc


def body_of(request: web.Request, model: type[M]) -> M:
    """The request body, parsed with the model its operation declares."""
    return _typed(request, _BODY, model)


def query_of(request: web.Request, model: type[M]) -> M:
    """The query parameters, parsed with the model its operation declares."""
    return _typed(request, _QUERY, model)


def _typed(request: web.Request, key: web.RequestKey[BaseModel], model: type[M]) -> M:
    value = request.get(key)
    if not isinstance(value, model):
        raise TypeError(
            f"{request.method} {request.path}: the handler reads {model.__name__}, "
            f"its operation declares {type(value).__name__}"
        )
    return value


def _is_csv(model: type[BaseModel], name: str) -> bool:
    return any(isinstance(m, Csv) for m in model.model_fields[name].metadata)


@functools.cache
def _query_fields(model: type[BaseModel]) -> tuple[tuple[str, str, bool], ...]:
    """(field name, parameter name, is a list) of a query model."""
    out = []
    props = model.model_json_schema(by_alias=True)["properties"]
    for name, f in model.model_fields.items():
        alias = f.alias or name
        out.append((name, alias, props[alias].get("type") == "array"))
    return tuple(out)


def _query_dict(model: type[BaseModel], request: web.Request) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for name, alias, is_list in _query_fields(model):
        if alias not in request.query:
            continue
        if not is_list:
            values = request.query.getall(alias)
            if len(values) > 1:  # which one would count is a guess: refused
                raise ApiError(400, "invalid query", [f"{alias}: give it once"])
            data[alias] = values[0]
        elif _is_csv(model, name):
            data[alias] = request.query[alias].split(",")
        else:
            data[alias] = request.query.getall(alias)
    return data


def _endpoint(op: Operation, read_json: ReadJson) -> Handler:
    body, query = op.body, op.query

    async def endpoint(request: web.Request) -> web.StreamResponse:
        for h in op.headers:
            if len(request.headers.get(h.name, "")) > h.max_length:
                raise ApiError(400, f"invalid header: {h.name} is longer than {h.max_length}")
        if query is not None:
            request[_QUERY] = parse_model(query, _query_dict(query, request), "query")
        if body is not None:
            data = await read_json(request)
            if data is BLANK and op.body_optional:
                request[_BODY] = body()
            elif data is BLANK:
                raise ApiError(400, "the body is empty: send a JSON object")
            else:
                noun = body.__name__.removesuffix("In").lower()  # "invalid asset"
                request[_BODY] = parse_model(body, data, noun)
        return await op.handler(request)

    return endpoint


def add_routes(app: web.Application, operations: Iterable[Operation], read_json: ReadJson) -> None:
    """Register every operation; ``read_json`` reads a request body as JSON (400 if it is not)."""
    for op in operations:
        endpoint = _endpoint(op, read_json)
        if op.method == "GET":
            app.router.add_get(op.router_path, endpoint, allow_head=op.allow_head)
        else:
            app.router.add_route(op.method, op.router_path, endpoint)


def public_paths(operations: Iterable[Operation]) -> frozenset[str]:
    return frozenset(op.path for op in operations if op.public)


# ------------------------------------------------------------------ the OpenAPI document


def _response_models(response: Any) -> tuple[type[BaseModel] | None, bool]:
    """(the model, whether the response is a list of it)."""
    if response is None:
        return None, False
    if isinstance(response, type) and issubclass(response, BaseModel):
        return response, False
    args: tuple[Any, ...] = typing.get_args(response)
    if typing.get_origin(response) is list and len(args) == 1 and issubclass(args[0], BaseModel):
        return args[0], True
    raise TypeError(f"a response is a pydantic model or a list of one, not {response!r}")


def _links(op: Operation, ops: list[Operation]) -> dict[str, Any]:
    """A created resource's id leads to the operations on it (OpenAPI links: stateful clients
    and fuzzers follow them)."""
    model, is_list = _response_models(op.response)
    if op.method != "POST" or op.status != 201 or model is None or is_list or "id" not in model.model_fields:
        return {}
    prefix = op.path + "/{id}"
    return {
        other.operation_id: {
            "operationId": other.operation_id,
            "parameters": {"path.id": "$response.body#/id"},
        }
        for other in ops
        if other.path == prefix or other.path.startswith(prefix + "/")
    }


def openapi_document(
    operations: Iterable[Operation],
    *,
    title: str,
    version: str,
    description: str = "",
    api_key_header: str = "X-Api-Key",
) -> dict[str, Any]:
    ops = list(operations)
    inputs: set[type[BaseModel]] = {ErrorBody}
    outputs: set[type[BaseModel]] = {ErrorBody}
    for op in ops:
        if op.body is not None:
            inputs.add(op.body)
        if op.query is not None:
            inputs.add(op.query)
        model, _ = _response_models(op.response)
        if model is not None:
            outputs.add(model)
    wanted = [(m, "validation") for m in sorted(inputs, key=lambda m: m.__name__)] + [
        (m, "serialization") for m in sorted(outputs, key=lambda m: m.__name__)
    ]
    refs, defs = models_json_schema(wanted, by_alias=True, ref_template=REF)  # type: ignore[arg-type]
    schemas: dict[str, Any] = defs.get("$defs", {})

    def ref(model: type[BaseModel], mode: Literal["validation", "serialization"]) -> dict[str, Any]:
        return dict(refs[(model, mode)])

    def component(model: type[BaseModel]) -> dict[str, Any]:
        return schemas[ref(model, "validation")["$ref"].rsplit("/", 1)[1]]

    query_models = {op.query for op in ops if op.query is not None}
    error_ref = ref(ErrorBody, "serialization")
    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        o: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary, "tags": [op.tag]}
        if op.description:
            o["description"] = op.description
        if op.public:
            o["security"] = []
        params: list[dict[str, Any]] = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "description": op.path_params.get(name, "the id, percent-encoded as one path segment"),
                "schema": {"type": "string", "minLength": 1},
            }
            for name in op.path_names
        ]
        if op.query is not None:
            qs = component(op.query)
            required = set(qs.get("required", []))
            for name, alias, is_list in _query_fields(op.query):
                p_schema = dict(qs["properties"][alias])
                p: dict[str, Any] = {
                    "name": alias,
                    "in": "query",
                    "required": alias in required,
                    "schema": p_schema,
                }
                if "description" in p_schema:
                    p["description"] = p_schema.pop("description")
                p_schema.pop("title", None)
                if is_list:
                    p["style"], p["explode"] = "form", not _is_csv(op.query, name)
                params.append(p)
        for h in op.headers:
            params.append(
                {
                    "name": h.name,
                    "in": "header",
                    "required": False,
                    "description": h.description,
                    "schema": {"type": "string", "maxLength": h.max_length},
                }
            )
        if params:
            o["parameters"] = params
        if op.body is not None:
            o["requestBody"] = {
                "required": not op.body_optional,
                "content": {JSON: {"schema": ref(op.body, "validation")}},
            }
        responses: dict[str, Any] = {}
        model, is_list = _response_models(op.response)
        ok: dict[str, Any] = {
            "description": {200: "OK", 201: "Created", 202: "Accepted", 204: "Done, no content"}.get(
                op.status, "OK"
            )
        }
        if model is not None:
            s = ref(model, "serialization")
            ok["content"] = {op.media_type: {"schema": {"type": "array", "items": s} if is_list else s}}
        elif op.status != 204:
            ok["content"] = {op.media_type: {"schema": {} if op.media_type != JSON else {"type": "object"}}}
        links = _links(op, ops)
        if links:
            ok["links"] = links
        responses[str(op.status)] = ok
        for status, what in sorted(statuses(op).items()):
            r: dict[str, Any] = {"description": what, "content": {JSON: {"schema": error_ref}}}
            if status == 400:
                # aiohttp's HTTP parser answers a request it cannot read (a request line or a
                # header over its limit, a NUL in a header) itself, before any handler
                r["description"] += PARSER_REFUSAL
                r["content"][TEXT] = {"schema": {"type": "string"}}
            if status == 503:
                r["headers"] = {
                    "Retry-After": {
                        "required": True,
                        "description": "seconds",
                        "schema": {"type": "integer", "minimum": 0},
                    }
                }
            responses[str(status)] = r
        o["responses"] = responses
        paths.setdefault(op.path, {})[op.method.lower()] = o
    for q in query_models:
        schemas.pop(ref(q, "validation")["$ref"].rsplit("/", 1)[1], None)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "components": {
            "schemas": schemas,
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": api_key_header}},
        },
        "security": [{"apiKey": []}],
        "paths": paths,
    }


__all__ = [
    "COMMON_ERRORS",
    "ApiError",
    "Csv",
    "ErrorBody",
    "HeaderParam",
    "Operation",
    "add_routes",
    "body_of",
    "common_errors",
    "error_response",
    "openapi_document",
    "parse_model",
    "public_paths",
    "query_of",
    "statuses",
]
