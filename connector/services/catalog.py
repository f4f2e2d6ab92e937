"""A peer's catalog, fetched over DSP as the peer shows it to this connector: its first page, or
every page as one catalog.

Every page follows the ``Link: <...>; rel="next"`` header (only at the same endpoint, at most
``MAX_PAGES`` pages) and joins the pages' ``dataset`` and ``catalog`` lists; a nested catalog
that a page boundary split in two is joined again. Of a broker (connector.broker.catalogs) that
is the whole data space: one catalog per connector the broker has crawled. As every DSP call of
the connector, the requests carry its DAT and go through its outbound-address policy
(``[dsp] peer_allow``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from connector.http.outbound import same_endpoint
from connector.protocol.messages import CatalogRequestMessage
from connector.runtime.transport import PeerReply, Poster
from connector.services.errors import InvalidInput, PeerFailed

MAX_PAGES = 200


@dataclass(frozen=True)
class WholeCatalog:
    pages: int
    catalog: dict[str, Any]  # the pages as one catalog (DSP JSON-LD)


def merge_pages(pages: list[dict[str, Any]]) -> dict[str, Any]:
    """The pages of one catalog as one: the first page's head, every page's datasets and
    nested catalogs (a nested catalog continued on the next page joined with its start)."""
    merged = {k: v for k, v in pages[0].items() if k not in ("dataset", "catalog")}
    datasets: list[Any] = []
    catalogs: list[dict[str, Any]] = []
    for page in pages:
        datasets += [d for d in page.get("dataset") or [] if isinstance(d, dict)]
        for nested in page.get("catalog") or []:
            if not isinstance(nested, dict):
                continue
            if catalogs and "@id" in nested and catalogs[-1].get("@id") == nested["@id"]:
                catalogs[-1]["dataset"] = [*catalogs[-1].get("dataset", []), *nested.get("dataset", [])]
            else:
                catalogs.append(dict(nested))
    if datasets:
        merged["dataset"] = datasets
    if catalogs or "catalog" in pages[0]:
        merged["catalog"] = catalogs
    return merged


class PeerCatalog:
    def __init__(self, client: Poster) -> None:
        self._client = client

    async def _page(self, url: str) -> PeerReply:
        d = await self._client.post(url, CatalogRequestMessage().to_wire())
        if d.refused:
            raise InvalidInput(f"peerUrl: {d.reason}")
        if not d.ok or not isinstance(d.body, dict):
            raise PeerFailed(f"the peer's catalog could not be read: {d.reason}")
        return d

    async def pages(self, peer_url: str) -> AsyncIterator[dict[str, Any]]:
        """The peer's catalog page by page, as they are read (a caller that found what it
        looks for stops reading); `PeerFailed` beyond ``MAX_PAGES`` or for a next page at
        another endpoint (not followed)."""
        first = peer_url.rstrip("/") + "/catalog/request"
        url: str | None = first
        read = 0
        while url is not None:
            if read >= MAX_PAGES:
                raise PeerFailed(f"the peer's catalog has more than {MAX_PAGES} pages")
            d = await self._page(url)
            read += 1
            yield d.body
            url = d.next_url
            if url is not None and not same_endpoint(url, first):
                raise PeerFailed("the peer's next catalog page is at another endpoint: not followed")

    async def fetch_all(self, peer_url: str) -> WholeCatalog:
        """Every page of the peer's catalog as one."""
        pages = [page async for page in self.pages(peer_url)]
        return WholeCatalog(len(pages), merge_pages(pages))
