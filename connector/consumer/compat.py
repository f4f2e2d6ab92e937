"""Transitional: the consumer side as connector/serve.py and connector/runtime.py build and
drive it before they are re-wired to ``ConsumerConfig`` and ``DutyRunner`` (issue 11 step 1
splits runtime.py; the lead removes this module and connector/duties.py at that merge).

serve.py hands the control plane a tuple ``(vault, key, certificate, ca)`` whose vault is a
``RuntimeVault`` (``connector.duties.Vault``), and builds ``Downloads(cp, ca_file=...,
vault_dir=..., policy=...)``, ``LocalUse(cp)`` and ``PushInbox(cp, ...)``. The first of those
builds one ``Wiring`` (config, store-backed vault, duty runner) and attaches it to the
RuntimeVault; runtime.py's duty loop then calls ``RuntimeVault.due`` every second, which runs a
round of the DutyRunner and hands runtime.py nothing to do itself; runtime.py's
``register_local_copy`` calls ``RuntimeVault.register`` in a worker thread, which registers
through the DutyRunner on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from cryptography import x509

from connector.consumer.config import ConsumerConfig
from connector.consumer.duty_rounds import DutyRunner
from connector.consumer.ports import ControlPlanePort
from connector.consumer.vault import Vault, VaultItem
from connector.faults import StoreUnavailable
from connector.http.outbound import OutboundPolicy
from connector.identity.keys import SigningKey

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Wiring:
    config: ConsumerConfig
    vault: Vault
    duties: DutyRunner
    loop: asyncio.AbstractEventLoop


class RuntimeVault:
    """What runtime.py's tuple holds as its vault (built by serve.py as
    ``connector.duties.Vault(<participant dir>/vault-records)``)."""

    def __init__(self, records_dir: Path) -> None:
        self.records_dir = records_dir
        self.wiring: Wiring | None = None
        self._round: asyncio.Task[None] | None = None

    def due(self, now: datetime) -> list[VaultItem]:
        """runtime.py's duty tick: one round of the consumer's DutyRunner (in the background);
        nothing for runtime.py to delete itself."""
        if self.wiring is not None and (self._round is None or self._round.done()):
            self._round = asyncio.get_running_loop().create_task(self._run())
        return []

    async def _run(self) -> None:
        assert self.wiring is not None
        try:
            await self.wiring.duties.run_duties()
        except StoreUnavailable as exc:
            log.warning("duty round: %s", exc.reason)
        except Exception:
            log.exception("duty round failed")

    def save(self, item: VaultItem) -> None:
        """Never reached: ``due`` hands runtime.py no item to save."""
        raise RuntimeError("the vault index is in the store (connector.consumer.vault)")

    def register(self, path: Path, *, transfer_id: str, **_: Any) -> VaultItem:
        """runtime.py's register_local_copy, from its worker thread: the DutyRunner's, on the
        event loop (it reads the agreement and its duties itself)."""
        if self.wiring is None:
            raise RuntimeError("the consumer side is not set up")
        done: Future[VaultItem] = asyncio.run_coroutine_threadsafe(
            self.wiring.duties.register_local_copy(path, transfer_id), self.wiring.loop)
        return done.result()

    async def get(self, item_id: str) -> VaultItem | None:
        """For connector.usage.export."""
        if self.wiring is None:
            return None
        return await self.wiring.vault.get(item_id)


def from_runtime(cp: ControlPlanePort, *, ca_file: Path | None = None,
                 vault_dir: Path | None = None, outbound: OutboundPolicy | None = None) -> Wiring:
    """The one wiring of a runtime.py control plane's consumer side (made on first use)."""
    legacy = cast(tuple[RuntimeVault, SigningKey, x509.Certificate, x509.Certificate] | None,
                  getattr(cp, "duties", None))
    if legacy is None:
        raise RuntimeError("this connector keeps no vault")
    runtime_vault, key, certificate, _ = legacy
    if runtime_vault.wiring is not None:
        return runtime_vault.wiring
    participant_dir = runtime_vault.records_dir.parent
    config = ConsumerConfig.load(ca_file=ca_file or participant_dir / "ca.crt",
                                 vault_dir=vault_dir or participant_dir / "vault",
                                 signing_key=key, certificate=certificate,
                                 records_dir=runtime_vault.records_dir, outbound=outbound)
    vault = Vault(cp.store, records_dir=config.records_dir)
    loop = asyncio.get_running_loop()
    wiring = Wiring(config, vault, DutyRunner(cp, config, vault), loop)
    runtime_vault.wiring = wiring
    opening = loop.create_task(vault.open())  # the old JSON records, and the index's cache
    opening.add_done_callback(_report)
    return wiring


def _report(task: asyncio.Task[int]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("the vault's index could not be read: %s", task.exception())


__all__ = ["RuntimeVault", "Wiring", "from_runtime"]
