"""`bulk-upload verify` over the emulator and the real CLI: missing talks, differing fields, processing states,
the sample, the wait, and the reads it costs."""

from __future__ import annotations

import json
import math
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import API_KEY, ThreadedEmulator, cli_env, run_cli, upload_argv

from bulk_uploader import samples
from bulk_uploader.emulator import EmulatorOptions, FaultOptions, Processing
from bulk_uploader.results import read_records
from bulk_uploader.verify import sampled


def emulator(tmp_path: Path, **options: object) -> ThreadedEmulator:
    return ThreadedEmulator(EmulatorOptions(api_keys=[API_KEY], store_path=tmp_path / "store.sqlite3",
                                            **options))  # type: ignore[arg-type]


@pytest.fixture
def losing(tmp_path: Path) -> Iterator[ThreadedEmulator]:
    """The documented read quota, processing that takes a second, and every 50th talk lost."""
    server = emulator(tmp_path, faults=FaultOptions(lose_every=50), processing=Processing(delay=0.2, time=0.8))
    try:
        yield server
    finally:
        server.close()


def upload(server: ThreadedEmulator, manifest: Path) -> None:
    result = run_cli(*upload_argv(server.target, manifest, "--quiet")[3:], env=cli_env(API_KEY=API_KEY))
    assert result.returncode == 0, result.stderr


def verify(server: ThreadedEmulator, manifest: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli("verify", str(manifest), "--endpoint", server.target, "--insecure", *extra,
                   env=cli_env(API_KEY=API_KEY))


def report(manifest: Path) -> dict[str, dict[str, object]]:
    lines = manifest.with_name("manifest.jsonl.verify.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert len({r["id"] for r in rows}) == len(rows)  # one line per row
    return {str(r["id"]): r for r in rows}


def test_verify_finds_exactly_the_talks_the_service_lost(tmp_path: Path, losing: ThreadedEmulator) -> None:
    manifest = samples.write_dataset(tmp_path, 300, sizes=(2000,))
    upload(losing, manifest)
    talk_of = {r["talk_id"]: r["id"] for r in read_records(manifest.with_name("manifest.jsonl.results.jsonl"))}
    lost = {talk_of[talk_id] for talk_id in losing.emulator.talks_lost}
    assert len(lost) == 6

    result = verify(losing, manifest)

    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert out.startswith("verify: 300 uploaded row(s) to check: 3 Get read(s), at least 1 s at the read budget "
                          "2/s, 20/min, 200/h, 2,000/day")
    assert "Verified 300 row(s) in" in out and "present 294, missing 6, fields_differ 0" in out
    rows = report(manifest)
    assert {key for key, r in rows.items() if r["status"] == "missing"} == lost
    assert all(r["status"] == "present" for key, r in rows.items() if key not in lost)
    assert all(r["processing_state"] in ("NOT_STARTED", "PROCESSING", "SUCCESS") for key, r in rows.items()
               if key not in lost)
    assert all(r["processing_state"] is None and r["talk_id"] for key, r in rows.items() if key in lost)
    assert re.search(r"^processing: .*(NOT_STARTED|PROCESSING|SUCCESS) \d+", out, re.MULTILINE)
    assert losing.emulator.reads <= 10 and losing.emulator.reads == 3
    assert "reads: 3 (Search 0, Get 3), refused by the service 0" in out
    for key in sorted(lost):
        assert f"  {key} (line " in out


def test_fields_that_differ_are_named_and_a_sample_checks_a_stable_share(tmp_path: Path) -> None:
    server = emulator(tmp_path)
    try:
        manifest = samples.write_dataset(tmp_path, 200, sizes=(2000,))
        upload(server, manifest)
        assert verify(server, manifest).returncode == 0  # all present: exit 0
        rows = [json.loads(line) for line in manifest.read_text().splitlines()]
        rows[5]["metadata"]["client_name"] = "Renamed since"
        manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))

        result = verify(server, manifest)
        assert result.returncode == 1
        assert report(manifest)["call-000005"] | {"processing_state": None} == {
            "id": "call-000005", "talk_id": report(manifest)["call-000005"]["talk_id"], "status": "fields_differ",
            "processing_state": None, "line": 6, "differing_keys": ["client_name"]}
        assert "call-000005 (line 6): talk " in result.stdout and "differing keys: client_name" in result.stdout

        reads_before = server.emulator.reads
        sample = verify(server, manifest, "--sample", "0.25", "--report", str(tmp_path / "sample.jsonl"))
        chosen = {row["id"] for row in rows if sampled(row["id"], 0.25)}
        assert 30 < len(chosen) < 70
        checked = {json.loads(line)["id"] for line in (tmp_path / "sample.jsonl").read_text().splitlines()}
        assert checked == chosen
        assert f"verify: {len(chosen)} uploaded row(s) to check: 1 Get read(s)" in sample.stdout
        assert server.emulator.reads - reads_before == math.ceil(len(chosen) / 100)
    finally:
        server.close()


def test_waiting_polls_until_processing_ends_and_lists_the_failures(tmp_path: Path) -> None:
    # Processing starts 5 s after each upload: verify's first look finds all 50 waiting even on a busy machine.
    server = emulator(tmp_path, processing=Processing(delay=5.0, time=1.0, failure_rate=0.2))
    try:
        manifest = samples.write_dataset(tmp_path, 50, sizes=(2000,))
        upload(server, manifest)
        result = verify(server, manifest, "--wait", "--poll-interval", "0.5")
        rows = report(manifest)
        failed = sorted(key for key, r in rows.items() if r["processing_state"] == "FAILED")
        assert {r["processing_state"] for r in rows.values()} == {"SUCCESS", "FAILED"}
        assert failed and result.returncode == 1  # every talk present, but some failed processing
        assert "present 50, missing 0" in result.stdout and "waiting: 50 talk(s) still processing" in result.stdout
        assert f"processing FAILED (the first {len(failed)}; every one is in the report):" in result.stdout

        slow_manifest = samples.write_dataset(tmp_path / "slow", 5, sizes=(2000,))
        slow = emulator(tmp_path / "slow", processing=Processing(delay=0, time=3600))
        try:
            upload(slow, slow_manifest)
            timed_out = verify(slow, slow_manifest, "--wait", "--wait-timeout", "0.3", "--poll-interval", "0.1")
            assert timed_out.returncode == 1
            assert "still processing when the wait ended: 5 talk(s)" in timed_out.stdout
        finally:
            slow.close()
    finally:
        server.close()


def test_verify_refuses_what_it_cannot_check(tmp_path: Path, served: ThreadedEmulator) -> None:
    manifest = samples.write_dataset(tmp_path, 3, sizes=(2000,))
    missing = verify(served, manifest)
    assert missing.returncode == 2 and "no results file" in missing.stderr
    upload(served, manifest)
    elsewhere = run_cli("verify", str(manifest), "--endpoint", "127.0.0.1:9", "--insecure",
                        env=cli_env(API_KEY=API_KEY))
    assert elsewhere.returncode == 2 and f"records uploads to {served.target}, not 127.0.0.1:9" in elsewhere.stderr
    no_key = run_cli("verify", str(manifest), "--endpoint", served.target, "--insecure")
    assert no_key.returncode == 2 and "no credentials" in no_key.stderr
    bad_sample = verify(served, manifest, "--sample", "0")
    assert bad_sample.returncode == 2 and "--sample must be above 0" in bad_sample.stderr
    assert "Traceback" not in missing.stderr + elsewhere.stderr + no_key.stderr + bad_sample.stderr


def test_an_interrupted_verify_reports_what_it_checked(tmp_path: Path) -> None:
    server = emulator(tmp_path, processing=Processing(delay=0, time=3600))
    try:
        manifest = samples.write_dataset(tmp_path, 30, sizes=(2000,))
        upload(server, manifest)
        proc = subprocess.Popen([sys.executable, "-m", "bulk_uploader", "verify", str(manifest), "--endpoint", server.target,
                                 "--insecure", "--wait", "--poll-interval", "0.5"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=cli_env(API_KEY=API_KEY))
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("verify: 30 uploaded row(s) to check")
        assert proc.stdout.readline().startswith("waiting: 30 talk(s) still processing")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert "Interrupted 30 row(s)" in out and "processing: PROCESSING 30" in out and "Traceback" not in err
        assert {r["processing_state"] for r in report(manifest).values()} == {"PROCESSING"}  # every row reported
    finally:
        server.close()
