"""The results ledger: one fold per row key, read the same way by resume, report and the retry manifest."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from conftest import run_cli

from bulk_uploader import samples
from bulk_uploader.ledger import Ledger
from bulk_uploader.manifest import read_manifest
from bulk_uploader.model import RowResult
from bulk_uploader.report import measured_rate, summarize
from bulk_uploader.results import ResultsWriter, attempt_line, load_results, read_records


def sending(key: str, unknown_before: int = 0, attempt: int = 1) -> bytes:
    return attempt_line(key, 1, attempt, unknown_before)


def outcome(key: str, status: str, code: str | None = None, unknown: int = 0, size: int = 1000,
            at: str = "2024-05-01T10:00:00.000+00:00") -> bytes:
    return RowResult(key, status, code=code, unknown_outcomes=unknown, bytes=size,  # type: ignore[arg-type]
                     finished_at=at).to_line()


def write(path: Path, *lines: bytes) -> Path:
    """Append lines as they stand (torn ones too), as the writer the uploads use appends them."""
    with path.open("ab") as f:
        f.write(b"".join(lines))
    return path


def by_status(stdout: str) -> dict[str, int]:
    found = re.search(r"^by status: (.*)$", stdout, re.MULTILINE)
    assert found, stdout
    return {status: int(n) for status, n in (part.rsplit(" ", 1) for part in found.group(1).split(", ") if part)}


def by_code(stdout: str) -> dict[str, int]:
    found = re.search(r"^problems by code: (.*)$", stdout, re.MULTILINE)
    return {code: int(n) for code, n in (part.rsplit(" ", 1) for part in found.group(1).split(", "))} if found else {}


def test_uploaded_anywhere_wins_across_files_and_within_one(tmp_path: Path) -> None:
    first = write(tmp_path / "a.results.jsonl", sending("a"), outcome("a", "uploaded"),
                  sending("b"), outcome("b", "failed", "UNAVAILABLE"))
    second = write(tmp_path / "b.results.jsonl", sending("a"), outcome("a", "failed", "INTERNAL"),
                   sending("b"), outcome("b", "uploaded"), sending("b", 0, 2))
    report = run_cli("report", str(first), str(second))
    assert report.returncode == 0, report.stdout
    assert "2 results file(s), 9 lines, 2 rows" in report.stdout
    assert by_status(report.stdout) == {"uploaded": 2} and by_code(report.stdout) == {}
    previous = load_results(second)  # in one file too: the lines after `uploaded` change nothing
    assert "b" in previous.uploaded and "a" not in previous.uploaded and previous.unknown == {}


def test_otherwise_the_latest_outcome_decides(tmp_path: Path) -> None:
    results = write(tmp_path / "r.results.jsonl",
                    sending("a"), outcome("a", "failed", "UNAVAILABLE"),
                    sending("a", 0, 2), outcome("a", "invalid", "FILE_NOT_FOUND"),
                    sending("b"), outcome("b", "ambiguous", "DEADLINE_EXCEEDED", unknown=1),
                    sending("b", 1), outcome("b", "failed", "INVALID_ARGUMENT", unknown=1),
                    sending("c"), outcome("c", "failed", "UNAVAILABLE"),
                    sending("c", 0, 2), outcome("c", "ambiguous", "INTERNAL", 1))
    report = run_cli("report", str(results))
    assert report.returncode == 1
    assert by_status(report.stdout) == {"ambiguous": 1, "failed": 1, "invalid": 1}
    assert by_code(report.stdout) == {"FILE_NOT_FOUND": 1, "INTERNAL": 1, "INVALID_ARGUMENT": 1}
    assert "3 row(s) recorded but not uploaded" in report.stdout
    previous = load_results(results)
    assert len(previous.uploaded) == 0 and previous.unknown == {"c": 1}  # a definite outcome after ambiguous settles it


def test_a_sending_line_with_no_outcome_after_it_is_an_unknown_outcome_counted_across_runs(tmp_path: Path) -> None:
    results = write(tmp_path / "r.results.jsonl",
                    sending("a"), outcome("a", "ambiguous", "UNAVAILABLE", unknown=1),  # run 1
                    sending("a", unknown_before=1),  # run 2 died with it in flight
                    sending("b"), outcome("b", "ambiguous", "DEADLINE_EXCEEDED", unknown=2),
                    sending("c"))
    previous = load_results(results)
    assert previous.unknown == {"a": 2, "b": 2, "c": 1}
    report = run_cli("report", str(results))
    assert by_status(report.stdout) == {"ambiguous": 3}
    assert by_code(report.stdout) == {"UNKNOWN_OUTCOME": 2, "DEADLINE_EXCEEDED": 1}


def test_sending_after_failed_is_ambiguous_in_report_and_unknown_in_resume(tmp_path: Path) -> None:
    # Failed in one run; in flight when a later run died: it may have been stored.
    results = write(tmp_path / "r.results.jsonl",
                    sending("a"), outcome("a", "failed", "RESOURCE_EXHAUSTED"), sending("a", 0, 1),
                    sending("b"), outcome("b", "invalid", "FILE_NOT_FOUND"))
    report = run_cli("report", str(results))
    assert by_status(report.stdout) == {"ambiguous": 1, "invalid": 1}
    assert by_code(report.stdout) == {"UNKNOWN_OUTCOME": 1, "FILE_NOT_FOUND": 1}
    assert load_results(results).unknown == {"a": 1}


def test_torn_and_unusable_lines_are_counted_and_skipped_by_every_reader(tmp_path: Path) -> None:
    results = write(tmp_path / "r.results.jsonl", sending("a"), outcome("a", "uploaded"),
                    b'{"status": "uploaded"}\n', b'["a", "uploaded"]\n', b'{"id": "b", "status": null}\n')
    with results.open("ab") as f:
        f.write(outcome("b", "uploaded")[:30])  # killed mid-write
    previous = load_results(results)
    assert previous.torn_lines == 4 and len(previous.uploaded) == 1 and "b" not in previous.uploaded
    report = run_cli("report", str(results))
    assert "1 results file(s), 6 lines, 1 rows" in report.stdout and "4 unreadable line(s) skipped" in report.stdout
    assert [r["id"] for r in read_records(results)] == ["a"]
    assert [r["status"] for r in read_records(results, journal=True)] == ["sending", "uploaded"]


def test_throughput_counts_each_uploaded_row_once_and_leaves_out_pauses(tmp_path: Path) -> None:
    stamps = ["2024-05-01T10:00:00.000+00:00", "2024-05-01T10:00:01.000+00:00", "2024-05-01T10:00:02.000+00:00",
              "2024-05-03T09:00:00.000+00:00", "2024-05-03T09:00:02.000+00:00"]  # a rerun two days later
    lines = [line for n, at in enumerate(stamps) for line in (sending(f"r{n}"), outcome(f"r{n}", "uploaded", at=at))]
    results = write(tmp_path / "r.results.jsonl", *lines, outcome("r0", "uploaded", at="2024-05-01T11:00:00.000+00:00"))
    rate = measured_rate(results)
    assert rate is not None and (rate.files, rate.bytes, rate.seconds) == (5, 5000, 4.0)
    report = run_cli("report", str(results))
    assert "throughput: 1.2 files/s, 0.00 MB/s over 4.0 s of uploads" in report.stdout
    assert "uploaded bytes: 0.0 MB" in report.stdout
    assert measured_rate(tmp_path / "missing.results.jsonl") is None


# Each row's story across three results files (two shards and a rerun), and what it must read as:
# (lines per file, status, code, unknown attempts for resume).
STORIES: list[tuple[list[list[bytes]], str, str | None, int]] = [
    ([[sending("{k}"), outcome("{k}", "uploaded")], [], []], "uploaded", None, 0),
    ([[sending("{k}"), outcome("{k}", "failed", "UNAVAILABLE")], [], [sending("{k}"), outcome("{k}", "uploaded")]],
     "uploaded", None, 0),
    ([[], [sending("{k}"), outcome("{k}", "uploaded")], [sending("{k}"), outcome("{k}", "failed", "INTERNAL")]],
     "uploaded", None, 0),
    ([[sending("{k}"), outcome("{k}", "failed", "RESOURCE_EXHAUSTED")], [], []], "failed", "RESOURCE_EXHAUSTED", 0),
    ([[sending("{k}"), outcome("{k}", "invalid", "FILE_NOT_FOUND")], [], []], "invalid", "FILE_NOT_FOUND", 0),
    ([[sending("{k}"), outcome("{k}", "failed", "UNAVAILABLE")], [], [sending("{k}")]],
     "ambiguous", "UNKNOWN_OUTCOME", 1),
    ([[], [sending("{k}"), outcome("{k}", "ambiguous", "DEADLINE_EXCEEDED", 1)], [sending("{k}", 1)]],
     "ambiguous", "UNKNOWN_OUTCOME", 2),
    ([[sending("{k}"), outcome("{k}", "ambiguous", "UNAVAILABLE", 2)], [], []], "ambiguous", "UNAVAILABLE", 2),
    ([[sending("{k}"), outcome("{k}", "ambiguous", "UNAVAILABLE", 1)], [],
      [sending("{k}", 1), outcome("{k}", "failed", "INVALID_ARGUMENT", 1)]], "failed", "INVALID_ARGUMENT", 0),
]


def test_report_resume_and_retry_manifest_agree_over_several_files(tmp_path: Path) -> None:
    manifest = samples.write_dataset(tmp_path, 45, sizes=(100,), distinct_files=3)
    keys = [row.key for row in read_manifest(manifest)]
    files: list[list[bytes]] = [[], [], []]
    expected: dict[str, tuple[str, str | None, int]] = {}
    for n, key in enumerate(keys[:-4]):  # the last rows were never tried
        story, status, code, unknown = STORIES[n % len(STORIES)]
        for part, lines in zip(files, story, strict=True):
            part.extend(line.replace(b"{k}", key.encode()) for line in lines)
        expected[key] = (status, code, unknown)
    paths = [write(tmp_path / f"part-{k}.results.jsonl", *lines) for k, lines in enumerate(files)]
    retry = {key for key, (status, _, _) in expected.items() if status != "uploaded"}

    report = run_cli("report", *map(str, paths), "--manifest", str(manifest))
    assert report.returncode == 1
    assert by_status(report.stdout) == Counter(status for status, _, _ in expected.values())
    assert by_code(report.stdout) == Counter(code for status, code, _ in expected.values() if status != "uploaded")
    retry_manifest = manifest.with_name("manifest.retry.jsonl")
    never_tried = set(keys[-4:])  # no results line anywhere: still to do
    assert {json.loads(line)["id"] for line in retry_manifest.read_text().splitlines()} == retry | never_tried
    assert summarize(paths).to_retry() == retry

    # Several files fold as one file holding their lines in the same order: what resume reads.
    joined = tmp_path / "joined.results.jsonl"
    joined.write_bytes(b"".join(path.read_bytes() for path in paths))
    previous = load_results(joined)
    assert {key for key in keys if key in previous.uploaded} == set(expected) - retry
    assert previous.unknown == {key: unknown for key, (_, _, unknown) in expected.items() if unknown}
    ledger = Ledger()
    for path in paths:
        ledger.read(path)
    assert ledger.unknown() == previous.unknown and ledger.to_retry() == retry
    assert len(ledger) == len(expected) and ledger.lines == sum(len(lines) for lines in files)


async def test_journal_lines_of_one_turn_go_out_in_one_write_before_their_attempts(tmp_path: Path) -> None:
    import asyncio
    import os

    path = tmp_path / "r.results.jsonl"
    writer = ResultsWriter(path)
    writes: list[bytes] = []
    real_write = os.write

    def counting(fd: int, data: bytes) -> int:
        writes.append(bytes(data))
        return real_write(fd, data)

    os.write = counting  # type: ignore[assignment]
    try:
        waits = [writer.journal(sending(key)) for key in "abc"]
        cancelled = writer.journal(sending("d"))
        cancelled.cancel()  # its attempt was stopped before its line went out: it never leaves
        writer.write(RowResult("e", "uploaded", talk_id="t", attempts=1))
        assert not any(w.done() for w in waits) and writes == []  # nothing leaves before the line is written
        await asyncio.gather(*waits)
    finally:
        os.write = real_write  # type: ignore[assignment]
    writer.close()
    assert len(writes) == 1
    assert [(r["id"], r["status"]) for r in read_records(path, journal=True)] == [
        ("e", "uploaded"), ("a", "sending"), ("b", "sending"), ("c", "sending")]


async def test_an_attempt_whose_journal_line_cannot_be_written_never_leaves(tmp_path: Path) -> None:
    import os

    from bulk_uploader.errors import ResultsFileError

    told: list[ResultsFileError] = []
    writer = ResultsWriter(tmp_path / "r.results.jsonl", on_error=told.append)
    os.close(writer._fd)
    writer._fd = os.open(os.devnull, os.O_RDONLY)  # every write fails, as on a disk gone read-only
    waits = [writer.journal(sending(key)) for key in "ab"]
    for wait in waits:
        try:
            await wait
        except ResultsFileError as exc:
            assert "cannot write results file" in str(exc)
        else:
            raise AssertionError("the attempt was let go without its journal line")
    assert len(told) == 1  # and the run is told, to stop
    os.close(writer._fd)
