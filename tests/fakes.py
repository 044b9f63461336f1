"""Fakes at the seams: a clock that moves only when a test moves it."""

from __future__ import annotations

import asyncio
import heapq
import itertools

import anyio.lowlevel


async def settle(turns: int = 20) -> None:
    """Let every task that can run, run, until they all wait again (bounded)."""
    for _ in range(turns):
        await anyio.lowlevel.checkpoint()


class FakeClock:
    """A Clock (bulk_uploader.clock) whose time stands still until advance(); sleepers wake in deadline order."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self.slept: list[float] = []  # every sleep asked for, in order

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        waiter = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + seconds, next(self._order), waiter))
        await waiter

    @property
    def sleepers(self) -> int:
        """Tasks asleep on this clock now."""
        return sum(1 for _, _, waiter in self._sleepers if not waiter.done())

    async def advance(self, seconds: float) -> None:
        """Move time on by `seconds`, waking each sleeper at its deadline and letting it run."""
        target = self.now + seconds
        await settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, waiter = heapq.heappop(self._sleepers)
            self.now = max(self.now, deadline)
            if not waiter.done():
                waiter.set_result(None)
                await settle()
        self.now = target
        await settle()
