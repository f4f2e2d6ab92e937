"""Verified-token cache: hit, miss, expiry, revocation, LRU bound, hit cost."""

from __future__ import annotations

import time

import pytest
from dataplane_testlib import Provider

from connector.dataplane.tokencache import TokenCache
from connector.identity.errors import InvalidToken
from connector.identity.tokens import Claims


class CountingVerifier:
    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.calls = 0

    async def verify(self, token: str) -> Claims:
        self.calls += 1
        return await self.inner.verify(token)  # type: ignore[attr-defined]


async def test_hit_and_miss() -> None:
    p = Provider()
    counting = CountingVerifier(p.verifier)
    cache = TokenCache(counting, clock=p.clock)
    token = p.token()
    first = await cache.cached_verify(token)
    for _ in range(100):
        assert await cache.cached_verify(token) is first
    assert counting.calls == 1 and cache.hits == 100 and cache.misses == 1
    await cache.cached_verify(p.token("t2"))
    assert counting.calls == 2 and len(cache) == 2


async def test_never_served_past_exp() -> None:
    p = Provider()
    counting = CountingVerifier(p.verifier)
    cache = TokenCache(counting, clock=p.clock)
    token = p.token()
    claims = await cache.cached_verify(token)
    p.clock.now = claims.expires_at - 0.001
    assert await cache.cached_verify(token) is claims
    assert counting.calls == 1
    p.clock.now = claims.expires_at + 60  # past exp and the verifier's leeway
    with pytest.raises(InvalidToken):
        await cache.cached_verify(token)
    assert counting.calls == 2 and len(cache) == 0


async def test_revoked_tokens_not_served() -> None:
    p = Provider()
    revoked: set[str] = set()
    cache = TokenCache(p.verifier, clock=p.clock, is_revoked=lambda c: c.subject in revoked)
    token = p.token()
    await cache.cached_verify(token)
    revoked.add("urn:participant:consumer")
    assert cache.misses == 1
    await cache.cached_verify(token)  # the inner verifier knows nothing of this revocation...
    assert cache.misses == 2  # ...but the cache did not serve it
    t2 = p.token("t2")
    await cache.cached_verify(t2)
    assert cache.discard_transfer("t2") == 1


async def test_invalid_tokens_are_not_cached() -> None:
    p = Provider()
    cache = TokenCache(p.verifier, clock=p.clock)
    token = p.token()
    bad = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    for _ in range(2):
        with pytest.raises(InvalidToken):
            await cache.cached_verify(bad)
    assert len(cache) == 0
    with pytest.raises(InvalidToken):
        await cache.cached_verify(None)  # type: ignore[arg-type]


async def test_bounded_lru() -> None:
    p = Provider()
    cache = TokenCache(p.verifier, clock=p.clock, max_entries=3)
    tokens = [p.token(f"t{i}") for i in range(4)]
    for t in tokens[:3]:
        await cache.cached_verify(t)
    await cache.cached_verify(tokens[0])  # most recently used now
    await cache.cached_verify(tokens[3])  # evicts tokens[1]
    assert len(cache) == 3
    misses = cache.misses
    await cache.cached_verify(tokens[0])
    assert cache.misses == misses
    await cache.cached_verify(tokens[1])
    assert cache.misses == misses + 1


async def test_hit_costs_microseconds() -> None:
    p = Provider()
    cache = TokenCache(p.verifier, clock=p.clock)
    token = p.token()
    await cache.cached_verify(token)
    n = 20_000
    start = time.perf_counter()
    for _ in range(n):
        await cache.cached_verify(token)
    per_hit = (time.perf_counter() - start) / n
    assert per_hit < 20e-6, f"{per_hit * 1e6:.1f} us per hit"
