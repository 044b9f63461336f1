"""The product as users run it: `bulk-upload MANIFEST` in a real process against a real emulator."""

from __future__ import annotations

import asyncio
import csv
import fcntl
import hashlib
import json
import os
import pty
import re
import shlex
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import API_KEY, ThreadedEmulator, cli_env, run_cli, start_upload

from bulk_uploader import samples
from bulk_uploader.audio import AudioFormat
from bulk_uploader.cli.runtime import EventLoop, _run_event_loop
from bulk_uploader.emulator import FaultOptions
from bulk_uploader.results import read_records
from bulk_uploader.retry import MAX_LOST_STATUSES

FORMATS = (AudioFormat.WAV, AudioFormat.MP3, AudioFormat.OGG_OPUS, AudioFormat.PCM)
SIZES = (1_000, 16 * 1024, 70_000, 250_000)


def upload(served: ThreadedEmulator, manifest: Path, *extra: str, key: str = API_KEY) -> subprocess.CompletedProcess[str]:
    return run_cli(str(manifest), "--endpoint", served.target, "--insecure", "--connection-id", "demo-audio",
                   "--concurrency", "16", *extra, env=cli_env(API_KEY=key))


def mixed_dataset(folder: Path, rows: int) -> Path:
    """rows mixed-format rows plus one 9 MiB WAV that must be streamed."""
    manifest = samples.write_dataset(folder, rows, sizes=SIZES, formats=FORMATS)
    (folder / "audio" / "big.wav").write_bytes(samples.wav(9 * 1024 * 1024, seed=99))
    with manifest.open("a") as f:
        f.write(json.dumps({"id": "big", "audio_path": "audio/big.wav", "format": "wav", "metadata": samples.metadata(7)}) + "\n")
    return manifest


def manifest_rows(manifest: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]


def to_csv(manifest: Path) -> Path:
    rows = manifest_rows(manifest)
    keys = list(samples.metadata(0))
    path = manifest.with_suffix(".csv")
    with path.open("w", newline="", encoding="utf-8-sig") as f:  # with a BOM, as spreadsheet tools write it
        writer = csv.writer(f)
        writer.writerow(["id", "audio_path", "format", "sample_rate", "channels", *keys])
        for row in rows:
            writer.writerow([row["id"], row["audio_path"], row.get("format", ""), row.get("sample_rate", ""),
                             row.get("channels", ""), *[row["metadata"][k] for k in keys]])
    return path


def assert_store_matches(served: ThreadedEmulator, manifest: Path, rows: list[dict[str, Any]]) -> None:
    """Each row stored exactly once, with its bytes' sha256, its connection and its fields."""
    talks = list(served.emulator.store.talks())
    by_client = {}
    for talk in talks:
        by_client.setdefault(talk.fields["client_id"], []).append(talk)
    # Row metadata is unique per row except for the extra "big" row, keyed by its own sha256.
    assert len(talks) == len(rows)
    for row in rows:
        data = (manifest.parent / row["audio_path"]).read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        matching = [t for t in talks if t.sha256 == sha and t.fields == row["metadata"]]
        assert len(matching) == 1, f"row {row['id']} stored {len(matching)} times"
        talk = matching[0]
        assert talk.connection_id == "demo-audio"
        assert talk.size == len(data)
        assert talk.rpc == ("UploadAsStream" if len(data) > 4 * 1024 * 1024 else "Upload")


def results_by_id(path: Path) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in read_records(path)}


@pytest.mark.parametrize("kind, event_loop", [("jsonl", "uvloop"), ("csv", "uvloop"), ("jsonl", "asyncio")])
def test_mixed_manifest_uploads_completely(tmp_path: Path, served: ThreadedEmulator, kind: str, event_loop: str) -> None:
    manifest = mixed_dataset(tmp_path, 240)
    rows = manifest_rows(manifest)
    if kind == "csv":
        manifest = to_csv(manifest)
    result = upload(served, manifest, "--event-loop", event_loop)
    assert result.returncode == 0, result.stderr
    assert_store_matches(served, manifest, rows)
    records = results_by_id(manifest.with_name(manifest.name + ".results.jsonl"))
    assert len(records) == len(rows)
    assert {r["status"] for r in records.values()} == {"uploaded"}
    big = records["big"]
    assert big["bytes"] == 9 * 1024 * 1024 + 44 and big["rpc"] == "UploadAsStream" and big["talk_id"]
    for record in records.values():
        assert set(record) >= {"id", "status", "talk_id", "error", "code", "attempts", "bytes", "seconds", "audio_path"}
    assert "uploaded 241" in result.stderr


def test_bad_rows_are_recorded_invalid_and_the_rest_upload(tmp_path: Path, served: ThreadedEmulator) -> None:
    manifest = samples.write_dataset(tmp_path, 20)
    (tmp_path / "audio" / "empty.wav").write_bytes(b"")
    (tmp_path / "audio" / "notes.wav").write_text("these are meeting notes, not audio\n" * 20)
    bad_date = samples.metadata(1) | {"date": "13/09/2023"}
    no_keys = {k: v for k, v in samples.metadata(2).items() if k not in ("client_id", "language")}
    with manifest.open("a") as f:
        for row in [
            {"id": "missing", "audio_path": "audio/nope.wav", "metadata": samples.metadata(1)},
            {"id": "empty", "audio_path": "audio/empty.wav", "metadata": samples.metadata(1)},
            {"id": "not-audio", "audio_path": "audio/notes.wav", "metadata": samples.metadata(1)},
            {"id": "no-keys", "audio_path": "audio/call-000001.mp3", "metadata": no_keys},
            {"id": "bad-date", "audio_path": "audio/call-000001.mp3", "metadata": bad_date},
            {"id": "windows", "audio_path": "audio\\call-000001.mp3", "metadata": samples.metadata(1)},
        ]:
            f.write(json.dumps(row) + "\n")
        f.write('{"id": "torn", "audio_path": \n')
        f.write(json.dumps({"id": "call-000003", "audio_path": "audio/call-000004.ogg", "metadata": samples.metadata(3)}) + "\n")
    result = upload(served, manifest)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    records = results_by_id(manifest.with_name("manifest.jsonl.results.jsonl"))
    expected = {
        "missing": ("FILE_NOT_FOUND", "audio file not found: audio/nope.wav"),
        "empty": ("EMPTY_FILE", "audio file is empty"),
        "not-audio": ("BAD_AUDIO", "no audio format known here"),
        "no-keys": ("INVALID_METADATA", "missing required metadata keys for the audio connection: client_id, language"),
        "bad-date": ("INVALID_METADATA", "date '13/09/2023' is not"),
        "line:27": ("MALFORMED_ROW", "malformed JSON on line 27"),
        "windows": ("FILE_NOT_FOUND", "audio file not found: audio\\call-000001.mp3 (its folders are separated by "
                                      "'\\', as on Windows; here the separator is '/', and audio/call-000001.mp3 "
                                      "exists: write the paths with '/')"),
    }
    for key, (code, reason) in expected.items():
        assert records[key]["status"] == "invalid", key
        assert records[key]["code"] == code
        assert reason in records[key]["error"]
        assert reason in result.stderr  # also on screen
    duplicates = [r for r in read_records(manifest.with_name("manifest.jsonl.results.jsonl")) if r["id"] == "call-000003"]
    assert sorted(r["status"] for r in duplicates) == ["invalid", "uploaded"]
    assert any("duplicate id 'call-000003'" in (r["error"] or "") for r in duplicates)
    assert served.emulator.store.count() == 20
    assert sum(1 for r in read_records(manifest.with_name("manifest.jsonl.results.jsonl")) if r["status"] == "uploaded") == 20


def test_second_run_sends_nothing_and_a_resume_sends_exactly_the_missing_rows(tmp_path: Path, served: ThreadedEmulator) -> None:
    manifest = samples.write_dataset(tmp_path, 60, sizes=(2000,))
    results = manifest.with_name("manifest.jsonl.results.jsonl")
    assert upload(served, manifest).returncode == 0
    assert served.emulator.store.count() == 60
    again = upload(served, manifest)
    assert again.returncode == 0 and served.emulator.store.count() == 60
    assert "skipped (done before) 60" in again.stderr
    dropped = {f"call-{n:06d}" for n in (3, 11, 12, 30, 41, 58, 59)}
    kept = [line for line in results.read_text().splitlines() if json.loads(line).get("id") not in dropped]
    results.write_text("\n".join(kept) + "\n" + kept[-1][:25])  # and a torn last line
    resumed = upload(served, manifest)
    assert resumed.returncode == 0, resumed.stderr
    assert served.emulator.store.count() == 67
    newly = [r["id"] for r in read_records(results)[-7:]]
    assert set(newly) == dropped
    assert "1 unreadable line(s)" in resumed.stderr


def test_transient_faults_are_retried_until_every_row_is_uploaded(tmp_path: Path, served: ThreadedEmulator) -> None:
    manifest = samples.write_dataset(tmp_path, 150, sizes=(3000, 40_000, 5 * 1024 * 1024), distinct_files=12)
    served.emulator.set_faults(FaultOptions(error_rates={"UNAVAILABLE": 0.1, "RESOURCE_EXHAUSTED": 0.1, "INTERNAL": 0.1}))
    result = upload(served, manifest, "--timeout", "30")
    assert result.returncode == 0, result.stderr
    records = results_by_id(manifest.with_name("manifest.jsonl.results.jsonl"))
    assert len(records) == 150 and {r["status"] for r in records.values()} == {"uploaded"}
    assert served.emulator.store.count() == 150  # injected errors happen before storing: no duplicates
    retried = sum(r["attempts"] - 1 for r in records.values())
    assert retried == sum(served.emulator.rejections.values()) > 20


def test_wrong_api_key_stops_the_run_at_once_and_is_never_shown(tmp_path: Path, served: ThreadedEmulator) -> None:
    manifest = samples.write_dataset(tmp_path, 200, sizes=(1000,))
    secret = "AQVN-this-is-a-wrong-but-secret-key"
    result = upload(served, manifest, "--concurrency", "8", key=secret)
    assert result.returncode == 3  # stopped part-way, for every row alike: summary and retry command follow
    assert "stopped: the service refused the credentials" in result.stderr and "UNAUTHENTICATED" in result.stderr
    assert "to try the rest again, run the same command: bulk-upload " in result.stderr
    assert served.emulator.rejections["UNAUTHENTICATED"] <= 8
    results = manifest.with_name("manifest.jsonl.results.jsonl")
    written = results.read_text() if results.exists() else ""
    assert read_records(results) == [] if results.exists() else True  # no row recorded: a rerun tries them all
    for text in (result.stdout, result.stderr, written):
        assert secret not in text
    assert "Traceback" not in result.stderr


def test_server_rejection_mid_stream_fails_the_row_without_retries(tmp_path: Path) -> None:
    # The emulator's connection requires a key the client's default schema does not know,
    # so the server refuses after the first message while the client is still streaming.
    from bulk_uploader.emulator import EmulatorOptions
    from bulk_uploader.schema import AUDIO_KEYS, ConnectionSchema

    strict = ConnectionSchema("demo-audio", "audio", frozenset({*AUDIO_KEYS, "region"}))
    server = ThreadedEmulator(EmulatorOptions(api_keys=[API_KEY], connections=[strict]))
    try:
        manifest = samples.write_dataset(tmp_path, 2, sizes=(6 * 1024 * 1024, 1000))
        result = upload(server, manifest, "--retries", "0")  # type: ignore[arg-type]
        assert result.returncode == 1
        records = results_by_id(manifest.with_name("manifest.jsonl.results.jsonl"))
        for record in records.values():
            assert (record["status"], record["code"]) == ("failed", "INVALID_ARGUMENT")
            # The refusal itself is not retried: the row ends on it. Attempts whose status
            # grpc.aio lost (grpc#36066, a race with the write in flight) are tried again
            # without counting, so with --retries 0 any attempt beyond the first was one.
            assert record["attempts"] <= 1 + MAX_LOST_STATUSES
            assert "missing required metadata keys for the audio connection: region" in record["error"]
        assert records["call-000000"]["rpc"] == "UploadAsStream"
    finally:
        server.close()


def test_no_credentials_is_a_usage_error(tmp_path: Path, served: ThreadedEmulator) -> None:
    manifest = samples.write_dataset(tmp_path, 3)
    result = run_cli(str(manifest), "--endpoint", served.target, "--insecure", "--connection-id", "demo-audio")
    assert result.returncode == 2 and "no credentials" in result.stderr


def test_sigint_stops_cleanly_and_the_rerun_completes(tmp_path: Path, served: ThreadedEmulator) -> None:
    manifest = samples.write_dataset(tmp_path, 300, sizes=(2000,))
    served.emulator.set_faults(FaultOptions(latency_ms=50))
    results = manifest.with_name("manifest.jsonl.results.jsonl")
    proc = start_upload(served.target, manifest, "--concurrency", "4")
    deadline = time.monotonic() + 30
    while (not results.exists() or len(read_records(results)) < 40) and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Interrupted" in err
    for line in results.read_text().splitlines():
        json.loads(line)  # every line parses
    records = read_records(results)
    assert 40 <= len(records) < 300
    assert served.emulator.store.count() == len(records)  # rows in flight finished and were recorded
    served.emulator.set_faults(FaultOptions())
    rerun = upload(served, manifest)
    assert rerun.returncode == 0, rerun.stderr
    assert served.emulator.store.count() == 300
    assert len(results_by_id(results)) == 300


def test_second_sigint_aborts_at_once(tmp_path: Path, served: ThreadedEmulator) -> None:
    manifest = samples.write_dataset(tmp_path, 50, sizes=(2000,))
    served.emulator.set_faults(FaultOptions(latency_ms=20_000))  # calls in flight would take 20 s
    results = manifest.with_name("manifest.jsonl.results.jsonl")
    proc = start_upload(served.target, manifest, "--concurrency", "4")
    deadline = time.monotonic() + 20
    while served.emulator.injector.in_flight < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert time.monotonic() - started < 8  # neither the 20 s calls nor the 10 s grace were waited for
    assert "aborting now" in err and "Traceback" not in err
    assert read_records(results) == []  # nothing finished; every row is left for the next run


def test_attempts_that_exceed_the_timeout_are_retried_then_left_ambiguous(tmp_path: Path, served: ThreadedEmulator) -> None:
    manifest = samples.write_dataset(tmp_path, 3, sizes=(2000,))
    served.emulator.set_faults(FaultOptions(latency_ms=3000))
    result = upload(served, manifest, "--timeout", "0.3", "--retries", "2")
    assert result.returncode == 1
    for record in results_by_id(manifest.with_name("manifest.jsonl.results.jsonl")).values():
        # The service may have stored it: such a row is never called failed.
        assert (record["status"], record["code"], record["attempts"]) == ("ambiguous", "DEADLINE_EXCEEDED", 3)
        assert record["unknown_outcomes"] == 3 and "outcome unknown after 3 attempt(s)" in record["error"]
    assert "  DEADLINE_EXCEEDED: 3" in result.stderr


def test_output_off_a_terminal_is_plain_lines(tmp_path: Path, served: ThreadedEmulator) -> None:
    manifest = samples.write_dataset(tmp_path, 30, sizes=(1000,))
    result = upload(served, manifest)
    assert result.returncode == 0
    assert "\x1b[" not in result.stderr and "\r" not in result.stderr
    assert "rows 30/~30 | uploaded 30" in result.stderr
    assert "Finished in" in result.stderr and "results: " in result.stderr


def test_dry_run_checks_every_row_and_sends_nothing(tmp_path: Path, served: ThreadedEmulator) -> None:
    manifest = samples.write_dataset(tmp_path, 25)  # wav, mp3 and ogg of 16 KiB each
    (tmp_path / "audio" / "text.wav").write_text("not audio at all, just text" * 10)
    with manifest.open("a") as f:
        for n in range(4):
            f.write(json.dumps({"id": f"missing-{n}", "audio_path": f"audio/nope{n}.wav",
                                "metadata": samples.metadata(n)}) + "\n")
        f.write(json.dumps({"id": "text", "audio_path": "audio/text.wav", "metadata": samples.metadata(1)}) + "\n")
        f.write(json.dumps({"id": "no-date", "audio_path": "audio/call-000001.mp3",
                            "metadata": {**samples.metadata(1), "date": "yesterday"}}) + "\n")
    result = run_cli(str(manifest), "--dry-run", "--connection-id", "demo-audio", "--estimate-rate", "2",
                     env=cli_env())
    out = result.stderr
    assert result.returncode == 1
    assert "nothing sent: valid 25, invalid 6" in out
    size = sum(p.stat().st_size for p in (tmp_path / "audio").glob("call-*"))
    assert f"to upload: 25 row(s), {size / 1e6:.1f} MB; formats: wav 9, mp3 8, ogg_opus 8" in out
    # Problems grouped by kind, most frequent first, with at most three sample rows each.
    kinds = [line.strip() for line in out.splitlines() if line.startswith("  ") and not line.startswith("    ")]
    assert kinds[0] == "FILE_NOT_FOUND: 4" and sorted(kinds[1:]) == ["BAD_AUDIO: 1", "INVALID_METADATA: 1"]
    assert sum(line.startswith("    missing-") for line in out.splitlines()) == 3
    assert "no-date (line 31): date 'yesterday' is not" in out
    assert "time estimate: 12 s at 2.0 files/s (--estimate-rate)" in out
    assert served.emulator.store.count() == 0
    assert not (tmp_path / "manifest.jsonl.results.jsonl").exists()
    # Every problem row, not only the samples, in the file the summary names.
    problems = tmp_path / "manifest.jsonl.dry-run.jsonl"
    assert f"every problem row, with its line and reason: {problems}" in out
    written = {r["id"]: r for r in read_records(problems)}
    assert sorted(written) == ["missing-0", "missing-1", "missing-2", "missing-3", "no-date", "text"]
    assert (written["missing-3"]["code"], written["missing-3"]["line"]) == ("FILE_NOT_FOUND", 29)
    assert written["text"]["status"] == "invalid" and written["text"]["error"]
    # A second dry run writes the file anew; one that finds nothing removes it.
    run_cli(str(manifest), "--dry-run", "--connection-id", "demo-audio", env=cli_env())
    assert len(read_records(problems)) == 6
    manifest.write_text("\n".join(manifest.read_text().splitlines()[:25]) + "\n")
    clean = run_cli(str(manifest), "--dry-run", "--connection-id", "demo-audio", env=cli_env())
    assert clean.returncode == 0 and not problems.exists() and "every problem row" not in clean.stderr


def test_dry_run_estimates_from_the_rate_earlier_runs_measured(tmp_path: Path, served: ThreadedEmulator) -> None:
    manifest = samples.write_dataset(tmp_path, 200, sizes=(2000,))
    first = upload(served, manifest, "--shard", "0/2", "--results", str(tmp_path / "manifest.jsonl.results.jsonl"))
    assert first.returncode == 0, first.stderr
    result = run_cli(str(manifest), "--dry-run", "--connection-id", "demo-audio", env=cli_env())
    done = sum(1 for line in (tmp_path / "manifest.jsonl.results.jsonl").read_text().splitlines()
               if '"uploaded"' in line)
    assert f"skipped (uploaded before) {done}" in result.stderr and f"valid {200 - done}" in result.stderr
    assert "files/s (measured by earlier uploads in" in result.stderr, result.stderr


def test_demo_command_runs_the_whole_job_on_the_embedded_emulator(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    result = run_cli("demo", "--rows", "60", "--folder", str(folder), "--quiet")
    assert result.returncode == 0, result.stderr
    assert "uploaded 60" in result.stderr and "holds 60 talks" in result.stderr
    size = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
    assert f"the demo's files: {size / 1e6:.1f} MB in {folder}; remove them with: rm -r {folder}" in result.stderr
    assert "  bulk-upload manifest.csv --connection-id <your connection id> --dry-run" in result.stderr


def test_demo_in_a_temp_folder_removes_its_files_and_says_what_to_do_next(tmp_path: Path) -> None:
    result = run_cli("demo", "--rows", "12", "--quiet", env=cli_env(TMPDIR=str(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert list(tmp_path.iterdir()) == []
    assert re.search(r"the emulator stored 12 talks; the demo's files \(\d+\.\d MB in .*bulk-upload-demo-\w+\) "
                     r"are removed \(--keep keeps them\)", result.stderr), result.stderr
    assert "results: " not in result.stderr  # the results file went with them
    lines = result.stderr.splitlines()
    assert lines[-4:] == ["  export API_KEY=<your API key>",
                          "  bulk-upload manifest.csv --connection-id <your connection id> --dry-run",
                          "  bulk-upload manifest.csv --connection-id <your connection id>",
                          "(the first checks every row and sends nothing; the second uploads)"]
    next_steps = lines[lines.index("  export API_KEY=<your API key>") - 2:]
    assert next_steps[0].startswith("next, your own recordings") and max(map(len, next_steps)) <= 80
    kept = run_cli("demo", "--rows", "12", "--quiet", "--keep", env=cli_env(TMPDIR=str(tmp_path)))
    assert kept.returncode == 0 and len(list(tmp_path.glob("bulk-upload-demo-*/manifest.jsonl"))) == 1


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert run_cli(str(tmp_path / "absent.jsonl")).returncode == 2
    (tmp_path / "m.xlsx").write_bytes(b"PK\x03\x04\x14\x00\x06\x00\xc8\xff" * 20)  # a zip, as workbooks are
    wrong = run_cli(str(tmp_path / "m.xlsx"))
    assert wrong.returncode == 2 and "save it from Excel as CSV UTF-8 or Unicode Text" in wrong.stderr
    manifest = samples.write_dataset(tmp_path, 1)
    bad = run_cli(str(manifest), "--concurrency", "0", env=cli_env(API_KEY="x"))
    assert bad.returncode == 2 and "--concurrency" in bad.stderr


def test_the_retry_command_never_shows_a_token_command() -> None:
    from bulk_uploader.cli.runtime import _shown_args

    args = ["m.jsonl", "--iam-token-command", "echo t1.secret-token", "--iam-token-command=echo t1.x", "--quiet"]
    shown = " ".join(_shown_args(args))
    assert "secret-token" not in shown and "t1.x" not in shown
    assert shown == "m.jsonl --iam-token-command <same command> --iam-token-command=<same command> --quiet"


@pytest.mark.parametrize("event_loop", list(EventLoop))
def test_the_event_loop_asked_for_runs_the_upload(event_loop: EventLoop) -> None:
    async def loop_type() -> Any:
        return type(asyncio.get_running_loop())

    ran_on = _run_event_loop(loop_type(), event_loop)
    assert (ran_on.__module__.startswith("uvloop")) == (event_loop is EventLoop.uvloop)


def test_on_an_80_column_terminal_the_retry_command_is_one_line(tmp_path: Path, served: ThreadedEmulator) -> None:
    folder = tmp_path / "a-long-folder-name-for-the-exports-of-march"
    manifest = samples.write_dataset(folder, 6, name="calls-exported-from-the-old-recorder.jsonl")
    with manifest.open("a") as f:
        f.write(json.dumps({"id": "gone", "audio_path": "audio/gone.wav", "metadata": samples.metadata(9)}) + "\n")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    argv = [sys.executable, "-m", "bulk_uploader", str(manifest), "--endpoint", served.target, "--insecure",
            "--connection-id", "demo-audio", "--concurrency", "2"]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                            env=cli_env(API_KEY=API_KEY, COLUMNS="80", TERM="xterm-256color"))
    os.close(slave)
    screen = b""
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not data:
            break
        screen += data
    os.close(master)
    assert proc.wait(timeout=60) == 1
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.decode()).replace("\r", "")
    retry = [line for line in text.splitlines() if "run the same command:" in line]
    assert len(retry) == 1, text
    command = retry[0].split("run the same command: ", 1)[1].strip()
    assert command == "bulk-upload " + shlex.join(argv[3:])
    assert len(command) > 80
