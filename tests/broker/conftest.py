from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from broker_testlib import PG_SKIP_REASON, database

from connector.broker.service import Broker, BrokerSettings
from connector.broker.sparql import SparqlIndex
from connector.store import Store


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async for url in database(request.param, tmp_path):
        if url is None:
            pytest.skip(PG_SKIP_REASON)
        yield url


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def broker(db_url: str, clock: Clock) -> AsyncIterator[Broker]:
    store = await Store.open(db_url)
    b = Broker(store, SparqlIndex(max_rows=100, timeout=5.0),
               BrokerSettings(validation="off", ttl=60.0), clock=clock)
    await b.start()
    yield b
    await store.close()
