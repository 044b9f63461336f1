"""Stage 1: read a manifest as a stream of rows, never whole.

JSONL: one object a line. Delimited text (.csv, .tsv, .txt): a header naming `id`,
`audio_path` and the other known columns (ROW_COLUMNS) and participants' columns (user1.id,
user1.role, user1.<field>); every other column is a metadata key; empty cells are omitted.
The encoding and delimiter are detected or given (bulk_uploader.textfile). A row's key is
its `id`, or its `audio_path` without one; a repeated key makes the later row invalid.

Only syntax is checked here: a row that cannot be parsed comes out with `problem` set,
everything else is for the validation stage. What would spoil every row stops the run
with a ConfigError before any row is read: a byte that does not decode (named by its
line), a header naming a column twice or misspelling a known one, a JSON array or
pretty-printed JSON in a .jsonl file. Counting (count_rows) and reading go through the
same parsers, so they agree on the number of rows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bulk_uploader.errors import ConfigError
from bulk_uploader.keyset import KeySet
from bulk_uploader.model import (
    ROW_COLUMNS,
    USER_COLUMN,
    ManifestRow,
    RecordMapping,
    columns_to_row,
    flatten,
    row_key,
)
from bulk_uploader.textfile import TextFormat, detect_format, is_delimited, open_text, undecodable


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
HeaderCheck = Callable[[list[str]], None]


def _jsonl_lines(path: Path, fmt: TextFormat) -> Iterator[tuple[int, bytes | str]]:
    """(line, text) of every non-blank line; a JSON array or a pretty-printed object stops at its first line."""
    binary = fmt.encoding in ("utf-8", "utf-8-sig")  # json reads UTF-8 bytes without a decoded copy
    first = True
    try:
        with path.open("rb") if binary else open_text(path, fmt) as f:
            for line, raw in enumerate(f, 1):
                if line == 1:
                    raw = raw.removeprefix(b"\xef\xbb\xbf") if isinstance(raw, bytes) else raw.lstrip("\ufeff")
                if not raw or raw.isspace():  # blank (as `not raw.strip()`, without a copy of the line)
                    continue
                if binary and not raw.isascii():
                    raw.decode("utf-8")  # type: ignore[union-attr]  # raises on a byte that is not UTF-8
                if first:
                    _check_first_json_line(path, line, raw.decode() if isinstance(raw, bytes) else raw)
                    first = False
                yield line, raw
    except UnicodeDecodeError:
        raise undecodable(path, fmt.encoding, fmt.how) from None


def _check_first_json_line(path: Path, line: int, text: str) -> None:
    """One error for a file that is not JSON lines at all, rather than one per line."""
    text = text.strip()
    if text.startswith("["):
        raise ConfigError(f"{path.name} line {line} starts a JSON array, but a .jsonl manifest has one JSON object "
                          f"per line: convert it, e.g. jq -c '.[]' {path.name} > rows.jsonl")
    if text == "{":
        raise ConfigError(f"{path.name} line {line}: a JSON object spread over several lines (pretty-printed), but "
                          f"a .jsonl manifest has one object per line: convert it, e.g. jq -c . {path.name} > rows.jsonl")


_scan_json = json.JSONDecoder().scan_once  # the C scanner json.loads ends in, called without its wrappers
_LINE_ENDS = ("\n", "\r\n", "")


def _json_value(text: str) -> Any:
    """json.loads(text), the usual line (an object, then its line end) parsed by the scanner itself;
    anything else, and every error, as json.loads has it."""
    if text[:1] == "{":
        try:
            value, end = _scan_json(text, 0)
        except (StopIteration, ValueError):
            pass  # json.loads raises the error it names
        else:
            if text[end:] in _LINE_ENDS:
                return value
    return json.loads(text)


def _jsonl_records(path: Path, fmt: TextFormat) -> Iterator[Record]:
    for line, raw in _jsonl_lines(path, fmt):
        try:
            # Decoded here (the lines are known UTF-8), as json.loads would first sniff the bytes' encoding.
            data = _json_value(raw.decode() if type(raw) is bytes else raw)
        except json.JSONDecodeError as exc:
            yield line, {}, f"malformed JSON on line {line}: {exc}"
            continue
        if not isinstance(data, dict):
            yield line, {}, f"line {line} is not a JSON object"
            continue
        yield line, data, None


def _csv_rows(path: Path, fmt: TextFormat, check: HeaderCheck | None) -> Iterator[tuple[int, list[str] | str]]:
    """(line, cells) of the header and every non-blank row, or (line, why it cannot be read)."""
    import csv  # only delimited manifests load it

    try:
        with open_text(path, fmt) as f:
            skipped = 1 if fmt.sep_line and f.readline() else 0
            reader = csv.reader(f, delimiter=fmt.delimiter or ",")
            header: list[str] | None = None
            while True:
                line = skipped + reader.line_num + 1
                try:
                    cells = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    if header is None:
                        raise ConfigError(f"{path.name} line {line}: unreadable header: {exc}") from None
                    yield line, f"unreadable CSV on line {line}: {exc}"
                    continue
                if header is None:
                    header = [h.strip().lstrip("\ufeff").strip() for h in cells]
                    _check_header(path, header, check)
                    yield line, header
                elif any(c.strip() for c in cells):
                    yield line, cells
    except UnicodeDecodeError:
        raise undecodable(path, fmt.encoding, fmt.how) from None


def _csv_records(path: Path, fmt: TextFormat, check: HeaderCheck | None) -> Iterator[Record]:
    rows = _csv_rows(path, fmt, check)
    for _, header in rows:
        assert isinstance(header, list)
        break
    else:
        return
    for line, cells in rows:
        if isinstance(cells, str):
            yield line, {}, cells
        elif len(cells) != len(header):
            yield line, {}, f"line {line} has {len(cells)} cells, the header {len(header)}"
        else:
            yield line, {name: cell for name, cell in zip(header, cells, strict=True) if name}, None


def _check_header(path: Path, header: list[str], check: HeaderCheck | None) -> None:
    """A column named twice would lose one of its values on every row: stop before the first."""
    columns: dict[str, list[int]] = {}
    for n, name in enumerate(header, 1):
        if name:
            columns.setdefault(name, []).append(n)
    twice = [f"{name!r} (columns {', '.join(map(str, ns))})" for name, ns in columns.items() if len(ns) > 1]
    if twice:
        raise ConfigError(f"{path.name}: the header names a column more than once, so one of its values would be "
                          f"lost on every row: {'; '.join(twice)}")
    if check is not None:
        check(header)


def _canonical(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name.lower())


_KNOWN = {_canonical(name): name for name in ROW_COLUMNS}
_LOOSE_USER = re.compile(r"\s*user\s*[_\-]?\s*(\d+)\s*[._]\s*(.+)", re.IGNORECASE)


def near_miss(name: str) -> str | None:
    """The known column a header name seems meant as (`ID` -> `id`, `Audio Path` -> `audio_path`), or None."""
    if name in ROW_COLUMNS:
        return None
    if _canonical(name) in _KNOWN:
        return _KNOWN[_canonical(name)]
    user = _LOOSE_USER.fullmatch(name)
    if user is None:
        return None
    attribute = user.group(2).strip()
    meant = f"user{int(user.group(1))}.{attribute.lower() if attribute.lower() in ('id', 'role') else attribute}"
    return None if meant == name and USER_COLUMN.fullmatch(name) else meant


def _check_manifest_columns(path: Path) -> HeaderCheck:
    def check(header: list[str]) -> None:
        misses = [(name, meant) for name in header if (meant := near_miss(name)) and meant not in header]
        if misses:
            named = ", ".join(f"{name!r} (meant {meant!r}?)" for name, meant in misses)
            raise ConfigError(f"{path.name}: column names are exact, and the header has {named}: rename "
                              "them, or read the file through a --mapping")
    return check


_JSON_FIELDS = ROW_COLUMNS | {"metadata", "users"}
_KNOWN_JSON = {_canonical(name): name for name in _JSON_FIELDS}


def _check_json_fields(path: Path, line: int, fields: dict[str, Any]) -> None:
    """The first object's field names, as a header's: `ID` or `Audio_Path` would fail every row alike."""
    misses = [(name, _KNOWN_JSON[_canonical(name)]) for name in fields
              if name not in _JSON_FIELDS and _KNOWN_JSON.get(_canonical(name), name) not in fields]
    if misses:
        named = ", ".join(f"{name!r} (meant {meant!r}?)" for name, meant in misses)
        raise ConfigError(f"{path.name} line {line}: field names are exact, and the first row has {named}: rename "
                          "them, or read the file through a --mapping")


def is_csv(path: Path) -> bool:
    """Whether a manifest or export is delimited text (else JSON lines)."""
    return is_delimited(path)


def read_records(path: Path, fmt: TextFormat | None = None, check: HeaderCheck | None = None) -> Iterator[Record]:
    """Stream the records of a delimited or JSONL file; fmt None: detected. Raises ConfigError (module doc)."""
    fmt = fmt or detect_format(path)
    return _csv_records(path, fmt, check) if is_delimited(path) else _jsonl_records(path, fmt)


def read_header(path: Path, fmt: TextFormat | None = None) -> list[str] | None:
    """The column names of a delimited file (None for JSONL or an empty file)."""
    if not is_delimited(path):
        return None
    for _, header in _csv_rows(path, fmt or detect_format(path), None):
        return header if isinstance(header, list) else None
    return None


def read_manifest(path: Path, mapping: RecordMapping | None = None,
                  fmt: TextFormat | None = None) -> Iterator[ManifestRow]:
    """Stream the rows of a manifest, through a mapping if given (bulk_uploader.mapping).

    A repeated key yields a row with a problem; what spoils every row raises ConfigError."""
    seen = KeySet()
    delimited = is_delimited(path)
    check = _check_manifest_columns(path) if delimited and mapping is None else None
    first_object = not delimited and mapping is None
    for line, fields, problem in read_records(path, fmt, check):
        if problem is not None:
            row = ManifestRow(line, f"line:{line}", {}, problem)
        elif mapping is not None:
            row = _from_columns(line, flatten(fields), mapping)
        elif delimited:
            row = _from_columns(line, fields, None)
        else:
            if first_object:
                _check_json_fields(path, line, fields)
                first_object = False
            row = ManifestRow(line, row_key(fields, line), fields)
        if row.problem is None and not seen.add(row.key):
            row.problem = f"duplicate id {row.key!r}: an earlier row of the manifest has the same key"
            row.code = "DUPLICATE_ID"
        yield row


def count_rows(path: Path, fmt: TextFormat | None = None, mapping: RecordMapping | None = None) -> int:
    """How many rows read_manifest will yield, through the same parsers, checking what it checks first.

    Raises ConfigError, as reading would, before any row is used."""
    fmt = fmt or detect_format(path)
    if not is_delimited(path):
        count = 0
        for line, raw in _jsonl_lines(path, fmt):
            if count == 0 and mapping is None:
                try:
                    first = json.loads(raw)
                except json.JSONDecodeError:
                    first = None  # a malformed line: reading makes it a row with a problem
                if isinstance(first, dict):
                    _check_json_fields(path, line, first)
            count += 1
        return count
    check = _check_manifest_columns(path) if mapping is None else None
    return max(0, sum(1 for _ in _csv_rows(path, fmt, check)) - 1)
