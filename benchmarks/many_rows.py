"""Many rows: the client's memory as the rows go by, and a rerun once every row is done.

    python benchmarks/many_rows.py [--rows 1000000] [--no-write]

Uploads the 1,000,000-row data set (rows share 50 files of 16 KiB; the first --rows of it) at
concurrency 32 to the lean server on loopback, reading the client's resident memory (VmRSS)
every second and the results file's size, which tells how many rows are done. Then, with the
server stopped, the same command again: every row is recorded uploaded, so it should end 0
without the service. Writes its section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import results_md
from run import DATA, PY, LeanServerProcess, client_env, dataset, run_measured

SHARES = (0.01, 0.1, 0.25, 0.5, 0.75, 1.0)  # of the rows done, where the memory is shown


def rss_mib(pid: int) -> float | None:
    try:
        line = next(l for l in Path(f"/proc/{pid}/status").read_text().splitlines() if l.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return None
    return int(line.split()[1]) / 1024


def manifest_of(rows: int) -> Path:
    full = dataset("million", 1_000_000, 16 * 1024, distinct=50)
    if rows >= 1_000_000:
        return full
    part = full.with_name(f"first-{rows}.jsonl")
    if not part.exists():
        with full.open() as src, part.open("w") as out:
            for n, line in enumerate(src):
                if n == rows:
                    break
                out.write(line)
    return part


def upload(manifest: Path, target: str, results: Path) -> tuple[str, list[tuple[int, float]]]:
    """One run to its end: its summary, and (results file bytes, RSS MiB) read every second."""
    argv = [PY, "-m", "bulk_uploader", str(manifest), "--endpoint", target, "--insecure", "--quiet",
            "--concurrency", "32", "--results", str(results)]
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(argv, env=client_env(), cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        samples: list[tuple[int, float]] = []
        while proc.poll() is None:
            rss = rss_mib(proc.pid)
            size = results.stat().st_size if results.exists() else 0
            if rss is not None and size:  # rows are being done (before: start-up)
                samples.append((size, rss))
            time.sleep(1.0)
        err = proc.stderr.read() if proc.stderr else ""
    assert proc.returncode == 0, err[-2000:]
    return err, samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    manifest = manifest_of(args.rows)
    results = DATA / "million" / "many-rows.results.jsonl"
    results.unlink(missing_ok=True)
    server = LeanServerProcess()
    try:
        err, samples = upload(manifest, server.target, results)
    finally:
        server.close()
    finished = re.search(r"Finished in ([\d.]+) s: uploaded (\d+)", err)
    assert finished is not None, err[-2000:]
    seconds, uploaded = float(finished.group(1)), int(finished.group(2))
    print(f"  uploaded {uploaded:,} in {seconds:.1f} s; {len(samples)} samples", flush=True)
    total = results.stat().st_size
    shown = []
    for share in SHARES:  # the last sample at or before this share of the results file
        at = [rss for size, rss in samples if size <= share * total] or [samples[0][1]]
        shown.append(f"| {share * uploaded:,.0f} | {at[-1]:.1f} |")
    _, rerun_err, wall, _, rerun_rss, code = run_measured(  # the server is gone
        [PY, "-m", "bulk_uploader", str(manifest), "--endpoint", server.target, "--insecure", "--quiet",
         "--concurrency", "32", "--results", str(results)], client_env())
    untouched = "the service was not contacted" in rerun_err
    print(f"  rerun without the service: exit {code}, {wall:.1f} s, peak RSS {rerun_rss:.0f} MB", flush=True)
    lines = [results_md.stamp("one run"), "",
             f"{uploaded:,} rows (sharing 50 files of 16 KiB) at concurrency 32 to the lean server on loopback: "
             f"{seconds:.1f} s, {uploaded / seconds:,.0f} files/s. The client's resident memory (VmRSS, read every "
             "second) as the rows are done (the results file's size tells how many):", "",
             "| rows done | RSS MiB |", "|---|---|", *shown, "",
             f"Peak {max(rss for _, rss in samples):.1f} MiB. Then the same command with the server stopped, every row "
             f"recorded uploaded: exit {code}, {wall:.1f} s, peak RSS {rerun_rss:.0f} MB (os.wait4), "
             f"{'the service not contacted' if untouched else 'NOT said: the service was contacted'}."]
    body = "\n".join(lines)
    heading = f"Many rows: memory over {uploaded:,} rows, and a rerun with every row done"
    print(f"\n## {heading}\n\n{body}\n")
    if not args.no_write:
        results_md.write_sections([(heading, body)])
    results.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
