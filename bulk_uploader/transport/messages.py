"""The request messages built from Jobs: talk and audio metadata, stream messages, the Idempotency-Key.

Requests that carry audio are built here in wire form, as bytes, rather than as protobuf
messages: setting a file's bytes on a message copies them, and serializing the message
copies them again, so a file sent whole was held three times before gRPC's own copy.
Here the request is the protobuf encoding of everything but the audio, then the audio's
tag and length, then the audio, byte for byte what SerializeToString(deterministic=True)
gives (protobuf writes fields in number order, the audio is the last field written, and
map keys are sorted). The reader reads
a file straight into a request's bytes after room left for that prefix (upload_room,
chunk_prefix; bulk_uploader.allocator.new_bytes): one buffer per request.
"""

from __future__ import annotations

import functools
import hashlib
import uuid
from collections.abc import AsyncIterator, MutableMapping

from bulk_uploader.allocator import writable
from bulk_uploader.audio import AudioFormat, AudioInfo
from bulk_uploader.model import Job
from bulk_uploader.proto import speechsense_pb2 as pb

IDEMPOTENCY_HEADER = "idempotency-key"
_IDEMPOTENCY_NAMESPACE = uuid.UUID("6f3c1a52-43c8-4f0e-9d59-3f0b8d7f2a11").bytes

_CONTAINER = {
    AudioFormat.WAV: pb.ContainerAudio.CONTAINER_AUDIO_TYPE_WAV,
    AudioFormat.MP3: pb.ContainerAudio.CONTAINER_AUDIO_TYPE_MP3,
    AudioFormat.OGG_OPUS: pb.ContainerAudio.CONTAINER_AUDIO_TYPE_OGG_OPUS,
}
_ROLE = {"operator": pb.USER_ROLE_OPERATOR, "client": pb.USER_ROLE_CLIENT, "bot": pb.USER_ROLE_BOT}


def idempotency_key(connection_id: str, row_key: str) -> str:
    """A stable Idempotency-Key for a row: the same on every attempt and every run.

    It is uuid5(namespace, connection + row key), formatted here directly: building UUID
    objects is a measurable share of the per-row cost with small files.
    """
    digest = bytearray(hashlib.sha1(_IDEMPOTENCY_NAMESPACE + f"{connection_id}\x00{row_key}".encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def talk_metadata(job: Job) -> pb.TalkMetadata:
    """TalkMetadata for a job: connection, fields and users."""
    metadata = pb.TalkMetadata(connection_id=job.connection_id)
    _fill(metadata.fields, job.fields)
    for u in job.users:
        _fill(metadata.users.add(id=u.id, role=_ROLE[u.role]).fields, u.fields)
    return metadata


def _fill(target: MutableMapping[str, str], fields: dict[str, str]) -> None:
    """A message's map field set key by key: given to the constructor, a dict goes through
    MutableMapping.update, written in Python (the usual row's fields: half the cost of the message)."""
    for key, value in fields.items():
        target[key] = value


def audio_metadata(info: AudioInfo) -> pb.AudioMetadata:
    """AudioMetadata for a checked file: its container, or raw LPCM with rate and channels."""
    if info.format is AudioFormat.PCM:
        return pb.AudioMetadata(
            raw_audio=pb.RawAudio(
                audio_encoding=pb.RawAudio.AUDIO_ENCODING_LINEAR16_PCM,
                sample_rate_hertz=info.sample_rate or 0,
                audio_channel_count=info.channels or 0,
            )
        )
    return pb.AudioMetadata(container_audio=pb.ContainerAudio(container_audio_type=_CONTAINER[info.format]))


def _number(message: type, field: str) -> int:
    return int(message.DESCRIPTOR.fields_by_name[field].number)  # type: ignore[attr-defined]


# Field numbers of the messages on the path to the audio bytes, from the descriptors.
_UPLOAD_METADATA = _number(pb.UploadTalkRequest, "metadata")
_UPLOAD_AUDIO = _number(pb.UploadTalkRequest, "audio")
_AUDIO_METADATA = _number(pb.AudioRequest, "audio_metadata")
_AUDIO_DATA = _number(pb.AudioRequest, "audio_data")
_STREAM_AUDIO = _number(pb.StreamTalkRequest, "audio")
_STREAM_CHUNK = _number(pb.AudioStreamingRequest, "chunk")
_CHUNK_DATA = _number(pb.AudioChunk, "data")
assert _number(pb.UploadTalkRequest, "talk_id") > _UPLOAD_AUDIO  # written after the audio, and empty here


def _varint(value: int) -> bytes:
    if value < 0x80:
        return _SMALL[value]
    if value < 0x4000:  # the lengths of metadata, and of small files: two or three bytes, without the loop
        return bytes((value & 0x7F | 0x80, value >> 7))
    if value < 0x200000:
        return bytes((value & 0x7F | 0x80, value >> 7 & 0x7F | 0x80, value >> 14))
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL = [bytes((n,)) for n in range(0x80)]  # a varint under 128 is the byte itself: most tags and lengths here


def _tag(number: int) -> bytes:
    """The tag of length-delimited field `number` (its length follows)."""
    return _varint(number << 3 | 2)


_T_UPLOAD_METADATA, _T_UPLOAD_AUDIO, _T_AUDIO_DATA, _T_STREAM_AUDIO, _T_STREAM_CHUNK, _T_CHUNK_DATA = map(
    _tag, (_UPLOAD_METADATA, _UPLOAD_AUDIO, _AUDIO_DATA, _STREAM_AUDIO, _STREAM_CHUNK, _CHUNK_DATA))


@functools.lru_cache(maxsize=64)
def _audio_metadata_field(audio_format: AudioFormat, sample_rate: int | None, channels: int | None) -> bytes:
    """AudioRequest's audio_metadata field (tag, length, audio_metadata() in wire form); a run sends
    few formats, each of them row after row."""
    data = audio_metadata(AudioInfo(audio_format, sample_rate, channels)).SerializeToString()
    return _tag(_AUDIO_METADATA) + _varint(len(data)) + data


def _chunk_prefix(size: int) -> bytes:
    """An AudioChunk's bytes up to its data ("" when there is no data: proto3 omits an empty field)."""
    return _T_CHUNK_DATA + _varint(size) if size else b""


def upload_prefix(job: Job, info: AudioInfo, size: int) -> bytes:
    """The UploadTalkRequest sending `size` bytes of audio, in wire form, up to the audio itself."""
    metadata = talk_metadata(job).SerializeToString(deterministic=True)  # map keys sorted: the same bytes every time
    audio_meta = _audio_metadata_field(info.format, info.sample_rate, info.channels)
    chunk = _chunk_prefix(size)
    chunk_length = len(chunk) + size
    data = _T_AUDIO_DATA + _varint(chunk_length)
    audio_length = len(audio_meta) + len(data) + chunk_length
    return b"".join((_T_UPLOAD_METADATA, _varint(len(metadata)), metadata, _T_UPLOAD_AUDIO, _varint(audio_length),
                     audio_meta, data, chunk))


def upload_request(job: Job, info: AudioInfo, data: bytes | memoryview) -> bytes:
    """The UploadTalkRequest sending `data` (the whole file), in wire form."""
    return b"".join((upload_prefix(job, info, len(data)), data))


def _room_info(job: Job) -> AudioInfo:
    """The format upload_room assumes before the file is read: the row's, else WAV."""
    if job.format is AudioFormat.PCM:
        return AudioInfo(AudioFormat.PCM, job.sample_rate, job.channels)
    return AudioInfo(job.format or AudioFormat.WAV)


def _same_audio_metadata(a: AudioInfo, b: AudioInfo) -> bool:
    """Whether audio_metadata(a) and audio_metadata(b) are the same bytes (a container's rate and
    channels are not in them)."""
    if a.format is not b.format:
        return False
    return a.format is not AudioFormat.PCM or (a.sample_rate or 0, a.channels or 0) == (b.sample_rate or 0,
                                                                                         b.channels or 0)


def upload_room(job: Job) -> bytes:
    """The prefix of the job's Upload as it is known before its file is read (the file's format
    is not: a container's is set when it is sent, by place_upload, in the same bytes)."""
    return upload_prefix(job, _room_info(job), job.size)


def place_upload(job: Job, info: AudioInfo, buffer: bytes) -> bytes:
    """The Upload request for the audio that ends `buffer` (its last job.size bytes, read after
    the room upload_room left): the prefix is written into the room, or where it does not fit
    exactly, the request is built anew."""
    room = len(buffer) - job.size
    if room and _same_audio_metadata(info, _room_info(job)):
        return buffer  # the room holds the very prefix: upload_room assumed the format that was found
    prefix = upload_prefix(job, info, job.size)
    if len(prefix) != room:
        return b"".join((prefix, memoryview(buffer)[room:]))
    if buffer[:room] != prefix:
        writable(buffer)[:room] = prefix
    return buffer


def chunk_prefix(size: int) -> bytes:
    """A StreamTalkRequest carrying a chunk of `size` bytes, in wire form, up to the chunk itself."""
    data = _chunk_prefix(size)
    inner = _T_STREAM_CHUNK + _varint(len(data) + size)
    return b"".join((_T_STREAM_AUDIO, _varint(len(inner) + len(data) + size), inner, data))


def chunk_request(chunk: bytes) -> bytes:
    """A StreamTalkRequest carrying one audio chunk, in wire form."""
    return b"".join((chunk_prefix(len(chunk)), chunk))


async def stream_messages(job: Job, info: AudioInfo, chunks: AsyncIterator[tuple[bytes, int]]
                          ) -> AsyncIterator[tuple[bytes, int]]:
    """An UploadAsStream's messages in wire form and in order, each with the audio bytes it carries.

    `chunks` yields messages already in wire form (chunk_request), each with its audio bytes.
    """
    yield pb.StreamTalkRequest(metadata=talk_metadata(job)).SerializeToString(), 0
    yield pb.StreamTalkRequest(audio=pb.AudioStreamingRequest(audio_metadata=audio_metadata(info))).SerializeToString(), 0
    async for message in chunks:
        yield message
        del message  # not held while the next chunk is read: a chunk in flight is held twice at most


