"""``POST /api/catalog/all`` of the management API (body ``{"peerUrl"}``): every page of a peer's
DSP catalog, merged into one (connector.services.catalog.PeerCatalog.fetch_all). Of a broker
that is the whole data space (`connector catalog BROKER_URL` flattens it).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator

from connector.http.outbound import OutboundRefused, parse_url
from connector.http.routes import Handler, Operation, body_of
from connector.services.catalog import PeerCatalog

__all__ = ["WholeCatalogIn", "WholeCatalogView", "operation"]

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


def whole_catalog(catalogs: PeerCatalog) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        whole = await catalogs.fetch_all(body_of(request, WholeCatalogIn).peer_url)
        return web.json_response({"pages": whole.pages, "dsp": whole.catalog})

    return handle


def operation(catalogs: PeerCatalog) -> Operation:
    """The route, as the management API registers its operations."""
    return Operation(
        "POST",
        "/api/catalog/all",
        whole_catalog(catalogs),
        "peerCatalogAll",
        "Every page of a peer's catalog as one (of a broker: the whole data space)",
        "catalog",
        body=WholeCatalogIn,
        response=WholeCatalogView,
        errors={502: FAILED},
    )
