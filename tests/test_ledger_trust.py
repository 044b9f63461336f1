"""The ledger's guarantees, case by case, over a real emulator and the real CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import API_KEY, ThreadedEmulator, cli_env, run_cli, start_upload, upload_argv

from bulk_uploader import samples
from bulk_uploader.emulator import EmulatorOptions, FaultOptions
from bulk_uploader.results import load_results, read_records


def upload(target: str, manifest: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*upload_argv(target, manifest, *extra)[3:], env=cli_env(API_KEY=API_KEY))


def test_a_rehearsals_ledger_does_not_hide_production(tmp_path: Path, served: ThreadedEmulator) -> None:
    manifest = samples.write_dataset(tmp_path, 20, sizes=(1000,))
    assert upload(served.target, manifest).returncode == 0
    production = ThreadedEmulator(EmulatorOptions(api_keys=[API_KEY]))
    try:
        refused = upload(production.target, manifest)
        assert refused.returncode == 2, refused.stderr
        assert f"records uploads to {served.target} (connection demo-audio)" in refused.stderr
        assert f"this run sends to {production.target}" in refused.stderr and "--results NEW_PATH" in refused.stderr
        assert production.emulator.store.count() == 0
        fresh = upload(production.target, manifest, "--results", str(tmp_path / "production.results.jsonl"))
        assert fresh.returncode == 0 and production.emulator.store.count() == 20
    finally:
        production.close()
    other_connection = run_cli(str(manifest), "--endpoint", served.target, "--insecure", "--connection-id",
                               "another", env=cli_env(API_KEY=API_KEY))
    assert other_connection.returncode == 2 and "connection another" in other_connection.stderr


def test_two_runs_on_one_ledger_cannot_both_send(tmp_path: Path) -> None:
    server = ThreadedEmulator(EmulatorOptions(api_keys=[API_KEY], faults=FaultOptions(latency_ms=50)))
    try:
        manifest = samples.write_dataset(tmp_path, 200, sizes=(1000,))
        first = start_upload(server.target, manifest, "--concurrency", "4")
        time.sleep(1.0)
        second = upload(server.target, manifest)
        assert second.returncode == 2
        assert "is in use by run" in second.stderr and f"{first.pid}" in second.stderr
        _, err = first.communicate(timeout=120)
        assert first.returncode == 0, err
        assert server.emulator.store.count() == 200  # each row once
    finally:
        server.close()


def test_a_ledger_that_is_the_manifest_or_not_a_ledger_is_refused(tmp_path: Path, served: ThreadedEmulator) -> None:
    manifest = samples.write_dataset(tmp_path, 5, sizes=(1000,))
    before = manifest.read_bytes()
    into_manifest = upload(served.target, manifest, "--results", str(manifest))
    assert into_manifest.returncode == 2 and "--results names the manifest" in into_manifest.stderr
    assert manifest.read_bytes() == before
    for name, content in (("binary.jsonl", os.urandom(300)), ("other.jsonl", b'{"name": "x"}\n{"name": "y"}\n')):
        foreign = tmp_path / name
        foreign.write_bytes(content)
        refused = upload(served.target, manifest, "--results", str(foreign))
        assert refused.returncode == 2 and "is not a bulk-upload results file" in refused.stderr
        assert foreign.read_bytes() == content
    assert served.emulator.store.count() == 0


def test_a_file_cut_short_while_it_streams_is_not_stored_in_part(tmp_path: Path, served: ThreadedEmulator) -> None:
    manifest = samples.write_dataset(tmp_path, 1, sizes=(6 * 1024 * 1024,))
    audio = tmp_path / json.loads(manifest.read_text())["audio_path"]
    proc = start_upload(served.target, manifest, "--max-mbps", "12")  # about 4 s for the file
    ledger = manifest.with_name("manifest.jsonl.results.jsonl")
    deadline = time.monotonic() + 60
    while not (ledger.exists() and '"sending"' in ledger.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)  # however slow the start, cut the file only once its stream has begun
    time.sleep(0.5)
    with audio.open("r+b") as f:
        f.truncate(3 * 1024 * 1024)  # the recorder's export rewrote it
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    [record] = read_records(manifest.with_name("manifest.jsonl.results.jsonl"))
    assert (record["status"], record["code"]) == ("invalid", "FILE_CHANGED"), record
    assert "6291500 bytes then, 3145728 now" in record["error"]
    assert record["bytes"] < 6291500 or record["status"] != "uploaded"
    # The call was cancelled, never half-closed, and the ledger claims nothing. (Whether the
    # emulator keeps what it got of a cancelled stream is its own semantics, tested with it.)
    assert len(load_results(manifest.with_name("manifest.jsonl.results.jsonl")).uploaded) == 0


def test_short_writes_are_finished_or_stop_the_run_and_every_resend_is_counted(
        tmp_path: Path, served: ThreadedEmulator) -> None:
    rows = 300
    manifest = samples.write_dataset(tmp_path, rows, sizes=(1000,))
    argv = upload_argv(served.target, manifest, "--concurrency", "8", "--quiet")
    # File writes capped at 20,000 bytes, as on a nearly full disk: the write that crosses it is cut short.
    capped = ("import resource, signal, runpy, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
              "resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000)); sys.argv = ['bulk-upload', *sys.argv[1:]]; "
              "runpy.run_module('bulk_uploader', run_name='__main__')")
    full = subprocess.run([sys.executable, "-c", capped, *argv[3:]], capture_output=True, text=True, timeout=120,
                          env=cli_env(API_KEY=API_KEY))
    assert full.returncode == 3, full.stderr
    assert "stopped: cannot write results file" in full.stderr
    rerun = upload(served.target, manifest)
    assert rerun.returncode == 0, rerun.stderr
    extra = served.emulator.store.count() - rows
    reported = int(rerun.stderr.split("possible duplicates: ")[1].split()[0]) if extra else 0
    assert extra <= reported  # every talk sent twice is one the next run knew it may have sent


def test_the_retry_manifest_is_the_manifest_minus_what_was_uploaded(tmp_path: Path, served: ThreadedEmulator) -> None:
    manifest = samples.write_dataset(tmp_path, 40, sizes=(1000,))
    shard = upload(served.target, manifest, "--shard", "0/3")  # shards 1 and 2 never ran
    assert shard.returncode == 0
    results = sorted(tmp_path.glob("*.results.jsonl"))
    report = run_cli("report", *map(str, results), "--manifest", str(manifest))
    left = 40 - served.emulator.store.count()
    assert report.returncode == 1 and f"{left} row(s) to retry written to" in report.stdout, report.stdout
    retry = manifest.with_name("manifest.retry.jsonl")
    assert len(retry.read_text().splitlines()) == left
    assert upload(served.target, retry).returncode == 0 and served.emulator.store.count() == 40
    done = run_cli("report", *map(str, sorted(tmp_path.glob("*.results.jsonl"))), "--manifest", str(manifest),
                   "--retry-manifest", str(tmp_path / "nothing.jsonl"))
    assert done.returncode == 0 and "0 row(s) to retry" in done.stdout
    assert not (tmp_path / "nothing.jsonl").exists()


def test_dedupe_values_are_unique_over_the_whole_manifest(tmp_path: Path, served: ThreadedEmulator) -> None:
    manifest = samples.write_dataset(tmp_path, 10, sizes=(1000,))
    assert upload(served.target, manifest, "--dedupe-key", "client_id").returncode == 0
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    newcomer = {**rows[3], "id": "late-row", "audio_path": rows[4]["audio_path"]}  # shares row 3's client_id
    with manifest.open("a") as f:
        f.write(json.dumps(newcomer) + "\n")
    rerun = upload(served.target, manifest, "--dedupe-key", "client_id")
    assert rerun.returncode == 1
    outcome = {r["id"]: r for r in read_records(manifest.with_name("manifest.jsonl.results.jsonl"))}
    assert outcome["late-row"]["code"] == "DUPLICATE_DEDUPE_KEY"
    assert served.emulator.store.count() == 10


def test_a_second_ctrl_c_says_how_many_rows_it_cut_off(tmp_path: Path) -> None:
    # Response times spread over 0.3-1.1 s, so calls are always in flight when the second Ctrl-C comes.
    server = ThreadedEmulator(EmulatorOptions(api_keys=[API_KEY], faults=FaultOptions(latency_ms=300, jitter_ms=800)))
    try:
        rows = 200
        manifest = samples.write_dataset(tmp_path, rows, sizes=(1000,))
        proc = start_upload(server.target, manifest, "--concurrency", "16")
        landed = time.monotonic() + 60  # the first row stored: calls are going out (however slow the start-up)
        while server.emulator.store.count() == 0 and time.monotonic() < landed:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        cut = int(err.split("cut off: ")[1].split()[0])
        assert 1 <= cut <= 16 and "they may be stored" in err
        time.sleep(1.2)  # the cut-off calls still land on the server
        rerun = upload(server.target, manifest, "--concurrency", "64")
        assert rerun.returncode == 0, rerun.stderr
        extra = server.emulator.store.count() - rows
        assert extra <= cut
        if extra:
            assert f"possible duplicates: {cut} talk(s)" in rerun.stderr
        assert len(load_results(manifest.with_name("manifest.jsonl.results.jsonl")).uploaded) == rows
    finally:
        server.close()


def test_credentials_lost_mid_run_print_the_summary_and_the_retry_command(tmp_path: Path) -> None:
    secret = "emulator-token-secret"  # the emulator's test secret, not a credential
    server = ThreadedEmulator(EmulatorOptions(token_secret=secret, faults=FaultOptions(latency_ms=20)))
    try:
        manifest = samples.write_dataset(tmp_path, 400, sizes=(1000,))
        once = tmp_path / "issued"
        # Prints one token that lives 2 s, then fails: the session behind it has ended. Failed
        # renewals are retried while that token is good; once the service refuses it, the run stops.
        command = (f"if [ -e {once} ]; then echo 'session expired' >&2; exit 4; fi; touch {once}; "
                   f"{sys.executable} {Path(__file__).with_name('token_command.py')} 2")
        proc = subprocess.run([*upload_argv(server.target, manifest, "--iam-token-command", command,
                                            "--token-refresh-seconds", "0.5", "--concurrency", "2")],
                              capture_output=True, text=True, timeout=120,
                              env=cli_env(EMULATOR_TOKEN_SECRET=secret))
        assert proc.returncode == 3, proc.stderr
        assert "stopped: --iam-token-command exited with status 4: session expired" in proc.stderr
        assert "Stopped in" in proc.stderr and "to try the rest again, run the same command: bulk-upload" in proc.stderr
        assert "<same command>" in proc.stderr  # the command itself is not repeated
        assert 0 < server.emulator.store.count() < 400
    finally:
        server.close()


def test_rows_waiting_for_room_on_a_connection_are_not_journaled_as_sent(tmp_path: Path) -> None:
    server = ThreadedEmulator(EmulatorOptions(api_keys=[API_KEY], faults=FaultOptions(latency_ms=4000)))
    try:
        rows = 8
        manifest = samples.write_dataset(tmp_path, rows, sizes=(1024 * 1024,))
        results = manifest.with_name("manifest.jsonl.results.jsonl")
        # One connection, files sent whole: the slow start lets the first files leave (4 MiB),
        # and the others wait for room until an answer comes, 4 s later. Killed before that.
        proc = start_upload(server.target, manifest, "--concurrency", str(rows), "--connections", "1")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not results.exists() or not read_records(results, journal=True)):
            time.sleep(0.05)
        time.sleep(1.5)
        proc.kill()
        proc.communicate(timeout=30)
        journal = read_records(results, journal=True)
        arrived = sum(server.emulator.peers.values())  # calls that reached the service
        assert 0 < arrived < rows and {r["status"] for r in journal} == {"sending"}
        assert len(journal) == arrived, [r["id"] for r in journal]  # only the calls that left
        # The next run settles only the rows that left: at most they are possible duplicates.
        done = upload(server.target, manifest, "--concurrency", str(rows), "--connections", "1")
        assert done.returncode == 0, done.stderr
        assert f"possible duplicates: {arrived} talk(s) from {arrived} row(s)" in done.stderr, done.stderr
        assert {r["status"] for r in read_records(results)} == {"uploaded"}
    finally:
        server.close()
