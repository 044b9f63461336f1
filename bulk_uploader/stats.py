"""Counters of a run, shared by the pipeline (which writes them) and the reporters (which read them)."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import field

from bulk_uploader.records import Record, record


@record
class ReadStats(Record):
    """Reads (Search and Get) a run or a verify made, and how the service answered them."""

    searches: int = 0
    gets: int = 0
    refused: int = 0  # refused by the service for its quota (RESOURCE_EXHAUSTED): waited for, never failed a row

    @property
    def total(self) -> int:
        """Read calls made, refused ones included."""
        return self.searches + self.gets


@record
class RunStats(Record):
    """Plain counters; reporters read them from their own thread without locking (ints only)."""

    dry_run: bool = False  # nothing is sent and no results file is written
    total_rows: int | None = None  # estimated from the manifest before the run
    skipped: int = 0  # uploaded by an earlier run
    uploaded: int = 0
    failed: int = 0
    invalid: int = 0
    ambiguous: int = 0  # may or may not be stored (unknown outcome, not settled this run)
    valid: int = 0  # dry run: rows that passed every check
    valid_bytes: int = 0  # dry run: their audio bytes
    formats: Counter[str] = field(default_factory=Counter)  # dry run: valid rows by format (wav, mp3, chat)
    converted: Counter[str] = field(default_factory=Counter)  # rows converted (dry run: to be), by source format
    bytes_sent: int = 0  # audio bytes put on the wire, retries included
    bytes_uploaded: int = 0  # bytes of rows uploaded in this run
    retries: int = 0  # tries again after a failure (a lost answer, below, aside)
    lost_answers: int = 0  # streams ended early whose answer gRPC lost (grpc#36066), sent again: nothing was stored
    in_flight: int = 0  # rows being worked on (waiting for a slot, a backoff or a Search included)
    calls: int = 0  # upload calls on the wire now
    concurrency: int = 0  # calls allowed in flight now (lowered by throttling)
    throttled: int = 0  # RESOURCE_EXHAUSTED answers
    overruns: int = 0  # calls out of time while none went through (each may lower the concurrency)
    reads: ReadStats = field(default_factory=ReadStats)  # Search and Get calls settling unknown outcomes
    settling: int = 0  # rows waiting now for a batch of reads to settle them
    settled: int = 0  # rows whose unknown outcome a batch of reads settled (found, or known not stored)
    not_stored: int = 0  # of those, rows the reads found not stored (sent again)
    reconciled: int = 0  # rows found stored by Search instead of being sent again
    resent_after_unknown: int = 0  # rows uploaded again after an unknown outcome, no dedupe key
    possible_duplicates: int = 0  # talks those re-sends may have duplicated
    token_refreshes: int = 0
    nothing_left: bool = False  # every row was uploaded before (or there is none): the service was not contacted
    empty: str = ""  # the run found no row at all: whose rows (the manifest's, or a shard's) there were none of
    outages: int = 0  # times the service could not be reached
    outage_seconds: float = 0.0  # how long, in all
    unreachable_since: float | None = None  # monotonic time the current outage began
    reconnects: int = 0  # connections that stalled, each replaced by a new one
    connections: int = 0  # connections to the service at the end of the run
    refused_streams: int = 0  # calls a full connection refused, sent again at once on one with room (no retry)
    stream_limit: int = 0  # calls one connection took at once, as its refusals showed (0: none refused)
    blocked: dict[str, str] = field(default_factory=dict)  # connection -> the refusal that stopped its rows
    not_sent: int = 0  # rows left unsent (and unrecorded) because their connection was refused alike
    cut_off: int = 0  # rows whose calls were cancelled by an abort (second Ctrl-C, grace over, a run-wide failure)
    codes: Counter[str] = field(default_factory=Counter)  # failed and invalid rows by code
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def done(self) -> int:
        """Rows finished in this run, or skipped as finished before."""
        return self.skipped + self.uploaded + self.failed + self.invalid + self.ambiguous + self.valid

    @property
    def elapsed(self) -> float:
        """Seconds since the run started (until it finished)."""
        return (self.finished or time.monotonic()) - self.started

    def rates(self) -> tuple[float, float]:
        """Rows per second and bytes per second over the run so far (skipped rows excluded)."""
        elapsed = max(self.elapsed, 1e-6)
        return (self.done - self.skipped) / elapsed, self.bytes_sent / elapsed

    def eta(self) -> float | None:
        """Seconds left at the current row rate, if it can be told."""
        rows_per_s, _ = self.rates()
        if self.total_rows is None or rows_per_s <= 0:
            return None
        return max(0, self.total_rows - self.done) / rows_per_s
