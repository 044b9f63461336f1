"""Running an upload from the command line: the event loop (uvloop or asyncio's), the SIGINT and
SIGTERM watch, the warnings and summary around the run, and the retry command printed when rows
are left to do; each is given its inputs, nothing here reads argv or the environment.
"""

from __future__ import annotations

import asyncio
import shlex
import signal
import traceback
from collections.abc import Coroutine, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anyio

from bulk_uploader.allocator import keep_big_buffers
from bulk_uploader.cli import collector
from bulk_uploader.cli.application import EXIT_BUG, EXIT_USAGE
from bulk_uploader.cli.upload_args import EventLoop
from bulk_uploader.errors import BulkUploadError
from bulk_uploader.options import UploadOptions, is_loopback
from bulk_uploader.pipeline import RunControl, RunSummary, run_upload
from bulk_uploader.progress import Reporter


async def _watch_signals(control: RunControl, reporter: Reporter) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            if control.stopping:
                reporter.message("aborting now; rows in flight stay unrecorded and will be retried")
            else:
                reporter.message("stopping: finishing uploads in flight (press Ctrl-C again to abort)")
            control.stop()


async def upload_with_signals(options: UploadOptions, reporter: Reporter) -> RunSummary:
    """Run the upload; the first SIGINT/SIGTERM lets rows in flight finish, the second aborts."""
    control = RunControl()
    error: BulkUploadError | None = None
    async with anyio.create_task_group() as group:
        group.start_soon(_watch_signals, control, reporter)
        try:
            summary = await run_upload(options, reporter, control)
        except BulkUploadError as exc:
            error = exc  # raised outside the group, so it is not wrapped in an ExceptionGroup
        finally:
            group.cancel_scope.cancel()
    if error is not None:
        raise error
    return summary


def _run_event_loop(main: Coroutine[Any, Any, RunSummary], event_loop: EventLoop) -> RunSummary:
    """Run the upload on uvloop where it is installed and asked for, else on asyncio's own loop.

    uvloop turns the loop faster, which counts with many small files; benchmarks/RESULTS.md
    holds the figures measured with it. It is a dependency where it builds (not on Windows).
    """
    if event_loop is EventLoop.uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(main)
    return asyncio.run(main)


def warnings_for(options: UploadOptions) -> list[str]:
    """Things worth saying before a run starts."""
    out = []
    if options.insecure and options.credentials is not None and not is_loopback(options.endpoint):
        out.append(f"sending credentials in plaintext to {options.endpoint} (--insecure)")
    return out


def run_cli_upload(options: UploadOptions, reporter: Reporter, retry_command: str | None,
                   event_loop: EventLoop = EventLoop.uvloop) -> int:
    """Run an upload to its end and print the summary; returns the exit status.

    retry_command is printed when rows are left to do; None prints none.
    """
    if not options.dry_run:  # a dry run sends nothing; the setting is process-wide, so the command line makes it
        keep_big_buffers()
        collector.collect_less()
    for warning in warnings_for(options):
        reporter.message(f"warning: {warning}")
    try:
        if not options.dry_run:  # gRPC, which a run that sends loads first thing, loads before collection resumes
            import bulk_uploader.transport.channel  # noqa: F401
        collector.resume()
        summary = _run_event_loop(upload_with_signals(options, reporter), event_loop)
    except BulkUploadError as exc:
        reporter.message(f"bulk-upload: {exc}")
        return EXIT_USAGE
    except Exception as exc:  # a bug outside any row: one line here, the traceback in a file
        log = _write_traceback(options.results_path, exc)
        reporter.message(f"bulk-upload: internal error ({type(exc).__name__}: {exc}), a fault of bulk-upload; "
                         f"the traceback is in {log}. Rows in flight are settled by the next run.")
        return EXIT_BUG
    reporter.summary(summary.lines(retry_command))
    return summary.exit_code


def _write_traceback(results: Path, exc: BaseException) -> Path:
    """Append the traceback beside the results file (or in the temp folder) and say where."""
    import tempfile  # only a crash needs it

    text = "".join(traceback.format_exception(exc))
    for log in (results.with_name(results.name + ".error.log"), Path(tempfile.gettempdir()) / "bulk-upload.error.log"):
        try:
            with log.open("a", encoding="utf-8") as f:
                f.write(f"--- {datetime.now(timezone.utc).isoformat(timespec='seconds')}\n{text}")
            return log
        except OSError:
            continue
    return Path("(nowhere: no writable place for it)")


def _shown_args(args: Sequence[str]) -> list[str]:
    """argv fit to print: a token command may hold a secret expanded by the shell, so it is elided."""
    shown, hide_next = [], False
    for arg in args:
        if hide_next:
            shown.append("<same command>")
            hide_next = False
        elif arg == "--iam-token-command":
            shown.append(arg)
            hide_next = True
        elif arg.startswith("--iam-token-command="):
            shown.append("--iam-token-command=<same command>")
        else:
            shown.append(arg)
    return shown


def retry_command(argv: Sequence[str]) -> str:
    """`bulk-upload ARGV` to print, without a leading `upload` (the default command)."""
    args = list(argv)
    if args[:1] == ["upload"]:
        args = args[1:]
    return "bulk-upload " + shlex.join(_shown_args(args))
