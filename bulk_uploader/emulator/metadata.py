"""The emulator's reading of the talk metadata rules (../shared/SPEECHSENSE.md, "Data rules").

Written from the documentation apart from the uploader's own checks (bulk_uploader.schema): a
judge that imported the uploader's rules would accept whatever the uploader got wrong. Where
the two readings differ, tests/test_emulator.py's agreement test names the value.

- A connection requires its keys (by default, two-channel audio: operator_name, operator_id,
  client_name, client_id, date, direction_outgoing, language; a chat also bot_name, bot_id),
  may define more (ticket_id links dialogs), and the talk's fields must match its keys.
- At most 200 keys; each value at most 1,024 bytes.
- `date`: `YYYY-MM-DDTHH:MM:SS.SSS` without a zone, or ISO 8601 with a zone (`...Z`, `...+03:00`).
- `direction_outgoing`: `true` or `false`. `language`: `ru-RU`, or `ru-RU, kk-KZ` (any case).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from bulk_uploader.schema import ConnectionSchema

AUDIO_KEYS = frozenset({"operator_name", "operator_id", "client_name", "client_id", "date", "direction_outgoing",
                        "language"})
CHAT_KEYS = AUDIO_KEYS | {"bot_name", "bot_id"}
LINK_KEY = "ticket_id"
MOST_KEYS = 200
MOST_VALUE_BYTES = 1024
LANGUAGES = ("ru-ru", "ru-ru, kk-kz")  # compared lower-cased


def default_connection(kind: str, connection_id: str | None = None) -> ConnectionSchema:
    """A connection with the documented keys of its kind (`audio` or `chat`), ticket_id optional."""
    keys = CHAT_KEYS if kind == "chat" else AUDIO_KEYS
    return ConnectionSchema(connection_id, "chat" if kind == "chat" else "audio", keys, frozenset({LINK_KEY}))


def field_problems(fields: Mapping[str, str], connection: ConnectionSchema) -> list[str]:
    """Why the service would refuse these talk fields for this connection (empty: it would not)."""
    problems = []
    absent = connection.keys - set(fields)
    if absent:
        problems.append(f"missing required metadata keys for the {connection.type} connection: "
                        f"{', '.join(sorted(absent))}")
    if connection.strict:
        foreign = set(fields) - connection.keys - connection.optional_keys
        if foreign:
            problems.append(f"keys the connection does not define: {', '.join(sorted(foreign))}")
    if len(fields) > MOST_KEYS:
        problems.append(f"{len(fields)} metadata keys; a connection has at most {MOST_KEYS}")
    for key, value in fields.items():
        size = len(value.encode("utf-8"))
        if size > MOST_VALUE_BYTES:
            problems.append(f"value of {key!r} is {size} bytes; the limit is {MOST_VALUE_BYTES}")
        elif key == "date" and not is_documented_date(value):
            problems.append(f"date {value!r} is not YYYY-MM-DDTHH:MM:SS.SSS nor ISO 8601 with a zone")
        elif key == "direction_outgoing" and value not in ("true", "false"):
            problems.append(f"direction_outgoing must be 'true' or 'false', not {value!r}")
        elif key == "language" and value.lower() not in LANGUAGES:
            problems.append(f"language must be 'ru-RU' or 'ru-RU, kk-KZ', not {value!r}")
    return problems


def is_documented_date(value: str) -> bool:
    """One of the two documented forms: the upload guide's (no zone, milliseconds) or ISO 8601's
    extended form with seconds and a zone (Z or +-HH:MM), a fraction of a second optional."""
    body, zone = value, ""
    if value.endswith("Z"):
        body, zone = value[:-1], "Z"
    elif len(value) > 6 and value[-6] in "+-" and value[-3] == ":":
        body, zone = value[:-6], value[-6:]
        hours, minutes = zone[1:3], zone[4:6]
        if not (_digits(hours) and _digits(minutes) and int(hours) <= 23 and int(minutes) <= 59):
            return False
    whole, dot, fraction = body.partition(".")
    if len(whole) != 19 or not _digits(whole[:4] + whole[5:7] + whole[8:10] + whole[11:13] + whole[14:16] + whole[17:]):
        return False
    try:
        datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return False
    if not zone:
        return bool(dot) and len(fraction) == 3 and _digits(fraction)
    return not dot or (1 <= len(fraction) <= 9 and _digits(fraction))


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def dialog_user_ids(fields: Mapping[str, str]) -> set[str]:
    """Who may write in a chat: the dialog's operator_id, client_id and bot_id."""
    return {fields[key] for key in ("operator_id", "client_id", "bot_id") if fields.get(key)}
