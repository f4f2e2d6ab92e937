"""``POST /api/catalog/all`` of the management API (body ``{"peerUrl"}``): every page of a peer's
DSP catalog, merged into one.

``/api/catalog`` answers the peer's first page. This one follows the ``Link: <...>; rel="next"``
header (only at the same endpoint, at most ``MAX_PAGES`` pages) and joins the pages'
``dataset`` and ``catalog`` lists; a nested catalog that a page boundary split in two is joined
again. Of a broker (connector.broker.catalogs) that is the whole data space: one catalog per
connector the broker has crawled, each with the datasets it showed the broker
(`connector catalog BROKER_URL` flattens it). As every DSP call of the connector, the requests
carry its DAT and go through its outbound-address policy (``[dsp] peer_allow``).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator

from connector.http.outbound import OutboundRefused, parse_url, same_endpoint
from connector.http.routes import ApiError, Handler, Operation, body_of
from connector.protocol.messages import CatalogRequestMessage
from connector.runtime import ControlPlane

__all__ = ["MAX_PAGES", "WholeCatalogIn", "WholeCatalogView", "merge_pages", "operation"]

MAX_PAGES = 200
FAILED = "The peer could not be reached or did not answer with a catalog"


class WholeCatalogIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    peer_url: str = Field(alias="peerUrl")

    @field_validator("peer_url")
    @classmethod
    def _base_url(cls, v: str) -> str:
        try:
            parse_url(v, base=True)
        except OutboundRefused as exc:
            raise ValueError(exc.reason) from None
        return v


class WholeCatalogView(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    pages: int
    dsp: dict[str, Any] = Field(description="the pages as one catalog (DSP JSON-LD)")


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
                catalogs[-1]["dataset"] = [*catalogs[-1].get("dataset", []),
                                           *nested.get("dataset", [])]
            else:
                catalogs.append(dict(nested))
    if datasets:
        merged["dataset"] = datasets
    if catalogs or "catalog" in pages[0]:
        merged["catalog"] = catalogs
    return merged


def whole_catalog(cp: ControlPlane) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        peer = body_of(request, WholeCatalogIn).peer_url
        first = peer.rstrip("/") + "/catalog/request"
        url: str | None = first
        message = CatalogRequestMessage().to_wire()
        pages: list[dict[str, Any]] = []
        while url is not None:
            if len(pages) >= MAX_PAGES:
                raise ApiError(502, f"the peer's catalog has more than {MAX_PAGES} pages")
            d = await cp.client.post(url, message)
            if d.refused:
                raise ApiError(400, f"peerUrl: {d.reason}")
            if not d.ok or not isinstance(d.body, dict):
                raise ApiError(502, f"the peer's catalog could not be read: {d.reason}")
            pages.append(d.body)
            url = d.next_url
            if url is not None and not same_endpoint(url, first):
                raise ApiError(502, "the peer's next catalog page is at another endpoint: "
                                    "not followed")
        return web.json_response({"pages": len(pages), "dsp": merge_pages(pages)})
    return handle


def operation(cp: ControlPlane) -> Operation:
    """The route, as the management API registers its operations."""
    return Operation("POST", "/api/catalog/all", whole_catalog(cp), "peerCatalogAll",
                     "Every page of a peer's catalog as one (of a broker: the whole data space)",
                     "catalog", body=WholeCatalogIn, response=WholeCatalogView,
                     errors={502: FAILED})
