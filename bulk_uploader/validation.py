"""Stage 2: check a manifest row against what the service accepts and turn it into a Job.

Everything that can be known without reading the audio is checked here: the connection,
the metadata keys and values (bulk_uploader.schema; the emulator reads the rules on its own),
users, the declared format, and that the file exists and is not empty. The audio bytes
themselves are checked by the reader stage (bulk_uploader.reader.read_head).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from datetime import tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from bulk_uploader.audio import AudioError, AudioFormat, check_pcm_params
from bulk_uploader.errors import RowInvalid
from bulk_uploader.keyset import KeySet
from bulk_uploader.model import ROLES, Job, ManifestRow, User, as_text
from bulk_uploader.schema import ConnectionSchema, check_fields, dialog_user_ids, find_schema

if TYPE_CHECKING:
    from bulk_uploader.chat import ChatMessage


def _string_map(value: Any, what: str) -> dict[str, str]:
    if type(value) is dict:
        for item in value.values():  # a loop, not all(...): no generator per row
            if type(item) is not str:
                break
        else:
            return dict(value)  # the usual row, its values text already (and JSON's keys always are)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RowInvalid(f"{what} must be an object of key: value")
    out = {}
    for key, item in value.items():
        if item is None:
            continue
        if isinstance(item, bool):
            item = "true" if item else "false"
        elif isinstance(item, (int, float)):
            item = str(item)
        elif not isinstance(item, str):
            raise RowInvalid(f"{what}: value of {key!r} must be a string, number or boolean")
        out[str(key)] = item
    return out


def talk_fields(data: dict[str, Any]) -> dict[str, str]:
    """The metadata fields a manifest row's talk is sent with (RowInvalid when they cannot be read)."""
    return _string_map(data.get("metadata"), "metadata")


def _int(value: Any, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise RowInvalid(f"{name} must be a whole number, not {value!r}") from None


def _flag(value: Any, name: str, default: bool) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise RowInvalid(f"{name} must be true or false, not {value!r}")


def _users(value: Any) -> tuple[User, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise RowInvalid("users must be a list of {id, role, fields}")
    users = []
    for n, item in enumerate(value, 1):
        if not isinstance(item, dict) or not str(item.get("id") or "").strip():
            raise RowInvalid(f"users[{n}] needs an id")
        role = str(item.get("role") or "").lower()
        if role not in ROLES:
            raise RowInvalid(f"users[{n}] role must be one of {', '.join(ROLES)}, not {item.get('role')!r}")
        users.append(User(str(item["id"]), role, _string_map(item.get("fields"), f"users[{n}].fields")))
    return tuple(users)


def _is_chat(data: dict[str, Any]) -> bool:
    return "messages" in data or bool(data.get("chat_path"))


def _folder_prefix(folder: Path) -> str:
    """What a plain relative path is joined to, as text: str(folder / name) == prefix + name."""
    text = str(folder)
    return "" if text == "." else text if text.endswith("/") else text + "/"


def _windows_path_hint(path: str, shown: str) -> str:
    """For a path written with Windows' folder separator, where '/' is the separator: the fix."""
    if "\\" not in shown or os.sep == "\\":
        return ""
    slashed = shown.replace("\\", "/")
    there = "exists" if os.path.isfile(path.replace("\\", "/")) else "does not exist either"
    return (f" (its folders are separated by '\\', as on Windows; here the separator is '/', and "
            f"{slashed} {there}: write the paths with '/')")


def _file_size(path: str, shown: str) -> tuple[int, int, RowInvalid | None]:
    """The size and modification time (ns) of a non-empty regular file, or why it cannot be sent."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return 0, 0, RowInvalid(f"audio file not found: {shown}{_windows_path_hint(path, shown)}", "FILE_NOT_FOUND")
    except OSError as exc:
        return 0, 0, RowInvalid(f"cannot read {shown}: {exc.strerror}", "FILE_UNREADABLE")
    if not stat.S_ISREG(st.st_mode):
        return 0, 0, RowInvalid(f"{shown} is not a file", "FILE_UNREADABLE")
    if st.st_size == 0:
        return 0, 0, RowInvalid(f"audio file is empty: {shown}", "EMPTY_FILE")
    return st.st_size, st.st_mtime_ns, None


class Validator:
    """Checks rows for one run; holds what every row shares (folder, default connection, schemas)."""

    def __init__(
        self,
        manifest_dir: Path,
        connection_id: str | None,
        schemas: Sequence[ConnectionSchema],
        *,
        dedupe_key: str | None = None,
        search_prefix: str = "userMeta.",
        chat_connection_id: str | None = None,
        assume_timezone: tzinfo | None = None,
        max_chat_bytes: int = 4 * 1024 * 1024,
        swap_channels: bool = False,
    ) -> None:
        self.swap_channels = swap_channels  # rows without their own swap_channels take this
        self.manifest_dir = manifest_dir
        self._prefix = _folder_prefix(manifest_dir)
        self.connection_id = connection_id
        self.chat_connection_id = chat_connection_id
        self.assume_timezone = assume_timezone
        self.max_chat_bytes = max_chat_bytes
        self.schemas = schemas
        self.dedupe_key = dedupe_key
        self.search_prefix = search_prefix  # how Search names a talk metadata key
        self._dedupe_values = KeySet()
        self._schemas: dict[tuple[str, str], ConnectionSchema] = {}  # by (connection, kind): looked up once

    def _connection_of(self, data: dict[str, Any], is_chat: bool) -> str:
        default = (self.chat_connection_id or self.connection_id) if is_chat else self.connection_id
        return str(data.get("connection_id") or default or "").strip()

    def _resolve(self, written: str) -> str:
        """A file named in the manifest, resolved against the manifest's folder: the text Path would give.

        A plain relative path (no empty or `.` part, not absolute: nearly every row's) is joined
        as text, without the parsing Path costs each row; the others go through Path."""
        framed = "/" + written + "/"
        if "//" in framed or "/./" in framed:
            return str(self.manifest_dir / written)
        return self._prefix + written

    def claim(self, row: ManifestRow) -> None:
        """Count the dedupe value of a row this run does not send (uploaded before, another shard's):
        values are unique over the whole manifest, so a later row sharing it is invalid here too."""
        if self.dedupe_key is None or row.problem is not None:
            return
        data = row.data
        metadata = data.get("metadata")
        value = metadata.get(self.dedupe_key) if isinstance(metadata, dict) else None
        if value not in (None, ""):
            self._dedupe_values.add(f"{self._connection_of(data, _is_chat(data))}\x00{as_text(value)}")

    def dedupe(self, job: Job) -> Job:
        """Attach the (Search key, value) that identifies the row's talk; RowInvalid if it has none or shares it.

        The key is the talk metadata's (the connection's keys), searched as prefix + key
        (`userMeta.<key>` by default). Participants' fields are not searchable in any
        documented way, so a value there does not count."""
        key = self.dedupe_key
        if key is None:
            return job
        if not job.fields.get(key):
            where = " (participants' fields are not searchable)" if any(u.fields.get(key) for u in job.users) else ""
            raise RowInvalid(f"--dedupe-key {key}: the row has no {key!r} in its metadata{where}", "NO_DEDUPE_KEY")
        found = (self.search_prefix + key, job.fields[key])
        if not self._dedupe_values.add(f"{job.connection_id}\x00{found[1]}"):
            raise RowInvalid(
                f"--dedupe-key {key}: value {found[1]!r} is shared with an earlier row, so it cannot tell them apart",
                "DUPLICATE_DEDUPE_KEY",
            )
        job.dedupe = found
        return job

    def schema_for(self, connection_id: str, kind: Literal["audio", "chat"]) -> ConnectionSchema:
        """The user's schema for the connection, or the documented keys (extra keys allowed)."""
        found = self._schemas.get((connection_id, kind))
        if found is None:
            found = find_schema(self.schemas, connection_id) or ConnectionSchema.default(kind, strict=False)
            self._schemas[(connection_id, kind)] = found
        return found

    def check(self, row: ManifestRow) -> Job:
        """A Job for the row, or RowInvalid with every reason found."""
        job = self._check(row)
        return job if self.dedupe_key is None or job.kind == "update" else self.dedupe(job)

    def _check(self, row: ManifestRow) -> Job:
        if row.problem:
            raise RowInvalid(row.problem, row.code)
        data = row.data
        is_chat = _is_chat(data)
        if is_chat and data.get("audio_path"):
            raise RowInvalid("a row is audio (audio_path) or chat (messages, chat_path), not both")
        connection_id = self._connection_of(data, is_chat)
        if not connection_id:
            option = "--chat-connection-id" if is_chat else "--connection-id"
            raise RowInvalid(f"no connection id: pass {option} or give the row a connection_id", "NO_CONNECTION")
        fields = _string_map(data.get("metadata"), "metadata")
        users = _users(data["users"]) if "users" in data else ()  # (a call a row saved where there are none)
        talk_id = str(data.get("talk_id") or "").strip() or None
        if talk_id and not data.get("audio_path") and not is_chat:
            return self._update(row, connection_id, fields, users, talk_id)
        if talk_id:
            raise RowInvalid("a row with talk_id updates metadata and must carry no audio or messages")
        if is_chat:
            return self._chat(row, connection_id, fields, users)
        return self._audio(row, connection_id, fields, users)

    def _chat(self, row: ManifestRow, connection_id: str, fields: dict[str, str], users: tuple[User, ...]) -> Job:
        data = row.data
        self._metadata_problems(connection_id, fields, "chat")
        if data.get("chat_path"):
            path = self._resolve(str(data["chat_path"]))
            _, _, problem = _file_size(path, str(data["chat_path"]))
            if problem is not None:
                raise RowInvalid(str(problem).replace("audio file", "chat file"), problem.code)
            return Job(row.key, row.line, "chat", connection_id, fields, users, chat_path=path,
                       audio_path=str(data["chat_path"]))
        messages = self.chat_messages(data.get("messages"), fields)
        return Job(row.key, row.line, "chat", connection_id, fields, users, messages=messages)

    def chat_messages(self, raw: Any, fields: dict[str, str]) -> tuple[ChatMessage, ...]:
        """Checked messages of a dialog with these fields; RowInvalid when they are not acceptable."""
        from bulk_uploader.chat import ChatError, encoded_size, parse_messages  # only chat rows have messages

        try:
            messages = parse_messages(raw, dialog_user_ids(fields), self.assume_timezone)
        except ChatError as exc:
            raise RowInvalid(str(exc), "BAD_CHAT") from None
        size = encoded_size(messages)
        if size > self.max_chat_bytes:
            raise RowInvalid(
                f"the dialog's {len(messages)} messages take {size / 2**20:.1f} MiB, over the "
                f"{self.max_chat_bytes / 2**20:.0f} MiB a single UploadText may carry; split the dialog",
                "CHAT_TOO_LARGE",
            )
        return messages

    def _metadata_problems(self, connection_id: str, fields: dict[str, str], kind: Literal["audio", "chat"],
                           also: RowInvalid | None = None) -> None:
        """Raise RowInvalid naming every metadata problem, after `also` (a file problem) if given."""
        schema = self.schema_for(connection_id, kind)
        problems = check_fields(fields, schema)
        if problems:
            from bulk_uploader.mapping_hints import metadata_fix  # only rows with a problem need it

            fix = metadata_fix(fields, schema)
            if fix is not None:
                problems.append(fix)
        if also is not None:
            raise RowInvalid("; ".join([str(also), *problems]), also.code)
        if problems:
            raise RowInvalid("; ".join(problems), "INVALID_METADATA")

    def _update(self, row: ManifestRow, connection_id: str, fields: dict[str, str], users: tuple[User, ...], talk_id: str) -> Job:
        self._metadata_problems(connection_id, fields, "audio")
        return Job(row.key, row.line, "update", connection_id, fields, users, talk_id=talk_id)

    def _audio(self, row: ManifestRow, connection_id: str, fields: dict[str, str], users: tuple[User, ...]) -> Job:
        data = row.data
        audio_path = data.get("audio_path")
        if not isinstance(audio_path, str) or not audio_path.strip():
            raise RowInvalid("audio_path is missing", "NO_AUDIO_PATH")
        declared = None
        if data.get("format"):
            try:
                declared = AudioFormat.parse(str(data["format"]))
            except ValueError as exc:
                raise RowInvalid(str(exc), "BAD_FORMAT") from None
        rate = _int(data["sample_rate"], "sample_rate") if "sample_rate" in data else None
        channels = _int(data["channels"], "channels") if "channels" in data else None
        if declared is AudioFormat.PCM:
            try:
                check_pcm_params(rate, channels)
            except AudioError as exc:
                raise RowInvalid(str(exc), "BAD_FORMAT") from None
        path = self._resolve(audio_path)
        size, mtime_ns, problem = _file_size(path, audio_path)
        right = data.get("right_audio_path")
        right_path = None
        if problem is None and right:
            right_path = self._resolve(str(right))
            problem = _file_size(right_path, str(right))[2]
        self._metadata_problems(connection_id, fields, "audio", also=problem)
        # In Job's order, without keywords (matching a keyword to a field costs more than making the Job).
        job = Job(row.key, row.line, "audio", connection_id, fields, users, audio_path, path, size, mtime_ns, declared,
                  rate, channels)
        job.swap_channels = (_flag(data["swap_channels"], "swap_channels", self.swap_channels)
                             if "swap_channels" in data else self.swap_channels)
        if right:
            job.right_audio_path, job.right_path = str(right), right_path
        return job
