"""The consumer's side, as the management API reaches it: pulls run by the connector, local
copies registered, governed local uses and exports of vault copies. The work is done by
`connector.consumer` and `connector.usage.export`; this module says which connector parts are
missing (`NotFound`: no pulls, no vault) and turns their refusals into typed errors."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from connector.consumer import Denied, Downloads, LocalUse, PullJob
from connector.runtime import ControlPlane
from connector.services.errors import InvalidInput, NotFound, from_status, translated
from connector.usage.export import Export, VaultExport

NO_PULLS = "this connector runs no pulls (no data-space CA)"
NO_VAULT = "this connector keeps no vault"
T = TypeVar("T")


@contextmanager
def refusals() -> Iterator[None]:
    """A consumer-side refusal (`Denied`, or a control plane's `ProtocolError`) as a typed
    error, by the status it chose."""
    try:
        with translated():
            yield
    except Denied as exc:
        raise from_status(exc.status, exc.reason) from exc


def present(part: T | None, missing: str) -> T:
    """A part this connector may lack (pulls, a vault); `NotFound` saying so if it does."""
    if part is None:
        raise NotFound(missing)
    return part


class Pulls:
    def __init__(self, downloads: Downloads | None) -> None:
        self._downloads = downloads

    def _running(self) -> Downloads:
        return present(self._downloads, NO_PULLS)

    def check(self) -> None:
        """`NotFound` if this connector runs no pulls (asked before a request is read)."""
        self._running()

    async def start(
        self,
        transfer_id: str,
        *,
        out: str | None,
        purpose: str | None,
        complete: bool,
        stated: Mapping[str, str],
    ) -> PullJob:
        downloads = self._running()
        with refusals():
            return await downloads.start(
                transfer_id, out=out, purpose=purpose, complete=complete, stated=stated
            )

    async def status(self, transfer_id: str, wait: float) -> PullJob:
        """The pull's job, once it ended or after `wait` seconds."""
        job = await self._running().wait(transfer_id, wait)
        if job is None:
            raise NotFound("no pull of this transfer")
        return job


@dataclass(frozen=True, slots=True)
class LocalCopy:
    """A file now held under a transfer's agreement."""

    path: str
    agreement_id: str
    delete_at: str | None
    sha256: str


@dataclass(frozen=True, slots=True)
class Use:
    """One governed use: the copy's file to serve and the use's number."""

    path: Path
    number: int


class Vault:
    def __init__(self, cp: ControlPlane, local: LocalUse | None, export: VaultExport | None) -> None:
        self._cp = cp
        self._local = local
        self._export = export

    def _use(self) -> LocalUse:
        return present(self._local, NO_VAULT)

    def _exports(self) -> VaultExport:
        return present(self._export, NO_VAULT)

    def check_uses(self) -> None:
        """`NotFound` if this connector keeps no vault (asked before a request is read)."""
        self._use()

    def check_exports(self) -> None:
        """`NotFound` if copies cannot leave this connector's vault (no vault)."""
        self._exports()

    async def register(self, path: str, transfer_id: str) -> LocalCopy:
        """Consumer: a file pulled outside the connector, now held under the transfer's
        agreement (its delete duty enforced); `InvalidInput` if the file cannot be read."""
        try:
            with translated():
                item = await self._cp.register_local_copy(Path(path), transfer_id)
        except OSError as exc:  # missing, unreadable: the caller's path, not our fault
            raise InvalidInput(f"cannot register {path}: {exc.strerror or exc}") from exc
        return LocalCopy(
            path=item.path, agreement_id=item.agreement_id, delete_at=item.delete_at, sha256=item.sha256
        )

    async def items(self) -> list[dict[str, Any]]:
        local = self._use()
        with refusals():
            return await local.list_items()

    async def item(self, item_id: str) -> dict[str, Any]:
        local = self._use()
        with refusals():
            return dict((await local.item(item_id)).to_json())

    async def use(self, item_id: str, stated: Mapping[str, tuple[Any, ...]]) -> Use:
        """One governed local use: decided on the agreement, its duties fulfilled first."""
        local = self._use()
        with refusals():
            item, path = await local.use(item_id, stated=stated)
        return Use(path=path, number=int(item.uses))

    async def export(self, item_id: str, *, recipient_pem: str | None, plain: bool) -> Export:
        """A copy leaving the vault, as its agreement's distribute permission says."""
        exports = self._exports()
        with refusals():
            return await exports.prepare(item_id, recipient_pem=recipient_pem, plain=plain)
