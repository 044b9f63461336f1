"""Start-up: a command imports only what it uses. The light commands never load gRPC (nor the
pipeline, nor asyncio, nor what only a run needs); a dry run sends nothing and never loads gRPC
either; what only some options need (a mapping's TOML parser, zoneinfo) loads with them. Checked
in a real process by what its sys.modules holds when it exits, not by timing; and the garbage
collector waits while the command line loads and collects once the run is under way."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import API_KEY, ThreadedEmulator, cli_env

from bulk_uploader import samples
from bulk_uploader.cli import collector
from bulk_uploader.model import RowResult
from bulk_uploader.results import Destination, ResultsWriter

HEAVY = ("grpc", "google.protobuf", "bulk_uploader.transport", "bulk_uploader.pipeline", "asyncio")
# What only a run needs (its options checked, its credentials, rows, progress): --help shows none of it.
RUN_ONLY = ("bulk_uploader.cli.credentials", "bulk_uploader.progress", "bulk_uploader.model", "bulk_uploader.chat",
            "bulk_uploader.schema", "bulk_uploader.shard", "bulk_uploader.textfile", "bulk_uploader.stats")
# Loaded only with the options that need them: --mapping (tomllib), a named --assume-timezone zone.
OPTIONAL = ("bulk_uploader.mapping", "tomllib", "zoneinfo")
# Loaded only by the rows that need them: settling unknown outcomes (--dedupe-key), a delimited
# manifest's csv, chat rows; aiofiles, for a chat file or file work that leaves the event loop.
ROWS_ONLY = ("bulk_uploader.settle", "bulk_uploader.lookup", "csv", "bulk_uploader.chat", "aiofiles")

# Runs the console script's main with argv, then prints which of `watched` are loaded by then.
PROBE = """
import atexit, sys
atexit.register(lambda: print("LOADED", *[m for m in {watched!r} if m in sys.modules], file=sys.stderr))
atexit.register(lambda: print("YOUNG", __import__("gc").get_threshold()[0], file=sys.stderr))
from bulk_uploader.cli import main
main(sys.argv[1:])
"""


def loaded_by(*args: str, watched: tuple[str, ...] = HEAVY, **env: str
              ) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    done = subprocess.run([sys.executable, "-c", PROBE.format(watched=watched), *args], capture_output=True, text=True,
                          timeout=60, env=cli_env(**env), stdin=subprocess.DEVNULL)
    line = [l for l in done.stderr.splitlines() if l.startswith("LOADED")][-1]
    return set(line.split()[1:]), done


@pytest.fixture
def results(tmp_path: Path) -> Path:
    path = tmp_path / "manifest.jsonl.results.jsonl"
    writer = ResultsWriter(path, header=Destination("localhost:1", "c").header())
    writer.write(RowResult("row-1", "uploaded", talk_id="t1", line=1, audio_path="a.wav", attempts=1))
    writer.write(RowResult("row-2", "failed", code="INVALID_ARGUMENT", error="no", line=2, audio_path="b.wav"))
    writer.close()
    return path


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["upload", "--help"], ["verify", "--help"]])
def test_light_commands_load_neither_grpc_nor_the_pipeline(args: list[str]) -> None:
    loaded, done = loaded_by(*args, watched=HEAVY + RUN_ONLY + OPTIONAL)
    assert done.returncode == 0, done.stderr
    assert loaded == set()


def test_report_loads_neither_grpc_nor_the_pipeline(results: Path) -> None:
    loaded, done = loaded_by("report", str(results), watched=HEAVY + OPTIONAL + ("bulk_uploader.manifest",))
    assert done.returncode == 1 and "failed 1" in done.stdout + done.stderr, done.stdout + done.stderr
    assert loaded == set()


def test_a_dry_run_never_loads_grpc(tmp_path: Path) -> None:
    manifest = samples.write_dataset(tmp_path, 3)
    loaded, done = loaded_by(str(manifest), "--dry-run", "--connection-id", "demo-audio", watched=HEAVY + OPTIONAL)
    assert done.returncode == 0 and "valid 3" in done.stderr, done.stderr
    assert loaded == {"asyncio", "bulk_uploader.pipeline"}  # it runs the pipeline, and nothing that sends


def test_an_upload_loads_only_what_sending_needs_and_collects_its_young_generation_less_often(
        tmp_path: Path, served: ThreadedEmulator) -> None:
    manifest = samples.write_dataset(tmp_path, 3)
    args = [str(manifest), "--endpoint", served.target, "--insecure", "--quiet", "--connection-id", "demo-audio"]
    loaded, done = loaded_by(*args, watched=OPTIONAL + ROWS_ONLY + ("bulk_uploader.report",), API_KEY=API_KEY)
    assert done.returncode == 0 and "uploaded 3" in done.stderr, done.stderr
    assert loaded == set()  # the report's rate estimate is a dry run's
    assert f"YOUNG {collector.YOUNG_COLLECTION_THRESHOLD}" in done.stderr
    _, dry = loaded_by(str(manifest), "--dry-run", "--connection-id", "demo-audio", watched=OPTIONAL)
    assert "YOUNG 700" in dry.stderr  # Python's own: a dry run keeps few objects alive


def test_a_dry_run_of_audio_rows_loads_nothing_only_other_rows_need(tmp_path: Path) -> None:
    manifest = samples.write_dataset(tmp_path, 1)
    loaded, done = loaded_by(str(manifest), "--dry-run", "--connection-id", "demo-audio", watched=ROWS_ONLY)
    assert done.returncode == 0 and "valid 1" in done.stderr, done.stderr
    assert loaded == set()


def test_what_some_rows_need_loads_with_them(tmp_path: Path, served: ThreadedEmulator) -> None:
    samples.write_dataset(tmp_path, 1)
    (tmp_path / "dialog.json").write_text(json.dumps({"messages": [
        {"user_id": "op-1", "text": "hello", "timestamp": "2025-04-24T11:00:00+03:00"}]}), encoding="utf-8")
    fields, bot = samples.metadata(1), {"bot_name": "Helper", "bot_id": "bot-1"}  # a chat's connection needs a bot
    manifest = tmp_path / "mixed.csv"
    with manifest.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "audio_path", "chat_path", *fields, *bot])
        writer.writerow(["audio", "audio/call-000000.wav", "", *fields.values(), "", ""])
        writer.writerow(["chat", "", "dialog.json", *fields.values(), *bot.values()])
    args = [str(manifest), "--endpoint", served.target, "--insecure", "--quiet", "--connection-id", "demo-audio",
            "--chat-connection-id", "demo-chat", "--dedupe-key", "client_id"]
    loaded, done = loaded_by(*args, watched=ROWS_ONLY, API_KEY=API_KEY)
    assert done.returncode == 0 and "uploaded 2" in done.stderr, done.stderr
    assert loaded == set(ROWS_ONLY)  # aiofiles: the chat file
    assert served.emulator.store.count() == 2


def test_a_named_time_zone_loads_zoneinfo_and_is_applied(tmp_path: Path) -> None:
    manifest = samples.write_dataset(tmp_path, 1)
    args = [str(manifest), "--dry-run", "--connection-id", "demo-audio"]
    loaded, done = loaded_by(*args, "--assume-timezone", "Europe/Moscow", watched=OPTIONAL)
    assert done.returncode == 0 and "valid 1" in done.stderr, done.stderr
    assert loaded == {"zoneinfo"}
    loaded, done = loaded_by(*args, "--assume-timezone", "Mars/Olympus", watched=OPTIONAL)
    assert done.returncode == 2 and "unknown time zone 'Mars/Olympus'" in done.stderr, done.stderr


# Notes each collection main sets off, and whether the pipeline was loaded by then; at exit, whether
# the collector runs and how many objects start-up left out of collections for good.
COLLECTIONS_PROBE = """
import atexit, gc, sys
seen, started = [], []
gc.callbacks.append(lambda phase, info: started and phase == "start"
                    and seen.append("bulk_uploader.pipeline" in sys.modules))
atexit.register(lambda: print("COLLECTIONS", len(seen), sum(seen), gc.isenabled(), gc.get_freeze_count() > 0,
                              file=sys.stderr))
from bulk_uploader.cli import main
started.append(True)
main(sys.argv[1:])
"""


def collections_in(*args: str) -> tuple[list[str], subprocess.CompletedProcess[str]]:
    done = subprocess.run([sys.executable, "-c", COLLECTIONS_PROBE, *args], capture_output=True, text=True,
                          timeout=60, env=cli_env(), stdin=subprocess.DEVNULL)
    line = [l for l in done.stderr.splitlines() if l.startswith("COLLECTIONS")][-1]
    return line.split()[1:], done


def test_the_collector_waits_while_the_command_line_loads_and_runs_during_the_run(tmp_path: Path) -> None:
    manifest = samples.write_dataset(tmp_path, 20)
    (count, after_load, enabled, frozen), done = collections_in(str(manifest), "--dry-run", "--connection-id",
                                                                "demo-audio")
    assert done.returncode == 0 and "valid 20" in done.stderr, done.stderr
    assert int(count) > 0 and after_load == count  # none while typer and the pipeline loaded, some after
    assert (enabled, frozen) == ("True", "True")


@pytest.mark.parametrize("args", [["--help"], ["missing.jsonl", "--dry-run"]])
def test_the_collector_runs_again_after_a_command_that_ends_before_its_work(args: list[str]) -> None:
    (_, _, enabled, _), done = collections_in(*args)
    assert done.returncode in (0, 2), done.stderr
    assert enabled == "True"


COMMAND_MODULES = ("bulk_uploader.cli.upload", "bulk_uploader.cli.tools", "bulk_uploader.cli.verify")
COMMANDS_PROBE = """
import atexit, sys
atexit.register(lambda: print("LOADED", *[m for m in {modules!r} if m in sys.modules], file=sys.stderr))
from bulk_uploader.cli import main
main(sys.argv[1:])
"""


@pytest.mark.parametrize(("args", "expected"), [
    (["report", "--help"], {"bulk_uploader.cli.tools"}),
    (["upload", "--help"], {"bulk_uploader.cli.upload"}),
    (["--dry-run", "missing.jsonl"], {"bulk_uploader.cli.upload"}),  # routed to the default command
    (["--help"], set(COMMAND_MODULES)),
])
def test_a_command_loads_only_its_own_command_module(args: list[str], expected: set[str]) -> None:
    done = subprocess.run([sys.executable, "-c", COMMANDS_PROBE.format(modules=COMMAND_MODULES), *args],
                          capture_output=True, text=True, timeout=60, env=cli_env(), stdin=subprocess.DEVNULL)
    line = [l for l in done.stderr.splitlines() if l.startswith("LOADED")][-1]
    assert set(line.split()[1:]) == expected, done.stderr


def test_the_help_lists_every_command() -> None:
    done = subprocess.run([sys.executable, "-m", "bulk_uploader", "--help"], capture_output=True, text=True,
                          timeout=60, env=cli_env(), stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    names = [n for n in ("upload", "emulator", "talks", "report", "manifest", "demo", "verify") if f" {n} " in done.stdout]
    assert len(names) == 7, done.stdout
