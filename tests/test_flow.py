"""Flow control: the AIMD limiter on calls in flight, the pushback gate and the pacer."""

from __future__ import annotations

import time

import anyio
import pytest

from bulk_uploader.flow import AdaptiveLimiter, Pacer


async def hold(limiter: AdaptiveLimiter, seconds: float, peak: list[int]) -> None:
    async with limiter.slot():
        peak.append(limiter.in_use)
        await anyio.sleep(seconds)


async def test_no_more_calls_than_the_limit_and_every_waiter_gets_its_turn() -> None:
    limiter = AdaptiveLimiter(4)
    peak: list[int] = []
    async with anyio.create_task_group() as group:
        for _ in range(20):
            group.start_soon(hold, limiter, 0.01, peak)
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
    limiter = AdaptiveLimiter(8)
    limiter.throttled(0.2, time.monotonic())
    started = time.monotonic()
    async with limiter.slot():
        pass
    assert time.monotonic() - started >= 0.19


async def test_a_cancelled_waiter_leaves_the_queue_and_the_next_one_gets_the_slot() -> None:
    limiter = AdaptiveLimiter(2)
    limiter.floor, limiter.limit = 1, 1.0  # one slot
    got: list[str] = []
    cancel_me = anyio.CancelScope()

    async def take(name: str, hold: float = 0.0) -> None:
        async with limiter.slot():
            await anyio.sleep(hold)
            got.append(name)

    async def cancellable() -> None:
        with cancel_me:
            await take("cancelled")

    async with anyio.create_task_group() as group:
        group.start_soon(take, "holder", 0.05)
        await anyio.sleep(0.01)
        group.start_soon(cancellable)
        await anyio.sleep(0.01)
        group.start_soon(take, "next")
        await anyio.sleep(0.01)
        cancel_me.cancel()
    assert got == ["holder", "next"]
    assert limiter.in_use == 0


@pytest.mark.parametrize("rate", [50.0, 200.0])
async def test_pacer_spaces_units_to_the_rate(rate: float) -> None:
    pacer = Pacer(rate)
    started = time.monotonic()
    for _ in range(int(rate // 2)):
        await pacer.take()
    elapsed = time.monotonic() - started
    assert 0.45 <= elapsed <= 0.65  # rate/2 units at `rate` per second: half a second


async def test_a_queued_caller_woken_during_a_pushback_still_waits_for_it() -> None:
    limiter = AdaptiveLimiter(2)
    limiter.floor, limiter.limit = 1, 1.0
    started: list[float] = []

    async def queued() -> None:
        async with limiter.slot():
            started.append(time.monotonic())

    async with anyio.create_task_group() as group:
        async with limiter.slot():
            group.start_soon(queued)
            await anyio.sleep(0.01)
            gate = time.monotonic() + 0.2
            limiter.throttled(0.2, time.monotonic())
        # releasing the slot wakes the queued caller, inside the pushback
    assert started and started[0] >= gate - 0.01
