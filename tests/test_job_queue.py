"""The job queue between the feeder and the workers, waking a worker per job or (a dry run's) one
at a time: every job reaches a worker, a burst reaches every idle worker, and a woken worker that
is cancelled passes its job on."""

from __future__ import annotations

import asyncio
from collections import deque

import anyio
import pytest

from bulk_uploader.model import Job
from bulk_uploader.pipeline.feeder import JobQueue


def job(n: int) -> Job:
    return Job(f"row-{n}", n, "audio", "c", {})


ONE_AWAKE = pytest.mark.parametrize("one_awake", [False, True], ids=["wake-per-job", "one-awake"])


@ONE_AWAKE
async def test_a_burst_reaches_every_idle_worker_while_each_holds_its_job(one_awake: bool) -> None:
    queue = JobQueue(size=8, max_bytes=1 << 20, one_awake=one_awake)
    holding: list[str] = []
    release = anyio.Event()

    async def worker() -> None:
        while (got := await queue.get()) is not None:
            holding.append(got.key)
            await release.wait()  # a row that waits (a call in flight): the others must not wait behind it

    async with anyio.create_task_group() as group:
        with queue.closing():
            for _ in range(4):
                group.start_soon(worker)
            await anyio.wait_all_tasks_blocked()
            for n in range(4):
                await queue.put(job(n))
            await anyio.wait_all_tasks_blocked()  # each worker now holds a job, or waits for one in vain
            assert sorted(holding) == [f"row-{n}" for n in range(4)]
            release.set()
    assert len(holding) == 4


async def carry(queue: JobQueue, workers: int, rows: int) -> list[str]:
    """Put `rows` jobs on the queue for `workers` workers whose rows do not wait (a dry run's); the keys
    they took."""
    taken: list[str] = []

    async def worker() -> None:
        while (got := await queue.get()) is not None:
            taken.append(got.key)  # no await: nothing to wait for

    async with anyio.create_task_group() as group:
        for _ in range(workers):
            group.start_soon(worker)
        with queue.closing():
            for n in range(rows):
                await queue.put(job(n))
    return taken


@ONE_AWAKE
async def test_workers_whose_rows_do_not_wait_take_every_job_once(one_awake: bool) -> None:
    taken = await carry(JobQueue(size=4, max_bytes=1 << 20, one_awake=one_awake), 3, 100)
    assert sorted(taken) == sorted(f"row-{n}" for n in range(100))


async def test_one_awake_workers_whose_rows_do_not_wait_need_few_wake_ups() -> None:
    class CountedLine(deque[asyncio.Future[None]]):
        waits = 0

        def append(self, waiter: asyncio.Future[None]) -> None:
            CountedLine.waits += 1
            super().append(waiter)

    async def waits_for(queue: JobQueue) -> int:
        CountedLine.waits = 0
        queue._getters = CountedLine()
        await carry(queue, 8, 640)
        return CountedLine.waits

    one_awake = await waits_for(JobQueue(size=32, max_bytes=1 << 20, one_awake=True))
    per_job = await waits_for(JobQueue(size=32, max_bytes=1 << 20))
    assert one_awake * 3 < per_job, (one_awake, per_job)  # deterministic: 44 and 152 waits


@ONE_AWAKE
async def test_a_woken_worker_cancelled_before_it_runs_passes_the_job_on(one_awake: bool) -> None:
    queue = JobQueue(size=4, max_bytes=1 << 20, one_awake=one_awake)
    got: list[str] = []

    async def first() -> None:
        await queue.get()
        got.append("first")  # never: it is cancelled before it runs

    async def second() -> None:
        taken = await queue.get()
        assert taken is not None
        got.append(taken.key)

    loop_first = asyncio.ensure_future(first())
    await anyio.wait_all_tasks_blocked()
    loop_second = asyncio.ensure_future(second())
    await anyio.wait_all_tasks_blocked()
    await queue.put(job(1))  # wakes the first in line
    loop_first.cancel()
    with anyio.fail_after(5):
        await loop_second
    assert got == ["row-1"] and loop_first.cancelled()
