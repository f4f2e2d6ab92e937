"""One definition of every constant two parties (or two modules) must agree on: the JWS types
and HTTP headers of usage receipts, the JSON-LD context IRIs, the role names of a process, and
the clocks. Every module imports them from here; none spells them again.

Neutral: imports nothing of the connector, so any layer (the pure cores, the edges) may use it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Literal

# --- usage receipts (a JWT signed by the provider's data plane over a chain of responses)
RECEIPT_TYP = "usage-receipt+jwt"
RECEIPT_SEQ_HEADER = "X-Receipt-Seq"  # the response's number in its chain
RECEIPT_CHAIN_HEADER = "X-Receipt-Chain"  # the provider process's chain (several serve a transfer)

# --- JSON-LD contexts (served offline by connector.vocab's document loader)
DSP_CONTEXT_URL = "https://w3id.org/dspace/2025/1/context.jsonld"
DSP_ODRL_PROFILE_URL = "https://w3id.org/dspace/2025/1/odrl-profile.jsonld"
IDS_CONTEXT_URL = "https://w3id.org/idsa/contexts/context.jsonld"

# --- the role of this connector in a negotiation or transfer process, as stored and shown
# (connector.protocol.common.Role is the same pair as an enum)
ProcessRole = Literal["provider", "consumer"]

# --- clocks: the wall clock in seconds (tokens, receipts), and as an aware datetime (processes)
WallClock = Callable[[], float]
Clock = Callable[[], datetime]

__all__ = [
    "DSP_CONTEXT_URL",
    "DSP_ODRL_PROFILE_URL",
    "IDS_CONTEXT_URL",
    "RECEIPT_CHAIN_HEADER",
    "RECEIPT_SEQ_HEADER",
    "RECEIPT_TYP",
    "Clock",
    "ProcessRole",
    "WallClock",
]
