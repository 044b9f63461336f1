"""The feeder: manifest rows -> checks -> read-ahead -> a bounded queue the senders take from.

It skips rows a previous run uploaded and rows of other shards, records invalid rows
(they never reach a sender), takes each audio row's share of the memory budget, reads the
files that go whole into one Upload in batches, and waits whenever the budget has no room
or the queue holds `concurrency` jobs or READ_AHEAD_BYTES of files: the manifest and the
files are read only as fast as rows are sent.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

import anyio.lowlevel

from bulk_uploader import budget, reader
from bulk_uploader.errors import RowInvalid
from bulk_uploader.flow import wait_in_line
from bulk_uploader.keyset import KeySet
from bulk_uploader.manifest import read_manifest
from bulk_uploader.model import Job, ManifestRow, RowResult
from bulk_uploader.options import UploadOptions
from bulk_uploader.pipeline.recorder import Recorder, internal_error
from bulk_uploader.stats import RunStats
from bulk_uploader.validation import Validator

_YIELD_EVERY = 256  # manifest rows parsed between yields to the event loop


class JobQueue:
    """The bounded hand-off from the feeder to the senders; get() returns None once closed and drained.

    Not an anyio memory stream: that costs an Event, a generic-alias instance and a task
    lookup each time a worker waits, a measurable share of the event loop at thousands
    of small files a second. Here a wait is one bare future (asyncio only, which grpc.aio
    requires anyway).
    """

    def __init__(self, size: int, max_bytes: int, one_awake: bool = False) -> None:
        self._items: deque[Job] = deque()
        self._size = size
        self._max_bytes = max_bytes  # of files read ahead; a single bigger job still passes
        self._bytes = 0
        self._getters: deque[asyncio.Future[None]] = deque()
        # one_awake: wake one getter at a time, and the one that takes a job the next while jobs
        # wait. For workers whose rows do not wait (a dry run's, their heads read ahead): one
        # woken worker takes job after job itself instead of a wake-up per job. Workers whose
        # rows wait on the network are woken one per job at once, without a wake-up chain.
        self._one_awake = one_awake
        self._woken = False  # one_awake: a getter is woken and has not taken its job yet
        self._putter: asyncio.Future[None] | None = None
        self._closed = False

    @staticmethod
    def _wake(waiter: asyncio.Future[None] | None) -> None:
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _pass_on(self) -> None:
        """Wake the next getter while jobs wait."""
        self._woken = False
        if self._items and self._getters:
            self._woken = True
            self._wake(self._getters.popleft())

    async def put(self, job: Job) -> None:
        """Add a job, waiting while `size` jobs or `max_bytes` of read-ahead are queued."""
        while self._items and (len(self._items) >= self._size or self._bytes >= self._max_bytes):
            self._putter = asyncio.get_running_loop().create_future()
            await self._putter
        self._items.append(job)
        if job.data is not None:
            self._bytes += len(job.data)
        if not self._one_awake:
            if self._getters:
                self._wake(self._getters.popleft())
        elif not self._woken:
            self._pass_on()

    async def get(self) -> Job | None:
        """The next job, waiting for one; None when the queue is closed and empty."""
        while not self._items:
            if self._closed:
                return None
            await wait_in_line(self._getters, self._pass_on)
            self._woken = False
        job = self._items.popleft()
        if job.data is not None:
            self._bytes -= len(job.data)
        if self._one_awake and not self._woken:
            self._pass_on()  # more jobs wait: the next getter takes one while this row is carried
        self._wake(self._putter)
        return job

    @contextmanager
    def closing(self) -> Iterator[None]:
        """Close the queue when the block ends, however it ends: workers drain it and stop."""
        try:
            yield
        finally:
            self._closed = True
            while self._getters:
                self._wake(self._getters.popleft())


class Feeder:
    """Turns manifest rows into jobs on the queue; invalid rows go straight to the recorder."""

    def __init__(self, options: UploadOptions, validator: Validator, recorder: Recorder, stats: RunStats,
                 uploaded: KeySet, memory: budget.MemoryBudget | None = None) -> None:
        self.options = options
        self.memory = memory  # each audio row's share is taken here and given back when it is done
        self.validator = validator
        self.recorder = recorder
        self.stats = stats
        self.uploaded = uploaded  # rows an earlier run recorded uploaded
        self.dry_run = options.dry_run
        self.threshold = options.stream_threshold
        # What is read ahead: for a dry run every audio file's head; else the files sent whole,
        # each into the request that sends it (wire form: protobuf, which a dry run never loads).
        if options.dry_run:
            self._preload: reader.HeadReader | reader.Preloader = reader.HeadReader(options.transcode)
        else:
            from bulk_uploader.transport.messages import upload_room

            self._preload = reader.Preloader(room=upload_room)
        self._batch: list[Job] = []  # files to be read together
        self._batch_bytes = 0

    async def feed(self, queue: JobQueue) -> None:
        """Put every row still to do on the queue, then close it."""
        with queue.closing():
            rows = read_manifest(self.options.manifest, self.options.mapping, self.options.text_format)
            for n, row in enumerate(rows, 1):
                if n % _YIELD_EVERY == 0:
                    await anyio.lowlevel.checkpoint()
                job = self._job(row)
                if job is None:
                    continue
                if not self._took_share(job):
                    # The batch gathered so far holds room the rows being sent may need to finish: queue it first.
                    await self._hand_over(queue, await self._flush())
                    assert self.memory is not None
                    await self.memory.take(job.share)
                if not self._batched(job):  # most small files wait in the batch
                    await self._hand_over(queue, await self._ready(job))
            await self._hand_over(queue, await self._flush())

    @staticmethod
    async def _hand_over(queue: JobQueue, jobs: list[Job]) -> None:
        """Queue `jobs`, then let the workers take them before reading on: otherwise, with room
        in the queue (at the start), the first calls would wait until it was full."""
        for job in jobs:
            await queue.put(job)
        if jobs:
            await anyio.lowlevel.checkpoint()

    def _job(self, row: ManifestRow) -> Job | None:
        """The row's job, or None when it is another shard's, done before, or invalid (recorded)."""
        shard = self.options.shard
        if shard is not None and not shard.contains(row.key):
            self.validator.claim(row)
            return None
        if row.problem is None and self.uploaded and row.key in self.uploaded:
            self.stats.skipped += 1
            self.validator.claim(row)
            return None
        path = row.data.get("audio_path")
        shown = path if isinstance(path, str) else None
        try:
            return self.validator.check(row)
        except RowInvalid as exc:
            self.recorder.record(RowResult(row.key, "invalid", error=str(exc), code=exc.code, line=row.line,
                                           audio_path=shown))
        except Exception as exc:  # a bug met by one row's checks: that row says so, the others go on
            self.recorder.record(internal_error(row.key, row.line, shown, exc))
        return None

    def _took_share(self, job: Job) -> bool:
        """Whether `job` has its share of the memory budget (False: there is no room yet); a plain call."""
        if self.memory is None:
            return True
        options = self.options
        job.share = budget.share(job, stream_threshold=self.threshold, chunk_size=options.chunk_size,
                                 transcode=options.transcode)
        return self.memory.try_take(job.share)

    def _batched(self, job: Job) -> bool:
        """Whether `job` joined a read-ahead batch that is not full yet (nothing to queue now):
        a plain call, so most rows cost no coroutine here."""
        if job.kind != "audio":
            return False
        if self.dry_run:
            self._batch.append(job)
            return len(self._batch) < reader.HEAD_BATCH
        if job.size <= self.threshold:
            self._batch.append(job)
            self._batch_bytes += job.size
            return len(self._batch) < reader.PRELOAD_BATCH and self._batch_bytes < reader.PRELOAD_BATCH_BYTES
        return False

    async def _ready(self, job: Job) -> list[Job]:
        """Jobs ready for the queue now: a full read-ahead batch `job` completed, or the batch then `job`."""
        if self._batch and self._batch[-1] is job:
            return await self._flush()
        return [*await self._flush(), job] if self._batch else [job]

    async def _flush(self) -> list[Job]:
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        return await self._preload(batch)
