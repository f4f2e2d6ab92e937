"""The loopback data space of connector.devspace, with every DSP message on the wire validated
against the official schemas (the integration tests fail on any violation)."""

from __future__ import annotations

from pathlib import Path

from connector import devspace
from connector.devspace import Connector, cli, free_port, negotiate, offer_asset, wait_final

DSP_SCHEMAS = Path(__file__).resolve().parents[2] / "shared" / "conformance" / "dsp" / "schemas"

__all__ = ["Connector", "DataSpace", "cli", "free_port", "negotiate", "offer_asset", "wait_final"]


class DataSpace(devspace.DataSpace):
    def __init__(self, root: Path, *, tls: bool = True) -> None:
        super().__init__(root, tls=tls, wire_schemas=DSP_SCHEMAS)
