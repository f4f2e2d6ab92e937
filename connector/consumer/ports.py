"""What the consumer side uses of the control plane, and nothing more (so it does not import
connector.runtime): the store, the audit log, the DSP client, the clock, this participant's id
and held facts, and three commands on its transfers."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Protocol

from connector.audit.log import AuditLog
from connector.protocol.transfer import Transfer
from connector.store import Store


class Reply(Protocol):
    """What the consumer side reads of a counter-party's answer."""

    @property
    def ok(self) -> bool: ...
    @property
    def status(self) -> int | None: ...
    @property
    def body(self) -> Any: ...
    @property
    def reason(self) -> str: ...


class NoticePoster(Protocol):
    """The DSP client's one call the consumer side makes: deliver a notice to a provider."""

    async def post(self, url: str, payload: Any) -> Reply: ...


class HeldFactSource(Protocol):
    async def facts(self, now: datetime) -> dict[str, tuple[Any, ...]]: ...


class ControlPlanePort(Protocol):
    """The consumer side's view of connector.runtime.ControlPlane."""

    @property
    def store(self) -> Store: ...
    @property
    def audit(self) -> AuditLog | None: ...
    @property
    def client(self) -> NoticePoster: ...
    @property
    def clock(self) -> Callable[[], datetime]: ...
    @property
    def participant_id(self) -> str: ...
    @property
    def held(self) -> HeldFactSource | None: ...

    async def transfer_command(self, transfer_id: str, command: Any) -> Transfer: ...
    async def refresh_pull_token(self, transfer_id: str) -> Transfer: ...
    async def own_attributes(self) -> Mapping[str, Any]: ...


__all__ = ["ControlPlanePort", "HeldFactSource", "NoticePoster"]
