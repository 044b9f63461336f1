"""Mapping files: another vendor's export columns turned into manifest rows while reading.

A mapping (TOML) is applied to each source record: a CSV row (the header names the
columns) or a JSON object, whose nested objects are flattened with dots
({"agent": {"name": "Ann"}} has the column `agent.name`). Steps, in order:

    [row]
    id = "CallID"            # source column that identifies the row (results files, resume)
    dedupe_key = "CallID"    # source column unique per call; its metadata key becomes --dedupe-key
    unmapped = "keep"        # columns not under [rename]: "keep" (as metadata keys), "drop" or "error"
    drop = ["Duration"]      # source columns to leave out

    [rename]                 # source column = target
    Recording = "audio_path" # targets: a manifest column (audio_path, connection_id, format,
    Agent = "operator_name"  # sample_rate, channels, chat_path, talk_id, messages), user<N>.id,
                             # user<N>.role, user<N>.<field>, or any other name: a metadata key

    [values.direction_outgoing]   # target key: source value = value sent
    IN = false                    # (matched ignoring case and surrounding blanks; a value
    OUT = true                    #  not listed is a row error, unless "*" gives a fallback)

    [dates.date]                  # target key holding a date in the source's form
    format = "%d/%m/%Y %H:%M:%S"  # strptime format, or "iso", "unix" (seconds), "unix_ms"
    timezone = "Europe/Moscow"    # zone of source dates that name none
    output = "zoned"              # "zoned" 2024-03-21T14:05:33.000+03:00, "utc" ...Z,
                                  # or "local" 2024-03-21T14:05:33.000 (no zone)
    [defaults]                    # target = value, when the source has none
    language = "ru-RU"

    [constants]                   # target = value on every row, whatever the source says
    connection_id = "2a1b..."

An empty CSV cell or a JSON null counts as no value. Problems in the file itself raise
MappingError naming its line and key before any row is read; problems in a row are
returned with the row, and that row is recorded invalid.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping as MappingABC
from dataclasses import field
from datetime import datetime, timezone, tzinfo
from pathlib import Path
from typing import Any, Literal

from bulk_uploader.chat import parse_timezone
from bulk_uploader.errors import MappingError
from bulk_uploader.model import ROW_COLUMNS, USER_COLUMN, as_text
from bulk_uploader.records import FrozenRecord, record

_TABLES = ("row", "rename", "values", "dates", "defaults", "constants")
_ROW_KEYS = ("id", "dedupe_key", "unmapped", "drop")
_DATE_KEYS = ("format", "timezone", "output")
_SPECIAL_FORMATS = ("iso", "unix", "unix_ms")
_OUTPUTS = ("zoned", "utc", "local")


@record(slots=True)
class DateRule(FrozenRecord):
    """How one target key's dates are read and written."""

    format: str
    zone: tzinfo | None
    output: Literal["zoned", "utc", "local"]

    def convert(self, value: str) -> str:
        """The date in the form SpeechSense takes; ValueError naming the expected form."""
        text = value.strip()
        try:
            if self.format == "unix":
                moment = datetime.fromtimestamp(float(text), timezone.utc)
            elif self.format == "unix_ms":
                moment = datetime.fromtimestamp(float(text) / 1000, timezone.utc)
            elif self.format == "iso":
                moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            else:
                moment = datetime.strptime(text, self.format)
        except (ValueError, OverflowError, OSError):
            raise ValueError(f"{value!r} does not match the date format {self.format!r}") from None
        if moment.tzinfo is None:
            if self.zone is None:
                if self.output != "local":
                    raise ValueError(f"{value!r} names no zone and the mapping gives no timezone for it")
            else:
                moment = moment.replace(tzinfo=self.zone)
        if self.output == "utc":
            return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
        if self.output == "local":
            if moment.tzinfo is not None and self.zone is not None:
                moment = moment.astimezone(self.zone)
            return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"
        return moment.isoformat(timespec="milliseconds")


@record(slots=True)
class ColumnMapping(FrozenRecord):
    """A parsed mapping file; apply() turns one source record into manifest columns."""

    rename: dict[str, str] = field(default_factory=dict)
    values: dict[str, dict[str, str]] = field(default_factory=dict)  # target -> folded source value -> value
    dates: dict[str, DateRule] = field(default_factory=dict)
    defaults: dict[str, str] = field(default_factory=dict)
    constants: dict[str, str] = field(default_factory=dict)
    id_column: str | None = None
    dedupe_column: str | None = None
    unmapped: Literal["keep", "drop", "error"] = "keep"
    drop: frozenset[str] = frozenset()

    @property
    def dedupe_key(self) -> str | None:
        """The metadata key the dedupe column becomes (what --dedupe-key takes)."""
        if self.dedupe_column is None:
            return None
        return self.rename.get(self.dedupe_column, self.dedupe_column)

    def target(self, column: str) -> str | None:
        """Where a source column goes (None: left out)."""
        if column in self.drop:
            return None
        if column in self.rename:
            return self.rename[column]
        return column if self.unmapped == "keep" else None

    def apply(self, record: MappingABC[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Manifest columns for one flat source record, and every problem found in it."""
        problems: list[str] = []
        out: dict[str, Any] = {}
        for column, value in record.items():
            if value == "" or value is None:
                continue
            target = self.target(column)
            if target is None:
                if self.unmapped == "error" and column not in self.drop and column != self.id_column:
                    problems.append(f"column {column!r} is not in the mapping's [rename]")
                continue
            out[target] = value
        if self.id_column is not None:
            value = record.get(self.id_column)
            if value in (None, ""):
                problems.append(f"no value in the id column {self.id_column!r}")
            else:
                out["id"] = value
        for target, table in self.values.items():
            if target in out:
                raw = out[target]
                mapped = table.get(str(raw).strip().casefold(), table.get("*"))
                if mapped is None:
                    problems.append(f"{target}: {raw!r} is not in [values.{target}] ({', '.join(sorted(table))})")
                else:
                    out[target] = mapped
        for target, rule in self.dates.items():
            if target in out:
                try:
                    out[target] = rule.convert(str(out[target]))
                except ValueError as exc:
                    problems.append(f"{target}: {exc}")
        for target, value in self.defaults.items():
            out.setdefault(target, value)
        out.update(self.constants)
        return out, problems


def _line_of(text: str, table: str | None, key: str | None) -> int | None:
    """The line where `key` is set within [table] (or the table's header), for messages."""
    current: str | None = None
    header_line = None
    for n, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        header = re.fullmatch(r"\[\s*([^\[\]]+?)\s*\](\s*#.*)?", stripped)
        if header:
            current = header.group(1).replace('"', "").replace("'", "").replace(" ", "")
            if header_line is None and table and (current == table or current.startswith(table + ".")):
                header_line = n
            continue
        if key is not None and current == table:
            bare = re.match(r"""(["']?)(.+?)\1\s*=""", stripped)
            if bare and bare.group(2) == key:
                return n
    if header_line is None and table and "." in table:
        # [dates] date = { format = ... }: the key is an inline table inside its parent.
        parent, _, name = table.rpartition(".")
        return _line_of(text, parent, name)
    return header_line


def _text_value(value: Any) -> str | None:
    if isinstance(value, (str, bool, int, float)):
        return str(as_text(value))
    return None


@record(slots=True)
class _MappingFile(FrozenRecord):
    """A mapping file's path and text, to name the line and key at fault in a MappingError."""

    path: Path
    text: str

    def fail(self, table: str | None, key: str | None, message: str) -> MappingError:
        line = _line_of(self.text, table, key)
        where = f"[{table}]" if table else "top level"
        if key is not None:
            where += f" {key}"
        return MappingError(f"{self.path}{f' line {line}' if line else ''}, {where}: {message}")


def _read(path: Path) -> tuple[_MappingFile, dict[str, Any]]:
    """The file and its parsed TOML; MappingError if it cannot be read or parsed."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MappingError(f"cannot read the mapping file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MappingError(f"{path}: {exc}") from None
    return _MappingFile(path, text), data


def _check_tables(src: _MappingFile, data: dict[str, Any]) -> None:
    """Every top-level entry is one of the mapping's tables."""
    for name, value in data.items():
        if name not in _TABLES:
            raise src.fail(name if isinstance(value, dict) else None, None if isinstance(value, dict) else name, f"unknown entry; a mapping has the tables {', '.join('[' + t + ']' for t in _TABLES)}")
        if not isinstance(value, dict):
            raise src.fail(None, name, "must be a table, e.g. [" + name + "]")


def _row(src: _MappingFile, row: dict[str, Any]) -> tuple[Any, list[str]]:
    """Check [row]; return its unmapped policy and its drop list."""
    for key in row:
        if key not in _ROW_KEYS:
            raise src.fail("row", key, f"unknown key; [row] takes {', '.join(_ROW_KEYS)}")
    for key in ("id", "dedupe_key"):
        if key in row and (not isinstance(row[key], str) or not row[key].strip()):
            raise src.fail("row", key, "must name a source column")
    unmapped = row.get("unmapped", "keep")
    if unmapped not in ("keep", "drop", "error"):
        raise src.fail("row", "unmapped", f"must be 'keep', 'drop' or 'error', not {unmapped!r}")
    drop = row.get("drop", [])
    if not isinstance(drop, list) or not all(isinstance(c, str) and c for c in drop):
        raise src.fail("row", "drop", "must be a list of source column names")
    return unmapped, drop


def _rename(src: _MappingFile, table: dict[str, Any]) -> dict[str, str]:
    """[rename]: source column -> target, each target named once."""
    rename: dict[str, str] = {}
    for column, target in table.items():
        if not isinstance(target, str) or not target.strip():
            raise src.fail("rename", column, "the target must be a non-empty name (to leave a column out, list it in [row] drop)")
        if target in ("metadata", "users"):
            raise src.fail("rename", column, f"{target!r} is not a column; name the metadata key or user<N>.<field> itself")
        user = USER_COLUMN.fullmatch(target)
        if user and int(user.group(1)) < 1:
            raise src.fail("rename", column, "users are numbered from 1 (user1.id)")
        earlier = next((c for c, t in rename.items() if t == target.strip()), None)
        if earlier is not None:
            raise src.fail("rename", column, f"{earlier!r} is renamed to {target.strip()!r} already")
        rename[column] = target.strip()
    return rename


def _values(src: _MappingFile, tables: dict[str, Any]) -> dict[str, dict[str, str]]:
    """[values.<target>]: folded source value -> value sent, per target key."""
    values: dict[str, dict[str, str]] = {}
    for target, table in tables.items():
        if not isinstance(table, dict) or not table:
            raise src.fail("values", target, "must be a table of source value = value sent, e.g. [values." + target + "]")
        folded: dict[str, str] = {}
        for source, sent in table.items():
            text_value = _text_value(sent)
            if text_value is None:
                raise src.fail(f"values.{target}", source, "the value sent must be a string, number or boolean")
            key = source if source == "*" else source.strip().casefold()
            if key in folded:
                raise src.fail(f"values.{target}", source, "listed twice (values are matched ignoring case)")
            folded[key] = text_value
        values[target] = folded
    return values


def _date_format(src: _MappingFile, where: str, table: dict[str, Any]) -> str:
    """A date rule's format: iso, unix, unix_ms, or a strptime pattern with a year, month and day."""
    fmt = table.get("format")
    if not isinstance(fmt, str) or not fmt:
        raise src.fail(where, "format" if "format" in table else None, "needs a format: a strptime pattern, iso, unix or unix_ms")
    if fmt not in _SPECIAL_FORMATS:
        missing = [part for part, codes in (("year", "Yy"), ("month", "mbB"), ("day", "dj"))
                   if not any(f"%{c}" in fmt for c in codes)]
        if missing:
            raise src.fail(where, "format", f"{fmt!r} has no {' or '.join(missing)} (strptime codes such as %Y %m %d)")
        sample = datetime(2001, 2, 3, 4, 5, 6)
        try:
            datetime.strptime(sample.strftime(fmt), fmt)
        except ValueError as exc:
            raise src.fail(where, "format", f"{fmt!r} is not a usable strptime format ({exc})") from None
    return fmt


def _date_rule(src: _MappingFile, target: str, table: Any) -> DateRule:
    """One [dates.<target>] table as a DateRule."""
    where = f"dates.{target}"
    if not isinstance(table, dict):
        raise src.fail("dates", target, "must be a table with format, timezone, output")
    for key in table:
        if key not in _DATE_KEYS:
            raise src.fail(where, key, f"unknown key; a date rule takes {', '.join(_DATE_KEYS)}")
    fmt = _date_format(src, where, table)
    zone = None
    if "timezone" in table:
        try:
            zone = parse_timezone(str(table["timezone"]))
        except ValueError as exc:
            raise src.fail(where, "timezone", str(exc)) from None
    output = table.get("output", "zoned")
    if output not in _OUTPUTS:
        raise src.fail(where, "output", f"must be one of {', '.join(_OUTPUTS)}, not {output!r}")
    if zone is None and output != "local" and fmt not in ("iso", "unix", "unix_ms") and "%z" not in fmt:
        raise src.fail(where, None, "dates in this format name no zone: give a timezone (Europe/Moscow, +03:00)")
    return DateRule(fmt, zone, output)


def _dates(src: _MappingFile, tables: dict[str, Any]) -> dict[str, DateRule]:
    """[dates.<target>]: how each target key's dates are read and written."""
    return {target: _date_rule(src, target, table) for target, table in tables.items()}


def _plain(src: _MappingFile, table_name: str, table: dict[str, Any]) -> dict[str, str]:
    """[defaults] or [constants]: target -> value, each a string, number or boolean."""
    plain: dict[str, str] = {}
    for target, value in table.items():
        text_value = _text_value(value)
        if text_value is None:
            raise src.fail(table_name, target, "must be a string, number or boolean")
        plain[target] = text_value
    return plain


def _check_dedupe(src: _MappingFile, dedupe: str, rename: dict[str, str], unmapped: Any, drop: list[str]) -> None:
    """The dedupe column must become a metadata key, which Search can find talks by."""
    goes_to = rename.get(dedupe, dedupe if unmapped == "keep" else None)
    if dedupe in drop or goes_to is None or goes_to in ROW_COLUMNS or USER_COLUMN.fullmatch(goes_to):
        raise src.fail("row", "dedupe_key", f"column {dedupe!r} must become a metadata key (Search finds talks by those)")


def load_mapping(path: Path) -> ColumnMapping:
    """Read and check a mapping file; MappingError names the file, line and key at fault."""
    src, data = _read(path)
    _check_tables(src, data)
    row = data.get("row", {})
    unmapped, drop = _row(src, row)
    rename = _rename(src, data.get("rename", {}))
    values = _values(src, data.get("values", {}))
    dates = _dates(src, data.get("dates", {}))
    defaults = _plain(src, "defaults", data.get("defaults", {}))
    constants = _plain(src, "constants", data.get("constants", {}))
    dedupe = row.get("dedupe_key")
    if dedupe is not None:
        _check_dedupe(src, dedupe, rename, unmapped, drop)
    return ColumnMapping(
        rename=rename, values=values, dates=dates, defaults=defaults, constants=constants,
        id_column=row.get("id"), dedupe_column=dedupe, unmapped=unmapped, drop=frozenset(drop),
    )
