"""The consumer side built from one configuration: every part shares one vault and one duty
runner."""

from __future__ import annotations

from connector.consumer.config import ConsumerConfig
from connector.consumer.duty_rounds import DutyRunner
from connector.consumer.inbox import PushInbox
from connector.consumer.local_use import LocalUse
from connector.consumer.ports import ControlPlanePort
from connector.consumer.pulls import Downloads
from connector.consumer.vault import Vault


class ConsumerSide:
    def __init__(self, cp: ControlPlanePort, config: ConsumerConfig) -> None:
        self.config = config
        self.vault = Vault(cp.store, records_dir=config.records_dir)
        self.duties = DutyRunner(cp, config, self.vault)
        self.downloads = Downloads(cp, config, self.duties)
        self.inbox = PushInbox(cp, config, self.duties)
        self.local = LocalUse(cp, config, self.vault)

    async def start(self) -> None:
        """Import an older version's vault records, then run the duty rounds."""
        await self.vault.open()
        self.duties.start()

    async def stop(self) -> None:
        await self.duties.stop()
        await self.downloads.close()


__all__ = ["ConsumerSide"]
