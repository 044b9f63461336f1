"""run_upload: wires the feeder, the senders and the recorder, and owns the one task group.

    manifest -> Feeder (checks, memory budget, read-ahead) -> JobQueue -> `concurrency` workers,
    each a Sender carrying one row at a time to its outcome -> Recorder (results file, counts)
                                      Settler (batches of reads) <- rows whose outcome is unknown

The orchestrator decides nothing about rows: it builds the collaborators, starts their
tasks, enforces RunControl (a stop cancels the feeder and, after the grace, the rest)
and turns how the run ended into a RunSummary. A row parked while it waits to be
settled lets one more worker start, so `concurrency` rows are always being sent.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskGroup

from bulk_uploader import reader
from bulk_uploader.auth import AuthProvider
from bulk_uploader.budget import MemoryBudget
from bulk_uploader.clock import SYSTEM_CLOCK, Clock
from bulk_uploader.errors import AuthError, ConfigError, ResultsFileError
from bulk_uploader.flow import AdaptiveLimiter
from bulk_uploader.manifest import count_rows, read_manifest
from bulk_uploader.model import Job
from bulk_uploader.options import UploadOptions
from bulk_uploader.pipeline.control import RunControl
from bulk_uploader.pipeline.feeder import Feeder, JobQueue
from bulk_uploader.pipeline.inspector import Inspector
from bulk_uploader.pipeline.recorder import Recorder, internal_error
from bulk_uploader.pipeline.summary import RunSummary, problems_path
from bulk_uploader.progress import Reporter
from bulk_uploader.results import Destination, LedgerLock, PreviousResults, check_ledger, load_results
from bulk_uploader.retry import Outage, RetryPolicy
from bulk_uploader.stats import RunStats
from bulk_uploader.validation import Validator

if TYPE_CHECKING:
    from bulk_uploader.pipeline.sender import Sender
    from bulk_uploader.report import UploadRate
    from bulk_uploader.settle import Settler
    from bulk_uploader.transport import Transport


async def run_upload(options: UploadOptions, reporter: Reporter, control: RunControl | None = None, *,
                     clock: Clock = SYSTEM_CLOCK) -> RunSummary:
    """Upload every row of the manifest not uploaded before; returns how the run ended.

    Raises ConfigError, ResultsFileError or AuthError when the run cannot start (nothing
    was sent: the results file is locked by another run, is not a ledger or records another
    destination; the first credential cannot be had). Once rows are being sent, a reason
    every row shares (the service refuses the credentials, the results file cannot be
    written) stops the run, and the summary says so (RunSummary.failure, exit code 3).
    """
    control = control or RunControl()
    # Connecting starts now, so the handshakes overlap reading the results file and the manifest.
    transport = None if options.dry_run else _connect(options)
    lock = None if options.dry_run else LedgerLock(options.results_path)
    stats = RunStats(concurrency=options.concurrency, dry_run=options.dry_run)
    recorder = Recorder(stats, reporter, dedupe=bool(options.dedupe_key))
    try:
        previous = await _prepare(options, stats, lock)
        if transport is not None:
            done = await _all_done_before(options, previous, stats)
            if done is None:
                await transport.preflight(options.preflight_timeout)
                if options.credentials is not None:
                    await options.credentials.start()
            else:
                stats.skipped, stats.nothing_left = done, True
            recorder.open(options.results_path, on_error=control.fail, header=destination(options).header())
        else:  # a dry run's problems go to a file of their own, never to the results file
            problems_path(options.results_path).unlink(missing_ok=True)
            recorder.open(problems_path(options.results_path), on_error=control.fail, header=b"")
    except BaseException:
        await _close(transport, recorder, lock)
        raise
    reporter.start(stats)
    validator = _validator(options)
    try:
        if not stats.nothing_left:
            await _run(options, control, _workers(options, transport, validator, recorder, stats, control, clock),
                       Feeder(options, validator, recorder, stats, previous.uploaded,
                              None if options.dry_run else MemoryBudget(options.memory_budget)), previous, stats)
    finally:
        stats.finished = time.monotonic()
        if transport is not None:
            pool = transport.pool
            stats.connections, stats.refused_streams = len(pool.connections), pool.refused_streams
            stats.stream_limit = pool.refused_above
        reporter.stop()
        error = await _close(transport, recorder, lock)
        if error is not None and control.failure is None:
            control.failure = error
    if stats.done == 0 and not control.stopping and control.failure is None:
        stats.empty = f"shard {options.shard} of the manifest has no rows" if options.shard else "the manifest has no rows"
    rate = await _measured_rate(options) if options.dry_run else None
    reads = options.read_budget.describe() if options.dedupe_key and not options.dry_run else None
    return RunSummary(stats, str(options.results_path), previous, recorder.problems, interrupted=control.stopping,
                      dry_run=options.dry_run, rate=rate, given_rate=options.estimate_rate, failure=control.failure,
                      problems_path=_dry_run_problems(options, stats), read_budget=reads)


async def _measured_rate(options: UploadOptions) -> UploadRate | None:
    """A dry run's estimate: the rate the results file's earlier uploads went at (None: none recorded)."""
    from bulk_uploader.report import measured_rate  # only a dry run estimates

    return await anyio.to_thread.run_sync(measured_rate, options.results_path)


def _connect(options: UploadOptions) -> Transport:
    from bulk_uploader.transport import Transport  # gRPC: a dry run never loads it

    return Transport(options.endpoint, options.credentials, insecure=options.insecure,
                     max_message_bytes=options.stream_threshold + 1024 * 1024, concurrency=options.concurrency,
                     connections=options.connections, min_rate=options.min_rate)


def destination(options: UploadOptions) -> Destination:
    """Where this run's rows go, as its results file records it."""
    return Destination(options.endpoint, options.connection_id, options.chat_connection_id)


async def _prepare(options: UploadOptions, stats: RunStats, lock: LedgerLock | None) -> PreviousResults:
    """Take the results file for this run, read what earlier runs recorded, and count the rows."""
    if lock is not None:
        lock.acquire()
    previous = await anyio.to_thread.run_sync(load_results, options.results_path)
    # A dry run sends nothing, so it reads any ledger; a run that sends must match the ledger's destination.
    check_ledger(options.results_path, previous, None if options.dry_run else destination(options), options.manifest)
    rows = await anyio.to_thread.run_sync(count_rows, options.manifest, options.text_format, options.mapping)
    stats.total_rows = rows // options.shard.count if options.shard else rows
    return previous


async def _all_done_before(options: UploadOptions, previous: PreviousResults, stats: RunStats) -> int | None:
    """How many rows the manifest (this shard of it) has, when every one was uploaded before;
    None when some row is left. Then the run sends nothing and needs neither the service nor
    credentials, so a rerun that checks a finished migration ends 0 while the service is out of
    reach. Rows are read only when the results file records at least as many uploads as the
    manifest has rows (so a manifest without rows, or a shard's share of fewer rows than
    shards, is read whatever it records)."""
    if stats.total_rows is None or len(previous.uploaded) < stats.total_rows:
        return None
    return await anyio.to_thread.run_sync(_count_uploaded, options, previous)


def _count_uploaded(options: UploadOptions, previous: PreviousResults) -> int | None:
    shard, count = options.shard, 0
    for row in read_manifest(options.manifest, options.mapping, options.text_format):
        if shard is not None and not shard.contains(row.key):
            continue
        if row.problem is not None or row.key not in previous.uploaded:
            return None
        count += 1
    return count


def _dry_run_problems(options: UploadOptions, stats: RunStats) -> str | None:
    """Where a dry run wrote its problem rows; None (and no file) when it found none."""
    if not options.dry_run:
        return None
    path = problems_path(options.results_path)
    if stats.invalid:
        return str(path)
    path.unlink(missing_ok=True)
    return None


async def _close(transport: Transport | None, recorder: Recorder, lock: LedgerLock | None) -> ResultsFileError | None:
    """Close the channel, then the results file, then let other runs have it; the results file's last error."""
    if transport is not None:
        with anyio.CancelScope(shield=True):
            await transport.close()
    error = recorder.close()
    if lock is not None:
        lock.release()
    return error


def _validator(options: UploadOptions) -> Validator:
    return Validator(
        options.manifest.parent, options.connection_id, options.schemas,
        dedupe_key=options.dedupe_key, search_prefix=options.search_user_prefix,
        chat_connection_id=options.chat_connection_id, assume_timezone=options.assume_timezone,
        max_chat_bytes=options.stream_threshold, swap_channels=options.swap_channels,
    )


def _workers(options: UploadOptions, transport: Transport | None, validator: Validator, recorder: Recorder,
             stats: RunStats, control: RunControl, clock: Clock) -> Sender | Inspector:
    """What each worker hands its rows to: a Sender, or for a dry run an Inspector."""
    if transport is None:
        return Inspector(validator, stats, options.transcode)
    limiter = AdaptiveLimiter(options.concurrency, clock)
    policy = RetryPolicy(
        retries=options.retries, backoff_base=options.backoff_base, backoff_max=options.backoff_max,
        throttle_patience=options.throttle_patience, credentials=options.credentials, limiter=limiter,
        stats=stats, clock=clock,
        outage=Outage(transport.wait_ready, patience=options.outage_patience, clock=clock, stats=stats),
    )
    from bulk_uploader.pipeline.sender import Sender  # protobuf and the transport: a dry run never loads them

    sender = Sender(options, transport, validator, recorder, stats, policy, limiter, control, clock)
    if options.dedupe_key:
        sender.settler = _settler(options, transport, stats, clock)
    return sender


def _settler(options: UploadOptions, transport: Transport, stats: RunStats, clock: Clock) -> Settler:
    """The run's settler, its reads within the read budget; retried under a policy of their own, as a
    refused read must wait for the read quota rather than halve the uploads in flight."""
    assert options.dedupe_key is not None
    from bulk_uploader.lookup import Lookup  # only runs with --dedupe-key settle
    from bulk_uploader.reads import ReadGate
    from bulk_uploader.settle import Settler

    policy = RetryPolicy(retries=options.retries, backoff_base=options.backoff_base, backoff_max=options.backoff_max,
                         credentials=options.credentials, clock=clock)
    lookup = Lookup(transport, options.search_scope, ReadGate(options.read_budget, clock), policy, options.timeout,
                    stats.reads, options.throttle_patience)
    return Settler(lookup, options.dedupe_key, options.settle_delay, clock, stats)


async def _run(options: UploadOptions, control: RunControl, sender: Sender | Inspector, feeder: Feeder,
               previous: PreviousResults, stats: RunStats) -> None:
    """The run's task group: the feeder, the workers, the settler, the control's enforcer and the credential refresher."""
    settler = sender.settler if not isinstance(sender, Inspector) else None
    with anyio.CancelScope() as run_scope:
        # The outer group hosts the tasks that last as long as the workers do, and is
        # cancelled as soon as they are done, so a stop never waits longer than needed.
        async with anyio.create_task_group() as outer:
            feeder_scope = anyio.CancelScope()
            outer.start_soon(_enforce, control, feeder_scope, run_scope, options.grace, stats, settler)
            if options.credentials is not None and not options.dry_run:
                outer.start_soon(_keep_fresh, options.credentials, control)
            if not isinstance(sender, Inspector):
                outer.start_soon(_watch_stalls, sender, options.stall_seconds)
            if settler is not None:
                outer.start_soon(settler.run)
            async with anyio.create_task_group() as group:
                jobs = JobQueue(options.concurrency, reader.READ_AHEAD_BYTES, one_awake=options.dry_run)
                group.start_soon(_feed, feeder, jobs, feeder_scope, control)
                workers = _Workers(group, options.concurrency, jobs, sender, feeder.recorder, control, previous, stats,
                                   feeder.memory)
                if not isinstance(sender, Inspector):
                    sender.parking = workers.parked
                workers.start()
            outer.cancel_scope.cancel()


async def _feed(feeder: Feeder, jobs: JobQueue, scope: anyio.CancelScope, control: RunControl) -> None:
    with scope:
        try:
            await feeder.feed(jobs)
        except (ResultsFileError, ConfigError) as exc:  # ConfigError: the manifest changed since it was counted
            control.fail(exc)


class _Workers:
    """The workers: `target` of them carry rows at once, and a row parked while it waits (to be
    settled) lets one more start; once it goes on, the first worker to finish a row beyond
    `target` stops."""

    def __init__(self, group: TaskGroup, target: int, jobs: JobQueue, sender: Sender | Inspector, recorder: Recorder,
                 control: RunControl, previous: PreviousResults, stats: RunStats, memory: MemoryBudget | None) -> None:
        self.group, self.target = group, target
        self.memory = memory  # a row's share of it is given back once the row is done
        self.jobs, self.sender, self.recorder, self.control, self.stats = jobs, sender, recorder, control, stats
        self.unknown = previous.unknown
        self.running = 0
        self.waiting = 0  # rows parked

    def start(self) -> None:
        """Start the first `target` workers."""
        for _ in range(self.target):
            self._spawn()

    def _spawn(self) -> None:
        self.running += 1
        self.group.start_soon(self._work)

    @asynccontextmanager
    async def parked(self) -> AsyncIterator[None]:
        """While a row waits inside this block, another worker takes rows."""
        self.waiting += 1
        if self.running - self.waiting < self.target:
            self._spawn()
        try:
            yield
        finally:
            self.waiting -= 1

    async def _work(self) -> None:
        """Take a job, carry it to its outcome, record it; until the queue is closed and empty."""
        jobs, control, stats = self.jobs, self.control, self.stats
        try:
            while (job := await jobs.get()) is not None:
                if control.stopping:
                    self._done(job)
                    continue  # drained after a stop: not started, so left for the next run
                stats.in_flight += 1
                try:
                    result = await self.sender.process(job, self.unknown.get(job.key, 0))
                    if result is not None:
                        self.recorder.record(result)
                except ResultsFileError as exc:
                    # Outcomes can no longer be recorded: going on would send rows no run can account for.
                    control.fail(exc)
                except Exception as exc:  # a bug met by one row: that row says so, the others go on
                    self._record_bug(job, exc)
                finally:
                    stats.in_flight -= 1
                    self._done(job)
                if self.running - self.waiting > self.target:
                    return  # a parked row went on: one worker too many
        finally:
            self.running -= 1

    def _done(self, job: Job) -> None:
        if self.memory is not None:
            self.memory.give(job.share)

    def _record_bug(self, job: Job, exc: Exception) -> None:
        try:
            self.recorder.record(internal_error(job.key, job.line, job.audio_path, exc, self.unknown.get(job.key, 0)))
        except ResultsFileError as error:
            self.control.fail(error)


async def _enforce(control: RunControl, feeder: anyio.CancelScope, run: anyio.CancelScope, grace: float,
                   stats: RunStats, settler: Settler | None) -> None:
    """A stop ends the feeding and the waiting to be settled at once, and the whole run after the grace;
    an abort ends it now."""
    await control.wait_stopping()
    feeder.cancel()
    if settler is not None:
        settler.stop()  # rows waiting to be settled stay ambiguous: the next run settles them
    with anyio.move_on_after(grace):
        await control.wait_aborted()
    control.abort()
    stats.cut_off = stats.in_flight  # rows whose calls are cancelled now: they may be stored
    run.cancel()


async def _watch_stalls(sender: Sender, stall_seconds: float) -> None:
    """Open a new connection in place of each one with calls in flight on which nothing has moved
    for `stall_seconds`, plus the time the payload in flight takes at the rate the deadlines assume
    (ConnectionPool.allowed_rate): a connection the network has silently dropped (half dead) never fails a
    call by itself, and calls sent whole over a slow link show nothing until they end."""
    while True:
        await sender.clock.sleep(min(1.0, stall_seconds / 4))
        sender.stats.reconnects += sender.transport.replace_stalled(stall_seconds)


async def _keep_fresh(credentials: AuthProvider, control: RunControl) -> None:
    """Refresh expiring credentials in the background; a failure stops the run like a refusal."""
    try:
        await credentials.keep_fresh()
    except AuthError as exc:
        control.fail(exc)
