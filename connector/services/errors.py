"""Typed service errors: one class per reason the caller acts on, as `connector.identity.errors`
does. A service raises them; the HTTP edge maps each class to a status and an error body in one
place (`connector.http.errors.service_fault`). `reason` (also the exception message) says why;
`details` lists the particulars (a policy's problems, the offers that still use an asset).

`ProtocolError` is for the DSP protocol only. The control plane still raises it for commands
of the management API too; `translated` turns those into these classes at the service boundary,
by the status the control plane chose (never by the message text).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from connector.protocol.errors import ProtocolError


class ServiceError(Exception):
    """Base class: a request the connector refuses or cannot serve now. Never a server fault."""

    def __init__(self, reason: str, details: Sequence[str] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.details = tuple(details)


class InvalidInput(ServiceError):
    """The request cannot be carried out as given: a bad id, policy, path or amount."""


class Forbidden(ServiceError):
    """An agreement or a policy refuses what was asked."""


class NotFound(ServiceError):
    """What the request names does not exist here (or is not this connector's to act on)."""


class Conflict(ServiceError):
    """The request clashes with the current state: an id taken, a resource still in use, a
    process whose state does not allow the command."""


class Gone(ServiceError):
    """It existed and was removed for good (a copy deleted under its agreement's duty)."""


class PeerFailed(ServiceError):
    """The peer could not be reached, or refused or garbled its answer."""


class Unavailable(ServiceError):
    """Temporarily unable (busy, a credential cannot be checked now): retry later."""


# the status the control plane (and the consumer's pull and vault code) chose -> the class
BY_STATUS: dict[int, type[ServiceError]] = {
    400: InvalidInput,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    502: PeerFailed,
    503: Unavailable,
}


def from_status(status: int, reason: str) -> ServiceError:
    """The typed error for a status chosen by code that predates these classes; other 4xx are
    invalid input, other 5xx a temporary failure."""
    kind = BY_STATUS.get(status) or (Unavailable if status >= 500 else InvalidInput)
    return kind(reason)


@contextmanager
def translated() -> Iterator[None]:
    """Runs control-plane calls: a `ProtocolError` they raise leaves as a `ServiceError`."""
    try:
        yield
    except ProtocolError as exc:
        raise from_status(exc.status, "; ".join(exc.reasons) or exc.code) from exc


__all__ = [
    "BY_STATUS",
    "Conflict",
    "Forbidden",
    "Gone",
    "InvalidInput",
    "NotFound",
    "PeerFailed",
    "ServiceError",
    "Unavailable",
    "from_status",
    "translated",
]
