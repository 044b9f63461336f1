"""The orchestrator: the one place that knows the order of the stages.

    manifest rows -> validation -> (bounded stream) -> workers: read, send with retries
                                                        -> results file, stats

One task group owns every task. The feeder reads the manifest and puts checked jobs on a
memory stream of `concurrency` slots (backpressure: the manifest is read only as fast as
rows are sent); `concurrency` workers each carry one row at a time to its outcome.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from time import monotonic

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from bulk_uploader import reader
from bulk_uploader.errors import AuthError
from bulk_uploader.manifest import count_rows, read_manifest
from bulk_uploader.options import UploadOptions
from bulk_uploader.progress import Reporter
from bulk_uploader.results import PreviousResults, ResultsWriter, RowResult, load_results
from bulk_uploader.stats import RunStats
from bulk_uploader.transport import CallFailure, Transport
from bulk_uploader.validation import Job, RowInvalid, Validator

SAMPLE_FAILURES = 5  # failed rows named in the summary
_YIELD_EVERY = 256  # manifest rows parsed between yields to the event loop


@dataclass
class RunSummary:
    """How a run ended."""

    stats: RunStats
    results_path: str
    previous: PreviousResults
    failures: list[RowResult] = field(default_factory=list)  # the first failed/invalid rows
    interrupted: bool = False
    dry_run: bool = False

    @property
    def exit_code(self) -> int:
        """0 all rows uploaded (now or before), 1 some failed or invalid, 130 interrupted."""
        if self.interrupted:
            return 130
        return 1 if self.stats.failed or self.stats.invalid else 0

    def lines(self, retry_command: str | None = None) -> list[str]:
        """The closing summary, as lines of text."""
        s = self.stats
        rows_per_s, bytes_per_s = s.rates()
        head = "Dry run" if self.dry_run else "Interrupted" if self.interrupted else "Finished"
        counts = (
            f"valid {s.valid}, invalid {s.invalid}"
            if self.dry_run
            else f"uploaded {s.uploaded}, skipped (done before) {s.skipped}, failed {s.failed}, invalid {s.invalid}"
        )
        out = [
            f"{head} in {s.elapsed:.1f} s: {counts}",
            f"throughput: {rows_per_s:.1f} files/s, {bytes_per_s / 1e6:.2f} MB/s, "
            f"{s.bytes_uploaded / 1e6:.1f} MB uploaded, {s.retries} retries",
        ]
        if s.codes:
            out.append("by code: " + ", ".join(f"{code} {n}" for code, n in s.codes.most_common()))
        if self.previous.torn_lines:
            out.append(f"results file had {self.previous.torn_lines} unreadable line(s) (a torn write); ignored")
        if not self.dry_run:
            out.append(f"results: {self.results_path}")
        if self.failures:
            out.append("first problem rows:")
            out += [f"  {r.id} (line {r.line}): [{r.code}] {r.error}" for r in self.failures]
        if retry_command and (self.failures or self.interrupted) and not self.dry_run:
            out.append(f"to try the rest again, run the same command: {retry_command}")
        return out


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
        self.failures: list[RowResult] = []
        self.validator = Validator(options.manifest.parent, options.connection_id, options.schemas)
        self.writer: ResultsWriter | None = None
        self.transport: Transport | None = None
        self.auth_error: AuthError | None = None
        self._random = random.Random()

    def record(self, result: RowResult) -> None:
        stats = self.stats
        if result.status == "uploaded":
            stats.uploaded += 1
            stats.bytes_uploaded += result.bytes
        else:
            if result.status == "failed":
                stats.failed += 1
            else:
                stats.invalid += 1
            stats.codes[result.code or "UNKNOWN"] += 1
            if len(self.failures) < SAMPLE_FAILURES:
                self.failures.append(result)
            self.reporter.row_problem(result)
        if self.writer is not None:
            self.writer.write(result)

    async def feed(self, send: MemoryObjectSendStream[Job], scope: anyio.CancelScope) -> None:
        with scope, send:
            uploaded = self.previous.uploaded
            for n, row in enumerate(read_manifest(self.options.manifest), 1):
                if n % _YIELD_EVERY == 0:
                    await anyio.sleep(0)
                if row.problem is None and row.key in uploaded:
                    self.stats.skipped += 1
                    continue
                try:
                    job = self.validator.check(row)
                except RowInvalid as exc:
                    self.record(
                        RowResult(row.key, "invalid", error=str(exc), code=exc.code, line=row.line,
                                  audio_path=row.data.get("audio_path") if isinstance(row.data.get("audio_path"), str) else None)
                    )
                    continue
                await send.send(job)

    async def work(self, receive: MemoryObjectReceiveStream[Job]) -> None:
        with receive:
            async for job in receive:
                if self.control.stopping:
                    continue  # drained after a stop: not started, so left for the next run
                self.stats.in_flight += 1
                try:
                    result = await self.process(job)
                finally:
                    self.stats.in_flight -= 1
                if result is not None:
                    self.record(result)

    async def process(self, job: Job) -> RowResult | None:
        started = monotonic()
        result = RowResult(job.key, "failed", line=job.line, audio_path=job.audio_path, bytes=job.size)
        try:
            if self.options.dry_run:
                if job.kind == "audio":
                    await reader.read_head(job)
                self.stats.valid += 1
                return None
            result.talk_id = await self.send(job, result)
            result.status = "uploaded"
        except RowInvalid as exc:
            result.status, result.code, result.error = "invalid", exc.code, str(exc)
        except CallFailure as failure:
            if failure.auth:
                self.auth_error = AuthError(
                    f"the service refused the credentials ({failure.code}: {failure.message}); "
                    "stopped without trying further rows"
                )
                self.control.abort()
                return None
            result.code, result.error = failure.code, failure.message
        result.seconds = monotonic() - started
        return result

    async def send(self, job: Job, result: RowResult) -> str:
        """Send a job with retries; returns the talk id or raises CallFailure / RowInvalid."""
        options, transport = self.options, self.transport
        assert transport is not None
        data, info, rpc = None, None, "Upload"
        if job.kind == "update":
            rpc = "Upload(update)"
        elif job.size <= options.stream_threshold:
            data, info = await reader.read_whole(job)
            job_size = len(data)
        else:
            info = await reader.read_head(job)
            rpc, job_size = "UploadAsStream", job.size
        result.rpc = rpc
        for attempt in range(1, options.retries + 2):
            result.attempts = attempt
            try:
                if job.kind == "update":
                    return await transport.update(job, options.timeout)
                timeout = options.attempt_timeout(job_size)
                if data is not None and info is not None:
                    talk_id = await transport.upload(job, data, info, timeout)
                    self.stats.bytes_sent += len(data)
                    return talk_id
                assert info is not None and job.path is not None
                chunks = reader.read_chunks(job.path, options.chunk_size, job)
                return await transport.upload_stream(job, info, chunks, timeout, self._count_bytes)
            except CallFailure as failure:
                if not failure.transient or attempt > options.retries:
                    raise
                self.stats.retries += 1
                await anyio.sleep(self.backoff(attempt, failure))
        raise AssertionError("unreachable")  # pragma: no cover

    def _count_bytes(self, n: int) -> None:
        self.stats.bytes_sent += n

    def backoff(self, attempt: int, failure: CallFailure) -> float:
        """Seconds before the next attempt: the server's pushback, else full-jitter exponential."""
        if failure.pushback is not None:
            return failure.pushback
        cap = min(self.options.backoff_max, self.options.backoff_base * 2 ** (attempt - 1))
        return self._random.uniform(cap / 2, cap)


async def run_upload(options: UploadOptions, reporter: Reporter, control: RunControl | None = None) -> RunSummary:
    """Upload every row of the manifest not uploaded before; returns how the run ended.

    Raises AuthError when the service refuses the credentials (rows not yet tried stay
    unrecorded), ConfigError or ResultsFileError when the run cannot start.
    """
    control = control or RunControl()
    previous = await anyio.to_thread.run_sync(load_results, options.results_path)
    run = _Run(options, reporter, control, previous)
    run.stats.total_rows = await anyio.to_thread.run_sync(count_rows, options.manifest)
    if not options.dry_run:
        run.writer = ResultsWriter(options.results_path)
        run.transport = Transport(
            options.endpoint,
            options.credentials,
            insecure=options.insecure,
            max_message_bytes=options.stream_threshold + 1024 * 1024,
        )
    reporter.start(run.stats)
    try:
        with anyio.CancelScope() as scope:
            # The outer group only hosts the grace timer a stop() starts; it is cancelled
            # as soon as the workers are done, so a stop never waits longer than needed.
            async with anyio.create_task_group() as outer:
                async with anyio.create_task_group() as group:
                    send, receive = anyio.create_memory_object_stream[Job](options.concurrency)
                    feeder = anyio.CancelScope()
                    control._attach(scope, feeder, outer, options.grace)
                    group.start_soon(run.feed, send, feeder)
                    with receive:
                        for _ in range(options.concurrency):
                            group.start_soon(run.work, receive.clone())
                outer.cancel_scope.cancel()
    finally:
        run.stats.finished = monotonic()
        reporter.stop()
        with anyio.CancelScope(shield=True):
            if run.transport is not None:
                await run.transport.close()
        if run.writer is not None:
            run.writer.close()
    if run.auth_error is not None:
        raise run.auth_error
    return RunSummary(
        run.stats,
        str(options.results_path),
        previous,
        run.failures,
        interrupted=control.stopping,
        dry_run=options.dry_run,
    )

