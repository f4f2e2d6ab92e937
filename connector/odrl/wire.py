"""Policies as they go on the wire and into the self-description: every term a full IRI or a
term of the DSP contexts, so a peer that reads them with the DSP contexts alone reads the IDS
terms as IDS terms.

A stored policy keeps the context it was written with (the engine's ``POLICY_CONTEXT`` with its
``idsc:``/``dsc:``/``dpv:`` prefixes, or any JSON-LD a user sent). A DSP message carries the
DSP contexts only, so ``idsc:SECURITY_LEVEL`` copied into it would reach a peer as an IRI with
the scheme ``idsc``. ``wire_rules`` expands the policy with its own context (offline, through the
project's document loader) and compacts it with the DSP contexts: ODRL terms stay short
(``use``, ``count``, ``eq``: what the DSP profile writes), every other term becomes its full IRI.
Cached by the policy's text: a catalog compiles each contract policy's wire form once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from pyld import jsonld

from connector.odrl import terms as T
from connector.vocab import jsonld_call
from connector.wireformat import DSP_CONTEXT_URL, DSP_ODRL_PROFILE_URL

WIRE_CONTEXT = [DSP_CONTEXT_URL, DSP_ODRL_PROFILE_URL]
RULE_KEYS = ("permission", "prohibition", "obligation", "profile")
# where the DSP profile writes an ODRL term by its bare name
_TERM_KEYS = frozenset({"action", "leftOperand", "operator", "@type"})
# what the DSP schemas want as arrays (JSON-LD compaction makes a one-item array a value)
_ARRAY_KEYS = frozenset(
    {"permission", "prohibition", "obligation", "constraint", "duty", "and", "or", "xone", "andSequence"}
)


def wire_rules(policy: Mapping[str, Any]) -> dict[str, Any]:
    """The rules of ``policy`` (permission, prohibition, obligation, profile) in DSP form with
    full IRIs; no ``@context``, ``@id`` or ``target`` (the caller places the rules)."""
    text = json.dumps(policy, sort_keys=True, separators=(",", ":"))
    rules: dict[str, Any] = json.loads(_wire(text))
    return rules


@lru_cache(maxsize=2048)
def _wire(text: str) -> str:
    document = json.loads(text)
    if "@context" not in document:  # already DSP form without prefixes: as it is
        body = {k: v for k, v in document.items() if k in RULE_KEYS}
        return json.dumps(body)
    expanded = jsonld_call(jsonld.expand, document, options={"base": T.O})
    compacted = jsonld_call(jsonld.compact, expanded, {"@context": WIRE_CONTEXT}, options={"base": T.O})
    body = {
        k: _short([v] if k in _ARRAY_KEYS and not isinstance(v, list) else v, k)
        for k, v in compacted.items()
        if k in RULE_KEYS
    }
    return json.dumps(body)


def _short(node: Any, key: str = "") -> Any:
    if isinstance(node, list):
        return [_short(x, key) for x in node]
    if isinstance(node, dict):
        return {
            k: _short([v] if k in _ARRAY_KEYS and not isinstance(v, list) else v, k) for k, v in node.items()
        }
    if isinstance(node, str) and key in _TERM_KEYS:
        for prefix in ("odrl:", T.O):
            if node.startswith(prefix) and ":" not in node[len(prefix) :]:
                return node[len(prefix) :]
    return node


__all__ = ["WIRE_CONTEXT", "wire_rules"]
