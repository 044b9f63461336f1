"""The data types the stages share, and the helpers that turn a record's columns into a row.

    ManifestRow  a manifest line as read (manifest)           -> Job     a checked row (validation)
    Job          filled in by the reader (bytes read ahead)    -> RowResult  its outcome (results file)
    TalkRecord   a stored talk as Get returns it (settling unknown outcomes, verify)

No stage module defines a type another stage fills in; they all live here (KeySet, the
compact set of row keys the ledger, the feeder and the checks share, in bulk_uploader.keyset).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from bulk_uploader.audio import AudioFormat
from bulk_uploader.records import FrozenRecord, Record, record

if TYPE_CHECKING:
    from bulk_uploader.chat import ChatMessage
    from bulk_uploader.transcode import Plan

# Columns user<N>.id, user<N>.role and user<N>.<field> describe participant N.
USER_COLUMN = re.compile(r"user(\d+)\.(.+)")
# Columns that describe the row itself rather than carry talk metadata (`messages` only
# through a mapping: a CSV cell cannot hold a list).
ROW_COLUMNS = frozenset(
    {"id", "audio_path", "connection_id", "format", "sample_rate", "channels", "talk_id", "chat_path", "messages",
     "swap_channels", "right_audio_path"}
)


ROLES = ("operator", "client", "bot")
JobKind = Literal["audio", "chat", "update"]


class RecordMapping(Protocol):
    """What a manifest reader needs of a mapping (bulk_uploader.mapping.ColumnMapping)."""

    def apply(self, record: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Manifest columns for one flat source record, and every problem found in it."""
        ...


@record(slots=True)
class ManifestRow(Record):
    """One manifest row: its 1-based line, its key, and its fields (or why it could not be read)."""

    line: int
    key: str
    data: dict[str, Any]
    problem: str | None = None  # why the row cannot be used
    code: str = "MALFORMED_ROW"  # the problem's kind, for the results file

    def __init__(self, line: int, key: str, data: dict[str, Any], problem: str | None = None,
                 code: str = "MALFORMED_ROW") -> None:  # made once a row (bulk_uploader.records)
        self.line = line
        self.key = key
        self.data = data
        self.problem = problem
        self.code = code


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
        if type(value) is str:  # the usual key: text, checked without the general test below
            if stripped := value.strip():
                return stripped
            continue
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


@record(slots=True)
class User(FrozenRecord):
    """One participant's metadata (TalkMetadata.users)."""

    id: str
    role: str  # operator | client | bot
    fields: dict[str, str] = field(default_factory=dict)

    def __init__(self, id: str, role: str, fields: dict[str, str] | None = None) -> None:  # once a row
        set_ = object.__setattr__  # frozen: its own __setattr__ refuses
        set_(self, "id", id)
        set_(self, "role", role)
        set_(self, "fields", {} if fields is None else fields)


@record(slots=True)
class Job(Record):
    """A checked row, ready to send. Filled in by the stages that follow validation (the
    dedupe pair, a small file's bytes) in place: copying it per row is measurable."""

    key: str
    line: int
    kind: JobKind
    connection_id: str
    fields: dict[str, str]
    users: tuple[User, ...] = ()
    audio_path: str | None = None  # as written in the manifest
    path: str | Path | None = None  # resolved against the manifest's folder (text from validation: no Path per row)
    size: int = 0
    mtime_ns: int = 0  # the file's modification time when the row was checked (0: not known)
    format: AudioFormat | None = None  # declared; None: sniffed from the bytes
    sample_rate: int | None = None
    channels: int | None = None
    talk_id: str | None = None  # set on metadata updates
    dedupe: tuple[str, str] | None = None  # (Search key, value) naming this row's talk, with --dedupe-key
    messages: tuple[ChatMessage, ...] = ()  # chat rows with inline messages
    chat_path: str | Path | None = None  # chat rows whose messages are in a file (read by the reader stage)
    data: bytes | None = field(default=None, repr=False)  # a small file's bytes, read ahead
    # How its audio is sent, or why it cannot be (RowInvalid, or a bug met), worked out ahead (a dry run's heads).
    plan: Plan | Exception | None = field(default=None, repr=False)
    share: int = 0  # the bytes of the memory budget this row holds (budget.share), from read-ahead to its outcome
    swap_channels: bool = False  # send the file's right channel as the left one and the left as the right
    right_audio_path: str | None = None  # the right channel's own mono file, as written in the manifest
    right_path: str | Path | None = None  # ... resolved against the manifest's folder

    def __init__(self, key: str, line: int, kind: JobKind, connection_id: str, fields: dict[str, str],
                 users: tuple[User, ...] = (), audio_path: str | None = None, path: str | Path | None = None,
                 size: int = 0, mtime_ns: int = 0, format: AudioFormat | None = None, sample_rate: int | None = None,
                 channels: int | None = None, talk_id: str | None = None, dedupe: tuple[str, str] | None = None,
                 messages: tuple[ChatMessage, ...] = (), chat_path: str | Path | None = None, data: bytes | None = None,
                 plan: Plan | Exception | None = None, share: int = 0, swap_channels: bool = False,
                 right_audio_path: str | None = None, right_path: str | Path | None = None) -> None:
        # Made once a row: written out here rather than by the generic one (bulk_uploader.records).
        self.key = key
        self.line = line
        self.kind = kind
        self.connection_id = connection_id
        self.fields = fields
        self.users = users
        self.audio_path = audio_path
        self.path = path
        self.size = size
        self.mtime_ns = mtime_ns
        self.format = format
        self.sample_rate = sample_rate
        self.channels = channels
        self.talk_id = talk_id
        self.dedupe = dedupe
        self.messages = messages
        self.chat_path = chat_path
        self.data = data
        self.plan = plan
        self.share = share
        self.swap_channels = swap_channels
        self.right_audio_path = right_audio_path
        self.right_path = right_path


Status = Literal["uploaded", "failed", "invalid", "ambiguous"]


@record(slots=True)
class RowResult(Record):
    """The outcome of one row, as written to the results file."""

    id: str
    status: Status
    talk_id: str | None = None
    error: str | None = None
    code: str | None = None  # gRPC status name, or a local kind such as FILE_NOT_FOUND
    attempts: int = 0
    bytes: int = 0
    seconds: float = 0.0
    audio_path: str | None = None
    line: int = 0  # the row's line in the manifest
    rpc: str | None = None
    unknown_outcomes: int = 0  # attempts (this run or before) that may have stored a talk
    reconciled: bool = False  # uploaded: found by Search after an unknown outcome, not re-sent
    source_format: str | None = None  # audio: what the file is (`G.711 mu-law WAV (8000 Hz, 1 ch, 0:01:00)`)
    sent_format: str | None = None  # audio: what was sent (`wav`, `pcm 8000 Hz 1 ch`), converted or not
    finished_at: str = ""  # stamped when the line is written

    def __init__(self, id: str, status: Status, talk_id: str | None = None, error: str | None = None,
                 code: str | None = None, attempts: int = 0, bytes: int = 0, seconds: float = 0.0,
                 audio_path: str | None = None, line: int = 0, rpc: str | None = None, unknown_outcomes: int = 0,
                 reconciled: bool = False, source_format: str | None = None, sent_format: str | None = None,
                 finished_at: str = "") -> None:  # made once a row (bulk_uploader.records)
        self.id = id
        self.status = status
        self.talk_id = talk_id
        self.error = error
        self.code = code
        self.attempts = attempts
        self.bytes = bytes
        self.seconds = seconds
        self.audio_path = audio_path
        self.line = line
        self.rpc = rpc
        self.unknown_outcomes = unknown_outcomes
        self.reconciled = reconciled
        self.source_format = source_format
        self.sent_format = sent_format
        self.finished_at = finished_at

    def to_line(self) -> bytes:
        """The JSON line for the results file (`id` and `status` first: load_results reads them fast)."""
        if not self.finished_at:
            self.finished_at = utc_now()
        try:
            text = _result_json(self)
        except (TypeError, ValueError):  # a value of another type than the fields declare: the general encoder says it
            data = {name: getattr(self, name) for name in _RESULT_FIELDS}
            data["seconds"] = round(self.seconds, 3)
            text = encode_json(data)
        return (text + "\n").encode("utf-8")


_RESULT_FIELDS = tuple(f.name for f in fields(RowResult))
encode_json = json.JSONEncoder(ensure_ascii=False).encode  # made once: json.dumps(ensure_ascii=False) builds one per call
_encode_text = json.encoder.encode_basestring  # what encode_json writes a str with


def _seconds(value: float) -> str:
    value = round(value, 3)
    if type(value) is int or (type(value) is float and abs(value) < float("inf")):
        return repr(value)
    raise TypeError(value)  # NaN, infinity, or not a number: as the general encoder writes it


def _result_json(r: RowResult) -> str:
    """encode_json of a result's fields (seconds rounded), built by hand from the types the fields
    declare, each value written in place (no call a field): one line per row, several times
    quicker than the general encoder. TypeError or ValueError for a value of any other type."""
    if not (type(r.attempts) is type(r.bytes) is type(r.line) is type(r.unknown_outcomes) is int
            and type(r.reconciled) is bool):
        raise TypeError("a whole number or flag of another type")
    t = _encode_text  # TypeError for anything but a str
    return (f'{{"id": {"null" if r.id is None else t(r.id)}, "status": {"null" if r.status is None else t(r.status)}, '
            f'"talk_id": {"null" if r.talk_id is None else t(r.talk_id)}, '
            f'"error": {"null" if r.error is None else t(r.error)}, "code": {"null" if r.code is None else t(r.code)}, '
            f'"attempts": {r.attempts:d}, "bytes": {r.bytes:d}, "seconds": {_seconds(r.seconds)}, '
            f'"audio_path": {"null" if r.audio_path is None else t(r.audio_path)}, "line": {r.line:d}, '
            f'"rpc": {"null" if r.rpc is None else t(r.rpc)}, "unknown_outcomes": {r.unknown_outcomes:d}, '
            f'"reconciled": {"true" if r.reconciled else "false"}, '
            f'"source_format": {"null" if r.source_format is None else t(r.source_format)}, '
            f'"sent_format": {"null" if r.sent_format is None else t(r.sent_format)}, '
            f'"finished_at": {"null" if r.finished_at is None else t(r.finished_at)}}}')


_second = [-1, ""]  # the last whole second utc_now() wrote, and its date and time of day


def utc_now() -> str:
    """Now, as datetime.now(timezone.utc).isoformat(timespec="milliseconds") writes it, the date and
    time of day made once a second rather than once a row."""
    now = time.time()
    second = int(now)
    if second != _second[0]:
        _second[:] = second, datetime.fromtimestamp(second, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{_second[1]}.{int((now - second) * 1000):03d}+00:00"


@record(slots=True)
class TalkRecord(FrozenRecord):
    """A talk as the service's Get returns it: what a row is compared with."""

    id: str
    connection_id: str
    fields: dict[str, str]  # the metadata fields given at upload
    processing_state: str  # NOT_STARTED, PROCESSING, SUCCESS, FAILED (or UNSPECIFIED)

    def __init__(self, id: str, connection_id: str, fields: dict[str, str], processing_state: str) -> None:
        set_ = object.__setattr__  # made once a talk read (bulk_uploader.records); frozen: its own refuses
        set_(self, "id", id)
        set_(self, "connection_id", connection_id)
        set_(self, "fields", fields)
        set_(self, "processing_state", processing_state)


def differing_fields(row: Mapping[str, str], talk: Mapping[str, str]) -> list[str]:
    """The row's metadata keys the talk lacks or holds another value for, compared as text.

    Keys the talk has beyond the row's are not counted: the service may add its own."""
    return sorted(key for key, value in row.items() if talk.get(key) != value)
