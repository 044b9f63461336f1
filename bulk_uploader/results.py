"""Stage 5: the results file: the journal of attempts and one outcome line per finished row.

Before an attempt is sent, a line `{"id": ..., "status": "sending", "attempt": n, ...}`
records that it started; when the row finishes, one outcome line records `uploaded`,
`failed`, `invalid` or `ambiguous`. So after a crash the next run knows exactly which rows
may have reached the service: those with a `sending` line and no outcome after it.

Each write is a single os.write of whole lines on an O_APPEND descriptor, so a process
killed at any moment leaves whole lines plus at most one torn last line, which the next run
skips. A `sending` line is written before its call leaves; outcome lines wait for the next
write or the end of the event loop's turn, whichever comes first (a fraction of a
millisecond), so most rows cost one system call rather than two. A kill in that moment
leaves the row as after a kill during its call: the next run treats it as possibly stored.
A row counts as done when any line records it `uploaded`: a rerun skips it and tries
every other row again. Reading the file back (resume, report) is bulk_uploader.ledger.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Callable

from bulk_uploader.errors import ResultsFileError
from bulk_uploader.ledger import SENDING, PreviousResults, load_results, read_records
from bulk_uploader.model import RowResult, encode_json

# Reading lives in bulk_uploader.ledger; these names stay importable from here.
__all__ = ["SENDING", "PreviousResults", "ResultsWriter", "attempt_line", "load_results", "read_records"]


def attempt_line(key: str, line: int, attempt: int, unknown_before: int) -> bytes:
    """The journal line written just before an attempt is sent."""
    return (
        f'{{"id": {encode_json(key)}, "status": "{SENDING}", "attempt": {attempt:d}, "line": {line:d}, '
        f'"unknown_before": {unknown_before:d}}}\n'
    ).encode("utf-8")


class ResultsWriter:
    """Appends RowResults to the results file, each as one atomic line."""

    def __init__(self, path: Path, on_error: Callable[[ResultsFileError], None] | None = None) -> None:
        self.path = path
        self.on_error = on_error  # told of a failed write the event loop made (nobody to raise it to)
        self._pending: list[bytes] = []  # outcome lines not yet written
        self._flush_soon: asyncio.Handle | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            # A file ending in a torn line (killed mid-write) gets a newline, so the
            # next record starts on a line of its own.
            size = os.fstat(self._fd).st_size
            if size:
                with path.open("rb") as f:
                    f.seek(size - 1)
                    if f.read(1) != b"\n":
                        os.write(self._fd, b"\n")
        except OSError as exc:
            raise ResultsFileError(f"cannot write results file {path}: {exc.strerror}") from None

    def write(self, result: RowResult) -> None:
        """Record one finished row: with the next journal line, or at the end of the event loop's turn."""
        self._pending.append(result.to_line())
        if self._flush_soon is None:
            try:
                self._flush_soon = asyncio.get_running_loop().call_soon(self._flush_later)
            except RuntimeError:  # no event loop: write it now
                self.flush()

    def _flush_later(self) -> None:
        self._flush_soon = None
        try:
            self.flush()
        except ResultsFileError as exc:
            if self.on_error is None:
                raise
            self.on_error(exc)

    def write_record(self, line: bytes) -> None:
        """Append one already-encoded line now, with the outcome lines waiting to be written."""
        self._pending.append(line)
        self.flush()

    def flush(self) -> None:
        """Write the lines waiting, in one system call."""
        if self._flush_soon is not None:
            self._flush_soon.cancel()
            self._flush_soon = None
        if self._pending:
            line = b"".join(self._pending)
            self._pending.clear()
            self._write(line)

    def _write(self, data: bytes) -> None:
        try:
            os.write(self._fd, data)
        except OSError as exc:
            raise ResultsFileError(f"cannot write results file {self.path}: {exc.strerror}; stopped, as outcomes "
                                   "can no longer be recorded (the next run settles the rows in flight)") from None

    def close(self) -> None:
        """Write what waits, flush to disk and close."""
        try:
            self.flush()
        finally:
            try:
                os.fsync(self._fd)
            except OSError:
                pass
            os.close(self._fd)

