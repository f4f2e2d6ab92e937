"""`connector serve` on a store it cannot open, migrate or write: it exits non-zero with one
line on stderr that says why and what to check, and no traceback. Real processes; the store
comes first at start-up, so a configuration without keys or an authority is enough."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from storage_testlib import PgRole, closed_port, pg_role_fixture, remount, tmpfs  # noqa: F401

from connector.config import load_config
from connector.devspace import process_env
from connector.serve import open_store
from connector.store import Store

PREFIX = "connector: cannot open the store "


def write_config(tmp_path: Path, store_url: str) -> Path:
    config = tmp_path / "connector.toml"
    config.write_text(f"""
[connector]
participant_dir = "{tmp_path / "participant"}"
authority_url = "http://127.0.0.1:{closed_port()}"
public_url = "http://127.0.0.1:8801"

[dsp]
plain_http = true
port = 0

[management]
port = 0
api_key = "a management key of some length"

[store]
url = "{store_url}"
""")
    return config


def serve(tmp_path: Path, store_url: str) -> tuple[int, list[str]]:
    config = write_config(tmp_path, store_url)
    done = subprocess.run(
        [sys.executable, "-m", "connector", "serve", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=process_env(),
    )
    return done.returncode, done.stderr.splitlines()


def assert_one_line(code: int, lines: list[str], *expected: str) -> str:
    assert code != 0
    assert len(lines) == 1, "\n".join(lines)
    line = lines[0]
    assert line.startswith(PREFIX), line
    for text in expected:
        assert text in line, line
    return line


def opening_fails(tmp_path: Path, store_url: str) -> str:
    """The line `connector serve` would end with, from the same function, in this process."""
    config = load_config(write_config(tmp_path, store_url))
    with pytest.raises(SystemExit) as ended:
        asyncio.run(open_store(config))
    return str(ended.value.code)


def migrated(url: str) -> None:
    async def go() -> None:
        store = await Store.open(url)
        try:
            await store.migrate()
        finally:
            await store.close()

    asyncio.run(go())


def test_a_store_on_a_read_only_file_system(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "2m") as disk:
        url = f"sqlite:///{disk / 'connector.db'}"
        migrated(url)
        remount(disk, "ro")
        try:
            code, lines = serve(tmp_path, url)
            assert_one_line(code, lines, str(disk), "SQLITE_CANTOPEN", "mounted read-write")
            # a store whose directory would have to be made there (the same code, in-process)
            line = opening_fails(tmp_path, f"sqlite:///{disk / 'new' / 'connector.db'}")
            assert_one_line(1, [line], "the file system is read-only", str(disk / "new"))
        finally:
            remount(disk, "rw")


def test_a_url_that_is_no_database(tmp_path: Path) -> None:
    code, lines = serve(tmp_path, "mysql://somewhere/db")
    assert_one_line(code, lines, "mysql://somewhere/db", "unsupported database URL scheme", "[store] url")


def test_postgresql_that_does_not_answer(tmp_path: Path) -> None:
    code, lines = serve(tmp_path, f"postgresql://connector:hunter2@127.0.0.1:{closed_port()}/db")
    line = assert_one_line(code, lines, "cannot be reached", "that PostgreSQL runs there")
    assert "hunter2" not in line


@pytest.mark.postgres
async def test_postgresql_wrong_database_and_read_only_role(tmp_path: Path, pg_role: PgRole) -> None:
    wrong = sa.make_url(pg_role.url).set(database=f"no_such_{pg_role.role}")
    line = await asyncio.to_thread(opening_fails, tmp_path, wrong.render_as_string(hide_password=False))
    assert_one_line(1, [line], "the database does not exist", "3D000")
    # a schema that is up to date needs no write to migrate: the probe write finds read-only
    await asyncio.to_thread(migrated, pg_role.url)
    await pg_role.sql(f'ALTER ROLE "{pg_role.role}" SET default_transaction_read_only = on')
    code, lines = await asyncio.to_thread(serve, tmp_path, pg_role.url)
    assert_one_line(code, lines, "the database is read-only", "25006", "default_transaction_read_only")
