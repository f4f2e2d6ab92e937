"""A peer's catalog, fetched over DSP as the peer shows it to this connector."""

from __future__ import annotations

from typing import Any

from connector.http.client import DspClient
from connector.protocol.messages import CatalogRequestMessage
from connector.services.errors import InvalidInput, PeerFailed


class PeerCatalog:
    def __init__(self, client: DspClient) -> None:
        self._client = client

    async def fetch(self, peer_url: str) -> dict[str, Any]:
        """The peer's DSP catalog; `InvalidInput` if the outbound policy refuses its address,
        `PeerFailed` if it cannot be reached or answers no catalog."""
        d = await self._client.post(peer_url.rstrip("/") + "/catalog/request",
                                    CatalogRequestMessage().to_wire())
        if d.refused:
            raise InvalidInput(f"peerUrl: {d.reason}")
        if not d.ok or not isinstance(d.body, dict):
            raise PeerFailed(f"the peer's catalog could not be read: {d.reason}")
        return d.body
