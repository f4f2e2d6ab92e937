"""Assets: what a provider can offer, each with the data address its data plane reads.

A file asset must lie inside one of the data roots (checked off the event loop: it resolves
symlinks and opens the file). Every change refreshes the catalog.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from connector.assets import DataRoots, PathRefused
from connector.services.errors import Conflict, InvalidInput
from connector.services.records import RemovableRecords, fresh_id
from connector.store import AssetRow, DuplicateKey, Store
from connector.wireformat import Clock


class Assets(RemovableRecords[AssetRow]):
    def __init__(
        self, store: Store, clock: Clock, roots: DataRoots, catalog_changed: Callable[[], None]
    ) -> None:
        super().__init__(store, lambda tx: tx.assets, "asset")
        self._clock = clock
        self._roots = roots
        self._catalog_changed = catalog_changed

    async def add(
        self,
        *,
        asset_id: str | None,
        title: str | None,
        description: str | None,
        keywords: Sequence[str],
        content_type: str | None,
        data_address: dict[str, Any],
    ) -> AssetRow:
        """Store a new asset (its secrets masked in what is read back); `Conflict` if its id
        is taken, `InvalidInput` for a file outside the data roots."""
        row_id = fresh_id(asset_id, "asset")
        if data_address.get("type") == "file":
            try:  # resolves symlinks and opens the file: blocking, off the loop
                await asyncio.get_running_loop().run_in_executor(
                    None, self._roots.admit, str(data_address["path"])
                )
            except PathRefused as exc:
                raise InvalidInput(f"invalid file data address: {exc}") from exc
        row = AssetRow(
            id=row_id,
            created_at=self._clock(),
            title=title,
            description=description,
            keywords=tuple(keywords),
            content_type=content_type,
            data_address=data_address,
        )
        try:
            async with self.store.transaction() as tx:
                await tx.assets.add(row)
                saved = await tx.assets.get(row.id)
        except DuplicateKey as exc:
            raise Conflict(f"asset {row.id} exists") from exc
        self._catalog_changed()
        assert saved is not None
        return saved

    async def delete(self, key: str) -> None:
        await super().delete(key)
        self._catalog_changed()
