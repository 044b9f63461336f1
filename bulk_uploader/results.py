"""Stage 5: the results file: the journal of attempts and one outcome line per finished row.

Before an attempt is sent, a line `{"id": ..., "status": "sending", "attempt": n, ...}`
records that it started; when the row finishes, one outcome line records `uploaded`,
`failed`, `invalid` or `ambiguous`. So after a crash the next run knows exactly which rows
may have reached the service: those with a `sending` line and no outcome after it.

Each write is a single os.write of whole lines on an O_APPEND descriptor, so a process
killed at any moment leaves whole lines plus at most one torn last line, which the next run
skips. Lines wait for the end of the event loop's turn (a fraction of a millisecond) and
are written together: the journal lines of every attempt that turn and the outcome lines,
in one system call rather than one a row. An attempt leaves only once its `sending` line is
written, and not at all if that write failed. A kill before an outcome line is written
leaves the row as after a kill during its call: the next run treats it as possibly stored.
A row counts as done when any line records it `uploaded`: a rerun skips it and tries
every other row again. Reading the file back (resume, report) is bulk_uploader.ledger.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from bulk_uploader.errors import ResultsFileError
from bulk_uploader.ledger import HEADER, SENDING, PreviousResults, load_results, read_records
from bulk_uploader.model import RowResult, encode_json
from bulk_uploader.records import FrozenRecord, record

# Reading lives in bulk_uploader.ledger; these names stay importable from here.
__all__ = ["SENDING", "Destination", "LedgerLock", "PreviousResults", "ResultsWriter", "attempt_line",
           "check_ledger", "load_results", "read_records"]


def attempt_line(key: str, line: int, attempt: int, unknown_before: int) -> bytes:
    """The journal line written just before an attempt is sent."""
    return (
        f'{{"id": {encode_json(key)}, "status": "{SENDING}", "attempt": {attempt:d}, "line": {line:d}, '
        f'"unknown_before": {unknown_before:d}}}\n'
    ).encode("utf-8")


class ResultsWriter:
    """Appends RowResults to the results file, each as one atomic line."""

    def __init__(self, path: Path, on_error: Callable[[ResultsFileError], None] | None = None,
                 header: bytes = b"") -> None:
        self.path = path
        self.on_error = on_error  # told of a failed write the event loop made (nobody to raise it to)
        self._pending: list[bytes] = []  # outcome lines not yet written
        # Journal lines not yet written, each with the future its attempt waits on before it leaves.
        self._journaled: list[tuple[bytes, asyncio.Future[None]]] = []
        self._flush_soon: asyncio.Handle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            size = os.fstat(self._fd).st_size
        except OSError as exc:
            raise ResultsFileError(f"cannot write results file {path}: {exc.strerror}") from None
        if not size:
            self._write(header)  # a new ledger starts by saying where its rows go
        elif self._ends_torn(size):
            self._write(b"\n")  # a line torn by a kill: the next record starts on a line of its own

    def _ends_torn(self, size: int) -> bool:
        """Whether the file's last byte is not a newline (the descriptor is write-only: read through another)."""
        try:
            with self.path.open("rb") as f:
                f.seek(size - 1)
                return f.read(1) != b"\n"
        except OSError as exc:
            raise ResultsFileError(f"cannot read results file {self.path}: {exc.strerror}") from None

    def write(self, result: RowResult) -> None:
        """Record one finished row, with the other lines of the event loop's turn."""
        self._pending.append(result.to_line())
        self._soon()

    def journal(self, line: bytes) -> asyncio.Future[None]:
        """An attempt's journal line (attempt_line), written with the other lines of the event loop's
        turn: the future is done once it is written, or holds the ResultsFileError of that write."""
        written = self._event_loop().create_future()
        self._journaled.append((line, written))
        self._soon()
        return written

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        """The running event loop, asked for once while it runs (each ask is a getpid system call)."""
        loop = self._loop
        if loop is None or not loop.is_running():  # (none running: RuntimeError, as asking would raise)
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def _soon(self) -> None:
        if self._flush_soon is None:
            try:
                self._flush_soon = self._event_loop().call_soon(self._flush_later)
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

    def flush(self) -> None:
        """Write the lines waiting, in one system call, and tell the attempts whose lines they were."""
        if self._flush_soon is not None:
            self._flush_soon.cancel()
            self._flush_soon = None
        # An attempt cancelled before its line was written never leaves: its line is not written either.
        journaled = [(line, written) for line, written in self._journaled if not written.done()]
        self._journaled.clear()
        self._pending.extend(line for line, _ in journaled)
        error: ResultsFileError | None = None
        if self._pending:
            lines = b"".join(self._pending)
            self._pending.clear()
            try:
                self._write(lines)
            except ResultsFileError as exc:
                error = exc
        for _, written in journaled:
            if error is None:
                written.set_result(None)
            else:
                written.set_exception(error)
                written.exception()  # the attempt raises it; the run is told through on_error as well
        if error is not None:
            raise error

    def _write(self, data: bytes) -> None:
        """Write all of `data`: a short write (a nearly full disk) is carried on, and a failure stops the run."""
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                if written <= 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                view = view[written:]
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



@record(slots=True)
class Destination(FrozenRecord):
    """Where a ledger's rows went: the endpoint and the run's default connections."""

    endpoint: str
    connection_id: str | None = None
    chat_connection_id: str | None = None

    def describe(self) -> str:
        """How messages name it."""
        parts = [f"connection {self.connection_id or '(per row)'}"]
        if self.chat_connection_id:
            parts.append(f"chat connection {self.chat_connection_id}")
        return f"{self.endpoint} ({', '.join(parts)})"

    def header(self) -> bytes:
        """The first line of a new ledger."""
        record = {HEADER: 1, "endpoint": self.endpoint, "connection_id": self.connection_id,
                  "chat_connection_id": self.chat_connection_id,
                  "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        return (encode_json(record) + "\n").encode("utf-8")

    @classmethod
    def of(cls, header: dict[str, object]) -> Destination:
        """The destination a ledger's header names."""
        def text(name: str) -> str | None:
            value = header.get(name)
            return str(value) if value else None
        return cls(text("endpoint") or "?", text("connection_id"), text("chat_connection_id"))


def check_ledger(path: Path, previous: PreviousResults, destination: Destination | None, manifest: Path) -> None:
    """Refuse a results file that is the manifest, is not a ledger, or records another destination (if given)."""
    if path.resolve() == manifest.resolve():
        raise ResultsFileError(f"--results names the manifest {manifest}: the results file must be a file of its own")
    if previous.foreign:
        raise ResultsFileError(f"{path} is not a bulk-upload results file (its first line is not one of ours); "
                               "name a new file with --results, or move that one away")
    if destination is not None and previous.header is not None and Destination.of(previous.header) != destination:
        recorded = Destination.of(previous.header)
        raise ResultsFileError(
            f"results file {path} records uploads to {recorded.describe()}, but this run sends to "
            f"{destination.describe()}: rows uploaded there are not uploaded here. Start a new results file "
            "for this destination with --results NEW_PATH (or move the old one away)")


class LedgerLock:
    """An exclusive lock on a results file for one run, held in `<results>.lock` (it names the holder).

    The lock is the kernel's (flock): it ends with the process that holds it, however that
    process ends, so a run killed by -9 never leaves a ledger locked.
    """

    def __init__(self, results: Path) -> None:
        self.path = results.with_name(results.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise ResultsFileError naming the run that holds it."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ResultsFileError(f"cannot create the lock file {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "another run"
            os.close(fd)
            raise ResultsFileError(f"results file {self.path.with_suffix('')} is in use by {holder}; wait for "
                                   "that run to end, or give this one its own file with --results") from None
        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"run {holder['pid']} on {holder['host']} since {holder['since']}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Let other runs take the ledger."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
