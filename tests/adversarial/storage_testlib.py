"""Real storage faults for the storage tests: a small tmpfs that can be filled, freed and
remounted read-only. Mounting needs root (CAP_SYS_ADMIN); without it the tests skip and say why."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy as sa

FILLER = ".filler"
PG_ENV = "CONNECTOR_TEST_PG"


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, check=False)


@contextlib.contextmanager
def tmpfs(directory: Path, size: str = "4m") -> Iterator[Path]:
    """A tmpfs of `size` mounted on `directory` (created), unmounted afterwards."""
    directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs (a disk that can be filled) needs root")
    done = _mount("-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(directory))
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.strip()}")
    try:
        yield directory
    finally:
        if subprocess.run(["umount", str(directory)], capture_output=True, check=False).returncode:
            subprocess.run(["umount", "-l", str(directory)], capture_output=True, check=False)


def fill(directory: Path) -> Path:
    """Take every free block of the file system holding `directory`; returns the filler."""
    path = directory / FILLER
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    block = b"\0" * 65536
    try:
        while True:
            try:
                os.write(fd, block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(block) == 1:
                    break
                block = block[: len(block) // 2]
    finally:
        os.close(fd)
    return path


def free(directory: Path) -> None:
    (directory / FILLER).unlink(missing_ok=True)


def remount(directory: Path, mode: str) -> None:
    """`mode` "ro" or "rw". The kernel refuses "ro" while a file there is open for writing."""
    done = _mount("-o", f"remount,{mode}", str(directory))
    if done.returncode != 0:
        raise RuntimeError(f"remount,{mode} {directory}: {done.stderr.strip()}")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once the socket is closed


@dataclass
class PgRole:
    admin: asyncpg.Connection
    role: str
    schema: str
    url: str  # the store's URL: the dedicated role, its own schema

    async def sql(self, statement: str) -> None:
        await self.admin.execute(statement)


@pytest.fixture(name="pg_role")
async def pg_role_fixture() -> AsyncIterator[PgRole]:
    """A login role of its own with a schema of its own (the store's URL), dropped afterwards:
    faults are made on this role only, nothing on the shared server."""
    server = os.environ.get(PG_ENV)
    if not server:
        pytest.skip(f"{PG_ENV} not set: PostgreSQL faults need a server")
    name = f"storage_{uuid.uuid4().hex[:12]}"
    admin_url = sa.make_url(server)
    admin = await asyncpg.connect(
        admin_url.set(drivername="postgresql").render_as_string(hide_password=False)
    )
    await admin.execute(f'CREATE ROLE "{name}" LOGIN')
    await admin.execute(f'CREATE SCHEMA "{name}" AUTHORIZATION "{name}"')
    url = admin_url.set(username=name, password=None).update_query_dict({"schema": name})
    try:
        yield PgRole(admin, name, name, url.render_as_string(hide_password=False))
    finally:
        await admin.execute(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{name}'"
        )
        await admin.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        await admin.execute(f'DROP ROLE IF EXISTS "{name}"')
        await admin.close()
