"""What users see: the rich panel on a terminal, plain lines elsewhere, the summary."""

from __future__ import annotations

import io
import time

from rich.console import Console

from bulk_uploader.model import RowResult
from bulk_uploader.progress import PlainReporter, RichReporter, make_reporter, status_line
from bulk_uploader.stats import RunStats


def busy_stats() -> RunStats:
    stats = RunStats(total_rows=1000)
    stats.uploaded, stats.failed, stats.ambiguous, stats.retries, stats.throttled = 400, 3, 2, 12, 5
    # Throttled down to 2 calls: 16 rows are busy (most of them waiting), 2 calls are on the wire.
    stats.bytes_sent, stats.in_flight, stats.calls, stats.concurrency = 50_000_000, 16, 2, 2
    stats.started -= 10
    return stats


def test_status_line_names_every_figure() -> None:
    line = status_line(busy_stats())
    for part in ("rows 405/~1000", "uploaded 400", "failed 3", "ambiguous 2", "retries 12", "calls 2/2",
                 "rows busy 16", "throttled 5",
                 "50.0 MB sent", "files/s", "MB/s", "ETA 0:"):
        assert part in line


def test_rich_reporter_draws_a_live_panel_and_problem_rows() -> None:
    out = io.StringIO()
    reporter = RichReporter(Console(file=out, force_terminal=True, width=120))
    reporter.start(busy_stats())
    reporter.row_problem(RowResult("call-9", "invalid", error="audio file not found: a.wav", code="FILE_NOT_FOUND", line=9))
    time.sleep(0.3)
    reporter.stop()
    text = out.getvalue()
    assert "\x1b[" in text  # drawn with terminal codes
    assert "405/1000 rows" in text and "throttled 5" in text
    assert "ambiguous 2" in text and "calls 2/2  rows busy 16" in text
    assert "call-9 (line 9): [FILE_NOT_FOUND] audio file not found: a.wav" in text


def test_plain_reporter_prints_status_lines_on_its_own_thread() -> None:
    out = io.StringIO()
    reporter = PlainReporter(out, interval=0.05)
    reporter.start(busy_stats())
    time.sleep(0.2)
    reporter.stop()
    lines = out.getvalue().splitlines()
    assert len(lines) >= 3 and all(line.startswith("rows 405/~1000") for line in lines)
    assert "\x1b[" not in out.getvalue()


def test_make_reporter_picks_by_terminal() -> None:
    assert isinstance(make_reporter(quiet=False, stream=io.StringIO()), PlainReporter)


def test_rich_summary_and_messages_are_not_wrapped_by_the_renderer() -> None:
    out = io.StringIO()
    reporter = RichReporter(Console(file=out, force_terminal=True, width=80))
    retry = ("to try the rest again, run the same command: bulk-upload /data/exports/2024/calls-march.jsonl "
             "--connection-id abcdefghijklmnop --concurrency 32 --dedupe-key call_id --results /data/out.jsonl")
    reporter.message("bulk-upload: /data/exports/2024/calls-march.csv line 2002: 0xC0 (offset 42931) is not UTF-8")
    reporter.summary(["Finished in 1.00 s: uploaded 1", retry])
    lines = out.getvalue().splitlines()
    assert retry in lines  # one line: a paste runs the whole command
    assert "bulk-upload: /data/exports/2024/calls-march.csv line 2002: 0xC0 (offset 42931) is not UTF-8" in lines


def test_the_panel_keeps_its_figures_on_one_line_of_an_80_column_terminal() -> None:
    # A million-row migration a day from its end: the widest figures the first line shows.
    stats = RunStats(total_rows=1_000_000)
    stats.uploaded, stats.skipped, stats.bytes_sent = 423_456, 120_000, 12_345_678_901
    stats.started -= 5000
    out = io.StringIO()
    reporter = RichReporter(Console(file=out, force_terminal=True, width=80, color_system=None))
    reporter._stats = stats
    reporter.console.print(reporter._render())
    first = out.getvalue().splitlines()[0]
    assert "…" not in first  # the bar is not cut
    assert first.startswith("━━━━━")
    for figure in ("543456/1000000 rows", "files/s", "MB/s", "ETA 1:"):
        assert figure in first
    assert len(first) <= 80
