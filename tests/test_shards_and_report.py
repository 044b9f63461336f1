"""Many machines: shards of one manifest, reports over their results, retry manifests."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import ThreadedEmulator, cli_env, run_cli, start_upload, upload_argv

from bulk_uploader import samples
from bulk_uploader.errors import ConfigError
from bulk_uploader.manifest import read_manifest
from bulk_uploader.results import read_records
from bulk_uploader.shard import Shard, parse_shard, shard_from_environment


def test_shards_are_disjoint_and_cover_the_manifest(tmp_path: Path) -> None:
    manifest = samples.write_dataset(tmp_path, 500, sizes=(100,), distinct_files=5)
    keys = [row.key for row in read_manifest(manifest)]
    shards = [Shard(k, 4) for k in range(4)]
    parts = [{key for key in keys if shard.contains(key)} for shard in shards]
    assert sum(len(p) for p in parts) == len(keys) == len(set().union(*parts))
    assert all(90 <= len(p) <= 160 for p in parts)  # a hash spreads them
    assert [Shard(1, 4).contains(key) for key in keys] == [Shard(1, 4).contains(key) for key in keys]


def test_shard_from_the_command_line_and_from_schedulers() -> None:
    assert parse_shard("2/8") == Shard(2, 8)
    with pytest.raises(ConfigError):
        parse_shard("8/8")
    assert shard_from_environment({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4"}, None) == Shard(3, 4)
    assert shard_from_environment({"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "4",
                                   "SLURM_ARRAY_TASK_MIN": "1"}, None) == Shard(3, 4)
    assert shard_from_environment({"JOB_COMPLETION_INDEX": "5"}, 6) == Shard(5, 6)
    with pytest.raises(ConfigError, match="--shard-count"):
        shard_from_environment({"JOB_COMPLETION_INDEX": "5"}, None)
    assert shard_from_environment({}, None) is None


def test_three_shard_processes_side_by_side_upload_everything_once_and_report_the_total(
    tmp_path: Path, served: ThreadedEmulator
) -> None:
    rows = 240
    manifest = samples.write_dataset(tmp_path, rows, sizes=(2000,), distinct_files=20)
    processes = [start_upload(served.target, manifest, "--shard", f"{k}/3", "--quiet") for k in range(3)]
    for proc in processes:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    results = [manifest.with_name(f"manifest.jsonl.shard-{k}-of-3.results.jsonl") for k in range(3)]
    counts = [len(read_records(path)) for path in results]
    assert sum(counts) == rows and all(counts)
    assert served.emulator.store.count() == rows
    assert served.emulator.store.duplicates("client_id") == {}
    report = run_cli("report", *map(str, results))
    assert report.returncode == 0, report.stdout
    assert f"{rows} rows" in report.stdout and f"by status: uploaded {rows}" in report.stdout


def test_slurm_array_environment_picks_the_shard(tmp_path: Path, served: ThreadedEmulator) -> None:
    manifest = samples.write_dataset(tmp_path, 30, sizes=(1000,))
    env = cli_env(API_KEY="emulator-test-key", SLURM_ARRAY_TASK_ID="1", SLURM_ARRAY_TASK_COUNT="2")
    done = subprocess.run(upload_argv(served.target, manifest, "--quiet"), capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    records = read_records(manifest.with_name("manifest.jsonl.shard-1-of-2.results.jsonl"))
    assert {r["id"] for r in records} == {row.key for row in read_manifest(manifest) if Shard(1, 2).contains(row.key)}


def test_report_writes_the_failed_rows_as_a_manifest_that_reruns_exactly_them(
    tmp_path: Path, served: ThreadedEmulator
) -> None:
    manifest = samples.write_dataset(tmp_path, 40, sizes=(1000,))
    lines = manifest.read_text().splitlines()
    broken = {}
    for n in (3, 17, 28):  # point three rows at files that are not there yet
        row = json.loads(lines[n])
        row["audio_path"] = f"late/{row['id']}.wav"
        broken[row["id"]] = row["audio_path"]
        lines[n] = json.dumps(row)
    manifest.write_text("\n".join(lines) + "\n")
    first = run_cli(*upload_argv(served.target, manifest)[3:], env=cli_env(API_KEY="emulator-test-key"))
    assert first.returncode == 1
    results = manifest.with_name("manifest.jsonl.results.jsonl")
    report = run_cli("report", str(results), "--manifest", str(manifest))
    assert report.returncode == 1
    assert "by status: invalid 3, uploaded 37" in report.stdout and "FILE_NOT_FOUND 3" in report.stdout
    retry = manifest.with_name("manifest.retry.jsonl")
    assert {json.loads(line)["id"] for line in retry.read_text().splitlines()} == set(broken)
    (tmp_path / "late").mkdir()
    for path in broken.values():
        (tmp_path / path).write_bytes(samples.wav(1000))
    rerun = run_cli(*upload_argv(served.target, retry)[3:], env=cli_env(API_KEY="emulator-test-key"))
    assert rerun.returncode == 0, rerun.stderr
    assert {r["id"] for r in read_records(manifest.with_name("manifest.retry.jsonl.results.jsonl"))} == set(broken)
    assert served.emulator.store.count() == 40
    merged = run_cli("report", str(results), str(manifest.with_name("manifest.retry.jsonl.results.jsonl")))
    assert merged.returncode == 0 and "by status: uploaded 40" in merged.stdout
