"""`bulk-upload report`: one summary over one or more results files (shards, reruns), and
the rows still to do written out as a manifest ready to retry.

The files are folded by bulk_uploader.ledger, as resume reads them: `uploaded` anywhere
wins; otherwise a row's latest line decides, and a `sending` line with no outcome after it
counts as `ambiguous` (UNKNOWN_OUTCOME).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from dataclasses import field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from bulk_uploader.errors import ResultsFileError
from bulk_uploader.ledger import Ledger
from bulk_uploader.records import FrozenRecord, Record, record

if TYPE_CHECKING:  # annotations only: a run loads this module (the dry run's rate) and needs none of them
    from bulk_uploader.keyset import KeySet
    from bulk_uploader.mapping import ColumnMapping
    from bulk_uploader.textfile import TextFormat

IDLE_GAP = 60.0  # seconds between two uploads that count as a pause (runs days apart), not upload time


@record(slots=True)
class UploadRate(FrozenRecord):
    """How fast rows went up, over the time uploads were actually happening."""

    files: int
    bytes: int
    seconds: float

    @property
    def files_per_s(self) -> float:
        return self.files / self.seconds

    @property
    def bytes_per_s(self) -> float:
        return self.bytes / self.seconds

    @classmethod
    def of(cls, stamps: Iterable[str], total_bytes: int) -> UploadRate | None:
        """The rate of uploads finished at these ISO times (any order), or None with too few to tell."""
        return cls.of_times((datetime.fromisoformat(s).timestamp() for s in stamps), total_bytes)

    @classmethod
    def of_times(cls, seconds: Iterable[float], total_bytes: int) -> UploadRate | None:
        """The rate of uploads finished at these POSIX times (any order), or None with too few to tell."""
        times = sorted(seconds)
        active = sum(b - a for a, b in itertools.pairwise(times) if b - a < IDLE_GAP)
        if len(times) < 2 or active <= 0:
            return None
        return cls(len(times), total_bytes, active)


def _rate(ledger: Ledger) -> UploadRate | None:
    return UploadRate.of_times(ledger.finished, ledger.uploaded_bytes)


def measured_rate(results: Path) -> UploadRate | None:
    """The upload rate earlier runs recorded in a results file (None: nothing to measure)."""
    ledger = Ledger()
    try:
        ledger.read(results)
    except (OSError, ResultsFileError):
        return None
    return _rate(ledger)


@record
class Report(Record):
    """What the results files say, row by row."""

    ledger: Ledger = field(default_factory=Ledger)

    @property
    def files(self) -> int:
        return self.ledger.files

    @property
    def lines(self) -> int:
        return self.ledger.lines

    @property
    def unreadable(self) -> int:
        return self.ledger.torn

    def to_retry(self) -> set[str]:
        """Keys whose outcome is not `uploaded`."""
        return self.ledger.to_retry()

    def lines_out(self) -> list[str]:
        ledger = self.ledger
        statuses, codes = ledger.statuses(), ledger.codes()
        out = [f"{self.files} results file(s), {self.lines} lines, {statuses.total()} rows"]
        out.append("by status: " + ", ".join(f"{s} {n}" for s, n in sorted(statuses.items())))
        if codes:
            ranked = sorted(codes.items(), key=lambda item: (-item[1], item[0]))
            out.append("problems by code: " + ", ".join(f"{c} {n}" for c, n in ranked))
        rate = _rate(ledger)
        if rate is not None:
            out.append(f"throughput: {rate.files_per_s:.1f} files/s, {rate.bytes_per_s / 1e6:.2f} MB/s "
                       f"over {rate.seconds:.1f} s of uploads (pauses over {IDLE_GAP:.0f} s left out)")
        out.append(f"uploaded bytes: {ledger.uploaded_bytes / 1e6:.1f} MB")
        if self.unreadable:
            out.append(f"{self.unreadable} unreadable line(s) skipped")
        return out


def summarize(paths: Iterable[Path]) -> Report:
    """Fold results files, in the order given, into one Report."""
    report = Report()
    for path in paths:
        report.ledger.read(path)
    return report


def write_retry_manifest(manifest: Path, uploaded: KeySet, out: Path, mapping: ColumnMapping | None = None,
                         fmt: TextFormat | None = None) -> tuple[int, int]:
    """Write every manifest row not uploaded to `out` (JSONL): those that failed, and those that
    never got a results line (shards that never ran, rows not reached). Returns (rows written,
    rows that cannot be retried as they are: malformed or duplicated in the manifest).

    No file is left when there is nothing to retry. Paths stay relative when `out` is beside
    the manifest, and are made absolute otherwise. Rows read through a mapping are written
    mapped: the retry manifest needs none.
    """
    from bulk_uploader.manifest import read_manifest  # `report --manifest` only

    same_folder = out.resolve().parent == manifest.resolve().parent
    written = unusable = 0
    partial = out.with_name(out.name + ".partial")
    with partial.open("w", encoding="utf-8") as f:
        for row in read_manifest(manifest, mapping, fmt):
            if row.key in uploaded:
                continue
            if row.problem is not None:
                unusable += 1
                continue
            data = dict(row.data)
            data.setdefault("id", row.key)
            if not same_folder:
                for name in ("audio_path", "chat_path"):
                    if isinstance(data.get(name), str):
                        data[name] = str((manifest.parent / data[name]).resolve())
            f.write(json.dumps(data, ensure_ascii=False) + "\n")
            written += 1
    if written:
        partial.replace(out)
    else:
        partial.unlink()
    return written, unusable
