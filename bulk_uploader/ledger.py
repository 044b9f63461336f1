"""Reading results files: one streaming scan of their lines and one fold of them per row key.

Every reader goes through here: resume (load_results), `bulk-upload report` and its retry
manifest, and the dry run's measured upload rate. The scan turns each line into a Line, or
None for a line that cannot be read (a torn write). The fold (Ledger) takes Lines in the
order read, files in the order given, and keeps per row key:

- `uploaded` anywhere wins: every later line for that key is ignored;
- otherwise the latest line decides: an outcome line (`failed`, `invalid`, `ambiguous`, ...)
  is the row's outcome; a `sending` line with no outcome after it means its attempt's
  outcome is unknown (the process died), which counts as `ambiguous` with code
  UNKNOWN_OUTCOME and `unknown_before + 1` attempts that may have stored a talk;
- an `ambiguous` outcome carries its `unknown_outcomes` (at least 1).

Memory grows with the row keys, not the lines: an uploaded row is 8 bytes of hash in a
KeySet plus (for a report) its finish time in an array of floats; a row not uploaded keeps
its key and one (status, code, unknown) tuple shared by every row in the same state. Sharing KeySet's hashes
means a row whose key's 64-bit hash equals an uploaded row's reads as uploaded, the chance
resume has always accepted (about 1 in 10^7 for a million keys).
"""

from __future__ import annotations

import json
import os
import stat
from array import array
from collections import Counter
from collections.abc import Iterator
from dataclasses import field
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from bulk_uploader.errors import ResultsFileError
from bulk_uploader.keyset import KeySet
from bulk_uploader.records import Record, record

SENDING = "sending"  # journal line: an attempt is about to be sent
HEADER = "bulk_upload_ledger"  # the first line's key: the file is a ledger, and where its rows went
UPLOADED = "uploaded"
AMBIGUOUS = "ambiguous"
UNKNOWN_OUTCOME = "UNKNOWN_OUTCOME"  # the code of a row whose last attempt has no outcome line


class Line(NamedTuple):
    """One readable line of a results file: its row key, its status, and the whole line as parsed.

    The other fields are read only where the fold needs them (most lines need none).
    """

    key: str
    status: str
    record: dict[str, Any]

    @property
    def code(self) -> str | None:
        code = self.record.get("code")
        return str(code) if code else None

    @property
    def unknown(self) -> int:
        """Attempts that may have stored a talk: on a `sending` line the ones before it plus
        itself (`unknown_before` + 1); on an outcome line its `unknown_outcomes`."""
        if self.status == SENDING:
            return _count(self.record.get("unknown_before")) + 1
        return _count(self.record.get("unknown_outcomes"))

    @property
    def bytes(self) -> int:
        return _count(self.record.get("bytes"))

    @property
    def finished_at(self) -> float | None:
        """When the row finished, in POSIX seconds (None: not recorded, or not a time)."""
        stamp = self.record.get("finished_at")
        try:
            return datetime.fromisoformat(stamp).timestamp() if isinstance(stamp, str) else None
        except ValueError:
            return None


def _count(value: Any) -> int:
    """A line's numeric field, 0 when absent or not a number: it must not make the line unreadable."""
    if type(value) is int:
        return value
    try:
        return int(value or 0)
    except (TypeError, ValueError, OverflowError):
        return 0


_decode = json.JSONDecoder().decode  # made once; lines are UTF-8, as written (json.loads(bytes) sniffs each)


def parse_line(raw: bytes) -> Line | None:
    """One results line, or None when it has no usable `id` and `status` (a torn write).

    The header line (HEADER) comes back with status HEADER and no key."""
    try:
        record = _decode(raw.decode())
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    if HEADER in record:
        return Line("", HEADER, record)
    if "id" not in record or type(record.get("status")) is not str:
        return None
    return Line(str(record["id"]), record["status"], record)


def scan(path: Path) -> Iterator[Line | None]:
    """Each line of a results file in order: a Line, or None for one that cannot be read.

    Raises FileNotFoundError when there is no such file, ResultsFileError when it is not
    a regular file or cannot be read.
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # before opening: a FIFO would block, a device never end
            raise ResultsFileError(f"results file {path} is not a regular file")
        f = path.open("rb")
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ResultsFileError(f"cannot read results file {path}: {exc.strerror}") from None
    with f:
        try:
            for raw in f:
                yield parse_line(raw)
        except OSError as exc:
            raise ResultsFileError(f"cannot read results file {path}: {exc.strerror}") from None


class RowState(NamedTuple):
    """Where a row not uploaded stands: shared by every row in the same state."""

    status: str
    code: str | None
    unknown: int  # attempts that may have stored a talk (0 for a definite outcome)


class Ledger:
    """Every row key's outcome, folded over the lines of results files in the order read."""

    def __init__(self, *, keep_rate: bool = True) -> None:
        # What an upload rate needs (uploaded rows' sizes and finish times): resume needs
        # none, and reading them costs a time parsed per uploaded row.
        self.keep_rate = keep_rate
        self.uploaded = KeySet()
        self.uploaded_bytes = 0
        self.finished = array("d")  # uploaded rows' finished_at, POSIX seconds, in the order read
        self._open: dict[str, RowState] = {}  # rows not uploaded (so far): their latest state
        self._states: dict[tuple[str, str | None, int], RowState] = {}  # each state once, for rows to share
        self.files = 0
        self.lines = 0
        self.torn = 0  # lines that could not be read
        self.header: dict[str, Any] | None = None  # the first file's header line: where its rows went
        self.foreign: list[Path] = []  # files whose first line is neither a header nor a results line

    def read(self, path: Path) -> None:
        """Fold in one results file (raises as scan() does)."""
        self.files += 1
        add, lines, torn = self.add, 0, 0  # locals: this loop runs once a line
        try:
            for line in scan(path):
                lines += 1
                if line is None:
                    if lines == 1:
                        self.foreign.append(path)
                    torn += 1
                elif line.status == HEADER:
                    if lines == 1 and self.header is None:
                        self.header = line.record
                else:
                    add(line)
        finally:
            self.lines += lines
            self.torn += torn

    def add(self, line: Line) -> None:
        """Fold in one line."""
        key, status = line.key, line.status
        if status == UPLOADED:
            if self.uploaded.add(key) and self.keep_rate:  # the first `uploaded` line's time and size count
                self.uploaded_bytes += line.bytes
                seconds = line.finished_at
                if seconds is not None:
                    self.finished.append(seconds)
            self._open.pop(key, None)
            return
        # A line after the row's `uploaded` one is kept here too, and left out when read
        # (not_uploaded): looking the key up in `uploaded` here would cost more, once a line.
        if status == SENDING:
            state = (AMBIGUOUS, UNKNOWN_OUTCOME, line.unknown)
        elif status == AMBIGUOUS:
            state = (AMBIGUOUS, line.code, line.unknown or 1)
        else:
            state = (status, line.code, 0)
        shared = self._states.get(state)
        if shared is None:
            shared = self._states[state] = RowState(*state)
        self._open[key] = shared

    def not_uploaded(self) -> Iterator[tuple[str, RowState]]:
        """Each row whose outcome is not `uploaded`, with its state."""
        uploaded = self.uploaded
        for key, state in self._open.items():
            if key not in uploaded:
                yield key, state

    def __len__(self) -> int:
        return len(self.uploaded) + sum(1 for _ in self.not_uploaded())

    def statuses(self) -> Counter[str]:
        """Rows by outcome."""
        counts = Counter(state.status for _, state in self.not_uploaded())
        if self.uploaded:
            counts[UPLOADED] = len(self.uploaded)
        return counts

    def codes(self) -> Counter[str]:
        """Rows not uploaded by code (`?` when their line named none)."""
        return Counter(state.code or "?" for _, state in self.not_uploaded())

    def to_retry(self) -> set[str]:
        """Keys whose outcome is not `uploaded`."""
        return {key for key, _ in self.not_uploaded()}

    def unknown(self) -> dict[str, int]:
        """Rows not uploaded whose attempts may have stored a talk: key -> how many such attempts."""
        return {key: state.unknown for key, state in self.not_uploaded() if state.unknown}


@record(slots=True)
class PreviousResults(Record):
    """What earlier runs recorded: the keys already uploaded, and how the file looked."""

    uploaded: KeySet = field(default_factory=KeySet)
    # Rows not uploaded whose attempts may have stored a talk: key -> how many such attempts
    # (a `sending` line with no outcome after it, i.e. the process died, or an `ambiguous` outcome).
    unknown: dict[str, int] = field(default_factory=dict)
    torn_lines: int = 0
    header: dict[str, Any] | None = None  # the file's first line, when it names where its rows went
    foreign: bool = False  # the file's first line is not a results line: it is not a ledger


def load_results(path: Path) -> PreviousResults:
    """What resume needs of a results file (missing: empty); unreadable lines (a torn write) are counted."""
    ledger = Ledger(keep_rate=False)
    try:
        ledger.read(path)
    except FileNotFoundError:
        return PreviousResults()
    return PreviousResults(ledger.uploaded, ledger.unknown(), ledger.torn, ledger.header, bool(ledger.foreign))


def read_records(path: Path, *, journal: bool = False) -> list[dict[str, Any]]:
    """Every readable outcome record of a results file, in order (with `journal`, the `sending` lines too)."""
    return [line.record for line in scan(path)
            if line is not None and line.status != HEADER and (journal or line.status != SENDING)]
