"""The fix for metadata an export wrote in its own way: the mapping file entries that send it.

Exports name their columns their own way and write dates and flags in their own form (Excel
in a Russian locale: `24.04.2025 11:34`, `да`). A row the service would refuse for its keys,
or for its `date`, `direction_outgoing` or `language`, gets after the reason what a mapping
file (--mapping, mapping.py) needs to send it: [rename], [defaults] or [row] drop for keys,
[values] for flags, and for a date a strptime format guessed from the value and checked by
converting the value with it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timezone

from bulk_uploader.mapping import DateRule
from bulk_uploader.schema import ConnectionSchema, check_value

# The date part of the forms exports write, with its strptime format; where day and month could
# be either way round, the day first (and the other order tried when the value rules it out).
_DAYS = (
    (r"\d{1,2}\.\d{1,2}\.\d{4}", "%d.%m.%Y", None),
    (r"\d{1,2}/\d{1,2}/\d{4}", "%d/%m/%Y", "%m/%d/%Y"),
    (r"\d{1,2}-\d{1,2}-\d{4}", "%d-%m-%Y", "%m-%d-%Y"),
    (r"\d{4}-\d{1,2}-\d{1,2}", "%Y-%m-%d", None),
    (r"\d{4}/\d{1,2}/\d{1,2}", "%Y/%m/%d", None),
    (r"\d{4}\.\d{1,2}\.\d{1,2}", "%Y.%m.%d", None),
)
_TIMES = (
    (r"", ""),
    (r"[ T]\d{1,2}:\d{2}", " %H:%M"),
    (r"[ T]\d{1,2}:\d{2}:\d{2}", " %H:%M:%S"),
    (r"[ T]\d{1,2}:\d{2}:\d{2}[.,]\d{1,6}", " %H:%M:%S.%f"),
    (r" \d{1,2}:\d{2} ?[AaPp][Mm]", " %I:%M %p"),
    (r" \d{1,2}:\d{2}:\d{2} ?[AaPp][Mm]", " %I:%M:%S %p"),
)
_UNIX = ((re.compile(r"\d{9,10}(\.\d+)?"), "unix"), (re.compile(r"\d{12,13}"), "unix_ms"))
_GUIDE = 'README.md, "From another vendor\'s export"'


def metadata_fix(fields: Mapping[str, str], connection: ConnectionSchema | None = None) -> str | None:
    """What a mapping file needs to make the fields acceptable: the keys `connection` requires
    and the row lacks, the keys it does not define, a date, direction or language in another
    form; None when it would need none of these."""
    fixes = _key_fixes(fields, connection) if connection is not None else []
    date = fields.get("date")
    if date is not None and check_value("date", date) is not None:
        fixes.append(_date_fix(date))
    for key in ("direction_outgoing", "language"):
        value = fields.get(key)
        if value is not None and check_value(key, value) is not None:
            fixes.append(f'[values.{key}] "{value}" = {_example(key, value)}')
    if not fixes:
        return None
    return f"a mapping file (--mapping; {_GUIDE}) can fix this: " + "; ".join(fixes)


def _key_fixes(fields: Mapping[str, str], connection: ConnectionSchema) -> list[str]:
    fixes = []
    missing = sorted(connection.keys - fields.keys())
    if "language" in missing:
        missing.remove("language")
        fixes.append('[defaults] language = "ru-RU" (the language of every row that gives none)')
    if missing:
        fixes.append(f'[rename] "<export column>" = "<key>" for each of {", ".join(missing)}')
    if connection.strict:
        foreign = sorted(fields.keys() - connection.all_keys)
        if foreign:
            listed = ", ".join(f'"{key}"' for key in foreign)
            fixes.append(f"[row] drop = [{listed}] (or, if the connection has them, add them to its keys in the "
                         "--connection-schema file)")
    return fixes


def _example(key: str, value: str) -> str:
    if key == "direction_outgoing":
        return "true (outgoing) or false"
    return '"ru-RU, kk-KZ"' if "kk" in value.lower() else '"ru-RU"'


def _date_fix(value: str) -> str:
    formats = guess_date_formats(value.strip())
    if not formats:
        return "[dates.date] format = the strptime format the dates are written in, and their timezone"
    shown = " or ".join(f'"{f}"' for f in formats)
    return f"[dates.date] format = {shown} and their timezone"


def guess_date_formats(value: str) -> list[str]:
    """The formats (strptime, or unix/unix_ms) a mapping's [dates.date] would read `value` with
    into a date the service takes: usually one, two where day and month could be either way round."""
    for pattern, special in _UNIX:
        if pattern.fullmatch(value):
            return [special] if _converts(special, value) else []
    found = []
    for day, first, swapped in _DAYS:
        for time, clock in _TIMES:
            if re.fullmatch(day + time, value):
                sep = "T" if "T" in value else " "
                clock = clock.replace(" ", sep, 1) if clock.startswith(" %H") else clock
                if "," in value:
                    clock = clock.replace(".%f", ",%f")
                found += [f + clock for f in (first, swapped) if f is not None and _converts(f + clock, value)]
    return found


def _converts(fmt: str, value: str) -> bool:
    """Whether a mapping's rule with this format turns `value` into a date the service takes."""
    try:
        converted = DateRule(fmt, timezone.utc, "zoned").convert(value)
    except ValueError:
        return False
    return check_value("date", converted) is None
