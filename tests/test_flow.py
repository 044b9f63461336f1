"""Flow control: the AIMD limiter on calls in flight, the pushback gate and the pacer."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from fakes import FakeClock, settle

from bulk_uploader.flow import AdaptiveLimiter, Pacer


@asynccontextmanager
async def slot(limiter: AdaptiveLimiter) -> AsyncIterator[None]:
    """One of the limiter's slots held for the block, as the sender holds one for a call."""
    await limiter.acquire()
    try:
        yield
    finally:
        limiter.release()


async def test_no_more_calls_than_the_limit_and_every_waiter_gets_its_turn() -> None:
    clock = FakeClock()
    limiter = AdaptiveLimiter(4, clock)
    peak: list[int] = []

    async def hold() -> None:
        async with slot(limiter):
            peak.append(limiter.in_use)
            await clock.sleep(0.01)

    async with anyio.create_task_group() as group:
        for _ in range(20):
            group.start_soon(hold)
        for _ in range(5):
            await clock.advance(0.01)
    assert len(peak) == 20 and max(peak) == 4 and limiter.in_use == 0


async def test_refusals_halve_once_per_round_down_to_the_floor_and_successes_grow_it_back() -> None:
    limiter = AdaptiveLimiter(32)
    sent = time.monotonic()
    for _ in range(10):  # one burst of refusals of calls sent together is one signal
        limiter.throttled(None, sent)
    assert limiter.current == 16
    for _ in range(6):
        limiter.throttled(None, time.monotonic())
    assert limiter.current == 2  # the floor
    for _ in range(40):
        limiter.succeeded(time.monotonic())
    assert 8 <= limiter.current <= 10  # about one more per round of successes
    limiter.throttled(None, time.monotonic())
    stale = time.monotonic() - 10
    limiter.succeeded(stale)  # sent before the last refusal: no growth
    assert limiter.current == max(2, int(limiter.limit))


async def test_a_pushback_holds_every_new_call_until_it_passes() -> None:
    clock = FakeClock()
    limiter = AdaptiveLimiter(8, clock)
    limiter.throttled(0.2, clock.now)
    entered: list[float] = []

    async def call() -> None:
        async with slot(limiter):
            entered.append(clock.now)

    async with anyio.create_task_group() as group:
        for _ in range(3):
            group.start_soon(call)
        await clock.advance(0.19)
        assert entered == []  # every new call waits, not only the refused one
        await clock.advance(0.02)
    assert entered == [pytest.approx(1000.2)] * 3


async def test_a_cancelled_waiter_leaves_the_queue_and_the_next_one_gets_the_slot() -> None:
    clock = FakeClock()
    limiter = AdaptiveLimiter(2, clock)
    limiter.floor, limiter.limit = 1, 1.0  # one slot
    got: list[str] = []
    cancel_me = anyio.CancelScope()

    async def take(name: str, hold: float = 0.0) -> None:
        async with slot(limiter):
            await clock.sleep(hold)
            got.append(name)

    async def cancellable() -> None:
        with cancel_me:
            await take("cancelled")

    async with anyio.create_task_group() as group:
        group.start_soon(take, "holder", 0.05)
        await settle()
        group.start_soon(cancellable)
        await settle()
        group.start_soon(take, "next")
        await settle()
        cancel_me.cancel()
        await clock.advance(0.05)
    assert got == ["holder", "next"]
    assert limiter.in_use == 0


@pytest.mark.parametrize("rate", [50.0, 200.0])
async def test_pacer_spaces_units_to_the_rate(rate: float) -> None:
    clock = FakeClock()
    pacer = Pacer(rate, clock)
    took: list[float] = []

    async def take_all() -> None:
        for _ in range(5):
            await pacer.take()
            took.append(clock.now - 1000.0)

    async with anyio.create_task_group() as group:
        group.start_soon(take_all)
        for _ in range(10):
            await clock.advance(1 / rate)
    assert took == pytest.approx([n / rate for n in range(5)])  # no burst: one unit each 1/rate s


async def test_pacer_counts_bytes_not_calls() -> None:
    clock = FakeClock()
    pacer = Pacer(1000.0, clock)  # bytes per second
    await pacer.take(500)  # the first goes at once, and books half a second
    done = anyio.Event()

    async def second() -> None:
        await pacer.take(100)
        done.set()

    async with anyio.create_task_group() as group:
        group.start_soon(second)
        await clock.advance(0.49)
        assert not done.is_set()
        await clock.advance(0.02)
        assert done.is_set()


async def test_a_queued_caller_woken_during_a_pushback_still_waits_for_it() -> None:
    clock = FakeClock()
    limiter = AdaptiveLimiter(2, clock)
    limiter.floor, limiter.limit = 1, 1.0
    started: list[float] = []

    async def queued() -> None:
        async with slot(limiter):
            started.append(clock.now)

    async with anyio.create_task_group() as group:
        async with slot(limiter):
            group.start_soon(queued)
            await settle()
            limiter.throttled(0.2, clock.now)
        # releasing the slot wakes the queued caller, inside the pushback
        await clock.advance(0.1)
        assert started == []
        await clock.advance(0.2)
    assert started == [pytest.approx(1000.2)]
