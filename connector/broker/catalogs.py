"""The broker's answer to a DSP ``CatalogRequestMessage``: a catalog of catalogs.

DSP 2025-1 lets a ``dcat:Catalog`` hold catalogs (``catalog``). The broker's root catalog holds
one catalog per available registered connector that it has crawled (connector.broker.crawl): the
connector's own catalog head (its ``@id``, ``participantId`` and ``service``) with the datasets
as the connector listed them to the broker. A consumer's connector reads the whole data space
with the DSP client it already has; it still negotiates with each provider, which shows it its
own view.

Pages hold up to ``pageSize`` datasets (default ``DEFAULT_PAGE_SIZE``) in (registration,
dataset id) order, so a page may end inside a connector's catalog and the next one continues
it; pagination is by key, like a connector's catalog (connector.protocol.catalog): the cursor is
opaque and the ``Link: <...>; rel="next"`` header names the next page.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from connector.broker.store import CatalogEntry
from connector.http.management import catalog_view
from connector.protocol.errors import ProtocolError
from connector.wireformat import DSP_CONTEXT_URL

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "catalog_of_catalogs",
    "data_space",
    "next_link",
    "read_cursor",
]


def catalog_of_catalogs(
    entries: Sequence[CatalogEntry], *, catalog_id: str, participant_id: str
) -> dict[str, Any]:
    """The root catalog holding ``entries`` grouped into their connectors' catalogs."""
    nested: list[dict[str, Any]] = []
    current = ""
    for e in entries:
        if e.registration_id != current:
            current = e.registration_id
            head = {k: v for k, v in e.head.items() if k != "@context"}
            head.setdefault("@id", f"urn:connector-broker:catalog:{e.registration_id}")
            nested.append({**head, "@type": "Catalog", "dataset": []})
        nested[-1]["dataset"].append(e.wire)
    root: dict[str, Any] = {
        "@context": [DSP_CONTEXT_URL],
        "@id": catalog_id,
        "@type": "Catalog",
        "participantId": participant_id,
    }
    if nested:
        root["catalog"] = nested
    return root


def _encode(after: tuple[str, str]) -> str:
    raw = json.dumps(list(after), separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def read_cursor(cursor: str | None) -> tuple[str, str] | None:
    """The (registration, dataset id) a page starts after; a DSP 400 for a cursor not ours."""
    if not cursor:
        return None
    try:
        found = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if isinstance(found, list) and len(found) == 2 and all(isinstance(x, str) for x in found):
            return found[0], found[1]
    except (ValueError, binascii.Error):
        pass
    raise ProtocolError(400, "400", ["the catalog cursor is not valid (take it from a Link header)"])


def next_link(base_url: str, page_size: int, last: CatalogEntry) -> str:
    """The Link header value of the page after the one ending with ``last``."""
    cursor = quote(_encode((last.registration_id, last.dataset_id)))
    return f'<{base_url}?pageSize={page_size}&cursor={cursor}>; rel="next"'


def data_space(dsp: dict[str, Any]) -> dict[str, Any] | None:
    """A catalog of catalogs flattened as `connector catalog` shows it: each dataset (as the
    management API shows a peer's) with its provider and the provider's DSP endpoint; None if
    ``dsp`` holds no catalogs (a connector's own catalog)."""
    nested = [c for c in dsp.get("catalog") or [] if isinstance(c, dict)]
    if "catalog" not in dsp:
        return None
    datasets = []
    for catalog in nested:
        view = catalog_view(catalog)
        services = [s for s in catalog.get("service") or [] if isinstance(s, dict)]
        endpoint = services[0].get("endpointURL") if services else None
        datasets += [{**d, "provider": view["participantId"], "endpoint": endpoint} for d in view["datasets"]]
    return {"participantId": dsp.get("participantId"), "catalogs": len(nested), "datasets": datasets}
