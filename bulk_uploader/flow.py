"""Flow control: how many calls may be in flight, and how fast requests and bytes may go.

AdaptiveLimiter is additive-increase / multiplicative-decrease over the number of calls in
flight: RESOURCE_EXHAUSTED halves it (at most once per `cooldown`), each success adds
1/limit (about one more call per round of successes), never above the user's
--concurrency. Pacer spaces out requests or bytes to a fixed rate (--rps, --max-mbps).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio


class AdaptiveLimiter:
    """An AIMD cap on calls in flight, between 1 and `ceiling`."""

    def __init__(self, ceiling: int, *, cooldown: float = 0.5) -> None:
        self.ceiling = ceiling
        self.limit = float(ceiling)
        self.in_use = 0
        self.cooldown = cooldown
        self.decreases = 0
        self._last_decrease = -cooldown
        self._changed = anyio.Event()

    @property
    def current(self) -> int:
        """Calls allowed in flight now."""
        return max(1, int(self.limit))

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the `current` slots for the duration of a call."""
        while self.in_use >= self.current:
            await self._changed.wait()
        self.in_use += 1
        try:
            yield
        finally:
            self.in_use -= 1
            self._wake()

    def succeeded(self) -> None:
        """A call went through: grow by about one slot per round of successes."""
        if self.limit < self.ceiling:
            self.limit = min(float(self.ceiling), self.limit + 1.0 / self.limit)
            self._wake()

    def throttled(self) -> None:
        """The service pushed back: halve, once per cooldown (one burst of refusals is one signal)."""
        now = time.monotonic()
        if now - self._last_decrease >= self.cooldown:
            self._last_decrease = now
            self.limit = max(1.0, self.limit / 2)
            self.decreases += 1


class Pacer:
    """Spaces out units (requests or bytes) to `rate` per second, with no burst."""

    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self._next = time.monotonic()

    async def take(self, units: float = 1.0) -> None:
        """Wait for this many units' turn."""
        now = time.monotonic()
        start = max(now, self._next)
        self._next = start + units / self.rate
        if start > now:
            await anyio.sleep(start - now)
