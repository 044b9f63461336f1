"""Exactly once within the read quota, over the emulator as the documentation describes the service
(Search keys `userMeta.<field>`, the read quota enforced, an index that lags) and the real CLI."""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import API_KEY, ThreadedEmulator, cli_env, run_cli, start_upload, upload_argv

from bulk_uploader import samples
from bulk_uploader.emulator import EmulatorOptions, FaultOptions
from bulk_uploader.results import Destination, attempt_line, read_records

ROW_KEY = "client_id"  # samples.metadata(n) gives every row its own client_id


@pytest.fixture
def documented(tmp_path: Path) -> Iterator[ThreadedEmulator]:
    """The documented quota (the emulator's default) and an index lag of 2 s."""
    server = ThreadedEmulator(EmulatorOptions(api_keys=[API_KEY], store_path=tmp_path / "store.sqlite3", index_lag=2.0))
    try:
        yield server
    finally:
        server.close()


def upload(server: ThreadedEmulator, manifest: Path, *extra: str) -> tuple[int, str]:
    result = run_cli(*upload_argv(server.target, manifest, "--quiet", *extra)[3:], env=cli_env(API_KEY=API_KEY))
    return result.returncode, result.stderr


def reads_line(stderr: str) -> tuple[int, int]:
    """(reads, refused) as the summary reports them."""
    found = re.search(r"^reads: (\d+) \(Search \d+, Get \d+\), refused by the service (\d+); budget 2/s, 20/min, "
                      r"200/h, 2,000/day \(10% of the project's read quota", stderr, re.MULTILINE)
    assert found, stderr
    return int(found.group(1)), int(found.group(2))


def test_a_clean_run_with_a_dedupe_key_makes_no_read(tmp_path: Path, documented: ThreadedEmulator) -> None:
    manifest = samples.write_dataset(tmp_path, 300, sizes=(2000,))
    code, stderr = upload(documented, manifest, "--dedupe-key", ROW_KEY)
    assert code == 0, stderr
    assert documented.emulator.store.count() == 300
    assert documented.emulator.reads == 0 <= 5  # at most 5 allowed; none needed: no outcome was unknown
    assert reads_line(stderr) == (0, 0)


def test_lost_answers_and_unavailable_under_the_quota_and_a_lagging_index_store_every_row_once(
        tmp_path: Path, documented: ThreadedEmulator) -> None:
    rows = 600
    manifest = samples.write_dataset(tmp_path, rows, sizes=(2000,))
    emu = documented.emulator
    emu.set_faults(FaultOptions(lose_answer_rate=0.05, error_rates={"UNAVAILABLE": 0.10}, seed=15))
    started = time.monotonic()
    code, stderr = upload(documented, manifest, "--dedupe-key", ROW_KEY, "--settle-delay", "2.5")
    records = {r["id"]: r for r in read_records(manifest.with_name("manifest.jsonl.results.jsonl"))}
    reads, refused = reads_line(stderr)
    print(f"600 rows: {time.monotonic() - started:.1f} s, answers lost {emu.answers_lost}, refusals {emu.rejections}, "
          f"reads {emu.reads} (client: {reads}), found stored {sum(1 for r in records.values() if r['reconciled'])}")
    assert code == 0, stderr
    assert len(records) == rows and {r["status"] for r in records.values()} == {"uploaded"}
    # About 30 lost answers expected (5% of 600); the interleaving of calls moves the seeded draws,
    # so the floor is one a binomial count misses once in 200,000 runs.
    assert emu.answers_lost >= 10
    assert emu.store.count() == rows and emu.store.duplicates(ROW_KEY) == {}  # every row stored exactly once
    assert emu.reads_refused == 0 and refused == 0  # no read refused
    assert emu.reads <= 40 and reads <= 40
    assert "possible duplicates" not in stderr


def test_rows_left_unknown_by_a_killed_run_are_settled_by_reads_before_anything_is_sent(
        tmp_path: Path, served: ThreadedEmulator) -> None:
    manifest = samples.write_dataset(tmp_path, 10, sizes=(2000,))
    results = manifest.with_name("manifest.jsonl.results.jsonl")
    # A run killed while rows 0, 1 and 2 were in flight left a `sending` line for each.
    results.write_bytes(Destination(served.target, "demo-audio").header()
                        + b"".join(attempt_line(f"call-{n:06d}", n + 1, 1, 0) for n in range(3)))
    store = served.emulator.store
    base = {"talk_id": "", "connection_id": "demo-audio", "rpc": "Upload", "format": "wav", "size": 2000,
            "sha256": "x", "users": []}
    # Row 0's value is held by a talk with other fields; row 2's talk did arrive; row 1's did not.
    store.add(**{**base, "talk_id": "other-talk", "fields": {**samples.metadata(0), "operator_name": "Somebody"}})
    store.add(**{**base, "talk_id": "row-2-talk", "fields": samples.metadata(2)})

    code, stderr = upload(served, manifest, "--dedupe-key", ROW_KEY, "--settle-delay", "0.2")

    assert code == 1, stderr  # row 0 needs a person
    records = {r["id"]: r for r in read_records(results)}
    assert records["call-000000"]["status"] == "failed" and records["call-000000"]["code"] == "DEDUPE_CONFLICT"
    assert "stored (talk other-talk) but its fields differ in operator_name" in records["call-000000"]["error"]
    assert records["call-000001"]["status"] == "uploaded" and not records["call-000001"]["reconciled"]
    assert records["call-000002"] | {"finished_at": ""} == records["call-000002"] | {
        "status": "uploaded", "talk_id": "row-2-talk", "reconciled": True, "rpc": "Search", "finished_at": ""}
    assert all(records[f"call-{n:06d}"]["status"] == "uploaded" for n in range(3, 10))
    assert store.count() == 2 + 8  # rows 1 and 3..9 sent; rows 0 and 2 not
    assert served.emulator.reads == 2 and reads_line(stderr) == (2, 0)  # one Search for three rows, one Get


def test_a_refused_read_waits_and_fails_no_row(tmp_path: Path) -> None:
    # The project's quota spent by others: one read a second is all the service admits.
    server = ThreadedEmulator(EmulatorOptions(api_keys=[API_KEY], read_quota=((1, 1.0),),
                                              faults=FaultOptions(lose_answer_rate=0.3, seed=4)))
    try:
        manifest = samples.write_dataset(tmp_path, 60, sizes=(2000,))
        code, stderr = upload(server, manifest, "--dedupe-key", ROW_KEY, "--settle-delay", "0.2")
        assert code == 0, stderr
        reads, refused = reads_line(stderr)
        assert refused == server.emulator.reads_refused > 0
        assert server.emulator.store.count() == 60 and server.emulator.store.duplicates(ROW_KEY) == {}
        print(f"one read a second: {reads} reads, {refused} refused, answers lost {server.emulator.answers_lost}")
    finally:
        server.close()


def test_a_stop_leaves_rows_waiting_to_be_settled_ambiguous_and_the_next_run_settles_them(
        tmp_path: Path, documented: ThreadedEmulator) -> None:
    rows = 20
    manifest = samples.write_dataset(tmp_path, rows, sizes=(2000,))
    results = manifest.with_name("manifest.jsonl.results.jsonl")
    documented.emulator.set_faults(FaultOptions(lose_answer_rate=1.0))  # every talk stored, every answer lost
    proc = start_upload(documented.target, manifest, "--dedupe-key", ROW_KEY, "--quiet")  # waits 60 s to settle
    deadline = time.monotonic() + 30
    while documented.emulator.answers_lost < rows and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    stopped_at = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert time.monotonic() - stopped_at < 5  # the rows waiting did not hold the stop for the settle delay
    records = read_records(results)
    assert len(records) == rows and {(r["status"], r["code"]) for r in records} == {("ambiguous", "UNSETTLED")}
    assert documented.emulator.reads == 0

    documented.emulator.set_faults(FaultOptions())
    code, stderr = upload(documented, manifest, "--dedupe-key", ROW_KEY, "--settle-delay", "2.5")
    assert code == 0, stderr
    latest = {r["id"]: r for r in read_records(results)}
    assert all(r["status"] == "uploaded" and r["reconciled"] for r in latest.values())
    assert documented.emulator.store.count() == rows  # found, none sent again
    assert documented.emulator.reads == 2


def test_the_read_options_are_checked(tmp_path: Path, served: ThreadedEmulator) -> None:
    manifest = samples.write_dataset(tmp_path, 1, sizes=(2000,))
    for extra, message in ((("--read-share", "0"), "--read-share must be above 0"),
                           (("--read-quota", "lots"), "read quota 'lots'"),
                           (("--settle-delay", "-1"), "--settle-delay must not be negative")):
        code, stderr = upload(served, manifest, *extra)
        assert code == 2 and message in stderr, stderr
    row = json.loads(manifest.read_text())
    row["users"] = [{"id": "op-1", "role": "operator", "fields": {"call_ref": "in-a-participant"}}]
    manifest.write_text(json.dumps(row) + "\n")
    code, stderr = upload(served, manifest, "--dedupe-key", "call_ref")
    assert code == 1 and "the row has no 'call_ref' in its metadata (participants' fields are not searchable)" in stderr
