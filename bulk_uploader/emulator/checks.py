"""What the emulator checks in a TalkService request before it accepts the talk.

The real service's rules, shared with the uploader's preflight where they can be
(bulk_uploader.schema, bulk_uploader.audio): the connection and its metadata keys, the
talk's users, the declared audio format against the file's first bytes, and a chat's
messages. A failed check raises Rejected; the call guard (guard.py) answers it as a gRPC
status.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

import grpc

from bulk_uploader.audio import AudioError, AudioFormat, check_audio
from bulk_uploader.proto import speechsense_pb2 as pb
from bulk_uploader.schema import ConnectionSchema, check_fields, dialog_user_ids

_CONTAINER_FORMATS = {
    pb.ContainerAudio.CONTAINER_AUDIO_TYPE_WAV: AudioFormat.WAV,
    pb.ContainerAudio.CONTAINER_AUDIO_TYPE_OGG_OPUS: AudioFormat.OGG_OPUS,
    pb.ContainerAudio.CONTAINER_AUDIO_TYPE_MP3: AudioFormat.MP3,
}
_ROLES = {
    pb.USER_ROLE_OPERATOR: "operator",
    pb.USER_ROLE_CLIENT: "client",
    pb.USER_ROLE_BOT: "bot",
}


class Rejected(Exception):
    """A call the emulator refuses: aborted with this code and message."""

    def __init__(self, code: grpc.StatusCode, message: str, trailers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.code, self.message, self.trailers = code, message, trailers


def reject(code: grpc.StatusCode, message: str) -> NoReturn:
    """Refuse the call with this status code and message."""
    raise Rejected(code, message)


def talk_users(meta: pb.TalkMetadata) -> list[dict[str, Any]]:
    """The talk's users as the store keeps them; each needs an id and a role."""
    users = []
    for user in meta.users:
        if not user.id:
            reject(grpc.StatusCode.INVALID_ARGUMENT, "user metadata needs an id")
        if user.role not in _ROLES:
            reject(grpc.StatusCode.INVALID_ARGUMENT, f"user {user.id!r} has no role (operator, client or bot)")
        users.append({"id": user.id, "role": _ROLES[user.role], "fields": dict(user.fields)})
    return users


def check_connection(connections: Mapping[str, ConnectionSchema], meta: pb.TalkMetadata, kind: str) -> ConnectionSchema:
    """The talk's connection: known, of this kind (audio or chat), and its fields fit its schema."""
    schema = connections.get(meta.connection_id)
    if schema is None:
        reject(grpc.StatusCode.NOT_FOUND, f"connection {meta.connection_id!r} not found")
    if schema.type != kind:
        reject(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"connection {meta.connection_id!r} is a {schema.type} connection, not {kind}",
        )
    problems = check_fields(meta.fields, schema)
    if problems:
        reject(grpc.StatusCode.INVALID_ARGUMENT, "; ".join(problems))
    return schema


def audio_format(meta: pb.AudioMetadata, head: bytes) -> str:
    """The format the audio metadata declares, checked against the audio's first bytes."""
    kind = meta.WhichOneof("AudioFormat")
    if kind == "raw_audio":
        raw = meta.raw_audio
        if raw.audio_encoding != pb.RawAudio.AUDIO_ENCODING_LINEAR16_PCM:
            reject(grpc.StatusCode.INVALID_ARGUMENT, "raw audio must be LINEAR16_PCM")
        declared, rate, channels = AudioFormat.PCM, raw.sample_rate_hertz, raw.audio_channel_count
    elif kind == "container_audio":
        declared = _CONTAINER_FORMATS.get(meta.container_audio.container_audio_type)
        if declared is None:
            reject(grpc.StatusCode.INVALID_ARGUMENT, "container audio type is unspecified")
        rate = channels = None
    else:
        reject(grpc.StatusCode.INVALID_ARGUMENT, "audio metadata gives no format")
    try:
        return check_audio(head, declared, sample_rate=rate, channels=channels).format.value
    except AudioError as exc:
        reject(grpc.StatusCode.INVALID_ARGUMENT, str(exc))


def chat_messages(request: pb.UploadTextRequest) -> list[tuple[str, str, str]]:
    """A dialog's messages as (user_id, timestamp, text); each from one of its users, dated, with text."""
    messages = request.text_content.messages
    if not messages:
        reject(grpc.StatusCode.INVALID_ARGUMENT, "the dialog has no messages")
    allowed = dialog_user_ids(request.metadata.fields)
    canonical = []
    for n, msg in enumerate(messages, 1):
        if msg.user_id not in allowed:
            reject(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"message {n}: user_id {msg.user_id!r} is not the dialog's operator, client or bot id",
            )
        if not msg.HasField("timestamp"):
            reject(grpc.StatusCode.INVALID_ARGUMENT, f"message {n} has no timestamp")
        if not msg.HasField("text"):
            reject(grpc.StatusCode.INVALID_ARGUMENT, f"message {n} has no text")
        canonical.append((msg.user_id, msg.timestamp.ToJsonString(), msg.text.text))
    return canonical
