"""`bulk-upload verify`: did every uploaded row's talk arrive with its fields, and how far is its processing?

For every row a results file records `uploaded` (or a stable --sample of them), Get asks
the service for the talk, up to 100 talks a call, within the read budget. Each row ends

    present         the talk holds every metadata field of the row, with the same value
    fields_differ   it holds the talk, but some of the row's fields are missing or differ
    missing         the service holds no talk with the id the results file records

with the talk's processing state (NOT_STARTED, PROCESSING, SUCCESS, FAILED). The report
holds one JSON line per row checked. With `wait`, talks not yet SUCCESS or FAILED are asked
about again every poll interval until they are, or the time limit passes.

Memory: the results files' talk ids are held by row key (about 150 bytes a row: 150 MB
for a million rows); the manifest is read as a stream; with `wait`, the rows still
processing are held until they finish.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import field
from pathlib import Path
from typing import Any, TextIO

from bulk_uploader.clock import SYSTEM_CLOCK, Clock
from bulk_uploader.errors import ConfigError, ResultsFileError, RowInvalid
from bulk_uploader.ledger import HEADER, UPLOADED, scan
from bulk_uploader.lookup import GET_BATCH, Lookup
from bulk_uploader.manifest import read_manifest
from bulk_uploader.mapping import ColumnMapping
from bulk_uploader.model import TalkRecord, differing_fields, encode_json
from bulk_uploader.reads import ReadBudget
from bulk_uploader.records import FrozenRecord, Record, record
from bulk_uploader.stats import ReadStats
from bulk_uploader.validation import talk_fields

PRESENT, FIELDS_DIFFER, MISSING = "present", "fields_differ", "missing"
FINAL_STATES = frozenset({"SUCCESS", "FAILED"})
SHOWN = 20  # rows of each problem named in the summary; the report has them all


def report_path_for(results: Path) -> Path:
    """Default report: beside the results file, `<manifest name>.verify.jsonl`."""
    return results.with_name(results.name.removesuffix(".results.jsonl") + ".verify.jsonl")


def sampled(key: str, fraction: float) -> bool:
    """Whether a row is in a `fraction` sample: a stable hash of its key, unrelated to sharding's."""
    if fraction >= 1.0:
        return True
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8, person=b"bulk-upload-vfy").digest()
    return int.from_bytes(digest, "big") < fraction * 2**64


def uploaded_talks(results: Sequence[Path], endpoint: str) -> dict[str, str]:
    """Row key -> the talk id its first `uploaded` line records, over results files of uploads to `endpoint`."""
    talks: dict[str, str] = {}
    for path in results:
        try:
            lines = scan(path)
            for n, line in enumerate(lines, 1):
                if line is None:
                    continue
                if line.status == HEADER:
                    recorded = line.record.get("endpoint")
                    if n == 1 and recorded and recorded != endpoint:
                        raise ConfigError(f"results file {path} records uploads to {recorded}, not {endpoint}: "
                                          "give --endpoint as the upload had it")
                elif line.status == UPLOADED and line.record.get("talk_id"):
                    talks.setdefault(line.key, str(line.record["talk_id"]))
        except FileNotFoundError:
            raise ResultsFileError(f"no results file {path}: verify checks what an upload recorded") from None
    return talks


@record(kw_only=True)
class VerifyOptions(FrozenRecord):
    """What to verify and how: the manifest and its results files, the sample, the waiting."""

    manifest: Path
    results: Sequence[Path]
    report: Path
    endpoint: str
    mapping: ColumnMapping | None = None
    budget: ReadBudget = ReadBudget()
    sample: float = 1.0  # share of the uploaded rows to check (0 < sample <= 1)
    wait: bool = False  # poll until every talk's processing has ended
    wait_timeout: float = 3600.0  # seconds the polling may take in all
    poll_interval: float = 60.0  # seconds between polls

    def __post_init__(self) -> None:
        if not 0.0 < self.sample <= 1.0:
            raise ConfigError(f"--sample must be above 0 and at most 1, not {self.sample:g}")
        if self.wait_timeout < 0 or self.poll_interval <= 0:
            raise ConfigError("--wait-timeout must not be negative and --poll-interval must be positive")


@record(slots=True)
class RowCheck(Record):
    """One row's check, as its report line says."""

    id: str
    line: int
    talk_id: str
    fields: dict[str, str]
    status: str = ""
    processing_state: str | None = None
    differing_keys: list[str] = field(default_factory=list)

    def __init__(self, id: str, line: int, talk_id: str, fields: dict[str, str], status: str = "",
                 processing_state: str | None = None, differing_keys: list[str] | None = None) -> None:
        # Made once a row checked (bulk_uploader.records).
        self.id = id
        self.line = line
        self.talk_id = talk_id
        self.fields = fields
        self.status = status
        self.processing_state = processing_state
        self.differing_keys = [] if differing_keys is None else differing_keys

    def record(self) -> dict[str, Any]:
        """The report line's fields."""
        out: dict[str, Any] = {"id": self.id, "talk_id": self.talk_id, "status": self.status,
                               "processing_state": self.processing_state, "line": self.line}
        if self.differing_keys:
            out["differing_keys"] = self.differing_keys
        return out


@record
class VerifySummary(Record):
    """How a verify ended; `lines()` is the text printed."""

    report: Path
    budget: str
    reads: ReadStats = field(default_factory=ReadStats)
    counts: Counter[str] = field(default_factory=Counter)  # rows by status
    states: Counter[str] = field(default_factory=Counter)  # talks by processing state
    shown: dict[str, list[RowCheck]] = field(default_factory=dict)  # the first rows of each problem
    unreadable: int = 0  # rows whose metadata the manifest no longer holds in a readable form
    not_in_manifest: int = 0  # rows recorded uploaded that the manifest does not have
    unfinished: int = 0  # with wait: talks still processing when the time limit passed
    waited: bool = False
    elapsed: float = 0.0
    interrupted: bool = False
    failure: str | None = None  # why the verify stopped part-way

    @property
    def checked(self) -> int:
        return sum(self.counts.values())

    @property
    def exit_code(self) -> int:
        """0 when every row checked is present with its fields (and, waiting, processed: SUCCESS)."""
        if self.failure:
            return 3
        if self.interrupted:
            return 130
        bad = self.counts[MISSING] or self.counts[FIELDS_DIFFER] or self.unreadable
        processing = self.waited and (self.states["FAILED"] or self.unfinished)
        return 1 if bad or processing else 0

    def note(self, row: RowCheck) -> None:
        """Count a finished row, and keep it to show if it is a problem."""
        self.counts[row.status] += 1
        self.states[row.processing_state or "none (missing)"] += 1
        for problem in (row.status, f"processing {row.processing_state}"):
            if problem in (MISSING, FIELDS_DIFFER, "processing FAILED"):
                shown = self.shown.setdefault(problem, [])
                if len(shown) < SHOWN:
                    shown.append(row)

    def lines(self) -> list[str]:
        """The closing text."""
        head = "Stopped" if self.failure else "Interrupted" if self.interrupted else "Verified"
        out = [f"stopped: {self.failure}"] if self.failure else []
        out.append(f"{head} {self.checked} row(s) in {self.elapsed:.1f} s: present {self.counts[PRESENT]}, "
                   f"missing {self.counts[MISSING]}, fields_differ {self.counts[FIELDS_DIFFER]}")
        out.append("processing: " + ", ".join(f"{state} {n}" for state, n in self.states.most_common()))
        if self.unfinished:
            out.append(f"still processing when the wait ended: {self.unfinished} talk(s)")
        for problem, rows in self.shown.items():
            out.append(f"{problem} (the first {len(rows)}; every one is in the report):")
            out += [f"  {r.id} (line {r.line}): talk {r.talk_id}"
                    + (f", differing keys: {', '.join(r.differing_keys)}" if r.differing_keys else "") for r in rows]
        if self.unreadable:
            out.append(f"rows whose metadata the manifest no longer holds readably: {self.unreadable} (not checked)")
        if self.not_in_manifest:
            out.append(f"rows recorded uploaded that the manifest does not have: {self.not_in_manifest} (not checked)")
        out.append(f"reads: {self.reads.total} (Search {self.reads.searches}, Get {self.reads.gets}), refused by the "
                   f"service {self.reads.refused}; budget {self.budget}")
        out.append(f"report: {self.report}")
        return out


def estimate(rows: int, options: VerifyOptions) -> str:
    """What checking `rows` rows costs in reads, and the least time that takes at the budget."""
    reads = math.ceil(rows / GET_BATCH)
    text = (f"verify: {rows} uploaded row(s) to check: {reads} Get read(s), at least "
            f"{_duration(options.budget.seconds_for(reads))} at the read budget {options.budget.describe()}")
    if options.wait:
        text += (f"; waiting, one more Get per {GET_BATCH} talks still processing every "
                 f"{_duration(options.poll_interval)}, for at most {_duration(options.wait_timeout)}")
    return text


def _duration(seconds: float) -> str:
    seconds = math.ceil(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days} d"] * bool(days) + [f"{hours} h"] * bool(hours) + [f"{minutes} min"] * bool(minutes)
    return " ".join(parts[:2]) if parts else f"{secs} s"


class Verifier:
    """Checks the rows in batches; `summary` is kept up to date, so an interrupted verify still reports."""

    def __init__(self, options: VerifyOptions, lookup: Lookup, echo: Callable[[str], None],
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.options = options
        self.lookup = lookup
        self.echo = echo
        self.clock = clock
        self.summary = VerifySummary(options.report, options.budget.describe(), lookup.stats, waited=options.wait)
        self.waiting: dict[str, RowCheck] = {}  # with wait: rows whose talks are still processing, by key
        self._out: TextIO | None = None

    async def run(self, talks: dict[str, str]) -> VerifySummary:
        """Check every sampled row of `talks` (row key -> talk id; emptied as rows are found)."""
        started = self.clock.monotonic()
        try:
            with self.options.report.open("w", encoding="utf-8") as self._out:
                try:
                    for batch in self._batches(talks):
                        await self._check(batch)
                    self.summary.not_in_manifest = sum(1 for key in talks if sampled(key, self.options.sample))
                    if self.options.wait:
                        await self._wait()
                finally:
                    self.summary.unfinished = len(self.waiting)
                    self._write(list(self.waiting.values()))
        except OSError as exc:
            raise ResultsFileError(f"cannot write the report {self.options.report}: {exc.strerror}") from None
        finally:
            self.summary.elapsed = self.clock.monotonic() - started
        return self.summary

    def _batches(self, talks: dict[str, str]) -> Iterator[list[RowCheck]]:
        """The manifest's rows recorded uploaded (and sampled), GET_BATCH at a time."""
        batch: list[RowCheck] = []
        for row in read_manifest(self.options.manifest, self.options.mapping):
            talk_id = talks.pop(row.key, None) if row.problem is None else None
            if talk_id is None or not sampled(row.key, self.options.sample):
                continue
            try:
                batch.append(RowCheck(row.key, row.line, talk_id, talk_fields(row.data)))
            except RowInvalid:
                self.summary.unreadable += 1
                continue
            if len(batch) == GET_BATCH:
                yield batch
                batch = []
        if batch:
            yield batch

    async def _check(self, batch: list[RowCheck]) -> None:
        found = await self.lookup.get([row.talk_id for row in batch])
        done = []
        for row in batch:
            self._compare(row, found.get(row.talk_id))
            if self.options.wait and row.status != MISSING and row.processing_state not in FINAL_STATES:
                self.waiting[row.id] = row
            else:
                done.append(row)
        self._write(done)

    @staticmethod
    def _compare(row: RowCheck, talk: TalkRecord | None) -> None:
        if talk is None:
            row.status = MISSING
            return
        row.differing_keys = differing_fields(row.fields, talk.fields)
        row.status = FIELDS_DIFFER if row.differing_keys else PRESENT
        row.processing_state = talk.processing_state
        row.fields = {}  # compared: a row held while its talk processes keeps no more than its outcome

    async def _wait(self) -> None:
        """Ask again about the talks still processing, every poll interval, until none is or time is up."""
        deadline = self.clock.monotonic() + self.options.wait_timeout
        while self.waiting and (left := deadline - self.clock.monotonic()) > 0:
            pause = min(self.options.poll_interval, left)
            self.echo(f"waiting: {len(self.waiting)} talk(s) still processing; next look in {_duration(pause)}")
            await self.clock.sleep(pause)
            rows = list(self.waiting.values())
            for start in range(0, len(rows), GET_BATCH):
                batch = rows[start:start + GET_BATCH]
                found = await self.lookup.get([row.talk_id for row in batch])
                finished = []
                for row in batch:
                    if row.talk_id in found:  # a talk gone since its first look keeps what was seen then
                        row.processing_state = found[row.talk_id].processing_state
                    if row.processing_state in FINAL_STATES:
                        finished.append(self.waiting.pop(row.id))
                self._write(finished)

    def _write(self, rows: list[RowCheck]) -> None:
        assert self._out is not None
        for row in rows:
            self.summary.note(row)
            self._out.write(encode_json(row.record()) + "\n")
        self._out.flush()

    def count_sampled(self, talks: dict[str, str]) -> int:
        """How many of `talks` the sample takes."""
        return sum(1 for key in talks if sampled(key, self.options.sample))

