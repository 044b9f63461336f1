"""RESULTS.md as sections: each benchmark replaces its own `## ` sections and leaves the others.

A section is its `## ` heading line and everything up to the next one. A script writes the
sections it measured, each stamped with when, where and with what it was measured, so
figures taken at different times never pass for one run.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
TITLE = "# Benchmark results"


def loop_seconds(steps: int = 2_000_000, rounds: int = 3) -> float:
    """Seconds for 10,000,000 steps of a plain Python loop (median of `rounds` shorter ones), taken
    when a section is written: machines the same on paper differ twofold from day to day, and
    absolute figures (the start-up's CPU seconds) move with it; ratios measured side by side do not."""
    times = []
    for _ in range(rounds):
        started, total = time.perf_counter(), 0
        for i in range(steps):
            total += i
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 10_000_000 / steps


def stamp(extra: str = "") -> str:
    """One line: the date, the machine and the versions a section was measured with."""
    cpu = ""
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                   if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = f"Python {platform.python_version()}"
    try:
        import google.protobuf
        import grpc

        versions += f", grpcio {grpc.__version__}, protobuf {google.protobuf.__version__}"
    except ImportError:
        pass
    line = (f"_measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores {cpu}, "
            f"{platform.system()} {platform.release()}; {versions}; a 10,000,000-step Python loop "
            f"{loop_seconds():.2f} s")
    return line + (f"; {extra}_" if extra else "_")


def _split(text: str) -> tuple[list[str], list[tuple[str, list[str]]]]:
    head: list[str] = []
    sections: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("## "):
            sections.append((line, []))
        elif sections:
            sections[-1][1].append(line)
        else:
            head.append(line)
    return head, sections


def write_sections(new: list[tuple[str, str]], path: Path = RESULTS, preamble: str | None = None) -> None:
    """Replace the sections whose heading (`## ...`) matches, append the others, keep the rest.

    `new` holds (heading without "## ", body); `preamble`, when given, replaces the text above
    the first section.
    """
    head, sections = _split(path.read_text() if path.exists() else TITLE + "\n")
    if preamble is not None:
        head = preamble.rstrip("\n").splitlines() + [""]
    index = {heading: n for n, (heading, _) in enumerate(sections)}
    for heading, body in new:
        lines = ["", *body.strip("\n").splitlines(), ""]
        key = f"## {heading}"
        if key in index:
            sections[index[key]] = (key, lines)
        else:
            index[key] = len(sections)
            sections.append((key, lines))
    out = [*head]
    for heading, body in sections:
        while body and not body[-1].strip():
            body = body[:-1]
        while body and not body[0].strip():
            body = body[1:]
        out += [heading, "", *body, ""]
    path.write_text("\n".join(out).rstrip("\n") + "\n")
