"""`bulk-upload report` over a results file of a million lines: time and peak RSS.

    python benchmarks/report_scale.py [--rows 500000] [--resume]

Writes, under a temporary folder, a results file of ROWS rows with two lines each (a
`sending` line and an outcome; 85% uploaded, the rest failed, invalid, ambiguous, or failed
in one run and then in flight when a later run died), then runs `python -m bulk_uploader
report FILE` as a process and prints its output, the seconds it took and its peak RSS.
With --resume it reads the file as a resuming upload does (load_results) instead.

The file is written line by line so that this process stays small: a child started with
vfork inherits its parent's high-water mark, and the figure must be the child's own.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from bulk_uploader.model import RowResult
from bulk_uploader.results import attempt_line

WINDOW = 32  # rows in flight at once: a row's outcome line follows its `sending` line this many rows later
START = datetime(2024, 5, 1, tzinfo=timezone.utc)
RESUME = ("import sys; from pathlib import Path; from bulk_uploader.results import load_results; "
          "p = load_results(Path(sys.argv[1])); "
          "print(f'{len(p.uploaded)} uploaded, {len(p.unknown)} unknown, {p.torn_lines} torn')")
FAILED_CODES = ("UNAVAILABLE", "RESOURCE_EXHAUSTED", "INVALID_ARGUMENT")


def ending(n: int) -> tuple[str, str] | None:
    """How row n ends when it is not uploaded (15 rows in 100): its status and code."""
    kind = n % 100
    if kind < 85:
        return None
    if kind < 92 or kind >= 98:  # 98, 99: and then in flight when a later run died
        return "failed", FAILED_CODES[n % 3]
    if kind < 95:
        return "invalid", "FILE_NOT_FOUND"
    return "ambiguous", "DEADLINE_EXCEEDED"


def outcome(n: int) -> bytes:
    """Row n's outcome line: uploads at 200 rows/s, with a rerun an hour later every 100,000 rows."""
    key = f"call-{n:07d}"
    at = (START + timedelta(seconds=n / 200 + 3600 * (n // 100_000))).isoformat(timespec="milliseconds")
    result = RowResult(key, "uploaded", talk_id=f"talk-{n}", attempts=1, bytes=16_384 + n % 4096, seconds=0.05,
                       audio_path=f"calls/{n // 1000:04d}/{key}.wav", line=n + 1, rpc="Upload", finished_at=at)
    if (end := ending(n)) is not None:
        status, result.code = end
        result.status = status  # type: ignore[assignment]
        result.talk_id, result.bytes, result.error = None, 0, f"{result.code}: the row did not go up"
        result.unknown_outcomes = 1 if status == "ambiguous" else 0
    return result.to_line()


def write_results(path: Path, rows: int) -> int:
    """Write the results file; returns its line count."""
    lines = 0
    with path.open("wb", buffering=1 << 20) as f:
        for n in range(rows + WINDOW):
            in_flight_when_killed = n % 100 >= 98
            if n < rows:
                if in_flight_when_killed:  # its outcome from an earlier run, then this run's attempt
                    f.write(outcome(n))
                    lines += 1
                f.write(attempt_line(f"call-{n:07d}", n + 1, 2 if in_flight_when_killed else 1, 0))
                lines += 1
            done = n - WINDOW
            if 0 <= done < rows and done % 100 < 98:
                f.write(outcome(done))
                lines += 1
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--resume", action="store_true", help="read it as a resuming upload does, not report it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "manifest.jsonl.results.jsonl"
        lines = write_results(path, args.rows)
        print(f"{lines:,} lines, {path.stat().st_size / 1e6:.0f} MB, {args.rows:,} rows", flush=True)
        command = ["-c", RESUME] if args.resume else ["-m", "bulk_uploader", "report"]
        started = time.perf_counter()
        done = subprocess.run([sys.executable, *command, str(path)], capture_output=True, text=True)
        elapsed = time.perf_counter() - started
    print(done.stdout + done.stderr, end="")
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{'resume (load_results)' if args.resume else 'report'}: {elapsed:.1f} s, peak RSS {child:.0f} MB "
          f"(this process's own peak: {own:.0f} MB)")


if __name__ == "__main__":
    main()
