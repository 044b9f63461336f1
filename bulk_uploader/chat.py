"""Chat dialogs: messages in the vendor's form, checked as the service checks them.

`{"messages": [{"user_id": ..., "text": ..., "timestamp": ...}]}`: every user_id must be
the dialog's operator_id, client_id or bot_id, and every timestamp must name its zone.
Exports from other systems often carry local times without one: an assumed zone
(--assume-timezone) can be applied to those.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

from bulk_uploader.records import FrozenRecord, record

_OFFSET = re.compile(r"(?:UTC|GMT)?([+-])(\d{1,2})(?::?(\d{2}))?")
# Protobuf overhead per message: tags, lengths and the Timestamp, rounded up.
_MESSAGE_OVERHEAD = 32


class ChatError(ValueError):
    """Raised when chat messages are not what the service takes; the message says which and why."""


@record(slots=True)
class ChatMessage(FrozenRecord):
    """One message of a dialog, with an aware timestamp."""

    user_id: str
    timestamp: datetime
    text: str

    def __init__(self, user_id: str, timestamp: datetime, text: str) -> None:
        set_ = object.__setattr__  # made once a message (bulk_uploader.records); frozen: its own refuses
        set_(self, "user_id", user_id)
        set_(self, "timestamp", timestamp)
        set_(self, "text", text)


def parse_timezone(text: str) -> tzinfo:
    """An IANA zone name (Europe/Moscow) or a fixed offset (+03:00, -0530, UTC+3); ValueError otherwise."""
    value = text.strip()
    if value.upper() in ("UTC", "Z", "GMT"):
        return timezone.utc
    match = _OFFSET.fullmatch(value)
    if match:
        sign, hours, minutes = match.groups()
        delta = timedelta(hours=int(hours), minutes=int(minutes or 0))
        if delta > timedelta(hours=14):
            raise ValueError(f"offset {text!r} is out of range")
        return timezone(-delta if sign == "-" else delta)
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # only a named zone needs it (it reads sysconfig)

    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {text!r}: use an IANA name such as Europe/Moscow or an offset such as +03:00") from None


def _timestamp(value: Any, n: int, assume: tzinfo | None) -> datetime:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, timezone.utc)  # epoch seconds are unambiguous
        except (OverflowError, OSError, ValueError):
            raise ChatError(f"message {n} has timestamp {value!r}, which is no time in seconds since 1970 "
                            "(years 1-9999); give seconds since 1970, or ISO 8601 with a zone") from None
    if not isinstance(value, str) or not value.strip():
        raise ChatError(f"message {n} has no timestamp")
    try:
        stamp = datetime.fromisoformat(value.strip().replace(" ", "T", 1))
    except ValueError:
        raise ChatError(f"message {n}: timestamp {value!r} is not ISO 8601") from None
    if stamp.tzinfo is None:
        if assume is None:
            raise ChatError(
                f"message {n}: timestamp {value!r} has no time zone; "
                "pass --assume-timezone ZONE (e.g. Europe/Moscow or +03:00) to apply one"
            )
        stamp = stamp.replace(tzinfo=assume)
    return stamp.astimezone(timezone.utc)


def parse_messages(raw: Any, allowed_ids: set[str], assume: tzinfo | None) -> tuple[ChatMessage, ...]:
    """Check and convert a list of message objects; raise ChatError naming the first bad one."""
    if not isinstance(raw, list):
        raise ChatError("messages must be a list of {user_id, text, timestamp}")
    if not raw:
        raise ChatError("the dialog has no messages")
    messages = []
    for n, item in enumerate(raw, 1):
        if not isinstance(item, dict):
            raise ChatError(f"message {n} is not an object")
        user_id = str(item.get("user_id") or "").strip()
        if user_id not in allowed_ids:
            ids = ", ".join(sorted(allowed_ids)) or "none given"
            raise ChatError(
                f"message {n}: user_id {user_id or '(empty)'!r} is not the dialog's operator_id, client_id "
                f"or bot_id ({ids})"
            )
        text = item.get("text")
        if not isinstance(text, str) or not text:
            raise ChatError(f"message {n} has no text")
        messages.append(ChatMessage(user_id, _timestamp(item.get("timestamp"), n, assume), text))
    return tuple(messages)


def messages_from_document(data: bytes, where: str) -> Any:
    """The `messages` list of a chat file in the vendor's form {"messages": [...]}."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ChatError(f"{where} is not valid JSON: {exc}") from None
    if not isinstance(document, dict) or "messages" not in document:
        raise ChatError(f'{where} must be an object {{"messages": [...]}}')
    return document["messages"]


def encoded_size(messages: Iterable[ChatMessage]) -> int:
    """About how many bytes the messages take in an UploadText request."""
    return sum(len(m.user_id.encode()) + len(m.text.encode()) + _MESSAGE_OVERHEAD for m in messages)
