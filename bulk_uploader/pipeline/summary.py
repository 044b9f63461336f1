"""RunSummary: how a run ended, and the closing text the CLI prints."""

from __future__ import annotations

from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING

from bulk_uploader.errors import BulkUploadError
from bulk_uploader.model import RowResult
from bulk_uploader.records import Record, record
from bulk_uploader.results import PreviousResults
from bulk_uploader.stats import RunStats

if TYPE_CHECKING:
    from bulk_uploader.report import UploadRate  # a dry run's, which loads the report module to measure it


@record
class RunSummary(Record):
    """How a run ended."""

    stats: RunStats
    results_path: str
    previous: PreviousResults
    problems: dict[str, list[RowResult]] = field(default_factory=dict)  # code -> its first rows
    interrupted: bool = False
    dry_run: bool = False
    rate: UploadRate | None = None  # dry run: measured by earlier runs, for the time estimate
    given_rate: float = 0.0  # dry run: --estimate-rate, files/s
    problems_path: str | None = None  # dry run: the file every problem row was written to
    failure: BulkUploadError | None = None  # what stopped the run part-way, for every row alike
    read_budget: str | None = None  # with --dedupe-key: the reads this run was allowed, described

    @property
    def exit_code(self) -> int:
        """0 all rows uploaded (now or before), 1 some failed or invalid, 3 stopped part-way by
        a failure every row shares (credentials, results file), 130 interrupted."""
        if self.failure is not None:
            return 3
        if self.interrupted:
            return 130
        return 1 if self.stats.failed or self.stats.invalid or self.stats.ambiguous else 0

    def lines(self, retry_command: str | None = None) -> list[str]:
        """The closing summary, as lines of text."""
        out = [f"stopped: {self.failure}"] if self.failure is not None else []
        out += self._dry_run_lines() if self.dry_run else self._outcome_lines()
        out += self._notes()
        if self.previous.torn_lines:
            out.append(f"results file had {self.previous.torn_lines} unreadable line(s) (a torn write); ignored")
        if not self.dry_run:
            out.append(f"results: {self.results_path}")
        elif self.problems_path:
            out.append(f"every problem row, with its line and reason: {self.problems_path}")
        if retry_command and (self.problems or self.interrupted or self.failure) and not self.dry_run:
            out.append(f"to try the rest again, run the same command: {retry_command}")
        return out

    def _outcome_lines(self) -> list[str]:
        s = self.stats
        rows_per_s, bytes_per_s = s.rates()
        head = "Stopped" if self.failure else "Interrupted" if self.interrupted else "Finished"
        return [
            f"{head} in {s.elapsed:.2f} s: uploaded {s.uploaded}, skipped (done before) {s.skipped}, "
            f"failed {s.failed}, invalid {s.invalid}" + (f", ambiguous {s.ambiguous}" if s.ambiguous else ""),
            f"throughput: {rows_per_s:.1f} files/s, {bytes_per_s / 1e6:.2f} MB/s, "
            f"{s.bytes_uploaded / 1e6:.1f} MB uploaded, {s.retries} retries",
        ] + ([f"converted on the way: {sum(s.converted.values())} row(s): "
              + ", ".join(f"{name} {n}" for name, n in s.converted.most_common())] if s.converted else [])

    def _notes(self) -> list[str]:
        s = self.stats
        out = []
        if s.empty:
            out.append(f"{s.empty}: nothing to send" + (", so the service was not contacted" if s.nothing_left else ""))
        elif s.nothing_left:
            out.append("every row was uploaded before: nothing to send, so the service was not contacted")
        if s.throttled:
            out.append(f"throttled {s.throttled} time(s); concurrency ended at {s.concurrency}")
        if s.overruns:
            out.append(f"calls out of time while none went through: {s.overruns}; the concurrency was lowered "
                       f"and ended at {s.concurrency} (more was in flight than the link or the service carried)")
        if s.settled:
            out.append(f"settled by reads after an unknown outcome: {s.settled} time(s); {s.reconciled} row(s) found "
                       f"stored (not sent again), {s.not_stored} time(s) found not stored (sent again)")
        if self.read_budget is not None:
            out.append(f"reads: {s.reads.total} (Search {s.reads.searches}, Get {s.reads.gets}), refused by the "
                       f"service {s.reads.refused}; budget {self.read_budget}")
        if s.outages:
            out.append(f"service unreachable {s.outages} time(s), {s.outage_seconds:.0f} s in all: rows waited, "
                       "none failed for it")
        if s.lost_answers:
            out.append(f"streams the service ended before their last chunk, whose answer gRPC lost (grpc#36066): "
                       f"{s.lost_answers}, each sent again (nothing had been stored); not counted as retries")
        if s.reconnects:
            out.append(f"connections stalled with calls in flight: {s.reconnects}, each replaced by a new one")
        if s.refused_streams:
            out.append(f"the service refused calls beyond about {s.stream_limit} at once on a connection: "
                       f"{s.refused_streams} call(s) it refused were sent again at once on a connection "
                       f"with room ({s.connections} connection(s))")
        for connection, refusal in s.blocked.items():
            out.append(f"connection {connection}: the service refused its rows alike ({refusal}); "
                       "its other rows were not sent and have no outcome line: fix that, then run again")
        if s.not_sent:
            out.append(f"not sent: {s.not_sent} row(s) of refused connections (the next run takes them)")
        if s.token_refreshes:
            out.append(f"IAM token refreshed after a refusal: {s.token_refreshes} time(s)")
        if s.resent_after_unknown:
            out.append(
                f"possible duplicates: {s.possible_duplicates} talk(s) from {s.resent_after_unknown} row(s) re-sent "
                "after an unknown outcome (use --dedupe-key to rule them out)"
            )
        if s.ambiguous:
            out.append(f"ambiguous: {s.ambiguous} row(s) may or may not be stored; the next run settles them")
        if s.cut_off:
            out.append(f"cut off: {s.cut_off} row(s) were being sent when the run was aborted; they may be stored "
                       "and have no outcome line: the next run settles them (by Search with --dedupe-key, "
                       "else it sends them again and counts them as possible duplicates)")
        if s.codes:
            out.append("problems by kind (the first rows of each):")
            for code, n in s.codes.most_common():
                out.append(f"  {code}: {n}")
                out += [f"    {r.id} (line {r.line}): {r.error}" for r in self.problems.get(code, ())]
        return out

    def _dry_run_lines(self) -> list[str]:
        s = self.stats
        counts = sorted(s.formats.items(), key=lambda item: (-item[1], item[0]))
        formats = ", ".join(f"{name} {n}" for name, n in counts) or "none"
        out = [f"Dry run in {s.elapsed:.2f} s, nothing sent: valid {s.valid}, invalid {s.invalid}, "
               f"skipped (uploaded before) {s.skipped}",
               f"to upload: {s.valid} row(s), {s.valid_bytes / 1e6:.1f} MB; formats: {formats}"]
        if s.converted:
            sources = ", ".join(f"{name} {n}" for name, n in s.converted.most_common())
            out.append(f"to convert on the way (--transcode or channel options): {sum(s.converted.values())} "
                       f"row(s): {sources}")
        if s.valid:
            out.append(self._estimate())
        return out

    def _estimate(self) -> str:
        s = self.stats
        if self.given_rate:
            files_per_s, source = self.given_rate, "--estimate-rate"
            seconds = s.valid / files_per_s
        elif self.rate is not None:
            files_per_s, source = self.rate.files_per_s, f"measured by earlier uploads in {self.results_path}"
            # Whichever bound is tighter: rows per second, or bytes per second for big files.
            seconds = max(s.valid / files_per_s, s.valid_bytes / self.rate.bytes_per_s if self.rate.bytes else 0)
        else:
            return ("time estimate: give a rate with --estimate-rate FILES_PER_SECOND "
                    "(no earlier uploads recorded in the results file to measure one)")
        return f"time estimate: {_duration(seconds)} at {files_per_s:.1f} files/s ({source})"


def problems_path(results: Path) -> Path:
    """Where a dry run writes its problem rows: beside the results file, `<manifest>.dry-run.jsonl`."""
    name = results.name.removesuffix(".results.jsonl") if results.name.endswith(".results.jsonl") else results.name
    return results.with_name(name + ".dry-run.jsonl")


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days} d"] * bool(days) + [f"{hours} h"] * bool(hours) + [f"{minutes} min"] * bool(minutes)
    return " ".join(parts[:2]) if parts else f"{secs} s"
