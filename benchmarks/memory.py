"""Peak memory of bulk-upload with big files, beside the README's formula, and its throughput
beside another version's (the one before a change), side by side.

    python benchmarks/memory.py --baseline /tmp/base            # every scenario, 3 rounds
    python benchmarks/memory.py --runs 1 --only 4mib-32 --no-write

Each scenario runs bulk-upload as users run it (its own process, --quiet, a results file)
against benchmarks/lean_server.py, which checks and stores nothing, so the client is what
is measured (one scenario against the emulator too). Peak RSS and CPU come from os.wait4
(run.py's measure.py); MB/s over bulk-upload's own run. With --baseline DIR (a checkout
of the version before, e.g. `git worktree add /tmp/base main`), the same command from that
checkout runs in each round, first or second by turns; a baseline may predate --buffer-mib,
so where a scenario sets it the baseline runs without (the section says so). The figures replace this script's own section
of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import compileall
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import results_md
from run import HERE, EmulatorProcess, LeanServerProcess, Measure, MiB, bulk_upload, dataset

HEADING = "Memory with big files (peak RSS beside the README's formula)"

# The README's formula ("Memory" under Options): peak RSS is about the process's own
# PROCESS_MIB plus the audio held, which is at most --buffer-mib and at most what the rows in
# flight and the read-ahead can hold: 2 x the file for each of concurrency + READ_AHEAD_ROWS
# rows sent whole, 2 x a chunk for each stream.
PROCESS_MIB = 96
READ_AHEAD_ROWS = 6
DEFAULT_BUFFER_MIB = 224


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    count: int
    size: int  # bytes of each file
    concurrency: int
    buffer_mib: int | None = None  # --buffer-mib, None: the default
    emulator: bool = False
    latency_ms: int = 0  # the lean server answers each call this long after it arrives
    chunk: int = MiB
    threshold: int = 4 * MiB

    def formula_mib(self) -> float:
        """The README's peak for this scenario, MiB."""
        per_row = 2 * (self.size if self.size <= self.threshold else min(self.chunk, self.size))
        rows = self.concurrency + (READ_AHEAD_ROWS if self.size <= self.threshold else 0)
        budget = (self.buffer_mib or DEFAULT_BUFFER_MIB) * MiB
        return PROCESS_MIB + min(budget, rows * per_row) / MiB

    def manifest(self) -> Path:
        # Files of exactly `size` bytes (a WAV's 44-byte header included): 4 MiB is sent whole.
        return dataset(f"memory-{self.count}x{self.size}", self.count, self.size - 44)

    def extra(self, baseline: bool) -> list[str]:
        return [] if baseline or self.buffer_mib is None else ["--buffer-mib", str(self.buffer_mib)]


SCENARIOS = [
    Scenario("4mib-32", "500 x 4 MiB, concurrency 32", 500, 4 * MiB, 32),
    Scenario("4mib-8", "500 x 4 MiB, concurrency 8", 500, 4 * MiB, 8),
    Scenario("2mib-32", "300 x 2 MiB, concurrency 32", 300, 2 * MiB, 32),
    Scenario("64mib-8", "8 x 64 MiB streamed, concurrency 8", 8, 64 * MiB, 8),
    Scenario("latency", "500 x 4 MiB, concurrency 32, 100 ms server latency", 500, 4 * MiB, 32, latency_ms=100),
    Scenario("cap-64", "500 x 4 MiB, concurrency 32, --buffer-mib 64", 500, 4 * MiB, 32, buffer_mib=64),
    Scenario("emulator", "500 x 4 MiB, concurrency 32, against the emulator", 500, 4 * MiB, 32, emulator=True),
]


def measure(scenario: Scenario, runs: int, baseline: Path | None) -> dict[str, list[Measure]]:
    """`runs` rounds of the scenario: bulk-upload, and the baseline beside it, first or second by turns."""
    manifest = scenario.manifest()
    server = EmulatorProcess() if scenario.emulator else LeanServerProcess("--latency-ms", str(scenario.latency_ms))
    measured: dict[str, list[Measure]] = {"after": [], "before": []} if baseline else {"after": []}
    try:
        for who in measured:  # a round not counted: the first call of a new server costs more
            bulk_upload(server.target, manifest, scenario.concurrency, *scenario.extra(who == "before"),
                        root=baseline if who == "before" and baseline is not None else HERE.parent)
        for n in range(runs):
            order = list(measured) if n % 2 == 0 else list(reversed(measured))
            for who in order:
                root = baseline if who == "before" and baseline is not None else HERE.parent
                m = bulk_upload(server.target, manifest, scenario.concurrency, *scenario.extra(who == "before"),
                                root=root)
                measured[who].append(m)
                print(f"  [{scenario.name} run {n + 1}] {who}: {m.mb_per_s:.0f} MB/s, peak RSS {m.rss_mb:.0f} MiB, "
                      f"CPU {m.cpu:.2f} s", flush=True)
    finally:
        server.close()
    return measured


def row(scenario: Scenario, measured: dict[str, list[Measure]]) -> str:
    after = measured["after"]
    rss = [m.rss_mb for m in after]
    formula = scenario.formula_mib()
    cells = [scenario.title, f"{statistics.median(rss):.0f} / {max(rss):.0f}", f"{formula:.0f}",
             "yes" if max(rss) <= formula else "**no**", f"{statistics.median(m.mb_per_s for m in after):.0f}"]
    before = measured.get("before")
    if before:
        ratios = [a.mb_per_s / b.mb_per_s for a, b in zip(after, before, strict=True)]
        cells += [f"{statistics.median(m.rss_mb for m in before):.0f} / {max(m.rss_mb for m in before):.0f}",
                  f"{statistics.median(m.mb_per_s for m in before):.0f}", f"{statistics.median(ratios):.2f}"]
    else:
        cells += ["", "", ""]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", nargs="*", default=[s.name for s in SCENARIOS])
    parser.add_argument("--baseline", type=Path, help="a checkout of the version before, run side by side")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    baseline = args.baseline.resolve() if args.baseline else None
    for root in filter(None, (HERE.parent, baseline)):
        compileall.compile_dir(root / "bulk_uploader", quiet=1)  # bytecode, as an installed wheel has it
    sys.path.insert(0, str(HERE.parent))
    lines = [results_md.stamp(f"{args.runs} round(s); 'before': {'a checkout of the version before' if baseline else 'not run'}"),
             "", "Peak RSS of the whole client process (os.wait4), median / highest of the rounds; formula: "
             f"the README's, {PROCESS_MIB} MiB + min(--buffer-mib, what the rows in flight and the read-ahead hold). "
             "MB/s over bulk-upload's own run; the ratio is after / before, round by round (median). Server: "
             "benchmarks/lean_server.py on loopback unless named. Where a scenario sets --buffer-mib, the "
             "baseline runs without it.", "",
             "| scenario | peak RSS MiB | formula MiB | within | MB/s | before: peak RSS MiB | before: MB/s | MB/s after / before |",
             "|---|---|---|---|---|---|---|---|"]
    for scenario in SCENARIOS:
        if scenario.name in args.only:
            lines.append(row(scenario, measure(scenario, args.runs, baseline)))
    body = "\n".join(lines)
    print(f"\n## {HEADING}\n\n{body}\n")
    if not args.no_write:
        results_md.write_sections([(HEADING, body)])


if __name__ == "__main__":
    main()
