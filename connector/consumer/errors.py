"""The consumer side's errors: one class per reason a caller acts on."""

from __future__ import annotations


class PullFailed(Exception):
    """A pull ended without a kept copy; the message says why."""


class Denied(Exception):
    """A local use (or an export) of a vault copy is refused: ``status`` is the HTTP status the
    management API answers with, ``reason`` what it says."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


__all__ = ["Denied", "PullFailed"]
