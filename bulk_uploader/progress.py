"""Stage 6: show what a run is doing. The one home of rich.

Reporters read the shared RunStats on their own thread (rich's Live refresh thread, or a
plain ticker), so a worker never waits for the screen: it only bumps counters and, for
a failed or invalid row, calls row_problem().
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Protocol, TextIO

if TYPE_CHECKING:
    from rich.console import Console

    from bulk_uploader.model import RowResult
    from bulk_uploader.stats import RunStats

PROBLEM_LINES = 20  # per-row problems shown on screen; the rest are in the results file


class Reporter(Protocol):
    """What the pipeline tells the user while it runs."""

    def start(self, stats: RunStats) -> None:
        """The run begins; stats will be updated in place."""

    def row_problem(self, result: RowResult) -> None:
        """A row ended failed or invalid."""

    def message(self, text: str) -> None:
        """A warning or notice for the user."""

    def stop(self) -> None:
        """The run ended (or was interrupted): stop drawing."""

    def summary(self, lines: list[str]) -> None:
        """Print the closing summary."""


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def status_line(stats: RunStats) -> str:
    """One line of progress: the plain reporter prints it, the rich one draws it."""
    rows_per_s, bytes_per_s = stats.rates()
    total = "?" if stats.total_rows is None else f"~{stats.total_rows}"
    parts = [
        f"rows {stats.done}/{total}",
        f"uploaded {stats.uploaded}",
        f"skipped {stats.skipped}",
        f"failed {stats.failed}",
        f"invalid {stats.invalid}",
        f"ambiguous {stats.ambiguous}",
        f"retries {stats.retries}",
        f"calls {stats.calls}/{stats.concurrency}",
        f"rows busy {stats.in_flight}",
        f"throttled {stats.throttled}",
        f"{_size(stats.bytes_sent)} sent",
        f"{rows_per_s:.1f} files/s",
        f"{bytes_per_s / 1e6:.2f} MB/s",
        f"ETA {_duration(stats.eta())}",
    ]
    if stats.valid:
        parts.insert(1, f"valid {stats.valid}")
    if stats.reads.total or stats.settling:
        parts.insert(-3, f"settling {stats.settling}, reads {stats.reads.total} (refused {stats.reads.refused})")
    if stats.unreachable_since is not None:
        parts.insert(0, f"service unreachable for {time.monotonic() - stats.unreachable_since:.0f} s, waiting")
    return " | ".join(parts)


def problem_line(result: RowResult) -> str:
    """How one failed or invalid row is shown."""
    where = f" (line {result.line})" if result.line else ""
    return f"{result.status} {result.id}{where}: [{result.code}] {result.error}"


class _ProblemPrinter:
    def __init__(self) -> None:
        self.shown = 0
        self._lock = threading.Lock()

    def take(self) -> int:
        with self._lock:
            self.shown += 1
            return self.shown


class PlainReporter:
    """For logs, CI, nohup and cron: a status line every `interval` seconds, nothing redrawn."""

    def __init__(self, stream: TextIO | None = None, interval: float = 5.0) -> None:
        self.stream = stream or sys.stderr
        self.interval = interval
        self._stats: RunStats | None = None
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._problems = _ProblemPrinter()

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def _tick(self) -> None:
        while not self._stopped.wait(self.interval):
            if self._stats is not None:
                self._print(status_line(self._stats))

    def start(self, stats: RunStats) -> None:
        self._stats = stats
        self._thread = threading.Thread(target=self._tick, name="bulk-upload-progress", daemon=True)
        self._thread.start()

    def row_problem(self, result: RowResult) -> None:
        n = self._problems.take()
        if n <= PROBLEM_LINES:
            self._print(problem_line(result))
        elif n == PROBLEM_LINES + 1:
            self._print(more_problems(self._stats))

    def message(self, text: str) -> None:
        self._print(text)

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()
        if self._stats is not None:
            self._print(status_line(self._stats))

    def summary(self, lines: list[str]) -> None:
        for line in lines:
            self._print(line)


class QuietReporter(PlainReporter):
    """--quiet: no progress; problems and the summary still go to stderr."""

    def start(self, stats: RunStats) -> None:
        self._stats = None

    def stop(self) -> None:
        pass


class RichReporter:
    """For a terminal: a live panel redrawn four times a second by rich's own thread.

    rich is imported only here: runs off a terminal never pay for it.
    """

    def __init__(self, console: Console | None = None) -> None:
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self._stats: RunStats | None = None
        self._live: Any = None
        self._problems = _ProblemPrinter()

    def _render(self) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        stats = self._stats
        assert stats is not None
        rows_per_s, bytes_per_s = stats.rates()
        total = stats.total_rows or 0
        cells = [Text(f"{stats.done}/{total or '?'} rows", style="bold"), Text(f"{rows_per_s:.1f} files/s"),
                 Text(f"{bytes_per_s / 1e6:.2f} MB/s"), Text(f"ETA {_duration(stats.eta())}")]
        # The bar takes what the figures leave of the line (at most 30): on an 80-column terminal
        # a fixed bar would push the figures onto a second line or cut them.
        room = self.console.width - sum(cell.cell_len for cell in cells) - 2 * len(cells)
        width = max(5, min(30, room))
        filled = min(width, int(width * stats.done / total)) if total else 0
        bar = Text("━" * filled, style="green") + Text("━" * (width - filled), style="grey35")
        grid = Table.grid(padding=(0, 2))
        grid.add_row(bar, *cells)
        counts = Text.assemble(
            (f"uploaded {stats.uploaded}", "green"), "  ",
            (f"skipped {stats.skipped}", "cyan"), "  ",
            (f"failed {stats.failed}", "red" if stats.failed else ""), "  ",
            (f"invalid {stats.invalid}", "yellow" if stats.invalid else ""), "  ",
            (f"ambiguous {stats.ambiguous}", "magenta" if stats.ambiguous else ""), "  ",
            f"retries {stats.retries}  calls {stats.calls}/{stats.concurrency}  rows busy {stats.in_flight}"
            f"  throttled {stats.throttled}  sent {_size(stats.bytes_sent)}"
            f"  elapsed {_duration(stats.elapsed)}",
        )
        return Group(grid, counts)

    def start(self, stats: RunStats) -> None:
        from rich.live import Live

        self._stats = stats
        self._live = Live(console=self.console, refresh_per_second=4, get_renderable=self._render, transient=False)
        self._live.start()

    def row_problem(self, result: RowResult) -> None:
        from rich.text import Text

        n = self._problems.take()
        if n <= PROBLEM_LINES:
            self.console.print(Text(problem_line(result), style="yellow" if result.status == "invalid" else "red"),
                               soft_wrap=True)
        elif n == PROBLEM_LINES + 1:
            self.console.print(more_problems(self._stats))

    def message(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False, soft_wrap=True)

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def summary(self, lines: list[str]) -> None:
        # soft_wrap: not broken into lines by rich, so a path or the retry command copies whole
        # (the terminal still folds it on screen).
        for line in lines:
            self.console.print(line, highlight=False, markup=False, soft_wrap=True)


def more_problems(stats: RunStats | None) -> str:
    """The line after the first PROBLEM_LINES problem rows: where the rest are (a dry run writes no results file)."""
    if stats is not None and stats.dry_run:
        return "... more problem rows: the summary below counts them by kind (a dry run writes no results file)"
    return "... more problem rows: see the results file"


def make_reporter(*, quiet: bool, stream: TextIO | None = None) -> Reporter:
    """Rich on a terminal, plain lines otherwise, or quiet."""
    stream = stream or sys.stderr
    if quiet:
        return QuietReporter(stream)
    if stream.isatty():
        from rich.console import Console

        return RichReporter(Console(file=stream))
    return PlainReporter(stream)
