"""The job queue between the feeder and the workers: every job reaches a worker, a burst reaches
every idle worker, a woken worker that is cancelled passes its job on, and closing ends them all."""

from __future__ import annotations

import asyncio

import anyio

from bulk_uploader.model import Job
from bulk_uploader.pipeline.feeder import JobQueue


def job(n: int) -> Job:
    return Job(f"row-{n}", n, "audio", "c", {})


async def test_a_burst_reaches_every_idle_worker_while_each_holds_its_job() -> None:
    queue = JobQueue(size=8, max_bytes=1 << 20)
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


async def test_workers_whose_rows_do_not_wait_take_every_job_once() -> None:
    queue = JobQueue(size=4, max_bytes=1 << 20)
    taken: list[str] = []

    async def worker() -> None:
        while (got := await queue.get()) is not None:
            taken.append(got.key)  # no await: a dry run's row

    async with anyio.create_task_group() as group:
        for _ in range(3):
            group.start_soon(worker)
        with queue.closing():
            for n in range(100):
                await queue.put(job(n))
    assert sorted(taken) == sorted(f"row-{n}" for n in range(100))


async def test_a_woken_worker_cancelled_before_it_runs_passes_the_job_on() -> None:
    queue = JobQueue(size=4, max_bytes=1 << 20)
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
