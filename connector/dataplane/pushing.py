"""Provider side of HttpData-PUSH on top of the control plane.

The control plane starts a requested push transfer (its start message carries no data address);
once the consumer has taken the start in (the transfer is STARTED here), the `PushRunner` is
told through the control plane's transfer listeners and streams the data:

1. the live policy decision, exactly as for a pull request (state, time window, purpose as the
   consumer's push address states it, the consumer, one use counted): a deny terminates the
   transfer with the engine's reason;
2. `connector.dataplane.push.push` to the consumer's endpoint, SSRF-checked against the
   operator's `push_allow`, cut off if the transfer is suspended or terminated meanwhile;
3. success completes the transfer; a suspension leaves it to a resume, which pushes again and
   declares the response that broke off (so the consumer can follow the receipt chain over it);
   a storage fault (the use cannot be counted, an earlier receipt not recorded: no data leaves)
   leaves the transfer STARTED and pushes again after its Retry-After; any other failure
   terminates the transfer with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from datetime import UTC, datetime
from typing import Any

from connector.dataplane.app import CircumstancesOf, token_and_headers
from connector.dataplane.modified import ModifiedSource
from connector.dataplane.pep import ConsumeUse, decide, still_permitted
from connector.dataplane.push import push
from connector.dataplane.receipts import ReceiptBook
from connector.dataplane.wiring import TransferLookup
from connector.faults import StoreUnavailable
from connector.http.outbound import OutboundPolicy
from connector.identity.tokens import Claims
from connector.protocol import transfer as xfer
from connector.protocol.errors import ProtocolError
from connector.protocol.messages import PUSH
from connector.runtime.controlplane import ControlPlane
from connector.runtime.mapping import row_to_transfer

log = logging.getLogger(__name__)
# the data-address properties a push consumer states facts in, by the pull's header for each
PUSH_STATED = {
    "X-Purpose": "purpose",
    "X-Application": "application",
    "X-Event": "event",
    "X-Location": "location",
}
LEASE_SECONDS = 30.0  # a replica's hold on a push; renewed while it runs, free after a crash


class PushRunner:
    def __init__(
        self,
        cp: ControlPlane,
        *,
        lookup: TransferLookup,
        receipts: ReceiptBook,
        policy: OutboundPolicy,
        ssl_context: ssl.SSLContext | None,
        consume: ConsumeUse | None = None,
        circumstances: CircumstancesOf | None = None,
    ) -> None:
        self.cp = cp
        # the same circumstances a pull is decided on (connector.dataplane.wiring)
        self.circumstances: CircumstancesOf = circumstances or token_and_headers
        # the data plane's use reservations, so pulls and pushes draw on the same blocks
        self.consume: ConsumeUse = consume or cp.store.consume_use
        self.lookup = lookup
        self.receipts = receipts
        self.policy = policy
        self.ssl = ssl_context
        self._running: dict[str, asyncio.Task[None]] = {}
        self._failed: dict[str, list[tuple[int, int, str]]] = {}
        self._again: set[str] = set()
        self._closing = False

    def notify(self, transfer_id: str) -> None:
        """A transfer's state changed (a control-plane transfer listener). A change while its
        push runs is looked at again when the push ends (a quick suspend and resume)."""
        if self._closing:
            return
        if transfer_id in self._running:
            self._again.add(transfer_id)
            return
        task = asyncio.get_running_loop().create_task(self._maybe_push(transfer_id))
        self._running[transfer_id] = task

        def ended(_: asyncio.Task[None]) -> None:
            self._running.pop(transfer_id, None)
            if transfer_id in self._again and not self._closing:
                self._again.discard(transfer_id)
                self.notify(transfer_id)

        task.add_done_callback(ended)

    async def resume_after_restart(self) -> int:
        """Push again what was STARTED when this process stopped (the stream it ran then is
        gone with it; the consumer kept nothing of a push that broke off)."""
        async with self.cp.store.transaction(readonly=True) as tx:
            rows = await tx.transfers.list(state="STARTED", role="provider", limit=None)
        started = [r.id for r in rows if r.format == PUSH]
        for transfer_id in started:
            self.notify(transfer_id)
        return len(started)

    async def close(self) -> None:
        self._closing = True
        for task in list(self._running.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def wait_idle(self) -> None:
        while self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)

    async def _maybe_push(self, transfer_id: str) -> None:
        try:
            await self._push_if_started(transfer_id)
        except StoreUnavailable as exc:  # not the push's fault: the transfer stays STARTED
            log.warning("push of %s: %s; again in %d s", transfer_id, exc.reason, exc.retry_after)
            if not self._closing:
                asyncio.get_running_loop().call_later(exc.retry_after, self.notify, transfer_id)

    async def _push_if_started(self, transfer_id: str) -> None:
        async with self.cp.store.transaction(readonly=True) as tx:
            row = await tx.transfers.get(transfer_id)
        if row is None or row.role != "provider" or row.format != PUSH or row.state != "STARTED":
            return
        # one replica pushes a transfer: the one holding its lease (renewed while it pushes)
        if not await self._lease(transfer_id):
            log.info("push of %s: another replica holds it", transfer_id)
            return
        try:
            await self._push(row)
        except (asyncio.CancelledError, StoreUnavailable):
            raise
        except Exception as exc:
            log.exception("push of %s failed", transfer_id)
            await self._end(transfer_id, f"the push failed: {type(exc).__name__}")
        finally:
            with contextlib.suppress(Exception):
                await self.cp.store.release_lease("transfer", transfer_id, self.cp.worker_id)

    async def _lease(self, transfer_id: str) -> bool:
        return bool(
            await self.cp.store.acquire_lease(
                "transfer", transfer_id, self.cp.worker_id, datetime.now(UTC), LEASE_SECONDS
            )
        )

    async def _end(self, transfer_id: str, reason: str | None) -> None:
        command = xfer.Complete() if reason is None else xfer.Terminate(reason)
        with contextlib.suppress(ProtocolError):
            await self.cp.transfer_command(transfer_id, command)
        self._failed.pop(transfer_id, None)
        self.receipts.finish(transfer_id, time.time())

    async def _push(self, row: Any) -> None:
        t = row_to_transfer(row)
        self.lookup.invalidate(t.id)
        view = await self.lookup(t.id)
        address = t.data_address
        if view is None or address is None or not address.endpoint:
            await self._end(t.id, "the push transfer has no destination or agreement")
            return
        if view.source is None:
            await self._end(t.id, "the asset has no data address to push from")
            return
        unperformable = view.source.unperformable() if isinstance(view.source, ModifiedSource) else None
        if unperformable is not None:  # as a pull: refused before a use is counted
            await self._end(t.id, unperformable)
            return
        if self.receipts.shared is not None:  # fail closed, as a pull: earlier receipts first
            await self.receipts.shared.ready()
        # the same decision a pull request gets: the consumer's attested attributes as the
        # provider verified them when the transfer was requested, the facts the consumer
        # states in its data address (purpose, application, event, location)
        now = time.time()
        claims = Claims(
            scheme="push",
            issuer=self.cp.participant_id,
            subject=view.consumer_id,
            audience=(),
            issued_at=now,
            not_before=now,
            expires_at=now,
            token_id=t.id,
            key_id=None,
            attributes={
                "transferId": t.id,
                "agreementId": view.agreement_id,
                # the consumer's DAT snapshot the provider kept with the transfer
                "attested": (view.attested or {}).get("attested") or {},
                "attestedAt": (view.attested or {}).get("attestedAt"),
            },
        )
        stated = {h: v for h, v in ((h, address.property(n)) for h, n in PUSH_STATED.items()) if v}
        circ = await self.circumstances(claims, view, stated, datetime.fromtimestamp(now, UTC))
        decision = await decide(
            claims, view, now=datetime.fromtimestamp(now, UTC), circumstances=circ, consume=self.consume
        )
        if not decision.permit:
            await self._end(t.id, decision.reason)
            return
        secret = address.property("authorization")

        state_changed = False
        renewed = time.monotonic()

        async def still_allowed() -> str | None:
            """Between chunks: still STARTED, and the agreement still permits as of now."""
            nonlocal state_changed, renewed
            if time.monotonic() - renewed > LEASE_SECONDS / 3:
                if not await self._lease(t.id):
                    state_changed = True
                    return "another replica took the push over"
                renewed = time.monotonic()
            current = await self.lookup(t.id)
            if current is None:
                return "the transfer is gone"
            if current.state != "STARTED":
                state_changed = True  # suspended or ended: not this push's failure
            return still_permitted(current, now=datetime.now(UTC), circumstances=circ)

        result = await push(
            view.source,
            destination=address.endpoint,
            authorization=f"Bearer {secret}" if secret else None,
            policy=self.policy,
            chain=self.receipts.chain(t.id, view.agreement_id, view.consumer_id),
            still_allowed=still_allowed,
            ssl=self.ssl,
            failed=self._failed.get(t.id, ()),
        )
        if result.ok:
            log.info("pushed %d bytes of %s", result.bytes, t.id)
            await self._end(t.id, None)
            return
        accepted = result.status is not None and 200 <= result.status < 300
        if result.seq and not accepted:  # the consumer kept nothing of it: declare it next time
            self._failed.setdefault(t.id, []).append((result.seq, result.bytes, result.sha256))
        if state_changed:
            log.info("push of %s stopped: %s", t.id, result.reason)  # a resume pushes again
            return
        await self._end(t.id, f"the push failed: {result.reason}")


__all__ = ["PushRunner"]
