"""The one error type of the protocol core; the HTTP edge maps it onto a DSP error body."""

from __future__ import annotations

from typing import Any


class ProtocolError(Exception):
    """A message or command the protocol does not allow.

    ``status`` is the HTTP status the edge returns (400 invalid message or transition, 404 unknown
    process or a caller that is not its counter-party, 409 a local command that does not fit the
    current state). ``code`` goes into the error body's ``code``; ``reasons`` into ``reason``.
    ``negotiation`` / ``transfer`` is the process as it stands (unchanged), when there is one.
    """

    def __init__(
        self,
        status: int,
        code: str,
        reasons: list[str],
        negotiation: Any = None,
        *,
        transfer: Any = None,
    ) -> None:
        self.status = status
        self.code = code
        self.reasons = list(reasons) or ["invalid request"]
        self.negotiation = negotiation
        self.transfer = transfer
        super().__init__(f"{status} {code}: {'; '.join(self.reasons)}")

    @property
    def process(self) -> Any:
        return self.negotiation if self.negotiation is not None else self.transfer


def bad_request(reason: str, code: str = "400", **process: Any) -> ProtocolError:
    return ProtocolError(400, code, [reason], process.get("negotiation"), transfer=process.get("transfer"))
