"""The request messages built from Jobs: talk and audio metadata, stream messages, the Idempotency-Key."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator

from bulk_uploader.audio import AudioFormat, AudioInfo
from bulk_uploader.model import Job
from bulk_uploader.proto import speechsense_pb2 as pb

IDEMPOTENCY_HEADER = "idempotency-key"
_IDEMPOTENCY_NAMESPACE = uuid.UUID("6f3c1a52-43c8-4f0e-9d59-3f0b8d7f2a11")

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
    digest = bytearray(hashlib.sha1(_IDEMPOTENCY_NAMESPACE.bytes + f"{connection_id}\x00{row_key}".encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def talk_metadata(job: Job) -> pb.TalkMetadata:
    """TalkMetadata for a job: connection, fields and users."""
    return pb.TalkMetadata(
        connection_id=job.connection_id,
        fields=job.fields,
        users=[pb.UserMetadata(id=u.id, role=_ROLE[u.role], fields=u.fields) for u in job.users],
    )


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


def chunk_message(chunk: bytes) -> pb.StreamTalkRequest:
    """A StreamTalkRequest carrying one audio chunk, with the bytes copied once.

    pb.StreamTalkRequest(audio=pb.AudioStreamingRequest(chunk=pb.AudioChunk(data=chunk)))
    copies the chunk into each nested message in turn: three copies of every MiB.
    """
    message = pb.StreamTalkRequest()
    message.audio.chunk.data = chunk
    return message


async def stream_messages(job: Job, info: AudioInfo, chunks: AsyncIterator[bytes]
                           ) -> AsyncIterator[tuple[pb.StreamTalkRequest, int]]:
    """An UploadAsStream's messages in order, each with the audio bytes it carries."""
    yield pb.StreamTalkRequest(metadata=talk_metadata(job)), 0
    yield pb.StreamTalkRequest(audio=pb.AudioStreamingRequest(audio_metadata=audio_metadata(info))), 0
    async for chunk in chunks:
        yield chunk_message(chunk), len(chunk)


