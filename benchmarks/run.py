"""Benchmarks: bulk-upload against what users would use instead, on the same emulator and rows.

    python benchmarks/run.py                 # every scenario, 3 runs each (about 10 minutes)
    python benchmarks/run.py --runs 1 --only small latency
    python benchmarks/run.py --only small 64mib --baseline /tmp/base   # A/B against another checkout

Starts `bulk-upload emulator` in its own process per scenario, makes the data sets under
benchmarks/.data, runs each contender as its own process and measures it from outside
(os.wait4: user+sys CPU and peak RSS of the whole client process), prints a markdown table
and replaces its own sections of benchmarks/RESULTS.md (results_md.py), stamped with the machine,
versions and date.

Contenders: bulk-upload as users run it (results file, --quiet); the ideal client (requests
prebuilt in memory, N tasks on one grpc.aio channel: the ceiling); a thread pool over the
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
from typing import Any

import results_md

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data"
PY = sys.executable
KEY = "benchmark-key"  # accepted by the benchmark's own emulator only
BASELINE: Path | None = None  # --baseline: another checkout's bulk-upload, run side by side
ONLY_CONTENDERS: tuple[str, ...] = ()  # --contenders: run only these (bulk-upload always runs)
MiB = 1024 * 1024


@dataclass
class Measure:
    """One run of one contender."""

    files: int
    bytes: int
    seconds: float  # the contender's own timed section (see notes)
    wall: float  # whole process, start-up included
    cpu: float  # user+sys of the whole client process (children included)
    rss_mb: float  # peak RSS of the client process
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def files_per_s(self) -> float:
        return self.files / self.seconds

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds

    @property
    def cpu_per_file_ms(self) -> float:
        return 1000 * self.cpu / self.files


def run_measured(argv: list[str], env: dict[str, str] | None = None, timeout: float = 1800) -> tuple[str, str, float, float, float, int]:
    """Run a process to its end through measure.py: (stdout, stderr, wall, cpu, peak rss MB, exit status)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "usage.json"
        done = subprocess.run([PY, str(HERE / "measure.py"), str(report), "--", *argv], capture_output=True,
                              text=True, env=env, timeout=timeout, stdin=subprocess.DEVNULL)
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


def client_env(root: Path = HERE.parent) -> dict[str, str]:
    return {**os.environ, "API_KEY": KEY, "PYTHONPATH": str(root)}


def dataset(name: str, count: int, size: int, distinct: int | None = None) -> Path:
    from bulk_uploader import samples
    from bulk_uploader.audio import AudioFormat

    folder = DATA / name
    manifest = folder / "manifest.jsonl"
    if not manifest.exists():
        folder.mkdir(parents=True, exist_ok=True)
        samples.write_dataset(folder, count, sizes=(size,), formats=(AudioFormat.WAV,), distinct_files=distinct,
                              connection_id="demo-audio")
    return manifest


def bulk_upload(target: str, manifest: Path, concurrency: int, *extra: str, root: Path = HERE.parent) -> Measure:
    results = manifest.with_name("bench.results.jsonl")
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
    return Measure(r["files"], r["bytes"], r["seconds"], wall, cpu, rss, {"timed_cpu": r["cpu"]})


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


def startup_cpu(runs: int) -> float:
    """CPU seconds bulk-upload spends before and around any row: a one-row dry run (median)."""
    manifest = dataset("one", 1, 16 * 1024)
    cpus = []
    for _ in range(max(3, runs)):
        _, err, _, cpu, _, code = run_measured([PY, "-m", "bulk_uploader", str(manifest), "--dry-run", "--quiet"],
                                               client_env())
        assert code == 0, err[-2000:]
        cpus.append(cpu)
    return statistics.median(cpus)


def median(measures: list[Measure]) -> dict[str, float]:
    return {
        "files_per_s": statistics.median(m.files_per_s for m in measures),
        "mb_per_s": statistics.median(m.mb_per_s for m in measures),
        "cpu_per_file_ms": statistics.median(m.cpu_per_file_ms for m in measures),
        "rss_mb": statistics.median(m.rss_mb for m in measures),
        "files": measures[0].files,
        "wall": statistics.median(m.wall for m in measures),
        "timed_cpu_per_file_ms": statistics.median(1000 * m.extra.get("timed_cpu", m.cpu) / m.files for m in measures),
    }


def upload_scenario(name: str, title: str, manifest: Path, concurrency: int, runs: int, latency_ms: float = 0,
                    contenders: tuple[str, ...] = ("bulk-upload", "ideal", "threadpool"), xargs_files: int = 0) -> dict[str, Any]:
    emulator = EmulatorProcess(*(["--latency-ms", str(latency_ms)] if latency_ms else []))
    if ONLY_CONTENDERS:
        contenders = tuple(c for c in contenders if c in ONLY_CONTENDERS)
    if BASELINE is not None:
        contenders = ("bulk-upload", "baseline", *contenders[1:])
    table: dict[str, Any] = {"title": title, "concurrency": concurrency, "rows": {}, "pairs": [], "ab": []}
    measured: dict[str, list[Measure]] = {c: [] for c in contenders}
    try:
        for n in range(runs):
            # Side by side in each round, so noise hits every contender alike; ratios are per round.
            for contender in contenders:
                if contender == "bulk-upload":
                    m = bulk_upload(emulator.target, manifest, concurrency)
                elif contender == "baseline":
                    assert BASELINE is not None
                    m = bulk_upload(emulator.target, manifest, concurrency, root=BASELINE)
                elif contender == "ideal":
                    m = ideal(emulator.target, manifest, concurrency)
                elif contender == "threadpool":
                    m = threadpool(emulator.target, manifest, concurrency)
                else:
                    m = per_process(emulator.target, manifest, min(concurrency, 8), xargs_files)
                measured[contender].append(m)
                print(f"  [{name} run {n + 1}] {contender}: {m.files_per_s:.1f} files/s {m.mb_per_s:.1f} MB/s "
                      f"cpu {m.cpu_per_file_ms:.3f} ms/file rss {m.rss_mb:.0f} MB", flush=True)
            if "ideal" in measured and "bulk-upload" in measured:
                b, i = measured["bulk-upload"][-1], measured["ideal"][-1]
                table["pairs"].append({"files_per_s": b.files_per_s / i.files_per_s, "mb_per_s": b.mb_per_s / i.mb_per_s,
                                       "cpu": b.cpu_per_file_ms / i.cpu_per_file_ms})
            if "baseline" in measured:
                b, a = measured["bulk-upload"][-1], measured["baseline"][-1]
                table["ab"].append({"files_per_s": b.files_per_s / a.files_per_s, "mb_per_s": b.mb_per_s / a.mb_per_s,
                                    "cpu": b.cpu_per_file_ms / a.cpu_per_file_ms})
    finally:
        emulator.close()
    for contender, ms in measured.items():
        table["rows"][contender] = median(ms)
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
    out: dict[str, Any] = {"dry_run": [], "resume": []}
    for _ in range(runs):
        stdout, err, wall, cpu, rss, code = run_measured(
            [PY, "-m", "bulk_uploader", str(manifest), "--dry-run", "--quiet", "--concurrency", "32"], client_env())
        assert code == 0, err[-2000:]
        out["dry_run"].append({"wall": wall, "rss_mb": rss, "cpu": cpu})
        print(f"  [million] dry run: {wall:.1f} s, peak RSS {rss:.0f} MB", flush=True)

        store = Path(tempfile.mkdtemp()) / "store.sqlite3"
        emulator = EmulatorProcess("--store", str(store))
        results = folder / "resume.results.jsonl"
        shutil.copyfile(done, results)
        started = time.time()
        try:
            stdout, err, wall, cpu, rss, code = run_measured(
                [PY, "-m", "bulk_uploader", str(manifest), "--endpoint", emulator.target, "--insecure", "--quiet",
                 "--concurrency", "32", "--results", str(results)], client_env())
        finally:
            emulator.close()
        assert code == 0, err[-2000:]
        first = sqlite3.connect(store).execute("SELECT MIN(created_at), COUNT(*) FROM talks").fetchone()
        assert first[1] == new_rows, first
        out["resume"].append({"wall": wall, "rss_mb": rss, "startup": first[0] - started})
        print(f"  [million] resume: {wall:.1f} s, first new upload after {first[0] - started:.1f} s, "
              f"peak RSS {rss:.0f} MB", flush=True)
        shutil.rmtree(store.parent)
    return out


PREAMBLE = """# Benchmark results

Each section says when and with what it was measured; `benchmarks/run.py` and the other scripts
each replace only their own sections. Method of the upload scenarios (`run.py`): medians of the
runs; emulator (or lean server) in its own process on loopback; each client its own process,
CPU (user+sys) and peak RSS of the whole client process from os.wait4; files/s over each contender's
own timed section (bulk-upload: its run, from reading the results file to the last row recorded;
ideal: after requests are built; thread pool: after start-up; xargs: the whole batch).
Ratios are bulk-upload / ideal computed pair by pair within a round, then the median.
"""


def render(tables: list[dict[str, Any]], million: dict[str, Any] | None, runs: int, startup: float | None
           ) -> list[tuple[str, str]]:
    """The sections this run measured: (heading, body) for results_md."""
    sections = []
    for t in tables:
        lines = [results_md.stamp(f"medians of {runs} run(s)"), "",
                 "| contender | files | files/s | MB/s | CPU ms/file | peak RSS MB |", "|---|---|---|---|---|---|"]
        for name, r in t["rows"].items():
            lines.append(f"| {name} | {r['files']} | {r['files_per_s']:.1f} | {r['mb_per_s']:.1f} | "
                         f"{r['cpu_per_file_ms']:.3f} | {r['rss_mb']:.0f} |")
        if t["pairs"]:
            p = t["pairs"]
            lines += ["", f"bulk-upload / ideal, pair by pair (median): files/s "
                          f"{statistics.median(x['files_per_s'] for x in p):.3f}, MB/s {statistics.median(x['mb_per_s'] for x in p):.3f}, "
                          f"CPU per file {statistics.median(x['cpu'] for x in p):.3f}"]
        if t.get("ab"):
            p = t["ab"]
            lines += [f"bulk-upload / baseline, pair by pair (median): files/s "
                      f"{statistics.median(x['files_per_s'] for x in p):.3f}, MB/s {statistics.median(x['mb_per_s'] for x in p):.3f}, "
                      f"CPU per file {statistics.median(x['cpu'] for x in p):.3f}"]
        if startup is not None and "ideal" in t["rows"] and "bulk-upload" in t["rows"]:
            b, i = t["rows"]["bulk-upload"], t["rows"]["ideal"]
            per_row = b["cpu_per_file_ms"] - 1000 * startup / b["files"]
            lines.append(f"where the CPU goes: bulk-upload start-up (a one-row dry run) {startup:.2f} s = "
                         f"{1000 * startup / b['files']:.3f} ms/file here; the rest {per_row:.3f} ms/file; "
                         f"the ideal client's timed section alone {i['timed_cpu_per_file_ms']:.3f} ms/file")
        if "xargs" in t["rows"] and "bulk-upload" in t["rows"]:
            ratio = t["rows"]["bulk-upload"]["files_per_s"] / t["rows"]["xargs"]["files_per_s"]
            lines.append(f"bulk-upload / one process per file (xargs): files/s {ratio:.0f}x")
        sections.append((f"{t['title']} (concurrency {t['concurrency']})", "\n".join(lines)))
    if million:
        d, r = million["dry_run"], million["resume"]
        lines = [results_md.stamp(f"medians of {runs} run(s)"), "",
                 "| run | wall s | peak RSS MB | first new upload after s |", "|---|---|---|---|",
                 f"| --dry-run | {statistics.median(x['wall'] for x in d):.1f} | {statistics.median(x['rss_mb'] for x in d):.0f} | |",
                 f"| resume, results file lists 999,900 rows | {statistics.median(x['wall'] for x in r):.1f} | "
                 f"{statistics.median(x['rss_mb'] for x in r):.0f} | {statistics.median(x['startup'] for x in r):.1f} |"]
        sections.append(("1,000,000-row manifest (rows share 50 files of 16 KiB)", "\n".join(lines)))
    return sections


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", nargs="*", default=["small", "1mib", "64mib", "latency", "million"])
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    parser.add_argument("--baseline", type=Path, help="a checkout of another version to run side by side")
    parser.add_argument("--contenders", nargs="*", default=["ideal", "threadpool", "xargs"],
                        help="which of ideal, threadpool, xargs run beside bulk-upload")
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
    million = million_scenario(args.runs) if "million" in args.only else None
    startup = startup_cpu(args.runs) if tables else None
    sections = render(tables, million, args.runs, startup)
    print()
    for heading, body in sections:
        print(f"## {heading}\n\n{body}\n")
    if not args.no_write:
        results_md.write_sections(sections, preamble=PREAMBLE)


if __name__ == "__main__":
    main()
