"""The consumer's vault: the local copies it holds under agreements.

The copies are files on disk (under the vault directory, or where a caller registered them);
their index is in the store (``vault_items``, connector.store.vault), so the duty scheduler asks
the database which copies are due instead of re-reading files, and a copy's local uses are
counted atomically. A copy's id is derived from its agreement and path, so registering the same
copy again refreshes it (a new file, the agreement's duties read again) and keeps its uses.

Older versions kept the index as one JSON record per copy in a records directory; ``open``
imports those once (a record already in the store is left as the store has it) and renames each
imported record to ``*.json.imported``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from connector.consumer.duties import Duties
from connector.store import Store
from connector.store.vault import VaultRow

log = logging.getLogger(__name__)
IMPORTED_SUFFIX = ".imported"


@dataclass(frozen=True, slots=True)
class VaultItem:
    """One local copy under an agreement (times as ISO 8601 text, as the API shows them)."""

    path: str
    agreement_id: str
    transfer_id: str
    provider_id: str
    provider_address: str
    sha256: str
    delete_at: str | None
    registered_at: str
    deleted_at: str | None = None
    notice_sent: bool = False
    uses: int = 0  # local uses counted by the connector (reads through the management API)
    id: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": self.path,
            "agreementId": self.agreement_id,
            "transferId": self.transfer_id,
            "providerId": self.provider_id,
            "sha256": self.sha256,
            "deleteAt": self.delete_at,
            "registeredAt": self.registered_at,
            "deletedAt": self.deleted_at,
            "noticeSent": self.notice_sent,
            "uses": self.uses,
        }

    @classmethod
    def from_row(cls, row: VaultRow) -> VaultItem:
        return cls(
            path=row.path,
            agreement_id=row.agreement_id,
            transfer_id=row.transfer_id,
            provider_id=row.provider_id,
            provider_address=row.provider_address,
            sha256=row.sha256,
            delete_at=_iso(row.delete_at),
            registered_at=row.registered_at.isoformat(),
            deleted_at=_iso(row.deleted_at),
            notice_sent=row.notice_sent,
            uses=row.uses,
            id=row.id,
        )

    def to_row(self) -> VaultRow:
        return VaultRow(
            id=self.id,
            path=self.path,
            agreement_id=self.agreement_id,
            transfer_id=self.transfer_id,
            provider_id=self.provider_id,
            provider_address=self.provider_address,
            sha256=self.sha256,
            delete_at=_time(self.delete_at),
            registered_at=datetime.fromisoformat(self.registered_at),
            deleted_at=_time(self.deleted_at),
            notice_sent=self.notice_sent,
            uses=self.uses,
        )


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when is not None else None


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def item_id(agreement_id: str, path: str) -> str:
    return hashlib.sha256(f"{agreement_id}|{path}".encode()).hexdigest()[:24]


def _is_item_id(text: str) -> bool:
    return len(text) == 24 and all(c in "0123456789abcdef" for c in text)


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Vault:
    """The vault's index in the store (every replica sees the same copies)."""

    def __init__(self, store: Store, *, records_dir: Path | None = None) -> None:
        self.store = store
        self.records_dir = records_dir
        self._opened = False
        self._opening = asyncio.Lock()

    async def open(self) -> int:
        """Import the JSON records of an older version (once), and read the index; the number
        of records imported."""
        async with self._opening:
            if self._opened:
                return 0
            imported = await self._import_records()
            await self.items()
            self._opened = True
            return imported

    async def _import_records(self) -> int:
        if self.records_dir is None or not self.records_dir.is_dir():
            return 0
        records: list[tuple[Path, VaultItem]] = []
        for f in sorted(self.records_dir.glob("*.json")):
            try:
                item = VaultItem(**{**json.loads(f.read_text()), "id": f.stem})
                if not _is_item_id(item.id):
                    raise ValueError("not a vault record name")
                item.to_row()  # its times must read
            except (OSError, ValueError, TypeError) as exc:
                log.warning("vault record %s not imported: %s", f, exc)
                continue
            records.append((f, item))
        if not records:
            return 0
        async with self.store.transaction() as tx:
            for _, item in records:
                await tx.vault.add_if_absent(item.to_row())
        for f, _ in records:
            f.rename(f.with_name(f.name + IMPORTED_SUFFIX))
        log.info("imported %d vault record(s) from %s into the store", len(records), self.records_dir)
        return len(records)

    async def register(
        self,
        path: Path,
        *,
        agreement_id: str,
        duties: Duties,
        transfer_id: str,
        provider_id: str,
        provider_address: str,
        now: datetime,
    ) -> VaultItem:
        """Hold the file at ``path`` under the agreement; its deletion time from ``duties``."""
        if not path.is_file():
            raise FileNotFoundError(f"no file {path}")
        digest = await asyncio.to_thread(_sha256_of, path)  # a large copy: off the event loop
        resolved = str(path.resolve())
        item = VaultItem(
            path=resolved,
            agreement_id=agreement_id,
            transfer_id=transfer_id,
            provider_id=provider_id,
            provider_address=provider_address,
            sha256=digest,
            delete_at=_iso(duties.delete_at),
            registered_at=now.isoformat(),
            id=item_id(agreement_id, resolved),
        )
        async with self.store.transaction() as tx:
            await tx.vault.save(item.to_row())
            row = await tx.vault.get(item.id)
        assert row is not None
        return VaultItem.from_row(row)

    async def get(self, vid: str) -> VaultItem | None:
        if not _is_item_id(vid):
            return None
        async with self.store.transaction(readonly=True) as tx:
            row = await tx.vault.get(vid)
        if row is None:
            return None
        return VaultItem.from_row(row)

    async def items(self) -> list[VaultItem]:
        async with self.store.transaction(readonly=True) as tx:
            rows = await tx.vault.all()
        return [VaultItem.from_row(r) for r in rows]

    async def due(self, now: datetime) -> list[VaultItem]:
        """The copies whose delete duty fell due by ``now`` and whose provider was not told."""
        async with self.store.transaction(readonly=True) as tx:
            rows = await tx.vault.due(now)
        return [(VaultItem.from_row(r)) for r in rows]

    async def mark_deleted(self, item: VaultItem, at: datetime) -> VaultItem:
        async with self.store.transaction() as tx:
            await tx.vault.mark_deleted(item.id, at)
            row = await tx.vault.get(item.id)
        return VaultItem.from_row(row) if row is not None else item

    async def mark_notice_sent(self, item: VaultItem) -> VaultItem:
        async with self.store.transaction() as tx:
            await tx.vault.mark_notice_sent(item.id)
        return replace(item, notice_sent=True)

    async def count_use(self, item: VaultItem) -> VaultItem | None:
        """Count one local use of a copy; None if it was deleted (or is gone) meanwhile."""
        async with self.store.transaction() as tx:
            uses = await tx.vault.add_use(item.id)
            row = await tx.vault.get(item.id)
        if uses is None or row is None:
            return None
        return VaultItem.from_row(row)

    async def agreement_uses(self, agreement_id: str) -> int:
        """The local uses counted for all of an agreement's copies."""
        async with self.store.transaction(readonly=True) as tx:
            return await tx.vault.agreement_uses(agreement_id)


__all__ = ["IMPORTED_SUFFIX", "Vault", "VaultItem", "item_id"]
