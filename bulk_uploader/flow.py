"""Flow control: how many calls may be in flight, and how fast requests and bytes may go.

AdaptiveLimiter is additive-increase / multiplicative-decrease over the number of calls in
flight, as TCP does per window: RESOURCE_EXHAUSTED halves it once per round (refusals of
calls sent before the last halving are the same signal), and so does a call that ran out
of time while no call went through (more in flight than the link or the service carries
before the deadlines); each success of a call sent after the last such signal adds
1/limit (about one more call per round), never above the user's --concurrency. A
refusal's pushback holds every new call, not just the refused one: otherwise each worker
would probe the server on its own and a rate-limited service would see a storm of
refused calls. Pacer spaces out requests or bytes to a fixed rate (--rps, --max-mbps).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from bulk_uploader.clock import SYSTEM_CLOCK, Clock


async def wait_in_line(waiters: deque[asyncio.Future[None]], pass_on: Callable[[], None]) -> None:
    """Wait at the end of a FIFO of bare futures until one of them is set for us.

    A waiter cancelled after it was woken calls pass_on(), so the wake-up it took reaches
    the next one in line instead of being lost.
    """
    waiter = asyncio.get_running_loop().create_future()
    waiters.append(waiter)
    try:
        await waiter
    except BaseException:
        if waiter in waiters:
            waiters.remove(waiter)
        else:
            pass_on()
        raise


class AdaptiveLimiter:
    """An AIMD cap on calls in flight, between `floor` and `ceiling`."""

    def __init__(self, ceiling: int, clock: Clock = SYSTEM_CLOCK) -> None:
        self.ceiling = ceiling
        self.clock = clock
        # Two, not one: while one call is on the wire the next already waits at the
        # pushback gate, so a rate-limited service is used at its rate, not at rate minus RTT.
        self.floor = min(2, ceiling)
        self.limit = float(ceiling)
        self.in_use = 0
        self._last_decrease = float("-inf")
        self._last_refusal = float("-inf")
        self._resume_at = 0.0  # monotonic time before which no call starts (the server's pushback)
        # FIFO; a freed slot wakes one, not all. Bare futures, not anyio Events: once
        # throttling lowers the limit most calls wait here, and an Event costs a backend
        # lookup each.
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def current(self) -> int:
        """Calls allowed in flight now."""
        return max(self.floor, int(self.limit))

    def _wake(self) -> None:
        for _ in range(min(len(self._waiters), self.current - self.in_use)):
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def try_acquire(self) -> bool:
        """Take a slot if one is free now and nobody waits for one (a plain call: the usual case
        costs no coroutine); give it back with release()."""
        if self.in_use < self.current and not self._waiters and self._resume_at <= self.clock.monotonic():
            self.in_use += 1
            return True
        return False

    async def acquire(self) -> None:
        """Take one of the `current` slots, waiting for one; give it back with release()."""
        if self.try_acquire():
            return
        handed = False  # woken for a freed slot: may take it ahead of the queue
        while True:
            wait = self._resume_at - self.clock.monotonic()
            if wait > 0:
                await self.clock.sleep(wait)  # the pushback gate holds queued and woken callers alike
                continue
            if self.in_use < self.current and (handed or not self._waiters):
                break
            await wait_in_line(self._waiters, self._wake)
            handed = True
        self.in_use += 1

    def release(self) -> None:
        """Give back a slot taken with acquire()."""
        self.in_use -= 1
        self._wake()

    def succeeded(self, sent_at: float) -> None:
        """A call went through: grow by about one slot per round, unless refusals came since it was sent."""
        if self.limit < self.ceiling and sent_at > self._last_refusal:
            self.limit = min(float(self.ceiling), self.limit + 1.0 / self.limit)
            self._wake()

    def throttled(self, pushback: float | None, sent_at: float) -> None:
        """The service pushed back: halve once per round, and start no call before its pushback has passed.

        The pushback counts from when the server refused, about when the call was sent: counting
        it from when the answer arrived would lose a round trip on every refusal.
        """
        if pushback:
            self._resume_at = max(self._resume_at, sent_at + pushback)
        self.overrun(sent_at)

    def overrun(self, sent_at: float) -> None:
        """More was in flight than gets through (a refusal, or a call out of time with none going
        through meanwhile): halve once per round."""
        now = self.clock.monotonic()
        self._last_refusal = now
        if sent_at >= self._last_decrease:
            self._last_decrease = now
            self.limit = max(float(self.floor), self.limit / 2)


class Pacer:
    """Spaces out units (requests or bytes) to `rate` per second, with no burst."""

    def __init__(self, rate: float, clock: Clock = SYSTEM_CLOCK) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.clock = clock
        self._next = clock.monotonic()

    async def take(self, units: float = 1.0) -> None:
        """Wait for this many units' turn."""
        now = self.clock.monotonic()
        start = max(now, self._next)
        self._next = start + units / self.rate
        if start > now:
            await self.clock.sleep(start - now)
