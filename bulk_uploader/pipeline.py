"""The orchestrator: the one place that knows the order of the stages.

    manifest rows -> validation -> (bounded queue) -> workers: read, send with retries
                                                        -> results file, stats

One task group owns every task. The feeder reads the manifest, checks rows, reads the
files that go whole into one Upload ahead of time, and puts the jobs on a queue bounded
by count and bytes (backpressure: the manifest and the files are read only as fast as
rows are sent). `concurrency` workers each carry one row at a time to its outcome. As the
bytes are already in memory, a worker whose call ends sends its next row in the same
step; with more workers than calls, each call waited for a woken worker instead (side
by side with 2,000 files of 16 KiB: 0.78 s before, 0.75 s after).
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from time import monotonic

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup

from bulk_uploader import reader
from bulk_uploader.audio import AudioInfo
from bulk_uploader.chat import ChatMessage, encoded_size
from bulk_uploader.errors import AuthError, BulkUploadError, CallFailure, ResultsFileError, RowInvalid
from bulk_uploader.flow import AdaptiveLimiter, Pacer, wait_in_line
from bulk_uploader.manifest import count_rows, read_manifest
from bulk_uploader.model import Job, RowResult
from bulk_uploader.options import UploadOptions
from bulk_uploader.progress import Reporter
from bulk_uploader.report import UploadRate, measured_rate
from bulk_uploader.results import PreviousResults, ResultsWriter, attempt_line, load_results
from bulk_uploader.stats import RunStats
from bulk_uploader.transport import Transport
from bulk_uploader.validation import Validator

SAMPLES_PER_CODE = 3  # problem rows of each kind named in the summary
_YIELD_EVERY = 256  # manifest rows parsed between yields to the event loop


@dataclass
class RunSummary:
    """How a run ended."""

    stats: RunStats
    results_path: str
    previous: PreviousResults
    problems: dict[str, list[RowResult]] = field(default_factory=dict)  # code -> its first rows
    interrupted: bool = False
    dry_run: bool = False
    rate: UploadRate | None = None  # dry run: measured by earlier runs, for the time estimate
    given_rate: float = 0.0  # dry run: --estimate-rate, files/s

    @property
    def exit_code(self) -> int:
        """0 all rows uploaded (now or before), 1 some failed or invalid, 130 interrupted."""
        if self.interrupted:
            return 130
        return 1 if self.stats.failed or self.stats.invalid or self.stats.ambiguous else 0

    def lines(self, retry_command: str | None = None) -> list[str]:
        """The closing summary, as lines of text."""
        s = self.stats
        rows_per_s, bytes_per_s = s.rates()
        head = "Dry run" if self.dry_run else "Interrupted" if self.interrupted else "Finished"
        if self.dry_run:
            out = [f"{head} in {s.elapsed:.2f} s, nothing sent: valid {s.valid}, invalid {s.invalid}, "
                   f"skipped (uploaded before) {s.skipped}"]
            out += self._dry_run_lines()
        else:
            out = [
                f"{head} in {s.elapsed:.2f} s: uploaded {s.uploaded}, skipped (done before) {s.skipped}, "
                f"failed {s.failed}, invalid {s.invalid}" + (f", ambiguous {s.ambiguous}" if s.ambiguous else ""),
                f"throughput: {rows_per_s:.1f} files/s, {bytes_per_s / 1e6:.2f} MB/s, "
                f"{s.bytes_uploaded / 1e6:.1f} MB uploaded, {s.retries} retries",
            ]
        if s.throttled:
            out.append(f"throttled {s.throttled} time(s); concurrency ended at {s.concurrency}")
        if s.reconciled or s.searches:
            out.append(f"found already stored by Search after an unknown outcome (not re-sent): {s.reconciled} "
                       f"of {s.searches} Search call(s)")
        if s.token_refreshes:
            out.append(f"IAM token refreshed after a refusal: {s.token_refreshes} time(s)")
        if s.resent_after_unknown:
            out.append(
                f"possible duplicates: {s.possible_duplicates} talk(s) from {s.resent_after_unknown} row(s) re-sent "
                "after an unknown outcome (use --dedupe-key to rule them out)"
            )
        if s.ambiguous:
            out.append(f"ambiguous: {s.ambiguous} row(s) may or may not be stored; the next run settles them")
        if s.codes:
            out.append("problems by kind (the first rows of each):")
            for code, n in s.codes.most_common():
                out.append(f"  {code}: {n}")
                out += [f"    {r.id} (line {r.line}): {r.error}" for r in self.problems.get(code, ())]
        if self.previous.torn_lines:
            out.append(f"results file had {self.previous.torn_lines} unreadable line(s) (a torn write); ignored")
        if not self.dry_run:
            out.append(f"results: {self.results_path}")
        if retry_command and (self.problems or self.interrupted) and not self.dry_run:
            out.append(f"to try the rest again, run the same command: {retry_command}")
        return out


    def _dry_run_lines(self) -> list[str]:
        s = self.stats
        counts = sorted(s.formats.items(), key=lambda item: (-item[1], item[0]))
        formats = ", ".join(f"{name} {n}" for name, n in counts) or "none"
        out = [f"to upload: {s.valid} row(s), {s.valid_bytes / 1e6:.1f} MB; formats: {formats}"]
        if not s.valid:
            return out
        if self.given_rate:
            files_per_s, source = self.given_rate, "--estimate-rate"
            seconds = s.valid / files_per_s
        elif self.rate is not None:
            files_per_s, source = self.rate.files_per_s, f"measured by earlier uploads in {self.results_path}"
            # Whichever bound is tighter: rows per second, or bytes per second for big files.
            seconds = max(s.valid / files_per_s, s.valid_bytes / self.rate.bytes_per_s if self.rate.bytes else 0)
        else:
            out.append("time estimate: give a rate with --estimate-rate FILES_PER_SECOND "
                       "(no earlier uploads recorded in the results file to measure one)")
            return out
        out.append(f"time estimate: {_duration(seconds)} at {files_per_s:.1f} files/s ({source})")
        return out


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days} d"] * bool(days) + [f"{hours} h"] * bool(hours) + [f"{minutes} min"] * bool(minutes)
    return " ".join(parts[:2]) if parts else f"{secs} s"


class JobQueue:
    """The bounded hand-off from the feeder to the workers; get() returns None once closed and drained.

    Not an anyio memory stream: that costs an Event, a generic-alias instance and a task
    lookup each time a worker waits (about 15 us), a few percent of the event loop at
    thousands of small files a second. Here a wait is one bare future. asyncio only,
    which grpc.aio requires anyway.
    """

    def __init__(self, size: int, max_bytes: int) -> None:
        self._items: deque[Job] = deque()
        self._size = size
        self._max_bytes = max_bytes  # of files read ahead; a single bigger job still passes
        self._bytes = 0
        self._getters: deque[asyncio.Future[None]] = deque()
        self._putter: asyncio.Future[None] | None = None
        self._closed = False

    @staticmethod
    def _wake(waiter: asyncio.Future[None] | None) -> None:
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _pass_on(self) -> None:
        if self._items and self._getters:
            self._wake(self._getters.popleft())

    async def put(self, job: Job) -> None:
        """Add a job, waiting while `size` jobs or `max_bytes` of read-ahead are queued."""
        while self._items and (len(self._items) >= self._size or self._bytes >= self._max_bytes):
            self._putter = asyncio.get_running_loop().create_future()
            await self._putter
        self._items.append(job)
        if job.data is not None:
            self._bytes += len(job.data)
        if self._getters:
            self._wake(self._getters.popleft())

    async def get(self) -> Job | None:
        """The next job, waiting for one; None when the queue is closed and empty."""
        while not self._items:
            if self._closed:
                return None
            await wait_in_line(self._getters, self._pass_on)
        job = self._items.popleft()
        if job.data is not None:
            self._bytes -= len(job.data)
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


class RunControl:
    """Lets the caller end a run early: stop() finishes rows in flight (within the grace), abort() does not wait."""

    def __init__(self) -> None:
        self.stopping = False
        self.aborted = False
        self._feeder: anyio.CancelScope | None = None
        self._run: anyio.CancelScope | None = None
        self._group: TaskGroup | None = None
        self._grace = 0.0

    def _attach(self, run: anyio.CancelScope, feeder: anyio.CancelScope, group: TaskGroup, grace: float) -> None:
        self._run, self._feeder, self._group, self._grace = run, feeder, group, grace
        if self.aborted:
            run.cancel()
        elif self.stopping:
            feeder.cancel()

    async def _grace_then_abort(self) -> None:
        await anyio.sleep(self._grace)
        self.abort()

    def stop(self) -> None:
        """Take no new rows; let uploads in flight finish within the grace period."""
        if self.stopping:
            self.abort()
            return
        self.stopping = True
        if self._feeder is not None:
            self._feeder.cancel()
        if self._group is not None:
            self._group.start_soon(self._grace_then_abort)

    def abort(self) -> None:
        """End the run now; rows in flight stay unrecorded and are retried by the next run."""
        self.stopping = self.aborted = True
        if self._run is not None:
            self._run.cancel()


class _Run:
    def __init__(self, options: UploadOptions, reporter: Reporter, control: RunControl, previous: PreviousResults) -> None:
        self.options = options
        self.reporter = reporter
        self.control = control
        self.previous = previous
        self.stats = RunStats()
        self.problems: dict[str, list[RowResult]] = {}  # code -> the first rows with it
        self.validator = Validator(
            options.manifest.parent, options.connection_id, options.schemas,
            dedupe_key=options.dedupe_key, user_key_prefix=options.search_user_prefix,
            chat_connection_id=options.chat_connection_id, assume_timezone=options.assume_timezone,
            max_chat_bytes=options.stream_threshold,
        )
        self.writer: ResultsWriter | None = None
        self.transport: Transport | None = None
        self.fatal: BulkUploadError | None = None  # what stopped the run early (refused credentials, results file)
        self.limiter = AdaptiveLimiter(options.concurrency)
        self.request_pacer = Pacer(options.rps) if options.rps else None
        self.byte_pacer = Pacer(options.max_mbps * 1e6 / 8) if options.max_mbps else None
        self.last_progress = monotonic()  # when a call last went through
        self._random = random.Random()

    def fail(self, error: BulkUploadError) -> None:
        """Stop the run now for a reason every other row shares; run_upload raises it."""
        if self.fatal is None:
            self.fatal = error
        self.control.abort()

    def record(self, result: RowResult) -> None:
        stats = self.stats
        if result.status == "uploaded":
            stats.uploaded += 1
            stats.bytes_uploaded += result.bytes
            if result.reconciled:
                stats.reconciled += 1
            elif result.unknown_outcomes and not self.options.dedupe_key:
                stats.resent_after_unknown += 1
                stats.possible_duplicates += result.unknown_outcomes
        else:
            if result.status == "failed":
                stats.failed += 1
            elif result.status == "ambiguous":
                stats.ambiguous += 1
            else:
                stats.invalid += 1
            stats.codes[result.code or "UNKNOWN"] += 1
            samples = self.problems.setdefault(result.code or "UNKNOWN", [])
            if len(samples) < SAMPLES_PER_CODE:
                samples.append(result)
            self.reporter.row_problem(result)
        if self.writer is not None:
            self.writer.write(result)

    async def feed(self, send: JobQueue, scope: anyio.CancelScope) -> None:
        try:
            await self._feed(send, scope)
        except ResultsFileError as exc:
            self.fail(exc)

    async def _feed(self, send: JobQueue, scope: anyio.CancelScope) -> None:
        with scope, send.closing():
            uploaded = self.previous.uploaded
            shard = self.options.shard
            batch: list[Job] = []  # whole files read together
            batch_bytes = 0
            preload = reader.Preloader()
            read_ahead = not self.options.dry_run
            for n, row in enumerate(read_manifest(self.options.manifest, self.options.mapping), 1):
                if n % _YIELD_EVERY == 0:
                    await anyio.lowlevel.checkpoint()
                if shard is not None and not shard.contains(row.key):
                    continue
                if row.problem is None and row.key in uploaded:
                    self.stats.skipped += 1
                    continue
                try:
                    job = self.validator.check(row)
                except RowInvalid as exc:
                    path = row.data.get("audio_path")
                    self.record(RowResult(row.key, "invalid", error=str(exc), code=exc.code, line=row.line,
                                          audio_path=path if isinstance(path, str) else None))
                    continue
                if read_ahead and job.kind == "audio" and job.size <= self.options.stream_threshold:
                    batch.append(job)
                    batch_bytes += job.size
                    if len(batch) < reader.PRELOAD_BATCH and batch_bytes < reader.PRELOAD_BATCH_BYTES:
                        continue
                    jobs, batch, batch_bytes = await preload(batch), [], 0
                else:
                    jobs = [*await preload(batch), job] if batch else [job]
                    batch, batch_bytes = [], 0
                for ready in jobs:
                    await send.put(ready)
            for ready in await preload(batch):
                await send.put(ready)

    async def work(self, jobs: JobQueue) -> None:
        while (job := await jobs.get()) is not None:
            if self.control.stopping:
                continue  # drained after a stop: not started, so left for the next run
            self.stats.in_flight += 1
            try:
                result = await self.process(job)
                if result is not None:
                    self.record(result)
            except ResultsFileError as exc:
                # Outcomes can no longer be recorded: going on would send rows no run can account for.
                self.fail(exc)
            finally:
                self.stats.in_flight -= 1

    async def process(self, job: Job) -> RowResult | None:
        started = monotonic()
        result = RowResult(job.key, "failed", line=job.line, audio_path=job.audio_path, bytes=job.size,
                           unknown_outcomes=self.previous.unknown.get(job.key, 0))
        try:
            if self.options.dry_run:
                if job.kind == "audio":
                    kind = (await reader.read_head(job)).format.value
                elif job.chat_path is not None:
                    await reader.read_chat(job, self.validator)
                    kind = "chat"
                else:
                    kind = job.kind  # chat with inline messages, or a metadata update
                self.stats.valid += 1
                self.stats.valid_bytes += job.size
                self.stats.formats[kind] += 1
                return None
            result.talk_id = await self.deliver(job, result)
            result.status = "uploaded"
        except RowInvalid as exc:
            result.status, result.code, result.error = "invalid", exc.code, str(exc)
        except CallFailure as failure:
            if failure.auth:
                self.fail(AuthError(
                    f"the service refused the credentials ({failure.code}: {failure.message}); "
                    "stopped without trying further rows"
                ))
                return None
            result.code, result.error = failure.code, failure.message
            if result.unknown_outcomes:
                # It may be stored: never call that "failed". The next run reconciles or re-sends it.
                result.status = "ambiguous"
                result.error = f"outcome unknown after {result.unknown_outcomes} attempt(s); last: {failure}"
        except AuthError as exc:
            self.fail(exc)
            return None
        result.seconds = monotonic() - started
        return result

    async def deliver(self, job: Job, result: RowResult) -> str:
        """Bring one row to the service; returns the talk id or raises CallFailure / RowInvalid.

        Retries transient answers with backoff (throttling does not use up --retries while
        calls elsewhere go through), refreshes refused tokens, and after any attempt whose
        outcome is unknown asks Search (--dedupe-key) before sending again.
        """
        options = self.options
        data, info, rpc, size = None, None, "Upload", job.size
        messages = job.messages
        if job.kind == "update":
            rpc = "Upload(update)"
        elif job.kind == "chat":
            rpc = "UploadText"
            messages = messages or await reader.read_chat(job, self.validator)
            result.bytes = size = encoded_size(messages)
        elif job.size <= options.stream_threshold:
            data, info = await reader.read_whole(job)
            size = result.bytes = len(data)
        else:
            info = await reader.read_head(job)
            rpc = "UploadAsStream"
        result.rpc = rpc
        failures = refreshes = 0
        reconciled_at = -1  # unknown_outcomes when Search last said "not there"
        while True:
            if result.unknown_outcomes > reconciled_at and job.dedupe is not None:
                found = await self.reconcile(job)
                if found:
                    result.reconciled, result.rpc = True, "Search"
                    return found
                reconciled_at = result.unknown_outcomes
            result.attempts += 1
            try:
                return await self.attempt(job, result, data, info, size, messages)
            except CallFailure as failure:
                if failure.outcome_unknown:
                    result.unknown_outcomes += 1
                delay = await self.after_failure(failure, failures, refreshes)
                if failure.code == "UNAUTHENTICATED":
                    refreshes += 1
                elif failure.code != "RESOURCE_EXHAUSTED":
                    failures += 1
                self.stats.retries += 1
                await anyio.sleep(delay)

    async def attempt(
        self,
        job: Job,
        result: RowResult,
        data: bytes | None,
        info: AudioInfo | None,
        size: int,
        messages: tuple[ChatMessage, ...],
    ) -> str:
        """One call, within the in-flight limit and the rate caps, journaled just before it leaves."""
        async with self.limiter.slot():
            if self.request_pacer is not None:
                await self.request_pacer.take()
            if self.writer is not None:
                self.writer.write_record(attempt_line(job.key, job.line, result.attempts, result.unknown_outcomes))
            sent_at = monotonic()
            try:
                talk_id = await self._call(job, data, info, size, messages)
            except CallFailure as failure:
                failure.sent_at = sent_at
                raise
            self.succeeded(sent_at)
            return talk_id

    async def _call(
        self, job: Job, data: bytes | None, info: AudioInfo | None, size: int, messages: tuple[ChatMessage, ...]
    ) -> str:
        transport, options = self.transport, self.options
        assert transport is not None
        if job.kind == "update":
            return await transport.update(job, options.timeout)
        timeout = options.attempt_timeout(size)
        if job.kind == "chat":
            return await transport.upload_text(job, messages, timeout)
        if data is not None and info is not None:
            if self.byte_pacer is not None:
                await self.byte_pacer.take(len(data))
            talk_id = await transport.upload(job, data, info, timeout)
            self.stats.bytes_sent += len(data)
            return talk_id
        assert info is not None
        chunks = self.paced(reader.read_chunks(job, options.chunk_size))
        return await transport.upload_stream(job, info, chunks, timeout, self._count_bytes)

    async def paced(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """Chunks at no more than --max-mbps."""
        async for chunk in chunks:
            if self.byte_pacer is not None:
                await self.byte_pacer.take(len(chunk))
            yield chunk

    def succeeded(self, sent_at: float) -> None:
        self.last_progress = monotonic()
        self.limiter.succeeded(sent_at)
        self.stats.concurrency = self.limiter.current

    async def after_failure(self, failure: CallFailure, failures: int, refreshes: int) -> float:
        """Seconds to wait before trying again, or raise the failure when the row should stop."""
        options = self.options
        if failure.code == "UNAUTHENTICATED" and refreshes < 2 and self.options.credentials is not None:
            if await self.options.credentials.refresh(failure.auth_header):
                self.stats.token_refreshes += 1
                return 0.0
        if failure.auth or not failure.transient:
            raise failure
        if failure.code == "RESOURCE_EXHAUSTED":
            self.limiter.throttled(failure.pushback, failure.sent_at)
            self.stats.throttled += 1
            self.stats.concurrency = self.limiter.current
            # Throttling alone fails no row while calls go through somewhere; only when
            # nothing has succeeded for throttle_patience seconds does the row give up.
            if monotonic() - self.last_progress > options.throttle_patience:
                raise failure
            # With a pushback the limiter holds every call until it passes.
            return 0.0 if failure.pushback is not None else self.backoff(failures + 1)
        if failures >= options.retries:
            raise failure
        return failure.pushback if failure.pushback is not None else self.backoff(failures + 1)

    async def reconcile(self, job: Job) -> str | None:
        """Ask Search whether the row's talk exists (after an unknown outcome); its id or None.

        Raises CallFailure when Search cannot answer: the row then ends ambiguous rather
        than being sent again blindly.
        """
        transport, options = self.transport, self.options
        assert transport is not None and job.dedupe is not None
        key, value = job.dedupe
        for tries in range(1, options.retries + 2):
            try:
                async with self.limiter.slot():
                    if self.request_pacer is not None:
                        await self.request_pacer.take()
                    ids = await transport.search(options.search_scope, job.connection_id, key, value, options.timeout)
                self.stats.searches += 1
                return ids[0] if ids else None
            except CallFailure as failure:
                if failure.code == "UNAUTHENTICATED" and options.credentials is not None:
                    if await options.credentials.refresh(failure.auth_header):
                        continue
                if not failure.transient or tries > options.retries:
                    raise CallFailure(failure.code, f"Search for {key}={value!r} failed: {failure.message}") from None
                await anyio.sleep(failure.pushback or self.backoff(tries))
        raise AssertionError("unreachable")  # pragma: no cover

    def _count_bytes(self, n: int) -> None:
        self.stats.bytes_sent += n

    def backoff(self, attempt: int) -> float:
        """Seconds before the next attempt: full-jitter exponential (half to all of the cap)."""
        cap = min(self.options.backoff_max, self.options.backoff_base * 2 ** (attempt - 1))
        return self._random.uniform(cap / 2, cap)


async def _keep_fresh(run: _Run) -> None:
    """Refresh expiring credentials in the background; a failure stops the run like a refusal."""
    assert run.options.credentials is not None
    try:
        await run.options.credentials.keep_fresh()
    except AuthError as exc:
        run.fail(exc)


async def run_upload(options: UploadOptions, reporter: Reporter, control: RunControl | None = None) -> RunSummary:
    """Upload every row of the manifest not uploaded before; returns how the run ended.

    Raises AuthError when the service refuses the credentials (rows not yet tried stay
    unrecorded), ResultsFileError when the results file cannot be read or written (the run
    stops at once), ConfigError when the run cannot start.
    """
    control = control or RunControl()
    # Connecting starts now, so the handshakes overlap reading the results file and the manifest.
    transport = None if options.dry_run else Transport(
        options.endpoint,
        options.credentials,
        insecure=options.insecure,
        max_message_bytes=options.stream_threshold + 1024 * 1024,
    )
    try:
        previous = await anyio.to_thread.run_sync(load_results, options.results_path)
        run = _Run(options, reporter, control, previous)
        rows = await anyio.to_thread.run_sync(count_rows, options.manifest)
        run.stats.total_rows = rows // options.shard.count if options.shard else rows
        run.stats.concurrency = options.concurrency
        if transport is not None:
            if options.credentials is not None:
                await options.credentials.start()
            run.writer = ResultsWriter(options.results_path, on_error=run.fail)
    except BaseException:
        if transport is not None:
            with anyio.CancelScope(shield=True):
                await transport.close()
        raise
    run.transport = transport
    reporter.start(run.stats)
    try:
        with anyio.CancelScope() as scope:
            # The outer group only hosts the grace timer a stop() starts; it is cancelled
            # as soon as the workers are done, so a stop never waits longer than needed.
            async with anyio.create_task_group() as outer:
                async with anyio.create_task_group() as group:
                    jobs = JobQueue(options.concurrency, reader.READ_AHEAD_BYTES)
                    feeder = anyio.CancelScope()
                    control._attach(scope, feeder, outer, options.grace)
                    group.start_soon(run.feed, jobs, feeder)
                    if options.credentials is not None and not options.dry_run:
                        outer.start_soon(_keep_fresh, run)
                    for _ in range(options.concurrency):
                        group.start_soon(run.work, jobs)
                outer.cancel_scope.cancel()
    finally:
        run.stats.finished = monotonic()
        reporter.stop()
        with anyio.CancelScope(shield=True):
            if run.transport is not None:
                await run.transport.close()
        if run.writer is not None:
            try:
                run.writer.close()
            except ResultsFileError as exc:
                run.fatal = run.fatal or exc
    if run.fatal is not None:
        raise run.fatal
    return RunSummary(
        run.stats,
        str(options.results_path),
        previous,
        run.problems,
        interrupted=control.stopping,
        dry_run=options.dry_run,
        rate=await anyio.to_thread.run_sync(measured_rate, options.results_path) if options.dry_run else None,
        given_rate=options.estimate_rate,
    )

