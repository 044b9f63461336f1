"""Benchmarks: bulk-upload against what users would use instead, on the same emulator and rows.

    python benchmarks/run.py                 # every scenario, 3 runs each (about 10 minutes)
    python benchmarks/run.py --runs 1 --only small latency
    python benchmarks/run.py --only small 64mib --baseline /tmp/base   # A/B against another checkout
    python benchmarks/run.py --only small-lean latency-lean              # against the lean server
    python benchmarks/run.py --only small-lean-cold                      # files read from disk (root)

Starts `bulk-upload emulator` (or, for the `-lean` scenarios, benchmarks/lean_server.py, which
checks and stores nothing, so that the client is what is measured) in its own process per scenario, makes the data sets under
benchmarks/.data, runs each contender as its own process and measures it from outside
(os.wait4: user+sys CPU and peak RSS of the whole client process), prints a markdown table
and replaces its own sections of benchmarks/RESULTS.md (results_md.py), stamped with the machine,
versions and date.

Contenders: bulk-upload as users run it (results file, --quiet); the ideal client (requests
prebuilt in memory, N tasks on one grpc.aio channel: the ceiling; `ideal+build` is the same run
with the untimed reading, probing and building of its requests counted in its time); the floor client (the least
a client must do per row: read at send time, a ledger line before and after each call); both on
uvloop, as bulk-upload runs; a thread pool over the
synchronous stub; and the documented way, one process per file under xargs -P N. With
--baseline DIR (a checkout of another version, e.g. `git worktree add /tmp/base REF`), the
same bulk-upload command run from that checkout joins each round as `baseline`, so a
change is measured side by side against what it replaced.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import results_md

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data"
MEMORY_DATA = Path("/dev/shm/bulk-upload-bench")  # the lean scenarios' data sets, where /dev/shm is a tmpfs
PY = sys.executable
KEY = "benchmark-key"  # accepted by the benchmark's own emulator only
BASELINE: Path | None = None  # --baseline: another checkout's bulk-upload, run side by side
ONLY_CONTENDERS: tuple[str, ...] = ()  # --contenders: run only these (bulk-upload always runs)
MiB = 1024 * 1024
CORES = os.cpu_count() or 1


class Rates:
    """files/s and MB/s of a run that moved `files` files and `bytes` bytes in `seconds`."""

    files: int
    bytes: int
    seconds: float

    @property
    def files_per_s(self) -> float:
        return self.files / self.seconds

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds


@dataclass
class Measure(Rates):
    """One run of one contender."""

    files: int
    bytes: int
    seconds: float  # the contender's own timed section (see notes)
    wall: float  # whole process, start-up included
    cpu: float  # user+sys of the whole client process (children included)
    rss_mb: float  # peak RSS of the client process
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cpu_per_file_ms(self) -> float:
        return 1000 * self.cpu / self.files


def run_measured(argv: list[str], env: dict[str, str] | None = None, timeout: float = 1800) -> tuple[str, str, float, float, float, int]:
    """Run a process to its end through measure.py: (stdout, stderr, wall, cpu, peak rss MB, exit status)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "usage.json"
        # cwd: a folder of its own, as `python -m` puts the working folder first on sys.path, where
        # a checkout's package would shadow the one PYTHONPATH names (--baseline).
        done = subprocess.run([PY, str(HERE / "measure.py"), str(report), "--", *argv], capture_output=True,
                              text=True, env=env, timeout=timeout, stdin=subprocess.DEVNULL, cwd=tmp)
        usage = json.loads(report.read_text())
    return done.stdout, done.stderr, usage["wall"], usage["cpu"], usage["rss_mb"], usage["status"]


class EmulatorProcess:
    def __init__(self, *args: str) -> None:
        env = {**os.environ, "EMULATOR_API_KEY": KEY}
        self.proc = subprocess.Popen([PY, "-m", "bulk_uploader", "emulator", "--port", "0", *args],
                                     stdout=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout is not None
        self.target = self.proc.stdout.readline().split()[-1]
        self.proc.stdout.readline()

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.communicate(timeout=60)


class LeanServerProcess:
    """benchmarks/lean_server.py in its own process (under `prefix`, e.g. `ip netns exec NS`);
    close() returns what it counted (also kept in `totals`)."""

    def __init__(self, *args: str, prefix: tuple[str, ...] = (), host: str = "127.0.0.1") -> None:
        self.proc = subprocess.Popen([*prefix, PY, str(HERE / "lean_server.py"), "--host", host, "--port", "0",
                                      "--max-seconds", "3600", *args], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.target = self.proc.stdout.readline().split()[-1]
        self.totals: dict[str, int] = {}

    def close(self) -> dict[str, int]:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=60)
        self.totals = json.loads(out.splitlines()[-1])
        return self.totals


def process_cpu(pid: int) -> float | None:
    """User+sys CPU seconds a running process has used so far (Linux's /proc), or None where unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(kind: str, latency_ms: float = 0) -> EmulatorProcess | LeanServerProcess:
    """The server a scenario runs against: the emulator, or the lean server."""
    args = ["--latency-ms", str(latency_ms)] if latency_ms else []
    return LeanServerProcess(*args) if kind == "lean" else EmulatorProcess(*args)


def client_env(root: Path = HERE.parent) -> dict[str, str]:
    return {**os.environ, "API_KEY": KEY, "PYTHONPATH": str(root)}


def dataset(name: str, count: int, size: int, distinct: int | None = None, in_memory: bool = False) -> Path:
    """The manifest of a data set made once under benchmarks/.data; with `in_memory`, a copy of it
    in MEMORY_DATA where that is a tmpfs (see warm())."""
    from bulk_uploader import samples
    from bulk_uploader.audio import AudioFormat

    folder = DATA / name
    manifest = folder / "manifest.jsonl"
    if not manifest.exists():
        folder.mkdir(parents=True, exist_ok=True)
        samples.write_dataset(folder, count, sizes=(size,), formats=(AudioFormat.WAV,), distinct_files=distinct,
                              connection_id="demo-audio")
    if in_memory and on_tmpfs(MEMORY_DATA.parent):
        copy = MEMORY_DATA / name
        if not (copy / "manifest.jsonl").exists():
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(folder, copy)
        return copy / "manifest.jsonl"
    return manifest


def on_disk(manifest: Path, name: str) -> Path:
    """Where a contender writes its ledger: beside the data set's folder under benchmarks/.data,
    on disk, as users keep theirs, even when the data set is read from memory."""
    return DATA / manifest.parent.name / name


def on_tmpfs(folder: Path) -> bool:
    """Whether `folder` lies on a tmpfs: files held in memory, never dropped like the page cache."""
    try:
        mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return False
    best = max((m for m in mounts if str(folder).startswith(m[1].rstrip("/") + "/") or str(folder) == m[1]),
               key=lambda m: len(m[1]), default=None)
    return best is not None and best[2] == "tmpfs"


def warm(manifest: Path) -> str:
    """Read every file of the data set, so that each contender starts with them in the page cache:
    on some virtual machines the host empties the guest's page cache within seconds, and a
    contender that ran after another would find the files the first one read cold from disk.
    Returns where the files live, for the section's stamp."""
    for line in manifest.read_text().splitlines():
        with open(manifest.parent / json.loads(line)["audio_path"], "rb") as f:
            while f.read(MiB):
                pass
    return "files in memory (tmpfs)" if on_tmpfs(manifest.parent) else "files on disk, read once before each contender"


DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def can_drop_caches() -> bool:
    return os.access(DROP_CACHES, os.W_OK)


def cold(manifest: Path) -> str:
    """Empty the page cache (root only: can_drop_caches()), so that each contender reads every
    file from disk, as a migration reads recordings nobody has opened for months."""
    os.sync()
    DROP_CACHES.write_text("1\n")
    return "files on disk, the page cache emptied before each contender"


def bulk_upload(target: str, manifest: Path, concurrency: int, *extra: str, root: Path = HERE.parent) -> Measure:
    results = on_disk(manifest, "bench.results.jsonl")
    results.unlink(missing_ok=True)
    out, err, wall, cpu, rss, code = run_measured(
        [PY, "-m", "bulk_uploader", str(manifest), "--endpoint", target, "--insecure", "--quiet",
         "--concurrency", str(concurrency), "--results", str(results), *extra], client_env(root))
    assert code == 0, err[-2000:]
    elapsed = float(re.search(r"Finished in ([\d.]+) s", err).group(1))  # type: ignore[union-attr]
    uploaded = int(re.search(r"uploaded (\d+),", err).group(1))  # type: ignore[union-attr]
    size = sum((manifest.parent / json.loads(l)["audio_path"]).stat().st_size for l in manifest.read_text().splitlines())
    return Measure(uploaded, size, elapsed, wall, cpu, rss)


def ideal(target: str, manifest: Path, concurrency: int) -> Measure:
    out, err, wall, cpu, rss, code = run_measured(
        [PY, str(HERE / "ideal_client.py"), target, str(manifest), str(concurrency), str(4 * MiB)], client_env())
    assert code == 0, err[-2000:]
    r = json.loads(out.splitlines()[-1])
    return Measure(r["files"], r["bytes"], r["seconds"], wall, cpu, rss, {"timed_cpu": r["cpu"],
                                                                          "build_seconds": r["build_seconds"]})


def with_build(m: Measure) -> Measure:
    """The ideal client's run with its untimed build counted in its time: reading, probing and
    building each request, which a client that reads at send time does inside its own."""
    return Measure(m.files, m.bytes, m.seconds + m.extra["build_seconds"], m.wall, m.cpu, m.rss_mb, m.extra)


def floor(target: str, manifest: Path, concurrency: int, bare: bool = False) -> Measure:
    """The floor client; `bare`: without its ledger and Idempotency-Key (floor_client.py)."""
    results = "-" if bare else str(on_disk(manifest, "floor.results.jsonl"))
    out, err, wall, cpu, rss, code = run_measured(
        [PY, str(HERE / "floor_client.py"), target, str(manifest), str(concurrency), results], client_env())
    assert code == 0, err[-2000:]
    r = json.loads(out.splitlines()[-1])
    return Measure(r["files"], r["bytes"], r["seconds"], wall, cpu, rss)


def threadpool(target: str, manifest: Path, concurrency: int) -> Measure:
    out, err, wall, cpu, rss, code = run_measured(
        [PY, str(HERE / "threadpool_client.py"), target, str(manifest), str(concurrency)], client_env())
    assert code == 0, err[-2000:]
    r = json.loads(out.splitlines()[-1])
    return Measure(r["files"], r["bytes"], r["seconds"], wall, cpu, rss)


def per_process(target: str, manifest: Path, concurrency: int, limit: int) -> Measure:
    rows = [json.loads(l) for l in manifest.read_text().splitlines()[:limit]]
    paths = "\n".join(str(manifest.parent / r["audio_path"]) for r in rows) + "\n"
    listing = manifest.with_name("xargs.txt")
    listing.write_text(paths)
    script = f"xargs -P {concurrency} -n 1 {PY} {HERE / 'vendor_sample.py'} {target} < {listing} > /dev/null"
    out, err, wall, cpu, rss, code = run_measured(["/bin/sh", "-c", script], client_env())
    assert code == 0, err[-2000:]
    size = sum((manifest.parent / r["audio_path"]).stat().st_size for r in rows)
    return Measure(len(rows), size, wall, wall, cpu, rss)


def instructions(argv: list[str], env: dict[str, str]) -> float | None:
    """Millions of user-space instructions a process retires (perf stat), or None where perf cannot
    count them. Unlike its CPU seconds, this hardly moves between runs or days: time the host takes
    from this machine's virtual CPUs does not count, nor does the clock speed it runs at."""
    if shutil.which("perf") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "perf.csv"
        subprocess.run(["perf", "stat", "-x", ",", "-e", "instructions:u", "-o", str(report), "--", *argv], env=env,
                       cwd=tmp, capture_output=True, stdin=subprocess.DEVNULL, timeout=300)
        counted = [line.split(",")[0] for line in report.read_text().splitlines() if "instructions" in line]
    return int(counted[0]) / 1e6 if counted and counted[0].isdigit() else None


# What every command that uploads loads before a line of bulk-upload's own runs: gRPC, asyncio,
# protobuf with the service's API module, typer, anyio on asyncio, uvloop.
STACK_IMPORTS = ("import grpc.aio, asyncio, typer, uvloop, anyio._backends._asyncio, "
                 "bulk_uploader.proto.speechsense_pb2")


def startup_instructions(commands: dict[str, list[str]], roots: dict[str, Path], results: Path
                         ) -> dict[str, dict[str, float]]:
    """Each command's user-space instructions (millions; the median of 3 runs), and two floors beside
    them: Python doing nothing, and Python importing the stack (STACK_IMPORTS). Empty without perf."""
    runs: dict[str, list[str]] = {"python -c pass": ["-c", "pass"], "the stack's imports": ["-c", STACK_IMPORTS]}
    runs |= {name: ["-m", "bulk_uploader", *args] for name, args in commands.items()}
    counts: dict[str, dict[str, list[float]]] = {name: {who: [] for who in roots} for name in runs}
    for _ in range(3):
        for name, args in runs.items():
            for who, root in roots.items():
                fresh_results(name, results)
                if (n := instructions([PY, *args], client_env(root))) is None:
                    return {}
                counts[name][who].append(n)
    return {name: {who: statistics.median(v) for who, v in by.items()} for name, by in counts.items()}


def fresh_results(command: str, results: Path) -> None:
    """Before a one-row upload, no results file (it would find its row uploaded before); the report
    after it reads the one it wrote."""
    if command.startswith("one-row upload"):
        results.unlink(missing_ok=True)


def startup_table(runs: int) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Median CPU seconds of whole processes that do (almost) nothing: a one-row dry run, a one-row
    upload to the lean server, and commands that send nothing; with --baseline, the baseline's beside.
    Then their instructions (startup_instructions)."""
    one = dataset("one", 1, 16 * 1024)
    results = one.with_name("startup.results.jsonl")
    server = LeanServerProcess()
    commands = {
        "one-row --dry-run": [str(one), "--dry-run", "--quiet"],
        "one-row upload (lean server)": [str(one), "--endpoint", server.target, "--insecure", "--quiet",
                                         "--results", str(results)],
        "--help": ["--help"],
        "report (one-row results file)": ["report", str(results)],
        "verify --help": ["verify", "--help"],
    }
    roots = {"bulk-upload": HERE.parent, **({"baseline": BASELINE} if BASELINE is not None else {})}
    cpus: dict[str, dict[str, list[float]]] = {name: {who: [] for who in roots} for name in commands}
    try:
        for _ in range(max(5, runs)):
            for name, args in commands.items():
                for who, root in roots.items():  # side by side, so noise hits both alike
                    fresh_results(name, results)
                    _, err, _, cpu, _, code = run_measured([PY, "-m", "bulk_uploader", *args], client_env(root))
                    assert code in (0, 1), err[-2000:]
                    cpus[name][who].append(cpu)
        counted = startup_instructions(commands, roots, results)
    finally:
        server.close()
    return {name: {who: statistics.median(v) for who, v in by.items()} for name, by in cpus.items()}, counted


def median(measures: list[Measure]) -> dict[str, float]:
    return {
        "files_per_s": statistics.median(m.files_per_s for m in measures),
        "mb_per_s": statistics.median(m.mb_per_s for m in measures),
        "cpu_per_file_ms": statistics.median(m.cpu_per_file_ms for m in measures),
        "rss_mb": statistics.median(m.rss_mb for m in measures),
        "files": measures[0].files,
        "wall": statistics.median(m.wall for m in measures),
        "timed_cpu_per_file_ms": statistics.median(1000 * m.extra.get("timed_cpu", m.cpu) / m.files for m in measures),
        **({"server_cpu_per_file_ms": statistics.median(1000 * m.extra["server_cpu"] / m.files for m in measures),
            "cores_busy": statistics.median((m.cpu + m.extra["server_cpu"]) / (CORES * m.wall) for m in measures)}
           if all("server_cpu" in m.extra for m in measures) else {}),
    }


def upload_scenario(name: str, title: str, manifest: Path, concurrency: int, runs: int, latency_ms: float = 0,
                    contenders: tuple[str, ...] = ("bulk-upload", "ideal", "threadpool"), xargs_files: int = 0,
                    server: str = "emulator", prepare: Callable[[Path], str] = warm) -> dict[str, Any]:
    """Each contender in turn, `runs` rounds, against one server; `prepare` sets the page cache
    before each contender's run (warm or cold) and says how, for the section's stamp."""
    emulator = start_server(server, latency_ms)
    if ONLY_CONTENDERS:
        contenders = tuple(c for c in contenders if c in ONLY_CONTENDERS)
    if BASELINE is not None:
        contenders = ("bulk-upload", "baseline", *contenders[1:])
    table: dict[str, Any] = {"title": title, "concurrency": concurrency, "rows": {}, "ratios": {},
                             "server": server, "latency_ms": latency_ms}
    measured: dict[str, list[Measure]] = {c: [] for c in contenders}
    try:
        for n in range(runs):
            # Side by side in each round, so noise hits every contender alike; ratios are per round.
            for contender in contenders:
                table["storage"] = prepare(manifest)
                server_before = process_cpu(emulator.proc.pid)
                if contender == "bulk-upload":
                    m = bulk_upload(emulator.target, manifest, concurrency)
                elif contender == "baseline":
                    assert BASELINE is not None
                    m = bulk_upload(emulator.target, manifest, concurrency, root=BASELINE)
                elif contender == "ideal":
                    m = ideal(emulator.target, manifest, concurrency)
                elif contender in ("floor", "bare"):
                    m = floor(emulator.target, manifest, concurrency, bare=contender == "bare")
                elif contender == "threadpool":
                    m = threadpool(emulator.target, manifest, concurrency)
                else:
                    m = per_process(emulator.target, manifest, min(concurrency, 8), xargs_files)
                server_after = process_cpu(emulator.proc.pid)
                if server_before is not None and server_after is not None:
                    m.extra["server_cpu"] = server_after - server_before
                measured[contender].append(m)
                if contender == "ideal":
                    measured.setdefault("ideal+build", []).append(with_build(m))
                print(f"  [{name} run {n + 1}] {contender}: {m.files_per_s:.1f} files/s {m.mb_per_s:.1f} MB/s "
                      f"cpu {m.cpu_per_file_ms:.3f} ms/file rss {m.rss_mb:.0f} MB", flush=True)
            for over, under in RATIOS:
                if over in measured and under in measured:
                    b, a = measured[over][-1], measured[under][-1]
                    table["ratios"].setdefault(f"{over} / {under}", []).append(
                        {"files_per_s": b.files_per_s / a.files_per_s, "mb_per_s": b.mb_per_s / a.mb_per_s,
                         "cpu": b.cpu_per_file_ms / a.cpu_per_file_ms})
    finally:
        emulator.close()
    for contender, ms in measured.items():
        table["rows"][contender] = median(ms)
    table["pairs"] = table["ratios"].get("bulk-upload / ideal", [])
    return table


def million_scenario(runs: int) -> dict[str, Any]:
    """1,000,000 rows sharing 50 files: --dry-run, and a resume whose results file lists every row."""
    folder = DATA / "million"
    manifest = dataset("million", 1_000_000, 16 * 1024, distinct=50)
    done = folder / "done.results.jsonl"
    new_rows = 100
    if not done.exists():
        with manifest.open() as src, done.open("w") as out:
            for n, line in enumerate(src):
                if n >= 1_000_000 - new_rows:
                    break
                key = json.loads(line)["id"]
                out.write(json.dumps({"id": key, "status": "uploaded", "talk_id": f"t{n}", "error": None, "code": None,
                                      "attempts": 1, "bytes": 16428, "seconds": 0.01, "audio_path": "x", "line": n + 1,
                                      "rpc": "Upload", "unknown_outcomes": 0, "reconciled": False,
                                      "finished_at": "2026-11-21T00:00:00+00:00"}) + "\n")
    roots = {"bulk-upload": HERE.parent, **({"baseline": BASELINE} if BASELINE is not None else {})}
    out: dict[str, Any] = {who: {"dry_run": [], "resume": []} for who in roots}
    for _ in range(runs):
        for who, root in roots.items():  # side by side, so noise hits both alike
            out[who]["dry_run"].append(_million_dry_run(manifest, root, who))
            out[who]["resume"].append(_million_resume(manifest, done, new_rows, root, who))
    return out


def _million_dry_run(manifest: Path, root: Path, who: str) -> dict[str, float]:
    _, err, wall, cpu, rss, code = run_measured(
        [PY, "-m", "bulk_uploader", str(manifest), "--dry-run", "--quiet", "--concurrency", "32"], client_env(root))
    assert code == 0, err[-2000:]
    print(f"  [million] {who} dry run: {wall:.1f} s, CPU {cpu:.1f} s, peak RSS {rss:.0f} MB", flush=True)
    return {"wall": wall, "rss_mb": rss, "cpu": cpu}


def _million_resume(manifest: Path, done: Path, new_rows: int, root: Path, who: str) -> dict[str, float]:
    store = Path(tempfile.mkdtemp()) / "store.sqlite3"
    emulator = EmulatorProcess("--store", str(store))
    results = manifest.with_name("resume.results.jsonl")
    shutil.copyfile(done, results)
    started = time.time()
    try:
        _, err, wall, cpu, rss, code = run_measured(
            [PY, "-m", "bulk_uploader", str(manifest), "--endpoint", emulator.target, "--insecure", "--quiet",
             "--concurrency", "32", "--results", str(results)], client_env(root))
    finally:
        emulator.close()
    assert code == 0, err[-2000:]
    first = sqlite3.connect(store).execute("SELECT MIN(created_at), COUNT(*) FROM talks").fetchone()
    assert first[1] == new_rows, first
    shutil.rmtree(store.parent)
    print(f"  [million] {who} resume: {wall:.1f} s, first new upload after {first[0] - started:.1f} s, "
          f"peak RSS {rss:.0f} MB", flush=True)
    return {"wall": wall, "rss_mb": rss, "cpu": cpu, "startup": first[0] - started}


PREAMBLE = """# Benchmark results

Each section says when and with what it was measured; `benchmarks/run.py` and the other scripts
each replace only their own sections. Method of the upload scenarios (`run.py`): medians of the
runs; emulator (or lean server) in its own process on loopback; each client its own process,
CPU (user+sys) and peak RSS of the whole client process from os.wait4; files/s over each contender's
own timed section (bulk-upload: its run, from reading the results file to the last row recorded;
ideal: after requests are built, ideal+build: from before it reads the first file; floor, bare (the floor client
without its ledger: reading at send time and nothing else) and thread pool: after start-up; xargs: the whole batch).
Ratios (bulk-upload / ideal, and the others named) are computed pair by pair within a round, then the median.
Server CPU per file: what the server process used while each contender ran (Linux's /proc); cores busy:
the client's and the server's CPU over the machine's cores and the client's whole run, start-up included.
"""


# Targets against the lean server, where the client is what is measured (issue: throughput at the limits).
LEAN_FILES_PER_S = 0.95  # of the ideal client's, at least
LEAN_CPU_PER_FILE = 1.15  # times the ideal client's, at most
ONE_ROW_CPU = 0.15  # CPU seconds of a one-row run, at most
MILLION_DRY_RUN_S = 30.0  # wall seconds of the 1,000,000-row dry run, under


# Ratios each round computes where both contenders ran: (over, under).
RATIOS = (("bulk-upload", "ideal"), ("bulk-upload", "ideal+build"), ("bulk-upload", "baseline"), ("bulk-upload", "floor"),
          ("floor", "ideal"), ("bare", "ideal"))


def _med(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(x[key] for x in runs)


def verdict(ok: bool) -> str:
    """How a target's line says whether it holds."""
    return "met" if ok else "NOT met"


def limit_lines(t: dict[str, Any]) -> list[str]:
    """Each figure as a ratio to its limit: the ideal client's files/s and CPU per file (lean server),
    and concurrency / latency (a scenario with server latency)."""
    lines = []
    if t["latency_ms"]:
        limit = t["concurrency"] / (t["latency_ms"] / 1000)
        shown = ", ".join(f"{name} {r['files_per_s'] / limit:.3f}" for name, r in t["rows"].items())
        lines.append(f"files/s as a share of concurrency / latency ({t['concurrency']} / {t['latency_ms'] / 1000:g} s "
                     f"= {limit:.0f} files/s): {shown}")
    elif t["server"] == "lean" and t["pairs"]:
        files = statistics.median(x["files_per_s"] for x in t["pairs"])
        cpu = statistics.median(x["cpu"] for x in t["pairs"])
        lines.append(f"targets: files/s at least {LEAN_FILES_PER_S} of the ideal's: {files:.3f}, "
                     f"{verdict(files >= LEAN_FILES_PER_S)}; CPU per file at most {LEAN_CPU_PER_FILE}x the ideal's: "
                     f"{cpu:.3f}, {verdict(cpu <= LEAN_CPU_PER_FILE)}")
        lines += _cores_needed(t["rows"])
    return lines


def cores_needed(rate: float, *ms_per_file: float) -> float:
    """Cores that `rate` files/s keep busy at these CPU milliseconds per file (the client's, the server's)."""
    return rate * sum(ms_per_file) / 1000


def _cores_needed(rows: dict[str, dict[str, float]]) -> list[str]:
    """What the files/s target asks of the machine: the cores that the ideal's whole CPU per file
    (its reading and building included) and the server's take at that rate, and bulk-upload's."""
    i, b = rows.get("ideal"), rows.get("bulk-upload")
    if i is None or b is None or "server_cpu_per_file_ms" not in i or "server_cpu_per_file_ms" not in b:
        return []
    rate = LEAN_FILES_PER_S * i["files_per_s"]
    need = {who: cores_needed(rate, r["cpu_per_file_ms"], r["server_cpu_per_file_ms"]) for who, r in (("ideal", i), ("bulk-upload", b))}
    return [f"at {LEAN_FILES_PER_S} of the ideal's files/s ({rate:.0f}/s), client and server CPU per file together "
            f"need {need['ideal']:.2f} cores with the ideal's (building its requests included), "
            f"{need['bulk-upload']:.2f} with bulk-upload's; this machine has {CORES}"]


def render_startup(table: dict[str, dict[str, float]], counted: dict[str, dict[str, float]], runs: int
                   ) -> tuple[str, str]:
    """The start-up section: CPU seconds per command, as a share of the one-row target; then, where
    perf counts them, instructions, with the floors every command stands on."""
    who = list(next(iter(table.values())))
    lines = [results_md.stamp(f"medians of {max(5, runs)} run(s)"), "",
             "| command | " + " | ".join(f"{w} CPU s" for w in who) + f" | bulk-upload / {ONE_ROW_CPU} s target |",
             "|---|" + "---|" * (len(who) + 1)]
    for name, by in table.items():
        lines.append(f"| {name} | " + " | ".join(f"{by[w]:.3f}" for w in who) + f" | {by['bulk-upload'] / ONE_ROW_CPU:.2f} |")
    if counted:
        stack = counted["the stack's imports"]["bulk-upload"]
        lines += ["", "The same commands in millions of user-space instructions (perf stat, median of 3), "
                  "which time taken by the host and the clock speed do not move; \"the stack's imports\" is Python "
                  f"importing `{STACK_IMPORTS.removeprefix('import ')}` and nothing else.", "",
                  "| command | " + " | ".join(f"{w} M instructions" for w in who) + " | bulk-upload beyond the stack's imports |",
                  "|---|" + "---|" * (len(who) + 1)]
        for name, by in counted.items():
            lines.append(f"| {name} | " + " | ".join(f"{by[w]:.0f}" for w in who) + f" | {by['bulk-upload'] - stack:+.0f} |")
    return "Start-up: CPU of whole processes that do (almost) nothing", "\n".join(lines)


def render(tables: list[dict[str, Any]], million: dict[str, Any] | None, runs: int, startup: float | None
           ) -> list[tuple[str, str]]:
    """The sections this run measured: (heading, body) for results_md."""
    sections = []
    for t in tables:
        server = all("server_cpu_per_file_ms" in r for r in t["rows"].values())
        lines = [results_md.stamp(f"medians of {runs} run(s); {t['storage']}"), "",
                 "| contender | files | files/s | MB/s | CPU ms/file | peak RSS MB |"
                 + (" server CPU ms/file | cores busy |" if server else ""),
                 "|---|---|---|---|---|---|" + ("---|---|" if server else "")]
        for name, r in t["rows"].items():
            lines.append(f"| {name} | {r['files']} | {r['files_per_s']:.1f} | {r['mb_per_s']:.1f} | "
                         f"{r['cpu_per_file_ms']:.3f} | {r['rss_mb']:.0f} |"
                         + (f" {r['server_cpu_per_file_ms']:.3f} | {r['cores_busy']:.2f} |" if server else ""))
        if t["ratios"]:
            lines.append("")
        for name, p in t["ratios"].items():
            lines.append(f"{name}, pair by pair (median): files/s {statistics.median(x['files_per_s'] for x in p):.3f}, "
                         f"MB/s {statistics.median(x['mb_per_s'] for x in p):.3f}, "
                         f"CPU per file {statistics.median(x['cpu'] for x in p):.3f}")
        lines += limit_lines(t)
        if startup is not None and "ideal" in t["rows"] and "bulk-upload" in t["rows"]:
            b, i = t["rows"]["bulk-upload"], t["rows"]["ideal"]
            per_row = b["cpu_per_file_ms"] - 1000 * startup / b["files"]
            lines.append(f"where the CPU goes: bulk-upload start-up (a one-row dry run) {startup:.2f} s = "
                         f"{1000 * startup / b['files']:.3f} ms/file here; the rest {per_row:.3f} ms/file; "
                         f"the ideal client's timed section alone {i['timed_cpu_per_file_ms']:.3f} ms/file")
        if "xargs" in t["rows"] and "bulk-upload" in t["rows"]:
            ratio = t["rows"]["bulk-upload"]["files_per_s"] / t["rows"]["xargs"]["files_per_s"]
            lines.append(f"bulk-upload / one process per file (xargs): files/s {ratio:.0f}x")
        kind = ", lean server" if t["server"] == "lean" else ""
        sections.append((f"{t['title']} (concurrency {t['concurrency']}{kind})", "\n".join(lines)))
    if million:
        lines = [results_md.stamp(f"medians of {runs} run(s)"), "",
                 "| run | wall s | CPU s | peak RSS MB | first new upload after s |", "|---|---|---|---|---|"]
        for who, m in million.items():
            d, r = m["dry_run"], m["resume"]
            lines += [f"| {who}: --dry-run | {_med(d, 'wall'):.1f} | {_med(d, 'cpu'):.1f} | {_med(d, 'rss_mb'):.0f} | |",
                      f"| {who}: resume, results file lists 999,900 rows | {_med(r, 'wall'):.1f} | {_med(r, 'cpu'):.1f} | "
                      f"{_med(r, 'rss_mb'):.0f} | {_med(r, 'startup'):.1f} |"]
        dry = _med(million["bulk-upload"]["dry_run"], "wall")
        lines.append(f"\ntarget: the dry run under {MILLION_DRY_RUN_S:g} s: {dry:.1f} s = {dry / MILLION_DRY_RUN_S:.2f} "
                     f"of it, {verdict(dry < MILLION_DRY_RUN_S)}")
        sections.append(("1,000,000-row manifest (rows share 50 files of 16 KiB)", "\n".join(lines)))
    return sections


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", nargs="*", default=["small", "1mib", "64mib", "latency", "million", "small-lean",
                                                       "small-lean-10k", "small-lean-cold", "latency-lean", "startup"])
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    parser.add_argument("--baseline", type=Path, help="a checkout of another version to run side by side")
    parser.add_argument("--contenders", nargs="*", default=["ideal", "floor", "bare", "threadpool", "xargs"],
                        help="which of ideal, floor, bare, threadpool, xargs run beside bulk-upload")
    args = parser.parse_args()
    global BASELINE, ONLY_CONTENDERS
    ONLY_CONTENDERS = ("bulk-upload", *args.contenders)
    if args.baseline is not None:
        BASELINE = args.baseline.resolve()
        compileall.compile_dir(BASELINE / "bulk_uploader", quiet=1)
    sys.path.insert(0, str(HERE.parent))
    # Bytecode for the package, as installing a wheel writes it: otherwise a checkout with
    # PYTHONDONTWRITEBYTECODE set compiles every module again in every measured process.
    compileall.compile_dir(HERE.parent / "bulk_uploader", quiet=1)
    tables = []
    if "small" in args.only:
        tables.append(upload_scenario("small", "2,000 files of 16 KiB, no server latency", dataset("small", 2000, 16 * 1024),
                                      32, args.runs, contenders=("bulk-upload", "ideal", "threadpool", "xargs"),
                                      xargs_files=100))
    if "1mib" in args.only:
        tables.append(upload_scenario("1mib", "500 files of 1 MiB", dataset("1mib", 500, MiB), 16, args.runs))
    if "64mib" in args.only:
        tables.append(upload_scenario("64mib", "8 files of 64 MiB (streamed)", dataset("64mib", 8, 64 * MiB), 8, args.runs))
    if "latency" in args.only:
        tables.append(upload_scenario("latency", "100 ms server latency, 16 KiB files", dataset("latency3k", 3000, 16 * 1024),
                                      64, args.runs, latency_ms=100))
    if "small-lean" in args.only:
        tables.append(upload_scenario("small-lean", "2,000 files of 16 KiB, no server latency", dataset("small", 2000, 16 * 1024, in_memory=True),
                                      32, args.runs, contenders=("bulk-upload", "ideal", "floor", "bare"), server="lean"))
    if "small-lean-10k" in args.only:  # the same, five times the files: start-up weighs a fifth as much per file
        tables.append(upload_scenario("small-lean-10k", "10,000 files of 16 KiB, no server latency",
                                      dataset("small10k", 10000, 16 * 1024, in_memory=True), 32, args.runs,
                                      contenders=("bulk-upload", "ideal", "floor", "bare"), server="lean"))
    if "small-lean-cold" in args.only:  # the 10,000 files read from disk by every contender
        if can_drop_caches():
            tables.append(upload_scenario("small-lean-cold", "10,000 files of 16 KiB read from disk, no server latency",
                                          dataset("small10k", 10000, 16 * 1024), 32, args.runs,
                                          contenders=("bulk-upload", "ideal", "floor"), server="lean", prepare=cold))
        else:
            print(f"small-lean-cold skipped: emptying the page cache needs write access to {DROP_CACHES} (root)")
    if "latency-lean" in args.only:
        tables.append(upload_scenario("latency-lean", "100 ms server latency, 16 KiB files", dataset("latency3k", 3000, 16 * 1024, in_memory=True),
                                      64, args.runs, latency_ms=100, contenders=("bulk-upload", "ideal", "floor"), server="lean"))
    million = million_scenario(args.runs) if "million" in args.only else None
    starts, counted = startup_table(args.runs) if tables or "startup" in args.only else (None, {})
    startup = starts["one-row --dry-run"]["bulk-upload"] if starts else None
    sections = render(tables, million, args.runs, startup)
    if starts and "startup" in args.only:
        sections.append(render_startup(starts, counted, args.runs))
    print()
    for heading, body in sections:
        print(f"## {heading}\n\n{body}\n")
    if not args.no_write:
        results_md.write_sections(sections, preamble=PREAMBLE)


if __name__ == "__main__":
    main()
