"""Transfer processes, as the management API drives them: request one under an agreement, list
(by DSP state, newest first if asked, selected before paging), the commands either side may
take (suspend, resume, complete, terminate) and the consumer's token refresh."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from connector.protocol import transfer as xfer
from connector.runtime import ControlPlane
from connector.services.errors import translated
from connector.services.records import Page, Records, wire_state_query
from connector.store import TransferRow

# a command either side may take at any time, made from the operator's reason
Command = Callable[[str], xfer.Suspend | xfer.Resume | xfer.Complete | xfer.Terminate]
COMMANDS: Mapping[str, Command] = {
    "suspend": lambda why: xfer.Suspend(why),
    "resume": lambda why: xfer.Resume(),
    "complete": lambda why: xfer.Complete(),
    "terminate": lambda why: xfer.Terminate(why),
}
DEFAULT_REASON = "by operator"


class Transfers(Records[TransferRow]):
    def __init__(self, cp: ControlPlane) -> None:
        super().__init__(cp.store, lambda tx: tx.transfers, "transfer")
        self._cp = cp

    async def list_in(self, state: str | None, page: Page) -> list[TransferRow]:
        """A page of transfers, in DSP state `state` if given (selected before paging)."""
        wire = wire_state_query(state, xfer.SENDING) if state is not None else None
        async with self.store.transaction(readonly=True) as tx:
            return await tx.transfers.list(
                wire_state=wire, newest_first=page.newest_first, limit=page.limit, offset=page.offset
            )

    async def start(
        self, agreement_id: str, fmt: str, *, purpose: str | None, stated: Mapping[str, str]
    ) -> TransferRow:
        """Consumer: ask the agreement's provider for a transfer (pull or push)."""
        with translated():
            started = await self._cp.request_transfer(agreement_id, fmt, purpose=purpose, stated=stated)
        return await self.get(started.id)

    async def command(self, transfer_id: str, action: str, reason: str) -> TransferRow:
        """One of `COMMANDS` on a transfer; `Conflict` if its state does not allow it."""
        make = COMMANDS[action]
        with translated():
            t = await self._cp.transfer_command(transfer_id, make(reason or DEFAULT_REASON))
        return await self.get(t.id)

    async def refresh(self, transfer_id: str) -> TransferRow:
        """Consumer: exchange the pull's refresh token at the provider for a new access token."""
        with translated():
            t = await self._cp.refresh_pull_token(transfer_id)
        return await self.get(t.id)
