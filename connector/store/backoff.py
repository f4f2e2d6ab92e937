"""Retry delays for outbox delivery: capped exponential backoff with full jitter.

Full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter") spreads the retries of many
replicas that failed at the same moment over the whole window instead of synchronising them.
"""

from __future__ import annotations

from typing import Protocol


class UniformSource(Protocol):
    """What the backoff needs from a random source; `random.Random` is one."""

    def random(self) -> float: ...


def backoff_ceiling(attempts: int, base: float, cap: float) -> float:
    """The upper bound of the delay after `attempts` failed attempts: min(cap, base * 2**(n-1))."""
    if attempts < 1:
        raise ValueError("attempts counts failed attempts and starts at 1")
    if base <= 0 or cap <= 0:
        raise ValueError("base and cap must be positive")
    # 2**63 is far beyond any cap; clamping the exponent keeps the float finite.
    return min(cap, base * 2.0 ** min(attempts - 1, 63))


def next_backoff(attempts: int, base: float, cap: float, rng: UniformSource) -> float:
    """Seconds to wait before the next attempt: uniform in [0, backoff_ceiling(attempts, base, cap))."""
    return backoff_ceiling(attempts, base, cap) * rng.random()
