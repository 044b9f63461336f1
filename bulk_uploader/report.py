"""`bulk-upload report`: one summary over one or more results files (shards, reruns), and
the rows still to do written out as a manifest ready to retry.

A row's outcome is its best across files: `uploaded` anywhere wins; otherwise its latest
line. Journal lines (`sending`) count as `ambiguous` when no outcome follows them.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bulk_uploader.manifest import read_manifest
from bulk_uploader.mapping import ColumnMapping
from bulk_uploader.results import SENDING
from bulk_uploader.textfile import TextFormat

IDLE_GAP = 60.0  # seconds between two uploads that count as a pause (runs days apart), not upload time


@dataclass(frozen=True, slots=True)
class UploadRate:
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
        times = sorted(datetime.fromisoformat(s).timestamp() for s in stamps)
        active = sum(b - a for a, b in itertools.pairwise(times) if b - a < IDLE_GAP)
        if len(times) < 2 or active <= 0:
            return None
        return cls(len(times), total_bytes, active)


def measured_rate(results: Path) -> UploadRate | None:
    """The upload rate an earlier run recorded in a results file (None: nothing to measure)."""
    stamps, total = [], 0
    try:
        with results.open("rb") as f:
            for raw in f:
                if b'"uploaded"' not in raw:
                    continue
                try:
                    record = json.loads(raw)
                except ValueError:
                    continue
                if record.get("status") == "uploaded" and record.get("finished_at"):
                    stamps.append(record["finished_at"])
                    total += int(record.get("bytes") or 0)
    except OSError:
        return None
    return UploadRate.of(stamps, total)


@dataclass
class Report:
    """What the results files say, row by row."""

    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> deciding record
    files: int = 0
    lines: int = 0
    unreadable: int = 0

    @property
    def statuses(self) -> Counter[str]:
        return Counter(r["status"] for r in self.outcomes.values())

    @property
    def codes(self) -> Counter[str]:
        return Counter(r.get("code") or "?" for r in self.outcomes.values() if r["status"] != "uploaded")

    def to_retry(self) -> set[str]:
        """Keys whose best outcome is not `uploaded`."""
        return {key for key, record in self.outcomes.items() if record["status"] != "uploaded"}

    def lines_out(self) -> list[str]:
        uploaded = [r for r in self.outcomes.values() if r["status"] == "uploaded"]
        stamps = [r["finished_at"] for r in uploaded if r.get("finished_at")]
        out = [f"{self.files} results file(s), {self.lines} lines, {len(self.outcomes)} rows"]
        out.append("by status: " + ", ".join(f"{s} {n}" for s, n in sorted(self.statuses.items())))
        if self.codes:
            out.append("problems by code: " + ", ".join(f"{c} {n}" for c, n in self.codes.most_common()))
        total = sum(int(r.get("bytes") or 0) for r in uploaded)
        rate = UploadRate.of(stamps, total)
        if rate is not None:
            out.append(f"throughput: {rate.files_per_s:.1f} files/s, {rate.bytes_per_s / 1e6:.2f} MB/s "
                       f"over {rate.seconds:.1f} s of uploads (pauses over {IDLE_GAP:.0f} s left out)")
        out.append(f"uploaded bytes: {total / 1e6:.1f} MB")
        if self.unreadable:
            out.append(f"{self.unreadable} unreadable line(s) skipped")
        return out


def summarize(paths: Iterable[Path]) -> Report:
    """Merge results files into one Report."""
    report = Report()
    for path in paths:
        report.files += 1
        with path.open("rb") as f:
            for raw in f:
                report.lines += 1
                try:
                    record = json.loads(raw)
                    key, status = str(record["id"]), record["status"]
                except (ValueError, KeyError, TypeError):
                    report.unreadable += 1
                    continue
                current = report.outcomes.get(key)
                if current is not None and current["status"] == "uploaded":
                    continue
                if status == SENDING:
                    if current is None or current["status"] == SENDING or current["status"] == "ambiguous":
                        report.outcomes[key] = {**record, "status": "ambiguous", "code": "UNKNOWN_OUTCOME"}
                    continue
                report.outcomes[key] = record
    return report


def write_retry_manifest(manifest: Path, keys: set[str], out: Path, mapping: ColumnMapping | None = None,
                         fmt: TextFormat | None = None) -> int:
    """Write the manifest rows with these keys to `out` (JSONL); returns how many were written.

    Paths stay relative when `out` is beside the manifest, and are made absolute otherwise.
    Rows read through a mapping are written mapped: the retry manifest needs none.
    """
    same_folder = out.resolve().parent == manifest.resolve().parent
    written = 0
    with out.open("w", encoding="utf-8") as f:
        for row in read_manifest(manifest, mapping, fmt):
            if row.key not in keys or row.problem is not None:
                continue
            data = dict(row.data)
            data.setdefault("id", row.key)
            if not same_folder:
                for name in ("audio_path", "chat_path"):
                    if isinstance(data.get(name), str):
                        data[name] = str((manifest.parent / data[name]).resolve())
            f.write(json.dumps(data, ensure_ascii=False) + "\n")
            written += 1
    return written
