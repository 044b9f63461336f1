"""`bulk-upload manifest` over a folder of a million recordings: time and peak RSS.

    python benchmarks/builder_scale.py [--files 1000000]

Makes (once, cached in benchmarks/.data) an export of N recordings in folders of 1,000
(hard links to one small WAV: directory entries, not disk space) with a vendor-style JSON
sidecar each, and one CSV export of the same calls; then builds a manifest both ways
through the migration mapping of tests/test_migration_kit.py and prints rows written,
seconds and the builder's peak RSS.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from test_migration_kit import VENDOR_MAPPING, vendor_record  # noqa: E402

from bulk_uploader import samples  # noqa: E402

PER_FOLDER = 1000
LINKS_PER_SEED = 50_000


def make_export(root: Path, files: int) -> None:
    done = root / f".complete-{files}"
    if done.exists():
        return
    root.mkdir(parents=True, exist_ok=True)
    with (root / "export.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["CallID", "Recording", "Agent.Name", "Agent.Login", "Customer.Name", "Customer.Phone",
                         "StartTime", "Direction"])
        for n in range(files):
            folder = root / "calls" / f"{n // PER_FOLDER:05d}"
            if n % PER_FOLDER == 0:
                folder.mkdir(parents=True, exist_ok=True)
            name = f"rec{n:07d}"
            target = folder / f"{name}.wav"
            audio = root / f"seed-{n // LINKS_PER_SEED}.wav"  # a file system caps the links to one inode
            if n % LINKS_PER_SEED == 0 and not audio.exists():
                audio.write_bytes(samples.wav(2000))
            if not target.exists():
                os.link(audio, target)
            record = vendor_record(n)
            (folder / f"{name}.json").write_text(json.dumps(record), encoding="utf-8")
            agent, customer = record["Agent"], record["Customer"]
            writer.writerow([record["CallID"], f"{name}.wav", agent["Name"], agent["Login"],  # type: ignore[index]
                             customer["Name"], customer["Phone"], record["StartTime"], record["Direction"]])  # type: ignore[index]
    done.touch()


def measure(*args: str) -> dict[str, float]:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [sys.executable, str(HERE / "measure.py"), out.name, "--",
                   sys.executable, "-m", "bulk_uploader", "manifest", *args]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        return json.loads(Path(out.name).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1_000_000)
    files = parser.parse_args().files
    root = HERE / ".data" / f"export-{files}"
    print(f"making the export of {files:,} recordings (cached) in {root} ...", flush=True)
    make_export(root, files)
    mapping = root / "mapping.toml"
    mapping.write_text(VENDOR_MAPPING, encoding="utf-8")
    print("| shape | rows written | seconds | peak RSS MB |\n|---|---|---|---|")
    for shape, extra in (("sidecars", []), ("CSV export joined on Recording",
                                            ["--export", str(root / "export.csv"), "--join", "Recording"])):
        out = root / "manifest.jsonl"
        figures = measure(str(root / "calls"), "--mapping", str(mapping), "-o", str(out), "--overwrite", *extra)
        with out.open("rb") as f:
            rows = sum(1 for _ in f)
        print(f"| {shape} | {rows:,} | {figures['wall']:.1f} | {figures['rss_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
