"""Typed errors -> HTTP answers, shared by every edge (DSP, management API, data plane, push
receiver, authority): each edge's error middleware asks here for the status, the reason and the
headers, and wraps the reason in its own body (a DSP error message, ``{"error": ...}``, OAuth).

A storage fault (`connector.faults.StoreUnavailable`: a full disk, a read-only or unreachable
store) is 503 with a ``Retry-After`` and a reason that names no path; the operator's log gets the
reason and what to check, at most once per `LOG_EVERY` seconds per reason (a full disk under load
would otherwise write a line per request, onto the same full disk).

A service's typed error (`connector.services.errors`) gets its status here, from `SERVICE_STATUS`,
the one table of them: the management API answers it as ``{"error": reason, "details": [...]}``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from connector.faults import StoreUnavailable
from connector.services.errors import (
    Conflict,
    Forbidden,
    Gone,
    InvalidInput,
    NotFound,
    PeerFailed,
    ServiceError,
    Unavailable,
)

log = logging.getLogger(__name__)
RETRY_AFTER = "Retry-After"
LOG_EVERY = 10.0  # seconds between two log lines for the same storage fault
_logged: dict[str, float] = {}


@dataclass(frozen=True, slots=True)
class HttpFault:
    """What an edge answers: the status, the reason for the body, and extra headers."""

    status: int
    reason: str
    headers: dict[str, str] = field(default_factory=dict)
    details: tuple[str, ...] = ()


SERVICE_STATUS: dict[type[ServiceError], int] = {
    InvalidInput: 400,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    Gone: 410,
    PeerFailed: 502,
    Unavailable: 503,
}


def service_fault(exc: ServiceError) -> HttpFault:
    """A service's refusal as an answer: the status of its class (or of the nearest base class
    in `SERVICE_STATUS`; 400 for any other), its reason and details. (The management API's
    error body adds the Retry-After of a 503: `connector.http.routes.error_response`.)"""
    status = next((SERVICE_STATUS[k] for k in type(exc).__mro__ if k in SERVICE_STATUS), 400)
    return HttpFault(status, exc.reason, details=exc.details)


def storage_fault(exc: StoreUnavailable, *, where: str = "") -> HttpFault:
    """503 with the reason and a Retry-After; logs the fault (rate-limited) for the operator.
    `where` names the request in the log (e.g. "POST /api/assets")."""
    now = time.monotonic()
    key = f"{type(exc).__name__}:{exc.reason}"
    if now - _logged.get(key, float("-inf")) >= LOG_EVERY:
        _logged[key] = now
        log.warning(
            "storage fault%s: %s%s (answering 503, Retry-After %d s)",
            f" on {where}" if where else "",
            exc.reason,
            f"; check {exc.check}" if exc.check else "",
            exc.retry_after,
        )
    return HttpFault(
        503, f"storage unavailable, retry later: {exc.reason}", {RETRY_AFTER: str(exc.retry_after)}
    )


__all__ = ["RETRY_AFTER", "SERVICE_STATUS", "HttpFault", "service_fault", "storage_fault"]
