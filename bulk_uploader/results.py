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
every other row again.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from bulk_uploader.errors import ResultsFileError
from bulk_uploader.model import KeySet, RowResult, encode_json

SENDING = "sending"  # journal line: an attempt is about to be sent


def attempt_line(key: str, line: int, attempt: int, unknown_before: int) -> bytes:
    """The journal line written just before an attempt is sent."""
    return (
        f'{{"id": {encode_json(key)}, "status": "{SENDING}", "attempt": {attempt:d}, "line": {line:d}, '
        f'"unknown_before": {unknown_before:d}}}\n'
    ).encode("utf-8")


@dataclass(slots=True)
class PreviousResults:
    """What earlier runs recorded: the keys already uploaded, and how the file looked."""

    uploaded: KeySet = field(default_factory=KeySet)
    # Rows not uploaded whose attempts may have stored a talk: key -> how many such attempts
    # (a `sending` line with no outcome after it, i.e. the process died, or an `ambiguous` outcome).
    unknown: dict[str, int] = field(default_factory=dict)
    torn_lines: int = 0


def load_results(path: Path) -> PreviousResults:
    """Read a results file (missing: empty); unreadable lines (a torn write) are skipped and counted."""
    previous = PreviousResults()
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # before opening: a FIFO would block, a device never end
            raise ResultsFileError(f"results file {path} is not a regular file")
        f = path.open("rb")
    except FileNotFoundError:
        return previous
    except OSError as exc:
        raise ResultsFileError(f"cannot read results file {path}: {exc.strerror}") from None
    with f:
        for raw in f:
            try:
                record = json.loads(raw)
                key, status = record["id"], record["status"]
            except (ValueError, KeyError, TypeError):
                previous.torn_lines += 1
                continue
            key = str(key)
            if status == SENDING:
                previous.unknown[key] = int(record.get("unknown_before") or 0) + 1
                continue
            if status == "uploaded":
                previous.uploaded.add(key)
                previous.unknown.pop(key, None)
            elif status == "ambiguous":
                previous.unknown[key] = int(record.get("unknown_outcomes") or 1)
            else:
                previous.unknown.pop(key, None)
    for key in [k for k in previous.unknown if k in previous.uploaded]:
        del previous.unknown[key]
    return previous


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


def read_records(path: Path, *, journal: bool = False) -> list[dict[str, Any]]:
    """Every readable outcome record of a results file (with `journal`, the `sending` lines too)."""
    records = []
    with path.open("rb") as f:
        for raw in f:
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if journal or record.get("status") != SENDING:
                records.append(record)
    return records
