"""Stage 1: read a manifest as a stream of rows, never whole.

JSONL: one object a line. CSV: a header naming `id`, `audio_path` and the other known
columns (ROW_COLUMNS) and participants' columns (user1.id, user1.role, user1.<field>);
every other column is a metadata key; empty cells are omitted. UTF-8,
with or without a BOM. A row's key is its `id`, or its `audio_path` without one; a
repeated key makes the later row invalid.

Only syntax is checked here: a row that cannot be parsed comes out with `problem` set,
everything else is for the validation stage.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bulk_uploader.model import KeySet, ManifestRow, RecordMapping, columns_to_row, flatten, row_key


def _from_columns(line: int, columns: dict[str, Any], mapping: RecordMapping | None) -> ManifestRow:
    """A row from a record's flat columns, through the mapping when there is one."""
    problems: list[str] = []
    if mapping is not None:
        columns, problems = mapping.apply(columns)
    data = columns_to_row(columns)
    row = ManifestRow(line, row_key(data, line), data)
    if problems:
        row.problem, row.code = "; ".join(problems), "MAPPING"
    return row


# A source record: its line, its fields (a JSON object as written, or a CSV row's cells by
# column), or why it could not be read.
Record = tuple[int, dict[str, Any], str | None]


def _jsonl_records(path: Path) -> Iterator[Record]:
    with path.open("rb") as f:
        for line, raw in enumerate(f, 1):
            if line == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if not raw.strip():
                continue
            try:
                data = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                yield line, {}, f"malformed JSON on line {line}: {exc}"
                continue
            if not isinstance(data, dict):
                yield line, {}, f"line {line} is not a JSON object"
                continue
            yield line, data, None


def _csv_records(path: Path) -> Iterator[Record]:
    with path.open("r", encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            return
        except (UnicodeDecodeError, csv.Error) as exc:
            yield 1, {}, f"unreadable CSV header: {exc}"
            return
        while True:
            line = reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except (UnicodeDecodeError, csv.Error) as exc:
                yield line, {}, f"unreadable CSV on line {line}: {exc}"
                continue
            if not any(c.strip() for c in cells):
                continue
            if len(cells) != len(header):
                yield line, {}, f"line {line} has {len(cells)} cells, the header {len(header)}"
                continue
            yield line, {name: cell for name, cell in zip(header, cells, strict=True) if name}, None


def is_csv(path: Path) -> bool:
    """Whether a manifest or export is CSV (else JSON lines)."""
    return path.suffix.lower() == ".csv"


def read_records(path: Path) -> Iterator[Record]:
    """Stream the records of a .csv or .jsonl file (UTF-8, with or without a BOM)."""
    return _csv_records(path) if is_csv(path) else _jsonl_records(path)


def read_manifest(path: Path, mapping: RecordMapping | None = None) -> Iterator[ManifestRow]:
    """Stream the rows of a .jsonl or .csv manifest, through a mapping if given (bulk_uploader.mapping).

    A repeated key yields a row with a problem."""
    seen = KeySet()
    csv_columns = is_csv(path)
    for line, fields, problem in read_records(path):
        if problem is not None:
            row = ManifestRow(line, f"line:{line}", {}, problem)
        elif mapping is not None:
            row = _from_columns(line, flatten(fields), mapping)
        elif csv_columns:
            row = _from_columns(line, fields, None)
        else:
            row = ManifestRow(line, row_key(fields, line), fields)
        if row.problem is None and not seen.add(row.key):
            row.problem = f"duplicate id {row.key!r}: an earlier row of the manifest has the same key"
            row.code = "DUPLICATE_ID"
        yield row


def count_rows(path: Path) -> int:
    """Roughly how many rows a manifest has (non-blank lines, less a CSV header), read fast."""
    count = 0
    with path.open("rb") as f:
        for line in f:
            if line.strip():
                count += 1
    return max(0, count - 1) if is_csv(path) else count
