"""Shared test fixtures: where the read-only conformance material lives, the one database
fixture (a SQLite file, or a PostgreSQL schema of its own) and the one multi-process data space.

* ``db_url``: parametrised over SQLite and PostgreSQL. PostgreSQL comes from
  ``CONNECTOR_TEST_PG`` (``.ci/run`` sets it) and is skipped with the reason when unset; each
  test gets a uniquely named schema (the search_path of every connection), dropped afterwards,
  so parallel workers never see each other's tables. ``open_store`` opens further stores on it
  (each its own pool: a replica), ``store`` is one migrated store.
* ``pg_url``: a fresh PostgreSQL schema for tests that only run there (replicas).
* ``space``: a module-wide data space (authority + the connectors a module starts) over mutual
  TLS; a module sets ``SPACE_TLS = False`` for plain HTTP. On teardown every DSP message the
  connectors exchanged is checked against the official schemas.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from db_testlib import OpenStore, pg_schema

from connector.devspace import DataSpace
from connector.store import Store

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CONFORMANCE = SHARED / "conformance"


@pytest.fixture(scope="session")
def conformance() -> Path:
    if not CONFORMANCE.is_dir():
        pytest.fail(f"conformance material missing: {CONFORMANCE} (../shared beside the repo)")
    return CONFORMANCE


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'connector.db'}"
        return
    async for url in pg_schema("test"):
        yield url


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A PostgreSQL schema of the test's own (skipped with the reason without a server)."""
    async for url in pg_schema("test_pg"):
        yield url


@pytest.fixture
async def open_store(db_url: str) -> AsyncIterator[OpenStore]:
    """Opens further `Store`s (separate connection pools: replicas) on the test's database, not
    migrated (migration is what some tests race); closes them all."""
    opened: list[Store] = []

    async def _open() -> Store:
        store = await Store.open(db_url)
        opened.append(store)
        return store

    yield _open
    for store in opened:
        await store.close()


@pytest.fixture
async def store(open_store: OpenStore) -> Store:
    """One migrated store on the test's database."""
    store = await open_store()
    await store.migrate()
    return store


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    """One migrated SQLite store, for tests whose subject is not the database."""
    store = await Store.open(f"sqlite:///{tmp_path / 'connector.db'}")
    await store.migrate()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture(scope="module")
def space(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DataSpace]:
    tls = getattr(request.module, "SPACE_TLS", True)
    ds = DataSpace(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]), tls=tls)
    try:
        yield ds
        ds.assert_wire_valid()
    finally:
        ds.close()
