"""Usage-policy templates: the IDS usage policy classes as fill-in ODRL 2.2 offers (DSP form).

Each template is one file ``policies/<name>.json`` (installed as ``connector/_data/policies``)::

    {"name": "n-times-usage", "title": "...", "idsClass": "idsc:...", "description": "...",
     "enforcedAt": ["dataPlane", "consumerLocalUse"],
     "parameters": [{"name": "max", "type": "integer", "required": true, "description": "...",
                     "example": "10"}],
     "policy": {"@context": [...], "@type": "Offer", "@id": "{{policyId}}", ...},
     "examples": [{"name": "...", "expect": "permit", "params": {"max": "10"},
                   "request": {"action": "use", "world": {...}}}]}

In ``policy`` a string that is exactly ``{{name}}`` is a placeholder. ``fill`` validates every
value against its parameter's type and substitutes it into the *parsed* structure as a JSON-LD
value (typed literal, ``{"@id": ...}`` node reference or plain string), so no value can change
the shape of the document. Reserved placeholders: ``{{policyId}}``, ``{{target}}`` and
``{{assigner}}`` (from ``fill``'s arguments) and ``{{id:NAME}}``, the identifier of a rule
(``<policyId>#NAME``) that a state of the world can mark as violated. A placeholder left unset
(an optional parameter without default, or no target/assigner) removes the property it fills;
an unset right operand removes its whole constraint.

``enforcedAt`` says where the connector decides the template's terms when it is an offer's
contract policy (``ENFORCEMENT_POINTS``): ``catalog`` (the offer is shown only to a qualifying
requester), ``negotiation`` (only a qualifying requester gets an agreement), ``dataPlane`` (every
pull and push of the provider's data plane), ``consumerLocalUse`` (every local use of the
consumer's copy, by the consumer's connector) and ``consumerDistribution`` (every copy that
leaves the consumer's vault, by the consumer's connector: ``connector.usage.export``).
``template_json`` is the form
``connector policy templates --json`` prints.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Any, Literal, cast, get_args

from connector.identity.participants import as_participant_iri
from connector.odrl.parse import parse_datetime, parse_duration
from connector.odrl.plain import PREFIXES, expand_term

ParameterType = Literal["iri", "dateTime", "duration", "integer", "decimal", "string"]
Expectation = Literal["permit", "deny"]
EnforcementPoint = Literal["catalog", "negotiation", "dataPlane", "consumerLocalUse", "consumerDistribution"]
ENFORCEMENT_POINTS: tuple[EnforcementPoint, ...] = get_args(EnforcementPoint)

XSD = "http://www.w3.org/2001/XMLSchema#"
RESERVED = ("policyId", "target", "assigner")
# Properties whose value the DSP ODRL profile context coerces to an IRI (@id or @vocab): an IRI
# goes there as a plain string, elsewhere as {"@id": ...} (``rightOperand`` is not coerced).
_IRI_VALUED = frozenset(
    {"@id", "target", "assigner", "assignee", "profile", "hasPolicy", "action", "leftOperand", "operator"}
)
_PLACEHOLDER = re.compile(r"\{\{([A-Za-z][A-Za-z0-9]*|id:[A-Za-z][A-Za-z0-9-]*)\}\}")
_PARAM_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*")
_TEMPLATE_NAME = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
# RFC 3987: a scheme, then no whitespace, controls or characters that IRIs exclude.
_IRI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[^\s<>\"{}|\\^`\x00-\x1f\x7f]+")
_INTEGER = re.compile(r"[0-9]+")
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_DURATION = re.compile(
    r"P(?=[0-9]|T[0-9])(?:[0-9]+Y)?(?:[0-9]+M)?(?:[0-9]+D)?"
    r"(?:T(?=[0-9])(?:[0-9]+H)?(?:[0-9]+M)?(?:[0-9]+(?:\.[0-9]+)?S)?)?"
)
_TYPE_HINT = {
    "iri": "an absolute IRI or a prefixed name (prefixes: " + ", ".join(sorted(PREFIXES)) + ")",
    "dateTime": "an xsd:dateTime such as 2026-12-31T23:59:59Z",
    "duration": "an xsd:duration such as P30D or PT12H",
    "integer": "a whole number >= 0",
    "decimal": "a decimal number >= 0 such as 100 or 99.50",
    "string": "text",
}


class TemplateError(ValueError):
    """An unknown template, a bad parameter value, or a broken template file."""


@dataclass(frozen=True)
class TemplateParameter:
    name: str
    description: str
    type: ParameterType
    required: bool
    default: str | None
    example: str


@dataclass(frozen=True)
class TemplateExample:
    """A request with the decision the filled template must give (a test case and a demo).

    ``request`` is the plain-JSON request of ``connector.odrl.plain`` with its ``world``; in it
    ``{{id:NAME}}`` stands for a rule identifier of the filled policy (use ``example_request``).
    """

    name: str
    expect: Expectation
    params: dict[str, str]
    request: dict[str, Any]


@dataclass(frozen=True)
class Template:
    name: str
    title: str
    description: str
    ids_class: str | None  # the idsc: usage policy class; None where IDS defines none
    enforced_at: tuple[EnforcementPoint, ...]  # in the order of ENFORCEMENT_POINTS
    parameters: tuple[TemplateParameter, ...]
    policy: dict[str, Any]  # with placeholders; shared, never mutate (fill works on a copy)
    examples: tuple[TemplateExample, ...]

    def parameter(self, name: str) -> TemplateParameter:
        for p in self.parameters:
            if p.name == name:
                return p
        raise TemplateError(f"template {self.name!r} has no parameter {name!r}")


# --------------------------------------------------------------------------- loading


def policies_dir() -> Path:
    """The folder holding the templates (installed copy first, then the checkout)."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "_data" / "policies", here.parent / "policies"):
        if candidate.is_dir() and any(candidate.glob("*.json")):
            return candidate
    raise FileNotFoundError("policies/*.json not found: the installation is incomplete")


@cache
def _templates() -> dict[str, Template]:
    out: dict[str, Template] = {}
    for path in sorted(policies_dir().glob("*.json")):
        t = _load(path)
        out[t.name] = t
    return out


def templates() -> list[Template]:
    """Every template, sorted by name (read once)."""
    return [t for _, t in sorted(_templates().items())]


def template_json(t: Template) -> dict[str, Any]:
    """A template's metadata as ``connector policy templates --json`` lists it."""
    return {
        "name": t.name,
        "title": t.title,
        "idsClass": t.ids_class,
        "description": t.description,
        "enforcedAt": list(t.enforced_at),
        "parameters": [
            {
                "name": p.name,
                "type": p.type,
                "required": p.required,
                "default": p.default,
                "description": p.description,
                "example": p.example,
            }
            for p in t.parameters
        ],
    }


def get_template(name: str) -> Template:
    t = _templates().get(name)
    if t is None:
        known = ", ".join(sorted(_templates()))
        raise TemplateError(f"unknown policy template {name!r}; known templates: {known}")
    return t


def _load(path: Path) -> Template:
    where = f"policy template {path.name}"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TemplateError(f"{where}: cannot read: {exc}") from exc
    if not isinstance(data, dict):
        raise TemplateError(f"{where}: not a JSON object")
    allowed = {"name", "title", "idsClass", "description", "enforcedAt", "parameters", "policy", "examples"}
    extra = sorted(set(data) - allowed)
    if extra:
        raise TemplateError(f"{where}: unknown keys {', '.join(extra)}")
    name = _str(data, "name", where)
    if name != path.stem or not _TEMPLATE_NAME.fullmatch(name):
        raise TemplateError(f"{where}: name {name!r} must be the kebab-case file name")
    ids_class = data.get("idsClass")
    if ids_class is not None and not isinstance(ids_class, str):
        raise TemplateError(f"{where}: idsClass must be a string or null")
    enforced = data.get("enforcedAt")
    if (
        not isinstance(enforced, list)
        or not enforced
        or any(e not in ENFORCEMENT_POINTS for e in enforced)
        or len(set(enforced)) != len(enforced)
    ):
        raise TemplateError(
            f"{where}: enforcedAt must list, once each, some of {', '.join(ENFORCEMENT_POINTS)}"
        )
    raw_params = data.get("parameters", [])
    if not isinstance(raw_params, list):
        raise TemplateError(f"{where}: parameters must be a list")
    params = tuple(_parameter(p, where) for p in raw_params)
    names = [p.name for p in params]
    if len(set(names)) != len(names):
        raise TemplateError(f"{where}: duplicate parameter names")
    policy = data.get("policy")
    if not isinstance(policy, dict):
        raise TemplateError(f"{where}: policy must be a JSON object")
    by_name = {p.name: p for p in params}
    used = _check_placeholders(policy, by_name, f"{where}: policy")
    unused = [n for n in names if n not in used]
    if unused:
        raise TemplateError(f"{where}: parameters never used in the policy: {', '.join(unused)}")
    raw_examples = data.get("examples", [])
    if not isinstance(raw_examples, list):
        raise TemplateError(f"{where}: examples must be a list")
    examples = tuple(_example(e, by_name, where) for e in raw_examples)
    return Template(
        name=name,
        title=_str(data, "title", where),
        description=_str(data, "description", where),
        ids_class=ids_class,
        enforced_at=tuple(e for e in ENFORCEMENT_POINTS if e in enforced),
        parameters=params,
        policy=policy,
        examples=examples,
    )


def _str(data: Mapping[str, Any], key: str, where: str) -> str:
    v = data.get(key)
    if not isinstance(v, str) or not v.strip():
        raise TemplateError(f"{where}: {key} must be a non-empty string")
    return v


def _parameter(raw: Any, where: str) -> TemplateParameter:
    if not isinstance(raw, dict):
        raise TemplateError(f"{where}: a parameter must be a JSON object")
    extra = sorted(set(raw) - {"name", "description", "type", "required", "default", "example"})
    if extra:
        raise TemplateError(f"{where}: parameter has unknown keys {', '.join(extra)}")
    name = _str(raw, "name", where)
    here = f"{where}: parameter {name!r}"
    if not _PARAM_NAME.fullmatch(name) or name in RESERVED:
        raise TemplateError(f"{here}: not a valid parameter name (or a reserved one)")
    ptype = cast(ParameterType, raw.get("type"))
    if ptype not in get_args(ParameterType):
        raise TemplateError(f"{here}: type must be one of {', '.join(get_args(ParameterType))}")
    required = raw.get("required", True)
    default = raw.get("default")
    if not isinstance(required, bool) or (default is not None and not isinstance(default, str)):
        raise TemplateError(f"{here}: required must be a boolean and default a string")
    if required and default is not None:
        raise TemplateError(f"{here}: a required parameter has no default")
    param = TemplateParameter(
        name=name,
        description=_str(raw, "description", here),
        type=ptype,
        required=required,
        default=default,
        example=_str(raw, "example", here),
    )
    for v in (param.example, param.default):
        if v is not None:
            try:
                _convert(param, v)
            except TemplateError as exc:
                raise TemplateError(f"{where}: {exc}") from exc
    return param


def _check_placeholders(
    node: Any, params: Mapping[str, TemplateParameter], where: str, key: str | None = None
) -> set[str]:
    """Every placeholder names a parameter, fills a whole string, and fits where it stands."""
    used: set[str] = set()
    if isinstance(node, dict):
        for k, v in node.items():
            if "{{" in k:
                raise TemplateError(f"{where}: placeholder in the key {k!r}")
            used |= _check_placeholders(v, params, where, k)
    elif isinstance(node, list):
        for v in node:
            used |= _check_placeholders(v, params, where, key)
    elif isinstance(node, str) and "{{" in node:
        m = _PLACEHOLDER.fullmatch(node)
        if m is None:
            raise TemplateError(f"{where}: {node!r}: a placeholder must be the whole string")
        name = m.group(1)
        if name.startswith("id:") or name in RESERVED:
            if key not in _IRI_VALUED:
                raise TemplateError(f"{where}: {node} stands where no IRI is expected ({key})")
            return used
        param = params.get(name)
        if param is None:
            raise TemplateError(f"{where}: {node} names no parameter")
        if key in _IRI_VALUED and param.type != "iri":
            raise TemplateError(f"{where}: {node} is a {param.type} where an IRI is expected")
        used.add(name)
    return used


def _example(raw: Any, params: Mapping[str, TemplateParameter], where: str) -> TemplateExample:
    if not isinstance(raw, dict):
        raise TemplateError(f"{where}: an example must be a JSON object")
    name = _str(raw, "name", where)
    here = f"{where}: example {name!r}"
    extra = sorted(set(raw) - {"name", "expect", "params", "request"})
    if extra:
        raise TemplateError(f"{here}: unknown keys {', '.join(extra)}")
    expect = cast(Expectation, raw.get("expect"))
    if expect not in get_args(Expectation):
        raise TemplateError(f"{here}: expect must be permit or deny")
    values = raw.get("params", {})
    if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
        raise TemplateError(f"{here}: params must map names to strings")
    unknown = sorted(set(values) - set(params) - set(RESERVED))
    if unknown:
        raise TemplateError(f"{here}: unknown parameters {', '.join(unknown)}")
    request = raw.get("request")
    if not isinstance(request, dict):
        raise TemplateError(f"{here}: request must be a JSON object")
    return TemplateExample(name=name, expect=expect, params=dict(values), request=request)


# --------------------------------------------------------------------------- filling


def _convert(param: TemplateParameter, raw: Any) -> str:
    """The canonical lexical form of ``raw`` for ``param``; TemplateError when it does not fit."""
    if not isinstance(raw, str):
        raise TemplateError(f"parameter {param.name!r}: the value must be a string, not {type(raw).__name__}")
    value = raw if param.type == "string" else raw.strip()
    bad = TemplateError(f"parameter {param.name!r}: {raw!r} is not {_TYPE_HINT[param.type]}")
    if param.type == "string":
        if not value:
            raise TemplateError(f"parameter {param.name!r}: the value is empty")
        return value
    if param.type == "iri":
        return _iri(value, bad)
    if param.type == "integer":
        if not _INTEGER.fullmatch(value):
            raise bad
        return str(int(value))
    if param.type == "decimal":
        if not _DECIMAL.fullmatch(value):
            raise bad
        try:
            Decimal(value)
        except InvalidOperation as exc:
            raise bad from exc
        return value
    if param.type == "dateTime":
        try:
            dt = parse_datetime(value)
        except ValueError as exc:
            raise bad from exc
        return dt.isoformat().replace("+00:00", "Z")
    # duration: the xsd:duration lexical space (no weeks, no sign), as the engine reads it
    if not _DURATION.fullmatch(value):
        raise bad
    try:
        parse_duration(value)
    except ValueError as exc:
        raise bad from exc
    return value


def _iri(value: str, error: TemplateError) -> str:
    prefix, sep, local = value.partition(":")
    if not sep or not local:
        raise error
    expanded = expand_term(value) if prefix in PREFIXES else value
    if not _IRI.fullmatch(expanded):
        raise error
    return expanded


def _jsonld(param_type: str, lexical: str, key: str | None) -> Any:
    """The JSON-LD value of a converted parameter where it stands (under ``key``)."""
    if param_type == "iri":
        return lexical if key in _IRI_VALUED else {"@id": lexical}
    if param_type == "string":
        return lexical
    # dateTime, duration, integer, decimal: the xsd datatype of the same name
    return {"@value": lexical, "@type": XSD + param_type}


def rule_id(policy_id: str, name: str) -> str:
    """The identifier ``{{id:NAME}}`` receives in a policy with identifier ``policy_id``."""
    return f"{policy_id}-{name}" if "#" in policy_id else f"{policy_id}#{name}"


_UNSET = object()


def fill(
    name: str,
    values: Mapping[str, str],
    *,
    policy_id: str | None = None,
    target: str | None = None,
    assigner: str | None = None,
) -> dict[str, Any]:
    """The JSON-LD policy of template ``name`` with ``values`` filled in.

    ``values`` maps parameter names to text (as given on the command line); ``policyId``,
    ``target`` and ``assigner`` may be given there or as keyword arguments. The policy gets a
    fresh ``urn:uuid:`` identifier unless ``policy_id`` is given.
    """
    t = get_template(name)
    params = {p.name: p for p in t.parameters}
    values = dict(values)
    reserved: dict[str, str | None] = {"policyId": policy_id, "target": target, "assigner": assigner}
    for key in RESERVED:
        if key in values:
            given = values.pop(key)
            if reserved[key] is not None and reserved[key] != given:
                raise TemplateError(f"{key} is given twice with different values")
            reserved[key] = given
    unknown = sorted(set(values) - set(params))
    if unknown:
        known = ", ".join(p.name for p in t.parameters) or "none"
        raise TemplateError(
            f"template {name!r} has no parameter "
            f"{', '.join(repr(u) for u in unknown)} (its parameters: {known})"
        )
    missing = [p for p in t.parameters if p.required and p.name not in values]
    if missing:
        raise TemplateError(
            f"template {name!r}: missing required parameter "
            + "; ".join(f"{p.name!r} ({p.type}: {p.description} Example: {p.example})" for p in missing)
        )
    lexical: dict[str, tuple[str, str]] = {}
    for p in t.parameters:
        raw = values.get(p.name, p.default)
        if p.type == "iri" and isinstance(raw, str):
            # a participant id (SKI:keyid:AKI) is not an IRI: a party is named by its IRI form
            raw = as_participant_iri(raw.strip())
        if raw is not None:
            lexical[p.name] = (p.type, _convert(p, raw))
    for key, raw_value in reserved.items():
        if raw_value is not None:
            as_iri = TemplateParameter(key, "", "iri", False, None, "")
            lexical[key] = ("iri", _convert(as_iri, raw_value))
    if "policyId" not in lexical:
        lexical["policyId"] = ("iri", f"urn:uuid:{uuid.uuid4()}")
    pid = lexical["policyId"][1]

    def value_of(placeholder: str, key: str | None) -> Any:
        m = _PLACEHOLDER.fullmatch(placeholder)
        assert m is not None  # checked when the template was loaded
        pname = m.group(1)
        if pname.startswith("id:"):
            return rule_id(pid, pname[3:])
        if pname not in lexical:
            return _UNSET
        ptype, lex = lexical[pname]
        return _jsonld(ptype, lex, key)

    filled = _substitute(copy.deepcopy(t.policy), value_of, None)
    assert isinstance(filled, dict)
    return filled


def _substitute(node: Any, value_of: Callable[[str, str | None], Any], key: str | None) -> Any:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            new = (
                value_of(v, k)
                if isinstance(v, str) and _PLACEHOLDER.fullmatch(v)
                else _substitute(v, value_of, k)
            )
            if new is _UNSET:
                if k == "rightOperand":
                    return _UNSET  # an unset right operand drops its constraint
                continue
            out[k] = new
        return out
    if isinstance(node, list):
        items = [_substitute(v, value_of, key) for v in node]
        kept = [v for v in items if v is not _UNSET]
        return kept if kept or not node else _UNSET
    if isinstance(node, str) and _PLACEHOLDER.fullmatch(node):
        return value_of(node, key)
    return node


def example_request(example: TemplateExample, policy: Mapping[str, Any]) -> dict[str, Any]:
    """The example's plain-JSON request for a policy filled from its template.

    ``{{id:NAME}}`` (keys or values) becomes the policy's rule identifier, and a request that
    names no target asks for the policy's target, if it has one.
    """
    pid = policy.get("@id")
    if not isinstance(pid, str):
        raise TemplateError("the policy has no @id")

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            return {resolve(k): resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        if isinstance(node, str):
            m = _PLACEHOLDER.fullmatch(node)
            if m and m.group(1).startswith("id:"):
                return rule_id(pid, m.group(1)[3:])
        return node

    request: dict[str, Any] = resolve(example.request)
    target = policy.get("target")
    if "target" not in request and isinstance(target, str):
        request["target"] = target
    return request
