"""Optional validation of every DSP message on the wire against the official JSON schemas.

Off by default (the hot path parses with pydantic; DESIGN.md keeps schema checks off per-request
paths). Integration tests set ``CONNECTOR_DSP_SCHEMAS`` to the folder of the official schemas:
then every message a connector sends and every DSP response body it returns is validated, and a
violation is logged as ``DSP SCHEMA VIOLATION`` (the tests fail on any such line).
"""

from __future__ import annotations

import json
import logging
import os
import re
from functools import cache
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
ENV = "CONNECTOR_DSP_SCHEMAS"
PREFIX = "https://w3id.org/dspace/2025/1/"


def _kebab(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


@cache
def _validators(root: str) -> dict[str, Any]:
    from jsonschema import Draft201909Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT201909

    base = Path(root)
    docs = {}
    for path in sorted(base.rglob("*-schema.json")):
        text = path.read_text(encoding="utf-8")
        if path.parent.name == "transfer":  # upstream quirk: "#definitions/" lacks a "/"
            text = text.replace("#definitions/", "#/definitions/")
        docs[path] = json.loads(text)
    registry = Registry().with_resources(
        (PREFIX + p.relative_to(base).as_posix(), Resource.from_contents(d, DRAFT201909))
        for p, d in docs.items()
    )
    return {
        p.name.removesuffix("-schema.json"): Draft201909Validator(d, registry=registry)
        for p, d in docs.items()
    }


def enabled() -> bool:
    return bool(os.environ.get(ENV))


def check(body: Any, direction: str) -> list[str]:
    """Validate ``body`` (when the env var is set); log and return the violations."""
    root = os.environ.get(ENV)
    if not root or not isinstance(body, dict) or not isinstance(body.get("@type"), str):
        return []
    validator = _validators(root).get(_kebab(body["@type"]))
    if validator is None:
        return []
    problems = [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(body)
    ]
    for p in problems:
        log.error("DSP SCHEMA VIOLATION (%s %s): %s", direction, body["@type"], p)
    return problems
