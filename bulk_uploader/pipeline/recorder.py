"""The recorder: the only writer of the results file, and the keeper of the run's outcome counts.

Senders tell it two things: an attempt is about to leave (a `sending` journal line,
written before the call), and a row has finished (its outcome line, counted in the
stats, shown when it is a problem).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from bulk_uploader.errors import ResultsFileError
from bulk_uploader.model import Job, RowResult
from bulk_uploader.progress import Reporter
from bulk_uploader.results import ResultsWriter, attempt_line
from bulk_uploader.stats import RunStats

SAMPLES_PER_CODE = 3  # problem rows of each kind named in the summary


class Recorder:
    """Writes the ledger and counts outcomes; `problems` keeps the first rows of each problem kind."""

    def __init__(self, stats: RunStats, reporter: Reporter, *, dedupe: bool) -> None:
        self.stats = stats
        self.reporter = reporter
        self.dedupe = dedupe  # re-sends after an unknown outcome were checked by Search, so none is a duplicate
        self.problems: dict[str, list[RowResult]] = {}
        self.writer: ResultsWriter | None = None  # None: a dry run, which writes nothing

    def open(self, path: Path, on_error: Callable[[ResultsFileError], None], header: bytes) -> None:
        """Start appending to the results file (a new one starts with `header`); `on_error` is told of a
        write the event loop could not make."""
        self.writer = ResultsWriter(path, on_error=on_error, header=header)

    def journal(self, job: Job, result: RowResult) -> Awaitable[None]:
        """An attempt of `job` is about to leave: what to await until that is written down (it raises
        ResultsFileError when it cannot be: then the attempt must not leave)."""
        if self.writer is None:
            return _written()
        return self.writer.journal(attempt_line(job.key, job.line, result.attempts, result.unknown_outcomes))

    def record(self, result: RowResult) -> None:
        """A row has finished: count it, show it if it is a problem, and append its outcome line."""
        stats = self.stats
        if result.status == "uploaded":
            stats.uploaded += 1
            stats.bytes_uploaded += result.bytes
            if result.reconciled:
                stats.reconciled += 1
            elif result.unknown_outcomes and not self.dedupe:
                stats.resent_after_unknown += 1
                stats.possible_duplicates += result.unknown_outcomes
        else:
            self._problem(result)
        if self.writer is not None:
            self.writer.write(result)

    def _problem(self, result: RowResult) -> None:
        stats = self.stats
        if result.status == "failed":
            stats.failed += 1
        elif result.status == "ambiguous":
            stats.ambiguous += 1
        else:
            stats.invalid += 1
        code = result.code or "UNKNOWN"
        stats.codes[code] += 1
        samples = self.problems.setdefault(code, [])
        if len(samples) < SAMPLES_PER_CODE:
            samples.append(result)
        self.reporter.row_problem(result)

    def close(self) -> ResultsFileError | None:
        """Write what waits and close the file; the error, if the last write failed."""
        if self.writer is None:
            return None
        try:
            self.writer.close()
        except ResultsFileError as exc:
            return exc
        return None


async def _written() -> None:
    """Nothing to write down (no results file)."""


def internal_error(key: str, line: int, audio_path: str | None, exc: Exception, unknown: int = 0) -> RowResult:
    """The outcome of a row whose handling met an unexpected error (a bug): INTERNAL, with the error.

    A row that may have reached the service before the error is `ambiguous`, never `failed`.
    """
    status = "ambiguous" if unknown else "failed"
    return RowResult(key, status, line=line, audio_path=audio_path, code="INTERNAL", unknown_outcomes=unknown,
                     error=f"unexpected error while handling this row: {type(exc).__name__}: {exc} "
                           "(a fault of bulk-upload; please report it with this line)")
