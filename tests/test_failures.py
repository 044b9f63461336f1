"""Failures told apart, over a real emulator and, between it and the client, a proxy that fails on command."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import API_KEY, ThreadedEmulator, cli_env, run_cli, start_upload, upload_argv
from fault_proxy import FaultProxy

from bulk_uploader import samples
from bulk_uploader.emulator import EmulatorOptions, FaultOptions
from bulk_uploader.results import read_records


@contextmanager
def behind_a_proxy(faults: FaultOptions | None = None) -> Iterator[tuple[ThreadedEmulator, FaultProxy]]:
    """An emulator with `faults`, and between it and the client a FaultProxy; both closed after."""
    server = ThreadedEmulator(EmulatorOptions(api_keys=[API_KEY], faults=faults or FaultOptions()))
    proxy = FaultProxy(server.target)
    try:
        yield server, proxy
    finally:
        proxy.close()
        server.close()


@contextmanager
def uploading_behind_a_proxy(tmp_path: Path, rows: int, stored: int, *args: str, latency_ms: float = 50
                             ) -> Iterator[tuple[ThreadedEmulator, FaultProxy, subprocess.Popen[str], Path]]:
    """A run of `rows` small rows (with `args`) to an emulator behind a FaultProxy, from the
    moment `stored` of them are stored: where a test injects its fault."""
    with behind_a_proxy(FaultOptions(latency_ms=latency_ms)) as (server, proxy):
        manifest = samples.write_dataset(tmp_path, rows, sizes=(1000,))
        proc = start_upload(proxy.target, manifest, *args)
        while server.emulator.store.count() < stored:
            time.sleep(0.05)
        yield server, proxy, proc, manifest


def upload(target: str, manifest: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*upload_argv(target, manifest, *extra)[3:], env=cli_env(API_KEY=API_KEY))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_nothing_listening_stops_at_once_and_leaves_no_ambiguous_row(tmp_path: Path, served: ThreadedEmulator) -> None:
    manifest = samples.write_dataset(tmp_path, 100, sizes=(1000,))
    started = time.monotonic()
    nobody = upload(f"127.0.0.1:{free_port()}", manifest)
    assert nobody.returncode == 2 and time.monotonic() - started < 60
    assert "nothing is listening there (connection refused); nothing was sent" in nobody.stderr
    assert "Traceback" not in nobody.stderr and "chttp2" not in nobody.stderr  # no gRPC log lines
    results = manifest.with_name("manifest.jsonl.results.jsonl")
    assert not results.exists() or read_records(results, journal=True) == []
    good = upload(served.target, manifest)
    assert good.returncode == 0 and "possible duplicates" not in good.stderr
    assert served.emulator.store.count() == 100


def test_a_rerun_with_every_row_uploaded_ends_0_while_the_service_is_out_of_reach(tmp_path: Path) -> None:
    """Checking a finished migration again needs no service: nothing is left to send. One row left
    to send, and the same rerun says the service cannot be reached, as before."""
    manifest = samples.write_dataset(tmp_path, 30, sizes=(1000,))
    server = ThreadedEmulator(EmulatorOptions(api_keys=[API_KEY]))
    try:
        assert upload(server.target, manifest).returncode == 0 and server.emulator.store.count() == 30
    finally:
        server.close()
    results = manifest.with_name("manifest.jsonl.results.jsonl")
    ledger = results.read_bytes()

    again = upload(server.target, manifest)
    assert again.returncode == 0, again.stderr
    assert "uploaded 0, skipped (done before) 30, failed 0, invalid 0" in again.stderr
    assert "every row was uploaded before: nothing to send, so the service was not contacted" in again.stderr
    assert results.read_bytes() == ledger
    tokenless = run_cli(*upload_argv(server.target, manifest)[3:], "--iam-token-command", "exit 3", env=cli_env())
    assert tokenless.returncode == 0 and "not contacted" in tokenless.stderr, tokenless.stderr  # no token asked for

    row = json.loads(manifest.read_text().splitlines()[0]) | {"id": "one-more"}
    with manifest.open("a") as f:
        f.write(json.dumps(row) + "\n")
    more = upload(server.target, manifest)
    assert more.returncode == 2 and "nothing is listening there (connection refused); nothing was sent" in more.stderr
    assert "not contacted" not in more.stderr and results.read_bytes() == ledger


def test_a_manifest_without_rows_says_so_and_needs_no_service(tmp_path: Path) -> None:
    """A header-only export (or an empty file) is nothing to send, with or without an old results
    file beside it: said as such, not as "every row was uploaded before", and no service asked."""
    nobody = f"127.0.0.1:{free_port()}"
    header_only = tmp_path / "export.csv"
    header_only.write_bytes("id;audio_path;Оператор\r\n".encode("cp1251"))
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    for manifest in (header_only, empty):
        for _ in range(2):  # the second beside the first's results file
            run = upload(nobody, manifest, *(("--encoding", "cp1251") if manifest.suffix == ".csv" else ()))
            assert run.returncode == 0, run.stderr
            assert "the manifest has no rows: nothing to send, so the service was not contacted" in run.stderr
            assert "uploaded before" not in run.stderr and "Traceback" not in run.stderr
    checked = run_cli(str(empty), "--dry-run", env=cli_env())
    assert checked.returncode == 0 and "the manifest has no rows: nothing to send" in checked.stderr
    (tmp_path / "one").mkdir()
    one = samples.write_dataset(tmp_path / "one", 1, sizes=(1000,))  # of two shards, one holds its row
    said = {k: run_cli(str(one), "--dry-run", "--shard", f"{k}/2", env=cli_env()).stderr for k in (0, 1)}
    empty_shards = [k for k, text in said.items() if f"shard {k}/2 of the manifest has no rows: nothing to send" in text]
    assert len(empty_shards) == 1 and "valid 1" in said[1 - empty_shards[0]], said
    assert "no rows" not in said[1 - empty_shards[0]]


def test_tls_to_the_plaintext_emulator_says_to_add_insecure(tmp_path: Path, served: ThreadedEmulator) -> None:
    manifest = samples.write_dataset(tmp_path, 5, sizes=(1000,))
    started = time.monotonic()
    tls = run_cli(str(manifest), "--endpoint", served.target, "--connection-id", "demo-audio",
                  env=cli_env(API_KEY=API_KEY))
    assert tls.returncode == 2 and time.monotonic() - started < 30
    assert "the server speaks plaintext, not TLS: for the emulator add --insecure" in tls.stderr
    url = run_cli(str(manifest), "--endpoint", "https://api.example:443", env=cli_env(API_KEY=API_KEY))
    assert url.returncode == 2 and "not a URL: --endpoint api.example:443" in url.stderr


def test_an_unknown_connection_is_refused_after_a_few_calls_not_row_by_row(
        tmp_path: Path, served: ThreadedEmulator) -> None:
    manifest = samples.write_dataset(tmp_path, 300, sizes=(1000,))
    result = run_cli(str(manifest), "--endpoint", served.target, "--insecure", "--connection-id", "no-such-connection",
                     "--concurrency", "8", env=cli_env(API_KEY=API_KEY))
    assert result.returncode == 1, result.stderr
    calls = sum(served.emulator.rejections.values())
    assert 0 < calls <= 2 * 8
    assert "connection no-such-connection: the service refused" in result.stderr
    assert "not sent:" in result.stderr
    assert len(read_records(manifest.with_name("manifest.jsonl.results.jsonl"))) == calls  # the rest: no line
    assert served.emulator.store.count() == 0


def test_a_server_that_hangs_a_new_connection_briefly_at_start_is_waited_for(tmp_path: Path) -> None:
    """A connection accepted and then left silent (an overloaded balancer) holds gRPC's attempt for
    its whole connect timeout (20 s by default, longer than the run's 15 s to connect): the run
    would stop as if the endpoint were wrong, though the service answered a new connection at once."""
    with behind_a_proxy() as (server, proxy):
        manifest = samples.write_dataset(tmp_path, 20, sizes=(1000,))
        proxy.set("stall")
        proc = start_upload(proxy.target, manifest)
        time.sleep(2)
        proxy.set("forward")
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert server.emulator.store.count() == 20


def test_a_reconnect_that_meets_a_hung_server_is_tried_again_within_seconds(tmp_path: Path) -> None:
    rows = 600
    with uploading_behind_a_proxy(tmp_path, rows, 60, "--concurrency", "4") as (server, proxy, proc, manifest):
        proxy.set("refuse")  # connections reset, then new ones accepted and left silent for 3 s
        time.sleep(1)
        proxy.set("stall")
        time.sleep(3)
        proxy.set("forward")
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outage = re.search(r"service unreachable 1 time\(s\), (\d+) s in all", err)
        assert outage is not None, err
        assert int(outage.group(1)) < 15  # gRPC's default gives the silent attempt 20 s
        assert server.emulator.store.count() >= rows


def test_calls_avoid_a_connection_that_is_down_while_another_is_up(tmp_path: Path) -> None:
    """After connections are reset they come back one by one: a call on one not back yet fails at
    once, and were the least loaded connection taken regardless, the rows would spin on it, each
    spin counted as an outage and a retry, until it too came back."""
    rows = 600
    with uploading_behind_a_proxy(tmp_path, rows, 100,
                                  "--concurrency", "12", "--connections", "3") as (server, proxy, proc, manifest):
        proxy.set("refuse")
        time.sleep(1)
        proxy.set("forward")
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outages = re.search(r"service unreachable (\d+) time\(s\)", err)
        retries = re.search(r"(\d+) retries", err)
        assert outages is not None and retries is not None, err
        assert int(outages.group(1)) == 1 and int(retries.group(1)) <= 2 * 12, err  # one outage, told once
        assert server.emulator.store.count() >= rows


@pytest.mark.long
def test_a_90_second_outage_pauses_the_run_and_fails_no_row(tmp_path: Path) -> None:
    rows = 400
    with uploading_behind_a_proxy(tmp_path, rows, 100, "--concurrency", "4",
                                  latency_ms=40) as (server, proxy, proc, manifest):
        proxy.set("refuse")
        time.sleep(90)
        stored_during = server.emulator.store.count()
        proxy.set("forward")
        back = time.monotonic()
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert time.monotonic() - back < 30  # resumed within seconds of the service's return
        records = {r["id"]: r for r in read_records(manifest.with_name("manifest.jsonl.results.jsonl"))}
        assert len(records) == rows and {r["status"] for r in records.values()} == {"uploaded"}
        assert stored_during < rows and "service unreachable 1 time(s)" in err
        stored = {t.fields["client_id"] for t in server.emulator.store.talks()}
        assert len(stored) == rows  # every row arrived


@pytest.mark.long
def test_a_half_dead_connection_is_replaced_and_progress_resumes_within_a_minute(tmp_path: Path) -> None:
    rows = 300
    with uploading_behind_a_proxy(tmp_path, rows, 60,
                                  "--concurrency", "4", "--connections", "2") as (server, proxy, proc, manifest):
        proxy.set("blackhole")  # the open connection silently drops everything; a new one would work
        dead = time.monotonic()
        before = server.emulator.store.count()
        while server.emulator.store.count() <= before + 4 and time.monotonic() - dead < 90:
            time.sleep(0.2)
        resumed = time.monotonic() - dead
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert resumed < 60, f"progress resumed after {resumed:.0f} s"
        assert "connections stalled with calls in flight: 2, each replaced by a new one" in err  # both, at once
        assert len(server.emulator.peers) == 4  # two, then two in their place (the proxy's side of each)


def test_one_silent_connection_among_live_ones_is_replaced_while_the_others_go_on(tmp_path: Path) -> None:
    rows = 400
    with uploading_behind_a_proxy(tmp_path, rows, 40, "--concurrency", "4", "--connections", "2",
                                  "--stall-seconds", "3") as (server, proxy, proc, manifest):
        proxy.silence_oldest()  # the other connection goes on carrying calls
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "connections stalled with calls in flight: 1, each replaced by a new one" in err
        assert len(server.emulator.peers) == 3
        records = read_records(manifest.with_name("manifest.jsonl.results.jsonl"))
        assert len(records) == rows and {r["status"] for r in records} == {"uploaded"}
        # The rows caught on the silent connection were sent again once it was replaced, seconds
        # later, while the live one still had many rows to carry: not when the run ran dry, nor
        # at their deadlines.
        caught = [n for n, r in enumerate(records) if r["attempts"] > 1]
        assert caught and rows - 1 - caught[-1] >= 50, f"caught rows finished at {caught} of {rows}"


def test_files_sent_whole_over_a_slow_uplink_neither_stall_nor_time_out(tmp_path: Path) -> None:
    with behind_a_proxy() as (server, proxy):
        proxy.throttle(3_000_000)  # 24 Mbit/s
        rows = 24
        manifest = samples.write_dataset(tmp_path, rows, sizes=(1024 * 1024,))
        # 24 MiB sent whole at once: gRPC gets the first few files through one by one, then the
        # rest share the link and arrive together, about 7 s later: far past the 2 s without
        # movement that would mean a stall, and the 3 s + 1 s a 1 MiB call would be given
        # alone, were the bytes in flight beside each call not allowed for.
        started = time.monotonic()
        result = upload(proxy.target, manifest, "--concurrency", str(rows), "--stall-seconds", "2", "--timeout", "3")
        took = time.monotonic() - started
        assert result.returncode == 0, result.stderr
        print(f"24 x 1 MiB at 3 MB/s: {took:.1f} s")
        assert "stalled" not in result.stderr and "possible duplicates" not in result.stderr
        records = read_records(manifest.with_name("manifest.jsonl.results.jsonl"))
        assert len(records) == rows and all(r["status"] == "uploaded" and r["attempts"] == 1 for r in records)
        assert server.emulator.store.count() == rows


@pytest.mark.long
def test_a_link_slower_than_the_deadlines_assume_lowers_the_concurrency_and_stretches_them(tmp_path: Path) -> None:
    with behind_a_proxy() as (server, proxy):
        proxy.throttle(50_000)  # 0.4 Mbit/s: slower than the 1 Mbit/s the first deadlines assume
        rows = 8
        manifest = samples.write_dataset(tmp_path, rows, sizes=(128 * 1024,))
        # 1 MiB sent at once takes 21 s; each call's deadline allows 1 s + 896 KiB at 1 Mbit/s.
        # The calls out of time with none going through halve the concurrency, and those that
        # went through show the link's rate, which the next deadlines allow for. Before, the
        # calls ran out of time round after round (8 x 256 KiB at 0.2 MB/s and deadlines made
        # for 1 MiB/s: 55 retries, rows on their 10th attempt).
        result = upload(proxy.target, manifest, "--concurrency", str(rows), "--timeout", "1", "--stall-seconds", "60")
        assert result.returncode == 0, result.stderr
        records = read_records(manifest.with_name("manifest.jsonl.results.jsonl"))
        attempts = sorted(r["attempts"] for r in records)
        print(f"8 x 128 KiB at 50 KB/s: attempts {attempts}; stored {server.emulator.store.count()}")
        assert len(records) == rows and all(r["status"] == "uploaded" for r in records)
        assert attempts[-1] <= 4 and sum(attempts) - rows <= 2 * rows, attempts


def test_the_first_files_sent_whole_over_a_slow_uplink_are_not_taken_for_a_stall(tmp_path: Path) -> None:
    with behind_a_proxy() as (server, proxy):
        proxy.throttle(400_000)  # 3.2 Mbit/s
        rows = 4
        manifest = samples.write_dataset(tmp_path, rows, sizes=(1024 * 1024,))
        # The first round, one file on each connection, crosses in about 10 s and shows nothing
        # until then. Allowing its 4 MiB at 1 MiB/s (2 s + 4 s), the run replaced all four
        # connections as stalled, round after round; nothing had shown the link's rate yet.
        result = upload(proxy.target, manifest, "--concurrency", str(rows), "--connections", str(rows),
                        "--stall-seconds", "2")
        assert result.returncode == 0, result.stderr
        assert "stalled" not in result.stderr and "possible duplicates" not in result.stderr
        records = read_records(manifest.with_name("manifest.jsonl.results.jsonl"))
        assert len(records) == rows and all(r["status"] == "uploaded" and r["attempts"] == 1 for r in records)
        assert server.emulator.store.count() == rows


def test_a_row_with_an_absurd_timestamp_is_that_rows_error_only(tmp_path: Path, served: ThreadedEmulator) -> None:
    manifest = tmp_path / "chats.jsonl"
    rows = []
    for n in range(11):
        meta = {**samples.metadata(n), "bot_name": "Bot", "bot_id": "bot-1"}
        stamp = 1e20 if n == 5 else 1_700_000_000 + n
        rows.append({"id": f"chat-{n}", "metadata": meta,
                     "messages": [{"user_id": meta["client_id"], "text": "hello", "timestamp": stamp}]})
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run_cli(str(manifest), "--endpoint", served.target, "--insecure", "--chat-connection-id", "demo-chat",
                     env=cli_env(API_KEY=API_KEY))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "ExceptionGroup" not in result.stderr
    outcome = {r["id"]: r for r in read_records(manifest.with_name("chats.jsonl.results.jsonl"))}
    assert outcome["chat-5"]["code"] == "BAD_CHAT" and "1e+20" in outcome["chat-5"]["error"]
    assert sum(r["status"] == "uploaded" for r in outcome.values()) == 10


def test_a_client_killed_mid_stream_leaves_no_talk(tmp_path: Path, served: ThreadedEmulator) -> None:
    manifest = samples.write_dataset(tmp_path, 1, sizes=(8 * 1024 * 1024,))
    proc = start_upload(served.target, manifest, "--max-mbps", "16")  # about 4 s for the file
    time.sleep(2.0)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    time.sleep(1.0)
    assert served.emulator.store.count() == 0  # a stream without the client's half-close is no request
