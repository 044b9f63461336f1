"""The memory budget: the bytes of audio a run may hold at once, read ahead and being sent together.

Each audio row takes its share of the budget before its file is read ahead (the feeder waits
for room), keeps it while it waits in the queue, is sent, and waits to be retried or settled,
and gives it back when its outcome is recorded. So the audio held never exceeds the budget
however big the files or the concurrency: when files are big, fewer rows are in flight than
--concurrency allows. A row whose share is bigger than the whole budget goes alone.

A row's share is what it holds at its peak (`share`):

    sent whole     2 x the file: the request's bytes (the file is read straight into them)
                   and gRPC's copy of them while the call is in flight
    streamed       2 x one chunk: a chunk's request and gRPC's copy
    converted      3 x one chunk: the decoder's piece besides those two

Only the feeder waits for room, and a row's share is taken once, before it is queued, so a
row being sent never waits for memory another row holds.
"""

from __future__ import annotations

import asyncio
from collections import deque

from bulk_uploader.model import Job

MiB = 1024 * 1024
WHOLE_COPIES = 2
STREAM_COPIES = 2
CONVERTED_COPIES = 3


def share(job: Job, *, stream_threshold: int, chunk_size: int, transcode: bool) -> int:
    """The bytes of audio `job` may hold at once, at most (0: a chat or a metadata update)."""
    if job.kind != "audio":
        return 0  # a chat dialog is text, a few KiB; an update carries no audio
    channels_joined = job.swap_channels or job.right_path is not None
    if channels_joined or transcode:  # may be converted on the way, in chunks
        converted = CONVERTED_COPIES * chunk_size
        return converted if channels_joined or job.size > stream_threshold else max(converted, WHOLE_COPIES * job.size)
    if job.size <= stream_threshold:
        return WHOLE_COPIES * job.size
    return STREAM_COPIES * min(chunk_size, job.size)


class MemoryBudget:
    """Bytes taken and given back; take() waits its turn until a share fits (or nothing else is held).

    Waiters are served in order, each share taken on its waiter's behalf as it is woken, so
    a freed byte is never claimed twice and a big share is not passed over by small ones.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.held = 0
        self.peak = 0  # the most held at once
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    def _fits(self, n: int) -> bool:
        return self.held == 0 or self.held + n <= self.total

    def _hold(self, n: int) -> None:
        self.held += n
        self.peak = max(self.peak, self.held)

    def try_take(self, n: int) -> bool:
        """Take `n` bytes if they fit now and nobody waits ahead; a plain call, no coroutine."""
        if self._waiters or not self._fits(n):
            return False
        self._hold(n)
        return True

    async def take(self, n: int) -> None:
        """Take `n` bytes, waiting in line until they fit (alone, when `n` is more than the total)."""
        if self.try_take(n):
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((n, waiter))
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.give(n)  # taken for us just as we were cancelled
            elif (n, waiter) in self._waiters:
                self._waiters.remove((n, waiter))
                self._admit()  # those behind a big share may fit now
            raise

    def give(self, n: int) -> None:
        """Give back `n` bytes taken before, and let in those waiting whose shares now fit."""
        self.held -= n
        self._admit()

    def _admit(self) -> None:
        while self._waiters and self._fits(self._waiters[0][0]):
            n, waiter = self._waiters.popleft()
            if not waiter.done():  # else cancelled, and its task not yet told
                self._hold(n)
                waiter.set_result(None)
