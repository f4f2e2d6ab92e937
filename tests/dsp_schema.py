"""Validate JSON against the official DSP 2025-1 schemas (a helper for tests; no tests here).

``assert_valid(message, "contract-request-message")`` resolves every ``$ref`` offline: the
``https://w3id.org/dspace/2025/1/`` prefix maps onto ``../shared/conformance/dsp/schemas/``.
The transfer schemas' ``#definitions/`` fragments (SOURCE.md, quirk 1) are fixed on load.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft201909Validator
from jsonschema.exceptions import best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT201909

DSP_DIR = Path(__file__).resolve().parents[2] / "shared" / "conformance" / "dsp"
SCHEMAS = DSP_DIR / "schemas"
EXAMPLES = DSP_DIR / "examples"
PREFIX = "https://w3id.org/dspace/2025/1/"


def _load(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    if path.parent.name == "transfer":
        # SOURCE.md quirk 1: the upstream fragment lacks the "/" after "#".
        text = text.replace("#definitions/", "#/definitions/")
    return json.loads(text)


@cache
def _registry() -> Registry:
    resources = []
    for path in sorted(SCHEMAS.rglob("*-schema.json")):
        uri = PREFIX + path.relative_to(SCHEMAS).as_posix()
        resources.append((uri, Resource.from_contents(_load(path), default_specification=DRAFT201909)))
    return Registry().with_resources(resources)


def schema_path(schema_name: str) -> Path:
    """The schema file for ``schema_name`` ("catalog-schema.json", "negotiation/contract-schema",
    "transfer-request-message", ...)."""
    name = schema_name.removesuffix(".json")
    if not name.endswith("-schema"):
        name += "-schema"
    matches = [
        p
        for p in SCHEMAS.rglob("*-schema.json")
        if p.relative_to(SCHEMAS).as_posix().removesuffix(".json").endswith(name)
    ]
    if len(matches) != 1:
        raise LookupError(f"no single DSP schema named {schema_name!r} (found {len(matches)})")
    return matches[0]


@cache
def validator(schema_name: str) -> Draft201909Validator:
    """A compiled validator for one official schema (cached)."""
    path = schema_path(schema_name)
    schema = _load(path)
    return Draft201909Validator(schema, registry=_registry())


def errors(message: Any, schema_name: str) -> list[str]:
    """Every violation of the schema, as readable lines (empty when valid)."""
    found = sorted(validator(schema_name).iter_errors(message), key=lambda e: list(e.path))
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in found]


def assert_valid(message: Any, schema_name: str) -> None:
    """Fail with the best-matching violation if ``message`` is not valid against the schema."""
    v = validator(schema_name)
    err = best_match(v.iter_errors(message))
    if err is not None:
        where = "/".join(map(str, err.absolute_path)) or "<root>"
        raise AssertionError(
            f"not valid against {schema_path(schema_name).name} at {where}: {err.message}\n"
            f"{json.dumps(message, indent=2)[:4000]}"
        )


def example(name: str) -> dict[str, Any]:
    """An official example message ("negotiation/contract-request-message" or just its name)."""
    name = name.removesuffix(".json")
    matches = [
        p
        for p in EXAMPLES.rglob("*.json")
        if p.relative_to(EXAMPLES).as_posix().removesuffix(".json").endswith(name)
    ]
    exact = [p for p in matches if p.stem == name.rsplit("/", 1)[-1]]
    if len(exact) != 1:
        raise LookupError(f"no single DSP example named {name!r}")
    return json.loads(exact[0].read_text(encoding="utf-8"))
