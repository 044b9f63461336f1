"""The library API: run_upload() driven directly against an in-process emulator, no CLI."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable
from pathlib import Path

import anyio
import pytest
from conftest import API_KEY

from bulk_uploader import Credentials, RunControl, UploadOptions, run_upload, samples
from bulk_uploader.emulator import Emulator, FaultOptions
from bulk_uploader.errors import AuthError
from bulk_uploader.model import Job, ManifestRow, RowResult
from bulk_uploader.pipeline.recorder import Recorder
from bulk_uploader.reader import PRELOAD_BATCH
from bulk_uploader.results import read_records
from bulk_uploader.stats import RunStats
from bulk_uploader.validation import Validator


class Collecting:
    """A Reporter that keeps what it is told."""

    def __init__(self) -> None:
        self.problems: list[RowResult] = []
        self.messages: list[str] = []
        self.started = self.stopped = False

    def start(self, stats: RunStats) -> None:
        self.started = True

    def row_problem(self, result: RowResult) -> None:
        self.problems.append(result)

    def message(self, text: str) -> None:
        self.messages.append(text)

    def stop(self) -> None:
        self.stopped = True

    def summary(self, lines: list[str]) -> None:
        self.messages.extend(lines)


def options(emulator: Emulator, manifest: Path, key: str = API_KEY, **extra: object) -> UploadOptions:
    return UploadOptions(manifest=manifest, endpoint=emulator.target, insecure=True,
                         credentials=Credentials("Api-Key", key), connection_id="demo-audio", **extra)


async def test_every_row_arrives_once_with_its_bytes_and_fields(emulator: Emulator, tmp_path: Path) -> None:
    manifest = samples.write_dataset(tmp_path, 40, sizes=(4096, 50_000, 5 * 1024 * 1024))
    # one bad row among them: recorded invalid, the others go on
    with manifest.open("a") as f:
        f.write(json.dumps({"id": "bad", "audio_path": "audio/none.wav", "metadata": samples.metadata(99)}) + "\n")
    reporter = Collecting()
    summary = await run_upload(options(emulator, manifest, concurrency=4), reporter)

    assert (summary.stats.uploaded, summary.stats.invalid, summary.exit_code) == (40, 1, 1)
    assert [r.id for r in reporter.problems] == ["bad"] and reporter.problems[0].code == "FILE_NOT_FOUND"
    assert reporter.started and reporter.stopped
    talks = {t.fields["client_id"]: t for t in emulator.store.talks()}
    assert len(talks) == 40 == emulator.store.count()
    for line in manifest.read_text().splitlines()[:40]:
        row = json.loads(line)
        talk = talks[row["metadata"]["client_id"]]
        assert talk.fields == row["metadata"]
        assert talk.sha256 == hashlib.sha256((tmp_path / row["audio_path"]).read_bytes()).hexdigest()
    outcomes = {r["id"]: r for r in read_records(Path(summary.results_path))}
    assert {r["status"] for k, r in outcomes.items() if k != "bad"} == {"uploaded"}
    assert any(r["rpc"] == "UploadAsStream" for r in outcomes.values())

    again = await run_upload(options(emulator, manifest), Collecting())  # a rerun sends nothing
    assert (again.stats.skipped, again.stats.uploaded, emulator.store.count()) == (40, 0, 40)


async def test_refused_credentials_stop_the_run_and_leave_untried_rows_unrecorded(
    emulator: Emulator, tmp_path: Path
) -> None:
    manifest = samples.write_dataset(tmp_path, 50)
    opts = options(emulator, manifest, key="not-the-key", concurrency=4)
    summary = await run_upload(opts, Collecting())
    assert isinstance(summary.failure, AuthError) and "refused the credentials" in str(summary.failure)
    assert summary.exit_code == 3 and summary.stats.uploaded == 0
    assert emulator.store.count() == 0
    recorded = read_records(opts.results_path)
    assert recorded == []  # no row is claimed failed: a rerun with the right key takes them all
    assert len(read_records(opts.results_path, journal=True)) <= 4  # one attempt per call in flight at most


async def test_a_stop_finishes_the_calls_in_flight_and_takes_no_new_rows(emulator: Emulator, tmp_path: Path) -> None:
    manifest = samples.write_dataset(tmp_path, 200)
    emulator.set_faults(FaultOptions(latency_ms=200))
    control = RunControl()
    reporter = Collecting()

    async def stop_soon() -> None:
        await anyio.sleep(0.5)
        control.stop()

    async with anyio.create_task_group() as group:
        group.start_soon(stop_soon)
        summary = await run_upload(options(emulator, manifest, concurrency=8), reporter, control)
    assert summary.interrupted and summary.exit_code == 130
    stored = emulator.store.count()
    assert 8 <= stored < 200
    assert summary.stats.uploaded == stored  # each call in flight finished and was recorded
    assert len(read_records(Path(summary.results_path))) == stored


async def test_the_stats_count_calls_on_the_wire_apart_from_busy_rows(emulator: Emulator, tmp_path: Path) -> None:
    manifest = samples.write_dataset(tmp_path, 40)
    # The service takes 2 calls at once: the rest are refused, and rows wait for a slot or a backoff.
    emulator.set_faults(FaultOptions(latency_ms=100, max_in_flight=2))
    seen: list[tuple[int, int]] = []

    class Sampling(Collecting):
        def start(self, stats: RunStats) -> None:
            async def sample() -> None:
                while not self.stopped:
                    seen.append((stats.calls, stats.in_flight))
                    await anyio.sleep(0.01)
            group.start_soon(sample)

    async with anyio.create_task_group() as group:
        summary = await run_upload(options(emulator, manifest, concurrency=8), Sampling())
    assert summary.stats.uploaded == 40 and summary.stats.calls == 0
    assert 0 < max(calls for calls, _ in seen) <= 8
    assert all(calls <= busy for calls, busy in seen)
    assert any(calls < busy for calls, busy in seen)  # rows waiting for a slot or a backoff are not calls


async def test_the_first_calls_leave_once_their_batch_is_read_not_once_the_queue_is_full(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # At the start the job queue has room for `concurrency` rows; at 100 ms per call and
    # concurrency 256, filling it first held the first calls back by tens of milliseconds.
    manifest = samples.write_dataset(tmp_path, 120, distinct_files=4)
    checked: list[int] = [0]
    checked_at_first_call: list[int] = []
    check, journal = Validator.check, Recorder.journal

    def counting_check(self: Validator, row: ManifestRow) -> Job:
        checked[0] += 1
        return check(self, row)

    def noting_journal(self: Recorder, job: Job, result: RowResult) -> Awaitable[None]:
        checked_at_first_call.append(checked[0])
        return journal(self, job, result)

    monkeypatch.setattr(Validator, "check", counting_check)
    monkeypatch.setattr(Recorder, "journal", noting_journal)
    summary = await run_upload(options(emulator, manifest, concurrency=64), Collecting())

    assert (summary.stats.uploaded, checked[0]) == (120, 120)
    assert checked_at_first_call[0] <= PRELOAD_BATCH < 64
