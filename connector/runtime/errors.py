"""The runtime's own failures, one class per reason a caller acts on (as ``identity/errors.py``).

They subclass ``ProtocolError`` so every edge maps them as it maps protocol errors today (the
status and the reasons into a DSP error body or ``{"error": ...}``) without a new mapping; a
caller that must tell them apart catches the subclass instead of matching the message text.
"""

from __future__ import annotations

from typing import ClassVar

from connector.protocol.errors import ProtocolError


class RuntimeFailure(ProtocolError):
    """A request the runtime cannot carry out; ``STATUS`` is the HTTP status it maps to."""

    STATUS: ClassVar[int] = 400

    def __init__(self, reason: str) -> None:
        super().__init__(self.STATUS, str(self.STATUS), [reason])


class Invalid(RuntimeFailure):
    """The request is malformed or refers to something it may not (400)."""


class Forbidden(RuntimeFailure):
    """The policy forbids it: a retired agreement, uses used up (403)."""

    STATUS = 403


class NotFound(RuntimeFailure):
    """No such process, agreement or facility on this connector, or not the caller's (404)."""

    STATUS = 404


class Conflict(RuntimeFailure):
    """It does not fit the current state: not finalized, already ended, no refresh token (409)."""

    STATUS = 409


class PeerRefused(RuntimeFailure):
    """The counter-party refused what this connector asked of it on the caller's behalf (502)."""

    STATUS = 502


class Busy(RuntimeFailure):
    """Concurrent writes kept winning over this one; try again (503)."""

    STATUS = 503


__all__ = ["Busy", "Conflict", "Forbidden", "Invalid", "NotFound", "PeerRefused", "RuntimeFailure"]
