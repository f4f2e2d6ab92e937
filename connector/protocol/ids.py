"""Rules for the identifiers a DSP message carries, checked when a message is read from the wire.

* Process ids (``providerPid``, ``consumerPid``) are stored, and the counter-party's is put into
  the path of every message sent to it (``/negotiations/{pid}/agreement``) and of every callback.
  So they are short (``MAX_PROCESS_ID_LENGTH``) and made only of the characters an RFC 3986 path
  segment takes as they are (``pchar`` without percent-encoding: unreserved, sub-delims, ``:``
  and ``@``). Those characters go through the aiohttp router and yarl's URL handling unchanged;
  ``/``, ``?``, ``#``, ``%``, ``{``, ``}``, spaces and non-ASCII would be cut off, re-encoded or
  route elsewhere. ``.`` and ``..`` alone are dot-segments a URL normaliser removes.
* Every other identifier (an offer's or agreement's ``@id``, ``target``, ``agreementId``, a
  requested ``dataset``, ``assigner``/``assignee``) is an IRI that is stored and compared, never
  put into a path by this connector: only its length is bounded (``MAX_IRI_LENGTH``). It is
  longer than a process id because a catalog offer id joins two IRIs (``<offer id>:<asset id>``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MAX_PROCESS_ID_LENGTH = 256
MAX_IRI_LENGTH = 2048
_PATH_SAFE = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@]+")
# the identifiers of the ODRL policy an offer or agreement is, by key
POLICY_ID_KEYS = ("@id", "target", "assigner", "assignee")


def process_id_problem(value: str) -> str | None:
    """Why ``value`` cannot be a process id (None: it can)."""
    if len(value) > MAX_PROCESS_ID_LENGTH:
        return f"longer than {MAX_PROCESS_ID_LENGTH} characters ({len(value)})"
    if not _PATH_SAFE.fullmatch(value) or value in (".", ".."):
        return (
            "must be 1 or more of the characters a URL path segment takes as they are: "
            "A-Z a-z 0-9 - . _ ~ ! $ & ' ( ) * + , ; = : @ (not only dots)"
        )
    return None


def iri_problem(value: str) -> str | None:
    """Why ``value`` cannot be an identifier in a message (None: it can)."""
    if len(value) > MAX_IRI_LENGTH:
        return f"longer than {MAX_IRI_LENGTH} characters ({len(value)})"
    return None


def policy_id_problems(policy: Mapping[str, Any], where: str) -> list[str]:
    """The identifiers of an ODRL offer or agreement dict that are too long, as readable lines."""
    out = []
    for key in POLICY_ID_KEYS:
        value = policy.get(key)
        why = iri_problem(value) if isinstance(value, str) else None
        if why:
            out.append(f"{where}.{key}: {why}")
    return out


# message attributes (pydantic field names) that hold a process id / another identifier / a policy
_PROCESS_ID_FIELDS = {"provider_pid": "providerPid", "consumer_pid": "consumerPid"}
_IRI_FIELDS = {"agreement_id": "agreementId", "dataset": "dataset"}
_POLICY_FIELDS = ("offer", "agreement")


def message_id_problems(name: str, message: Any, *, empty_pids: bool = False) -> list[str]:
    """Every identifier of a parsed DSP message that breaks the rules above, as readable lines
    (``empty_pids``: an empty process id stands for one not known, as in an error body)."""
    out = []
    for attr, wire in _PROCESS_ID_FIELDS.items():
        value = getattr(message, attr, None)
        if empty_pids and value == "":
            continue
        why = process_id_problem(value) if isinstance(value, str) else None
        if why:
            out.append(f"{name}.{wire}: {why}")
    for attr, wire in _IRI_FIELDS.items():
        value = getattr(message, attr, None)
        why = iri_problem(value) if isinstance(value, str) else None
        if why:
            out.append(f"{name}.{wire}: {why}")
    for attr in _POLICY_FIELDS:
        policy = getattr(message, attr, None)
        if isinstance(policy, Mapping):
            out.extend(policy_id_problems(policy, f"{name}.{attr}"))
    return out
