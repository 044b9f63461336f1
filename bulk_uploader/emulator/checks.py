"""What the emulator checks in a TalkService request before it accepts the talk.

The real service's rules: the connection and its metadata (metadata.py), the talk's users,
a chat's messages, and the audio, each judged apart from the uploader's own checks: the
metadata rules are the emulator's own reading of the documentation (bulk_uploader.schema
only carries which keys a connection has), and for the audio (bulk_uploader.audio and probe
are not used here) FFmpeg opens it as the declared format and decodes it, and the documented
rules are applied to what the decoder found. A failed check raises Rejected;
the call guard (guard.py) answers it as a gRPC status.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any, NoReturn

import grpc

from bulk_uploader import media
from bulk_uploader.emulator.metadata import dialog_user_ids, field_problems
from bulk_uploader.proto import speechsense_pb2 as pb
from bulk_uploader.schema import ConnectionSchema

# Declared container -> (its name, FFmpeg's demuxer, the codec it must carry), from the documentation:
# WAV with LPCM (16-bit), MP3, OGG Opus.
_CONTAINERS = {
    pb.ContainerAudio.CONTAINER_AUDIO_TYPE_WAV: ("wav", "wav", "pcm_s16le"),
    pb.ContainerAudio.CONTAINER_AUDIO_TYPE_OGG_OPUS: ("ogg_opus", "ogg", "opus"),
    pb.ContainerAudio.CONTAINER_AUDIO_TYPE_MP3: ("mp3", "mp3", "mp3"),
}
MIN_RATE, MAX_RATE, MAX_CHANNELS, MAX_SECONDS = 8_000, 48_000, 2, 4 * 3600
# Containers FFmpeg recognises by their signature: raw PCM that is one of these is a mistake.
_SIGNED_CONTAINERS = {"wav", "flac", "ogg", "mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "amr", "aiff", "au", "caf",
                      "w64"}
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
    problems = field_problems(meta.fields, schema)
    if problems:
        reject(grpc.StatusCode.INVALID_ARGUMENT, "; ".join(problems))
    return schema


def _bad(message: str) -> NoReturn:
    reject(grpc.StatusCode.INVALID_ARGUMENT, message)


def _raw(raw: pb.RawAudio, audio: IO[bytes], size: int, decode_seconds: float) -> media.Measured:
    if raw.audio_encoding != pb.RawAudio.AUDIO_ENCODING_LINEAR16_PCM:
        _bad("raw audio must be LINEAR16_PCM")
    rate, channels = raw.sample_rate_hertz, raw.audio_channel_count
    if not MIN_RATE <= rate <= MAX_RATE:
        _bad(f"raw audio sample rate {rate} Hz is outside {MIN_RATE}..{MAX_RATE} Hz")
    if not 1 <= channels <= MAX_CHANNELS:
        _bad(f"raw audio needs 1 or 2 channels, not {channels}")
    if size % (2 * channels):
        _bad(f"raw audio of {size} bytes is not whole 16-bit samples for {channels} channel(s)")
    try:
        found = media.measure(audio, decode_seconds=0)
    except media.MediaError:
        found = None
    if found is not None and found.container in _SIGNED_CONTAINERS:
        _bad(f"declared raw PCM, but the decoder reads the audio as {found.container} ({found.codec})")
    audio.seek(0)
    layout = "mono" if channels == 1 else "stereo"
    return media.measure(audio, fmt="s16le", options={"sample_rate": str(rate), "ch_layout": layout},
                         decode_seconds=decode_seconds)


def _container(declared: int, audio: IO[bytes], decode_seconds: float) -> tuple[str, media.Measured]:
    if declared not in _CONTAINERS:
        _bad("container audio type is unspecified")
    name, demuxer, codec = _CONTAINERS[declared]
    try:
        found = media.measure(audio, fmt=demuxer, decode_seconds=decode_seconds)
    except media.MediaError as exc:
        _bad(f"declared {name}, but the decoder cannot read the audio as {demuxer}: {exc}")
    if found.codec != codec:
        _bad(f"declared {name}, but the audio inside is {found.codec}; {name} must carry {codec}")
    if name == "wav" and not MIN_RATE <= found.sample_rate <= MAX_RATE:
        _bad(f"WAV sample rate {found.sample_rate} Hz is outside {MIN_RATE}..{MAX_RATE} Hz")
    promised = found.header_duration
    if name == "wav" and promised is not None and found.duration < promised * 0.99:
        _bad(f"the WAV ends after {found.duration:.2f} s but its header promises {promised:.2f} s")
    return name, found


def audio_format(meta: pb.AudioMetadata, audio: IO[bytes], size: int,
                 decode_seconds: float = 60.0) -> tuple[str, media.Measured]:
    """The format the audio metadata declares, and what the decoder found reading the audio as that format."""
    if size == 0:
        _bad("audio is empty")
    kind = meta.WhichOneof("AudioFormat")
    try:
        if kind == "raw_audio":
            name, found = "pcm", _raw(meta.raw_audio, audio, size, decode_seconds)
        elif kind == "container_audio":
            name, found = _container(meta.container_audio.container_audio_type, audio, decode_seconds)
        else:
            _bad("audio metadata gives no format")
    except media.MediaError as exc:
        _bad(f"the audio does not decode: {exc}")
    if found.channels > MAX_CHANNELS:
        _bad(f"audio has {found.channels} channels; at most {MAX_CHANNELS} are taken")
    if found.duration > MAX_SECONDS:
        _bad(f"audio is {found.duration / 3600:.2f} hours long; at most 4 hours are taken")
    return name, found


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
