"""A request written byte for byte (headers that are not UTF-8, that no HTTP client sends)."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient


async def raw_status(client: TestClient, head: bytes) -> int:
    """The status of the request ``head`` (request line and headers, each ending in CRLF)."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(head + b"Host: x\r\nConnection: close\r\n\r\n")
        await writer.drain()
        return int((await reader.readline()).split()[1])
    finally:
        writer.close()
