"""The consumer's side of the data: pulls (``pulls.Downloads``), the push inbox
(``inbox.PushInbox``), the vault of local copies (``vault.Vault``, its index in the store), their
local use (``local_use.LocalUse``), the agreement's duties read from the ODRL model
(``duties.agreement_duties`` -> ``duties.Duties``), the rounds that carry out the delete duty and
register copies (``duty_rounds.DutyRunner``) and the signed notices to the provider
(``notices``). ``ConsumerSide`` builds them all from one ``ConsumerConfig`` and the control
plane's consumer-facing part (``ports.ControlPlanePort``).

One pull: ``Downloads.start`` -> data plane GET (streamed to the vault directory) -> receipts
fetched and verified -> ``DutyRunner.register_local_copy`` (agreement -> ``Duties`` -> a
``vault_items`` row with its delete time). One local use: ``LocalUse.use`` -> agreement decided,
``Duties`` (due deletion refuses; log, inform) -> use notice -> ``Vault.count_use``. Each round,
``DutyRunner.run_duties`` -> ``Vault.due(now)`` (an indexed query) -> file deleted -> deletion
notice.
"""

from __future__ import annotations

from connector.consumer.config import ConsumerConfig
from connector.consumer.duties import Duties, agreement_duties, delete_after
from connector.consumer.duty_rounds import DUTY_INTERVAL, DutyRunner
from connector.consumer.errors import Denied, PullFailed
from connector.consumer.inbox import PushInbox
from connector.consumer.local_use import LocalUse
from connector.consumer.ports import ControlPlanePort
from connector.consumer.pulls import Downloads, PullJob
from connector.consumer.side import ConsumerSide
from connector.consumer.vault import Vault, VaultItem

__all__ = [
    "DUTY_INTERVAL",
    "ConsumerConfig",
    "ConsumerSide",
    "ControlPlanePort",
    "Denied",
    "Downloads",
    "Duties",
    "DutyRunner",
    "LocalUse",
    "PullFailed",
    "PullJob",
    "PushInbox",
    "Vault",
    "VaultItem",
    "agreement_duties",
    "delete_after",
]
