"""Helpers of the limits tests: a connector or authority with a ``[limits]`` section, raw HTTP
over loopback (plain or TLS), a DAT for a registered examiner."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dataspace_testlib import Connector, DataSpace, cli

from connector.devspace import process_env
from connector.identity.client import DatClient, ParticipantIdentity

NOWHERE = "http://127.0.0.1:9/callback"  # loopback, nothing listens


def limits_toml(**limits: float) -> str:
    return "\n[limits]\n" + "".join(f"{k} = {v}\n" for k, v in limits.items())


def connector_with_limits(
    ds: DataSpace, name: str, *, roles: tuple[str, ...] = ("provider", "consumer"), **limits: float
) -> Connector:
    c = ds.connector(name, roles=roles, start=False)
    with c.config.open("a", encoding="utf-8") as f:
        f.write(limits_toml(**limits))
    c.start()
    return c


def restart_authority_with_limits(ds: DataSpace, **limits: float) -> Path:
    """Stop the data space's authority and serve the same directory and port with ``limits``."""
    ds.authority.stop()
    f = ds.root / "authority-limits.toml"
    f.write_text(limits_toml(**limits))
    ds.authority.proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "connector",
            "authority",
            "serve",
            str(ds.authority.directory),
            "--port",
            str(ds.authority.port),
            "--host",
            "127.0.0.1",
            "--limits",
            str(f),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=process_env(),
    )
    deadline = time.monotonic() + 30
    while True:
        assert ds.authority.proc.poll() is None, ds.authority.proc.stderr
        try:
            with urllib.request.urlopen(f"{ds.authority.url}/health", timeout=1):
                return f
        except OSError:
            assert time.monotonic() < deadline, "the authority did not come up"
            time.sleep(0.05)


def examiner_token(ds: DataSpace, name: str = "examiner") -> str:
    """A DAT of a participant registered for these tests (no connector of its own)."""
    d = ds.root / name
    cli("init", d, "--name", name)
    cli("authority", "register", ds.authority.directory, d / "participant.csr")

    async def token() -> str:
        async with aiohttp.ClientSession() as http:
            client = await DatClient.discover(http, ds.authority.url, ParticipantIdentity.load(d))
            return await client.token()

    return asyncio.run(token())


async def open_raw(
    port: int, ssl_context: ssl.SSLContext | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(
        "127.0.0.1", port, ssl=ssl_context, server_hostname="127.0.0.1" if ssl_context else None
    )


async def raw_request(
    port: int,
    data: bytes,
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[int, bytes]:
    """Send ``data`` as it is and read the answer to its end: (status, body)."""
    reader, writer = await open_raw(port, ssl_context)
    try:
        writer.write(data)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 60)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def closed_by_server(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    trickle: bytes = b"",
    every: float = 0.2,
    give_up: float = 60,
) -> bool:
    """Keep a connection as a slow client does (silent, or sending ``trickle`` a byte at a time)
    until the server closes it; False if it is still open after ``give_up`` seconds."""

    async def eof() -> None:
        while await reader.read(4096):
            pass

    waiting = asyncio.ensure_future(eof())
    try:
        async with asyncio.timeout(give_up):
            for byte in trickle:
                if waiting.done():
                    break
                writer.write(bytes([byte]))
                try:
                    await writer.drain()
                except (ConnectionError, ssl.SSLError):
                    return True
                await asyncio.wait([waiting], timeout=every)
            await waiting
        return True
    except (ConnectionError, ssl.SSLError):
        return True
    except TimeoutError:
        return False
    finally:
        waiting.cancel()
        writer.close()
