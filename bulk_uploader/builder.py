"""`bulk-upload manifest`: a JSONL manifest built from another vendor's export.

Two shapes of export:
- sidecars: a folder (searched recursively) where each recording has its metadata beside
  it, `call.json` (or `call.wav.json`) next to `call.wav`;
- one CSV or JSONL export of metadata, joined to the folder's recordings on a column that
  names each one's file: its path under the folder, its file name, or its name without
  the extension.

Each record goes through the mapping (bulk_uploader.mapping) and becomes one manifest row
whose audio_path is relative to the manifest. Everything is streamed: a directory is
listed one at a time, and the file index an export join needs lives in a temporary SQLite
file, so a folder of millions of recordings takes little memory. Every record or file that
cannot become a row is written to `<manifest>.problems.jsonl` with the reason.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import field
from pathlib import Path
from typing import IO, Any

from bulk_uploader.errors import ConfigError
from bulk_uploader.keyset import KeySet
from bulk_uploader.manifest import count_rows, read_header, read_records
from bulk_uploader.mapping import ColumnMapping
from bulk_uploader.model import columns_to_row, flatten, row_key
from bulk_uploader.records import Record, record
from bulk_uploader.textfile import TextFormat, detect_format

AUDIO_SUFFIXES = frozenset({".wav", ".mp3", ".ogg", ".opus", ".pcm", ".raw"})
SAMPLES_PER_KIND = 3


@record
class BuildSummary(Record):
    """What a build wrote: rows, and problems by kind with a few samples each."""

    manifest: Path
    problems_path: Path
    rows: int = 0
    problems: Counter[str] = field(default_factory=Counter)
    samples: dict[str, list[str]] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [f"{self.rows} row(s) written to {self.manifest}"]
        if self.problems:
            out.append(f"{sum(self.problems.values())} problem(s), each in {self.problems_path}:")
            for kind, count in self.problems.most_common():
                out.append(f"  {kind}: {count}")
                out += [f"    {sample}" for sample in self.samples[kind]]
        return out


class _Writer:
    """Writes rows and problems; rejects a second row with the same key."""

    def __init__(self, summary: BuildSummary, rows: IO[str], problems: IO[str]) -> None:
        self.summary = summary
        self._rows = rows
        self._problems = problems
        self._keys = KeySet()

    def problem(self, source: str, kind: str, message: str) -> None:
        self.summary.problems[kind] += 1
        samples = self.summary.samples.setdefault(kind, [])
        if len(samples) < SAMPLES_PER_KIND:
            samples.append(f"{source}: {message}")
        self._problems.write(json.dumps({"source": source, "code": kind, "error": message}, ensure_ascii=False) + "\n")

    def row(self, source: str, columns: dict[str, Any], audio: Path) -> None:
        columns["audio_path"] = os.path.relpath(audio, self.summary.manifest.parent)
        data = columns_to_row(columns)
        key = row_key(data, 0)
        if not self._keys.add(key):
            self.problem(source, "DUPLICATE_ID", f"id {key!r} is already taken by an earlier row")
            return
        if "id" not in data:
            data = {"id": key, **data}
        self._rows.write(json.dumps(data, ensure_ascii=False) + "\n")
        self.summary.rows += 1


def _files(folder: Path) -> Iterator[tuple[Path, str]]:
    """(directory, file name) for every file under folder, streamed: no directory is held whole."""
    stack = [folder]
    while stack:
        directory = stack.pop()
        try:
            with os.scandir(directory) as listing:
                for entry in listing:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                    elif entry.is_file():
                        yield directory, entry.name
        except OSError:
            continue


def _is_audio(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in AUDIO_SUFFIXES


def _mapped(writer: _Writer, source: str, mapping: ColumnMapping, fields: dict[str, Any]) -> dict[str, Any] | None:
    columns, problems = mapping.apply(flatten(fields))
    if problems:
        writer.problem(source, "MAPPING", "; ".join(problems))
        return None
    return columns


_SUFFIX_SPELLINGS = tuple(sorted(AUDIO_SUFFIXES)) + tuple(sorted(s.upper() for s in AUDIO_SUFFIXES))


def _has_recording(directory: Path, sidecar: str) -> bool:
    """Whether a .json file sits beside a recording it describes (call.json or call.wav.json)."""
    stem = sidecar[: -len(".json")]
    if _is_audio(stem):
        return (directory / stem).is_file()
    return any((directory / (stem + suffix)).is_file() for suffix in _SUFFIX_SPELLINGS)


def _from_sidecars(folder: Path, mapping: ColumnMapping, writer: _Writer) -> None:
    for directory, name in _files(folder):
        if name.lower().endswith(".json"):
            if not _has_recording(directory, name):
                writer.problem(os.path.relpath(directory / name, folder), "SIDECAR_WITHOUT_AUDIO",
                               "no recording with this name beside it")
            continue
        if not _is_audio(name):
            continue
        audio = directory / name
        source = os.path.relpath(audio, folder)
        stem = os.path.splitext(name)[0]
        sidecar = next((directory / n for n in (stem + ".json", name + ".json") if (directory / n).is_file()), None)
        if sidecar is None:
            writer.problem(source, "NO_SIDECAR", f"no {stem}.json beside it")
            continue
        try:
            fields = json.loads(sidecar.read_bytes())
        except (OSError, ValueError) as exc:
            writer.problem(source, "BAD_SIDECAR", f"{sidecar.name}: {getattr(exc, 'strerror', None) or exc}")
            continue
        if not isinstance(fields, dict):
            writer.problem(source, "BAD_SIDECAR", f"{sidecar.name} is not a JSON object")
            continue
        columns = _mapped(writer, source, mapping, fields)
        if columns is not None:
            writer.row(source, columns, audio)


class _FileIndex:
    """The folder's recordings by relative path, file name and stem, in a temporary SQLite file."""

    def __init__(self, folder: Path, scratch: Path) -> None:
        self.folder = folder
        self.db = sqlite3.connect(scratch / "files.sqlite3")
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("CREATE TABLE files (rel TEXT PRIMARY KEY, name TEXT, stem TEXT, used INTEGER DEFAULT 0)")
        batch: list[tuple[str, str, str]] = []
        for directory, name in _files(folder):
            if _is_audio(name):
                batch.append((os.path.relpath(directory / name, folder), name, os.path.splitext(name)[0]))
            if len(batch) >= 10_000:
                self.db.executemany("INSERT INTO files (rel, name, stem) VALUES (?, ?, ?)", batch)
                batch.clear()
        self.db.executemany("INSERT INTO files (rel, name, stem) VALUES (?, ?, ?)", batch)
        self.db.execute("CREATE INDEX by_name ON files (name)")
        self.db.execute("CREATE INDEX by_stem ON files (stem)")

    def find(self, reference: str) -> tuple[str | None, str | None]:
        """(relative path, None) for the one file the reference names, or (None, why not)."""
        reference = reference.strip().replace("\\", "/")
        for column, value in (("rel", os.path.normpath(reference.lstrip("/"))), ("name", os.path.basename(reference)),
                              ("stem", os.path.basename(reference))):
            found = self.db.execute(f"SELECT rel FROM files WHERE {column} = ? LIMIT 2", (value,)).fetchall()
            if len(found) > 1:
                return None, f"{reference!r} matches several recordings ({found[0][0]}, {found[1][0]}, ...)"
            if found:
                self.db.execute("UPDATE files SET used = 1 WHERE rel = ?", (found[0][0],))
                return found[0][0], None
        return None, f"no recording under the folder is named {reference!r}"

    def unused(self) -> Iterator[str]:
        yield from (rel for (rel,) in self.db.execute("SELECT rel FROM files WHERE used = 0 ORDER BY rel"))

    def close(self) -> None:
        self.db.close()


def check_export(export: Path, join: str, mapping: ColumnMapping, fmt: TextFormat | None = None) -> TextFormat:
    """How to read the export, once it is known to decode whole and to have the join column; else ConfigError."""
    fmt = fmt or detect_format(export)
    count_rows(export, fmt, mapping)  # every byte decoded and the header checked before a row is written
    header = read_header(export, fmt)
    if header is not None and join not in header:
        folded = [name for name in header if name.casefold().replace(" ", "_") == join.casefold().replace(" ", "_")]
        meant = f"; did you mean {folded[0]!r}?" if folded else ""
        shown = ", ".join(repr(name) for name in header[:12]) + (", ..." if len(header) > 12 else "")
        raise ConfigError(f"{export.name} has no column {join!r} for --join{meant} Its columns: {shown}")
    return fmt


def _from_export(folder: Path, export: Path, join: str, mapping: ColumnMapping, writer: _Writer,
                 fmt: TextFormat) -> None:
    with tempfile.TemporaryDirectory(prefix="bulk-upload-index-") as scratch:
        index = _FileIndex(folder, Path(scratch))
        try:
            for line, fields, problem in read_records(export, fmt):
                source = f"{export.name} line {line}"
                if problem is not None:
                    writer.problem(source, "MALFORMED_ROW", problem)
                    continue
                reference = flatten(fields).get(join)
                if not isinstance(reference, str) or not reference.strip():
                    writer.problem(source, "NO_AUDIO_REFERENCE", f"no value in the join column {join!r}")
                    continue
                rel, why = index.find(reference)
                if rel is None:
                    writer.problem(source, "AUDIO_NOT_FOUND", str(why))
                    continue
                columns = _mapped(writer, source, mapping, fields)
                if columns is not None:
                    if join not in mapping.rename:
                        columns.pop(join, None)  # it named the file; it is not talk metadata
                    writer.row(source, columns, folder / rel)
            for rel in index.unused():
                writer.problem(rel, "AUDIO_WITHOUT_ROW", f"no row of {export.name} names this recording")
        finally:
            index.close()


def build_manifest(folder: Path, out: Path, mapping: ColumnMapping, *, export: Path | None = None,
                   join: str | None = None, export_format: TextFormat | None = None) -> BuildSummary:
    """Write a JSONL manifest for the recordings under folder (sidecars, or an export joined on `join`).

    Raises ConfigError, before writing anything, when the export does not decode or lacks the join column."""
    if export is not None:
        assert join is not None
        export_format = check_export(export, join, mapping, export_format)
    summary = BuildSummary(out, out.with_name(out.name + ".problems.jsonl"))
    with out.open("w", encoding="utf-8") as rows, summary.problems_path.open("w", encoding="utf-8") as problems:
        writer = _Writer(summary, rows, problems)
        if export is None:
            _from_sidecars(folder, mapping, writer)
        else:
            assert join is not None and export_format is not None
            _from_export(folder, export, join, mapping, writer, export_format)
    if not summary.problems:
        summary.problems_path.unlink()
    return summary
