"""run_upload: wires the feeder, the senders and the recorder, and owns the one task group.

    manifest -> Feeder (checks, read-ahead) -> JobQueue -> `concurrency` workers, each a
    Sender carrying one row at a time to its outcome -> Recorder (results file, counts)

The orchestrator decides nothing about rows: it builds the collaborators, starts their
tasks, enforces RunControl (a stop cancels the feeder and, after the grace, the rest)
and turns how the run ended into a RunSummary.
"""

from __future__ import annotations

import time

import anyio

from bulk_uploader import reader
from bulk_uploader.auth import AuthProvider
from bulk_uploader.clock import SYSTEM_CLOCK, Clock
from bulk_uploader.errors import AuthError, ResultsFileError
from bulk_uploader.flow import AdaptiveLimiter
from bulk_uploader.manifest import count_rows
from bulk_uploader.options import UploadOptions
from bulk_uploader.pipeline.control import RunControl
from bulk_uploader.pipeline.feeder import Feeder, JobQueue
from bulk_uploader.pipeline.recorder import Recorder
from bulk_uploader.pipeline.sender import Inspector, Sender
from bulk_uploader.pipeline.summary import RunSummary
from bulk_uploader.progress import Reporter
from bulk_uploader.report import measured_rate
from bulk_uploader.results import PreviousResults, load_results
from bulk_uploader.retry import RetryPolicy
from bulk_uploader.stats import RunStats
from bulk_uploader.transport import Transport
from bulk_uploader.validation import Validator


async def run_upload(options: UploadOptions, reporter: Reporter, control: RunControl | None = None, *,
                     clock: Clock = SYSTEM_CLOCK) -> RunSummary:
    """Upload every row of the manifest not uploaded before; returns how the run ended.

    Raises AuthError when the service refuses the credentials (rows not yet tried stay
    unrecorded), ResultsFileError when the results file cannot be read or written (the run
    stops at once), ConfigError when the run cannot start.
    """
    control = control or RunControl()
    # Connecting starts now, so the handshakes overlap reading the results file and the manifest.
    transport = None if options.dry_run else Transport(
        options.endpoint, options.credentials, insecure=options.insecure,
        max_message_bytes=options.stream_threshold + 1024 * 1024,
    )
    stats = RunStats(concurrency=options.concurrency, dry_run=options.dry_run)
    recorder = Recorder(stats, reporter, dedupe=bool(options.dedupe_key))
    try:
        previous = await _prepare(options, stats)
        if transport is not None:
            if options.credentials is not None:
                await options.credentials.start()
            recorder.open(options.results_path, on_error=control.fail)
    except BaseException:
        if transport is not None:
            with anyio.CancelScope(shield=True):
                await transport.close()
        raise
    reporter.start(stats)
    validator = _validator(options)
    try:
        await _run(options, control, _workers(options, transport, validator, recorder, stats, control, clock),
                   Feeder(options, validator, recorder, stats, previous.uploaded), previous, stats)
    finally:
        stats.finished = time.monotonic()
        reporter.stop()
        if transport is not None:
            with anyio.CancelScope(shield=True):
                await transport.close()
        error = recorder.close()
        if error is not None and control.failure is None:
            control.failure = error
    if control.failure is not None:
        raise control.failure
    rate = await anyio.to_thread.run_sync(measured_rate, options.results_path) if options.dry_run else None
    return RunSummary(stats, str(options.results_path), previous, recorder.problems, interrupted=control.stopping,
                      dry_run=options.dry_run, rate=rate, given_rate=options.estimate_rate)


async def _prepare(options: UploadOptions, stats: RunStats) -> PreviousResults:
    """What earlier runs recorded, and about how many rows this run has."""
    previous = await anyio.to_thread.run_sync(load_results, options.results_path)
    rows = await anyio.to_thread.run_sync(count_rows, options.manifest)
    stats.total_rows = rows // options.shard.count if options.shard else rows
    return previous


def _validator(options: UploadOptions) -> Validator:
    return Validator(
        options.manifest.parent, options.connection_id, options.schemas,
        dedupe_key=options.dedupe_key, user_key_prefix=options.search_user_prefix,
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
    )
    return Sender(options, transport, validator, recorder, stats, policy, limiter, control, clock)


async def _run(options: UploadOptions, control: RunControl, sender: Sender | Inspector, feeder: Feeder,
               previous: PreviousResults, stats: RunStats) -> None:
    """The run's task group: the feeder, the workers, the control's enforcer and the credential refresher."""
    with anyio.CancelScope() as run_scope:
        # The outer group hosts the tasks that last as long as the workers do, and is
        # cancelled as soon as they are done, so a stop never waits longer than needed.
        async with anyio.create_task_group() as outer:
            feeder_scope = anyio.CancelScope()
            outer.start_soon(_enforce, control, feeder_scope, run_scope, options.grace)
            if options.credentials is not None and not options.dry_run:
                outer.start_soon(_keep_fresh, options.credentials, control)
            async with anyio.create_task_group() as group:
                jobs = JobQueue(options.concurrency, reader.READ_AHEAD_BYTES)
                group.start_soon(_feed, feeder, jobs, feeder_scope, control)
                for _ in range(options.concurrency):
                    group.start_soon(_work, jobs, sender, feeder.recorder, control, previous, stats)
            outer.cancel_scope.cancel()


async def _feed(feeder: Feeder, jobs: JobQueue, scope: anyio.CancelScope, control: RunControl) -> None:
    with scope:
        try:
            await feeder.feed(jobs)
        except ResultsFileError as exc:
            control.fail(exc)


async def _work(jobs: JobQueue, sender: Sender | Inspector, recorder: Recorder, control: RunControl,
                previous: PreviousResults, stats: RunStats) -> None:
    """One worker: take a job, carry it to its outcome, record it; until the queue is closed and empty."""
    unknown = previous.unknown
    while (job := await jobs.get()) is not None:
        if control.stopping:
            continue  # drained after a stop: not started, so left for the next run
        stats.in_flight += 1
        try:
            result = await sender.process(job, unknown.get(job.key, 0))
            if result is not None:
                recorder.record(result)
        except ResultsFileError as exc:
            # Outcomes can no longer be recorded: going on would send rows no run can account for.
            control.fail(exc)
        finally:
            stats.in_flight -= 1


async def _enforce(control: RunControl, feeder: anyio.CancelScope, run: anyio.CancelScope, grace: float) -> None:
    """A stop ends the feeding at once and the whole run after the grace; an abort ends it now."""
    await control.wait_stopping()
    feeder.cancel()
    with anyio.move_on_after(grace):
        await control.wait_aborted()
    control.abort()
    run.cancel()


async def _keep_fresh(credentials: AuthProvider, control: RunControl) -> None:
    """Refresh expiring credentials in the background; a failure stops the run like a refusal."""
    try:
        await credentials.keep_fresh()
    except AuthError as exc:
        control.fail(exc)
