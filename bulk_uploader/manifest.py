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
import re
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # mapping imports this module's column names
    from bulk_uploader.mapping import ColumnMapping

# Columns user<N>.id, user<N>.role and user<N>.<field> describe participant N.
USER_COLUMN = re.compile(r"user(\d+)\.(.+)")
# Columns that describe the row itself rather than carry talk metadata (`messages` only
# through a mapping: a CSV cell cannot hold a list).
ROW_COLUMNS = frozenset(
    {"id", "audio_path", "connection_id", "format", "sample_rate", "channels", "talk_id", "chat_path", "messages"}
)


@dataclass(slots=True)
class ManifestRow:
    """One manifest row: its 1-based line, its key, and its fields (or why it could not be read)."""

    line: int
    key: str
    data: dict[str, Any]
    problem: str | None = None  # why the row cannot be used
    code: str = "MALFORMED_ROW"  # the problem's kind, for the results file


class KeySet:
    """Keys seen so far, in 8 bytes each: a million keys take 16 MiB, not the ~70 MiB of a set.

    An open-addressing table of the keys' 64-bit hashes (a collision between two different
    keys is negligible: about 1 in 10^7 for a million keys). Hashes are per process, which
    is all a run needs.
    """

    _EMPTY = 0

    def __init__(self) -> None:
        self._table = array("Q", bytes(8 * 1024))
        self._mask = 1023
        self._count = 0

    @staticmethod
    def _hash(key: str) -> int:
        return (hash(key) & 0xFFFFFFFFFFFFFFFF) or 1  # 0 marks an empty slot

    def _slot(self, h: int) -> int:
        table, mask = self._table, self._mask
        i = h & mask
        while table[i] != h and table[i] != self._EMPTY:
            i = (i + 1) & mask
        return i

    def add(self, key: str) -> bool:
        """Add a key; False when it was there already."""
        h = self._hash(key)
        i = self._slot(h)
        if self._table[i] == h:
            return False
        self._table[i] = h
        self._count += 1
        if 2 * self._count > self._mask:
            self._grow()
        return True

    def _grow(self) -> None:
        old = self._table
        self._table = array("Q", bytes(16 * len(old)))
        self._mask = len(self._table) - 1
        for h in old:
            if h != self._EMPTY:
                self._table[self._slot(h)] = h

    def __contains__(self, key: str) -> bool:
        h = self._hash(key)
        return self._table[self._slot(h)] == h

    def __len__(self) -> int:
        return self._count


def flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A JSON object's columns: nested objects joined with dots, scalars as text, nulls left out."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        elif value is None:
            continue
        else:
            out[name] = as_text(value)
    return out


def as_text(value: Any) -> Any:
    """Scalars as the text the service takes (true/false, 12, 1.5); lists and text unchanged."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return value


def row_key(data: dict[str, Any], line: int) -> str:
    """The key that identifies a row across runs: id, else audio_path (or chat_path), else the line."""
    for name in ("id", "audio_path", "chat_path"):
        value = data.get(name)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
            return str(value).strip()
    return f"line:{line}"


def columns_to_row(columns: dict[str, Any]) -> dict[str, Any]:
    """A manifest row from flat columns: row columns as they are, user<N>.* as users, the rest metadata."""
    data: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    users: dict[int, dict[str, Any]] = {}
    for name, value in columns.items():
        if value == "" or value is None:
            continue
        if name in ROW_COLUMNS:
            data[name] = value
        elif user := USER_COLUMN.fullmatch(name):
            slot, attribute = int(user.group(1)), user.group(2)
            entry = users.setdefault(slot, {"fields": {}})
            if attribute in ("id", "role"):
                entry[attribute] = value
            else:
                entry["fields"][attribute] = value
        else:
            metadata[name] = value
    data["metadata"] = metadata
    if users:
        data["users"] = [users[slot] for slot in sorted(users)]
    return data


def _from_columns(line: int, columns: dict[str, Any], mapping: ColumnMapping | None) -> ManifestRow:
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


def read_manifest(path: Path, mapping: ColumnMapping | None = None) -> Iterator[ManifestRow]:
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
