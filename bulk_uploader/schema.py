"""Connection schemas and the metadata rules SpeechSense applies to a talk, as the uploader reads them.

The rules the uploader checks before it sends a row: which keys a connection requires, and
the form of `date`, `direction_outgoing`, `language` and every value's length. Their source
is the vendor's SpeechSense documentation (its upload guide) and the API definitions in
protos/; README.md sums them up under "What is checked before anything is sent". The
emulator judges with its own reading (emulator/metadata.py); a test holds the two to the
same verdict on every value it tries.

A schema file (TOML) lists connections; the uploader reads it with --connection-schema,
the emulator with --config:

    [[connections]]
    id = "my-audio"            # connection id in SpeechSense
    type = "audio"             # audio | chat
    keys = ["operator_name", ...]   # required keys (default: the documented ones for the type)
    optional_keys = ["ticket_id"]   # keys the connection defines but a row may omit
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import field
from datetime import datetime
from pathlib import Path
from typing import Literal

from bulk_uploader.errors import SchemaError
from bulk_uploader.records import FrozenRecord, record

ConnectionType = Literal["audio", "chat"]

AUDIO_KEYS: tuple[str, ...] = (
    "operator_name",
    "operator_id",
    "client_name",
    "client_id",
    "date",
    "direction_outgoing",
    "language",
)
CHAT_KEYS: tuple[str, ...] = (*AUDIO_KEYS, "bot_name", "bot_id")
LINK_KEY = "ticket_id"  # talks sharing a ticket_id are linked dialogs; passed through as is
MAX_KEYS = 200
MAX_VALUE_BYTES = 1024

_NAIVE_DATE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}")
_ZONED_DATE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)")
_LANGUAGE = re.compile(r"ru-ru(, kk-kz)?", re.IGNORECASE)  # as documented: `ru-RU, kk-KZ`, one space


@record(slots=True)
class ConnectionSchema(FrozenRecord):
    """The keys one connection defines; `strict` rejects keys it does not define."""

    id: str | None
    type: ConnectionType
    keys: frozenset[str]
    optional_keys: frozenset[str] = field(default_factory=frozenset)
    strict: bool = True

    @classmethod
    def default(cls, type: ConnectionType, id: str | None = None, *, strict: bool = True) -> ConnectionSchema:
        """The documented default keys for a connection type, with ticket_id optional."""
        keys = CHAT_KEYS if type == "chat" else AUDIO_KEYS
        return cls(id, type, frozenset(keys), frozenset({LINK_KEY}), strict)

    @property
    def all_keys(self) -> frozenset[str]:
        """Every key the connection defines."""
        return self.keys | self.optional_keys


def load_schemas(path: Path, defaults: Callable[[ConnectionType, str | None], ConnectionSchema] | None = None
                 ) -> list[ConnectionSchema]:
    """Read a schema file (format in the module docstring); raise SchemaError naming the problem.
    `defaults` gives a connection's keys where the file names none (the emulator passes its own)."""
    import tomllib  # here, not at the top: only runs given a schema file read one

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise SchemaError(f"cannot read {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SchemaError(f"{path}: {exc}") from None
    documented = defaults or ConnectionSchema.default
    entries = data.get("connections")
    if not isinstance(entries, list) or not entries:
        raise SchemaError(f"{path}: expected one or more [[connections]] tables")
    schemas = []
    for n, entry in enumerate(entries, 1):
        where = f"{path}: connections #{n}"
        type_ = entry.get("type", "audio")
        if type_ not in ("audio", "chat"):
            raise SchemaError(f"{where}: type must be 'audio' or 'chat', not {type_!r}")
        cid = entry.get("id")
        if cid is not None and not isinstance(cid, str):
            raise SchemaError(f"{where}: id must be a string")
        default = documented(type_, cid)
        keys = entry.get("keys", sorted(default.keys))
        optional = entry.get("optional_keys", sorted(default.optional_keys))
        for name, value in (("keys", keys), ("optional_keys", optional)):
            if not isinstance(value, list) or not all(isinstance(k, str) and k for k in value):
                raise SchemaError(f"{where}: {name} must be a list of non-empty strings")
        if len(set(keys) | set(optional)) > MAX_KEYS:
            raise SchemaError(f"{where}: a connection defines at most {MAX_KEYS} keys")
        schemas.append(ConnectionSchema(cid, type_, frozenset(keys), frozenset(optional) - set(keys)))
    return schemas


def check_date(value: str) -> str | None:
    """Return why a `date` value is unacceptable, or None when it is one of the two documented forms."""
    if _NAIVE_DATE.fullmatch(value) or _ZONED_DATE.fullmatch(value):
        try:
            datetime.fromisoformat(value[:19])
            return None
        except ValueError:
            pass
    return (
        f"date {value!r} is not YYYY-MM-DDTHH:MM:SS.SSS (e.g. 2023-09-13T17:31:00.000) "
        "nor ISO 8601 with a zone (e.g. 2025-04-24T11:34:19Z)"
    )


def _check_direction(value: str) -> str | None:
    return None if value in ("true", "false") else f"direction_outgoing must be 'true' or 'false', not {value!r}"


def _check_language(value: str) -> str | None:
    return None if _LANGUAGE.fullmatch(value) else f"language must be 'ru-RU' or 'ru-RU, kk-KZ', not {value!r}"


# The keys whose values have a form, each with the check of it.
_FORMS: dict[str, Callable[[str], str | None]] = {
    "date": check_date,
    "direction_outgoing": _check_direction,
    "language": _check_language,
}


def check_value(key: str, value: str) -> str | None:
    """Return why one metadata value is unacceptable for its key, or None."""
    size = len(value) if value.isascii() else len(value.encode("utf-8"))  # ASCII: a byte a character
    if size > MAX_VALUE_BYTES:
        return f"value of {key!r} is {size} bytes; the limit is {MAX_VALUE_BYTES}"
    form = _FORMS.get(key)
    return form(value) if form is not None else None


def check_fields(fields: Mapping[str, str], schema: ConnectionSchema) -> list[str]:
    """Every reason the service would reject these talk fields for this connection (empty: fine)."""
    problems = []
    missing = sorted(schema.keys - fields.keys()) if not schema.keys <= fields.keys() else None
    if missing:
        problems.append(f"missing required metadata keys for the {schema.type} connection: {', '.join(missing)}")
    if schema.strict:
        unknown = sorted(fields.keys() - schema.all_keys)
        if unknown:
            problems.append(f"keys the connection does not define: {', '.join(unknown)}")
    if len(fields) > MAX_KEYS:
        problems.append(f"{len(fields)} metadata keys; a connection has at most {MAX_KEYS}")
    if fields and max(map(len, fields.values())) <= _SURELY_SHORT:
        # The usual row: every value short enough that even 4 UTF-8 bytes a character keep it within
        # the limit, so only the keys with a form are looked at, and their usual values pass at once.
        for key, usual in _FORMED.items():
            value = fields.get(key)
            if value is not None and value not in usual and (problem := check_value(key, value)):
                problems.append(problem)
        return problems
    for key, value in fields.items():
        problem = check_value(key, value)
        if problem:
            problems.append(problem)
    return problems


# The keys whose values have a form (check_value's), each with usual values that have it.
_USUAL = {"direction_outgoing": frozenset({"true", "false"}), "language": frozenset({"ru-RU", "ru-RU, kk-KZ"})}
_FORMED: dict[str, frozenset[str]] = {key: _USUAL.get(key, frozenset()) for key in _FORMS}
_SURELY_SHORT = MAX_VALUE_BYTES // 4


def dialog_user_ids(fields: Mapping[str, str]) -> set[str]:
    """The ids a chat message's user_id may take: the dialog's operator, client and bot ids."""
    return {fields[k] for k in ("operator_id", "client_id", "bot_id") if fields.get(k)}


def find_schema(schemas: Iterable[ConnectionSchema], connection_id: str) -> ConnectionSchema | None:
    """The schema for a connection id, or the one schema without an id (a catch-all), or None."""
    fallback = None
    for schema in schemas:
        if schema.id == connection_id:
            return schema
        if schema.id is None and fallback is None:
            fallback = schema
    return fallback
