from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from connector.broker.service import Broker, BrokerSettings
from connector.broker.sparql import SparqlIndex
from connector.store import Store


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def broker(db_url: str, clock: Clock) -> AsyncIterator[Broker]:
    store = await Store.open(db_url)
    b = Broker(
        store, SparqlIndex(max_rows=100, timeout=5.0), BrokerSettings(validation="off", ttl=60.0), clock=clock
    )
    await b.start()
    yield b
    await store.close()
