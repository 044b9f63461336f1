"""The emulator's TalkService: Upload, UploadAsStream and UploadText store talks, Search and Get read them.

Every rpc runs inside the call guard (guard.py) and applies the request checks
(checks.py) before it stores anything in the emulator's TalkStore. A request with a
talk_id updates that talk's metadata instead of storing a new talk. Search and Get are
reads: each spends the read quota, and answers as reading.py describes.
"""

from __future__ import annotations

import hashlib
import io
import secrets
import tempfile
import time
from collections.abc import AsyncIterator
from typing import IO, TYPE_CHECKING, Any

import anyio.to_thread
import grpc
from grpc import aio

from bulk_uploader.emulator.checks import audio_format, chat_messages, check_connection, reject, talk_users
from bulk_uploader.emulator.guard import guarded
from bulk_uploader.emulator.reading import search_filters, talk_message
from bulk_uploader.emulator.store import messages_digest
from bulk_uploader.proto import speechsense_pb2 as pb
from bulk_uploader.proto import speechsense_pb2_grpc as pb_grpc
from bulk_uploader.schema import ConnectionSchema

if TYPE_CHECKING:
    from bulk_uploader.emulator.state import EmulatorState

DECODED_KEPT = 100_000  # talks whose decoded channels and length the emulator remembers (Emulator.decoded)

IDEMPOTENCY_HEADER = "idempotency-key"
SPOOL_BYTES = 8 * 1024 * 1024  # a streamed talk's audio is kept in memory up to this, then in a temporary file


async def half_closed_stream(context: aio.ServicerContext) -> AsyncIterator[Any]:
    """A stream's messages, ending only at the client's half-close: a cancelled or reset stream
    is no request (../shared/SPEECHSENSE.md). gRPC's Python server at times reads the end of a
    cancelled stream as a clean end of stream; one more read, asked for after it, is answered
    only once the cancellation has reached the call, which then ends here."""
    while (message := await context.read()) is not aio.EOF:
        yield message
    await context.read()


class AudioSpool:
    """A streamed talk's audio: in memory up to SPOOL_BYTES, then in a temporary file.

    Not tempfile.SpooledTemporaryFile: FFmpeg reads through the file object's own methods,
    which that wrapper does not pass on in a form PyAV can use.
    """

    def __init__(self) -> None:
        self.file: IO[bytes] = io.BytesIO()
        self.size = 0

    def write(self, data: bytes) -> None:
        if self.size + len(data) > SPOOL_BYTES and isinstance(self.file, io.BytesIO):
            spilled = tempfile.TemporaryFile()
            spilled.write(self.file.getbuffer())
            self.file = spilled
        self.file.write(data)
        self.size += len(data)

    def __enter__(self) -> AudioSpool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()


class TalkServicer(pb_grpc.TalkServiceServicer):
    """TalkService over one Emulator's connections, store and faults."""

    def __init__(self, emulator: EmulatorState) -> None:
        self.emu = emulator

    # --- shared steps ----------------------------------------------------------------

    def _connection(self, meta: pb.TalkMetadata, kind: str) -> ConnectionSchema:
        return check_connection(self.emu.connections, meta, kind)

    def _store(self, context: aio.ServicerContext, meta: pb.TalkMetadata, users: list[dict[str, Any]], **talk: Any) -> str:
        talk_id = secrets.token_hex(10)
        if self.emu.injector.lose_talk():
            self.emu.talks_lost.append(talk_id)
            return talk_id
        key = dict(context.invocation_metadata() or ()).get(IDEMPOTENCY_HEADER)
        self.emu.store.add(
            talk_id=talk_id,
            connection_id=meta.connection_id,
            fields=meta.fields,
            users=users,
            idempotency_key=key,
            **talk,
        )
        if self.emu.injector.lose_answer():
            self.emu.answers_lost += 1
            reject(grpc.StatusCode.UNAVAILABLE, "connection reset (injected: talk stored, answer lost)")
        return talk_id

    async def _audio_format(self, meta: pb.AudioMetadata, audio: IO[bytes], size: int) -> tuple[str, Any]:
        """Decode the audio (in a thread: it may take a while) and judge it; Rejected if the service would."""
        audio.seek(0)
        seconds = self.emu.options.audio_decode_seconds
        return await anyio.to_thread.run_sync(audio_format, meta, audio, size, seconds)

    def _decoded(self, talk_id: str, found: Any) -> None:
        decoded = self.emu.decoded
        if len(decoded) >= DECODED_KEPT:
            del decoded[next(iter(decoded))]
        decoded[talk_id] = (found.channels, found.duration)

    def _update(self, talk_id: str, meta: pb.TalkMetadata, kind: str) -> str:
        talk = self.emu.store.get(talk_id)
        if talk is None:
            reject(grpc.StatusCode.NOT_FOUND, f"talk {talk_id!r} not found")
        if meta.connection_id and meta.connection_id != talk.connection_id:
            reject(grpc.StatusCode.INVALID_ARGUMENT, f"talk {talk_id!r} belongs to another connection")
        meta.connection_id = talk.connection_id
        self._connection(meta, "chat" if talk.rpc == "UploadText" else kind)
        self.emu.store.update_metadata(talk_id, meta.fields, talk_users(meta))
        return talk_id

    def _update_of(self, request: pb.UploadTalkRequest | pb.UploadTextRequest, payload: str, kind: str) -> str | None:
        """For a request with talk_id (a metadata update, no payload): apply it and return the id."""
        if not request.talk_id:
            return None
        if request.HasField(payload):
            reject(grpc.StatusCode.INVALID_ARGUMENT, f"talk_id is for metadata updates; send no {payload} with it")
        return self._update(request.talk_id, request.metadata, kind)

    # --- rpcs ------------------------------------------------------------------------

    async def Upload(self, request: pb.UploadTalkRequest, context: aio.ServicerContext) -> pb.UploadTalkResponse:
        async with guarded(self.emu, context):
            updated = self._update_of(request, "audio", "audio")
            if updated:
                return pb.UploadTalkResponse(talk_id=updated)
            self._connection(request.metadata, "audio")
            users = talk_users(request.metadata)
            data = request.audio.audio_data.data
            fmt, found = await self._audio_format(request.audio.audio_metadata, io.BytesIO(data), len(data))
            talk_id = self._store(
                context, request.metadata, users,
                rpc="Upload", format=fmt, size=len(data), sha256=hashlib.sha256(data).hexdigest(),
            )
            self._decoded(talk_id, found)
            return pb.UploadTalkResponse(talk_id=talk_id)
        raise AssertionError("unreachable: aborted")  # pragma: no cover

    async def UploadAsStream(self, request_iterator: Any, context: aio.ServicerContext) -> pb.UploadTalkResponse:
        async with guarded(self.emu, context):
            meta: pb.TalkMetadata | None = None
            audio_meta: pb.AudioMetadata | None = None
            users: list[dict[str, Any]] = []
            digest, size = hashlib.sha256(), 0
            with AudioSpool() as spool:
                async for message in half_closed_stream(context):  # not request_iterator: see there
                    event = message.WhichOneof("Event")
                    audio_event = message.audio.WhichOneof("AudioEvent") if event == "audio" else None
                    if meta is None:
                        if event != "metadata":
                            reject(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be the talk metadata")
                        meta = message.metadata
                        self._connection(meta, "audio")  # fail fast, before the audio is sent
                        users = talk_users(meta)
                    elif audio_meta is None:
                        if audio_event != "audio_metadata":
                            reject(grpc.StatusCode.INVALID_ARGUMENT, "the second message must be the audio metadata")
                        audio_meta = message.audio.audio_metadata
                    elif audio_event != "chunk":
                        reject(grpc.StatusCode.INVALID_ARGUMENT, "after the audio metadata only audio chunks may follow")
                    else:
                        data = message.audio.chunk.data
                        spool.write(data)
                        digest.update(data)
                        size += len(data)
                if meta is None or audio_meta is None:
                    reject(grpc.StatusCode.INVALID_ARGUMENT, "stream ended before the talk and audio metadata")
                fmt, found = await self._audio_format(audio_meta, spool.file, size)
            talk_id = self._store(
                context, meta, users, rpc="UploadAsStream", format=fmt, size=size, sha256=digest.hexdigest()
            )
            self._decoded(talk_id, found)
            return pb.UploadTalkResponse(talk_id=talk_id)
        raise AssertionError("unreachable: aborted")  # pragma: no cover

    async def UploadText(self, request: pb.UploadTextRequest, context: aio.ServicerContext) -> pb.UploadTextResponse:
        async with guarded(self.emu, context):
            updated = self._update_of(request, "text_content", "chat")
            if updated:
                return pb.UploadTextResponse(talk_id=updated)
            self._connection(request.metadata, "chat")
            users = talk_users(request.metadata)
            sha, count = messages_digest(chat_messages(request))
            talk_id = self._store(
                context, request.metadata, users,
                rpc="UploadText", format="chat", size=request.text_content.ByteSize(), sha256=sha,
                message_count=count,
            )
            return pb.UploadTextResponse(talk_id=talk_id)
        raise AssertionError("unreachable: aborted")  # pragma: no cover

    def _read(self, project_id: str) -> None:
        """Spend one read of the project's quota, or refuse the call."""
        wait = self.emu.read_quota.admit(project_id, time.monotonic())
        if wait is not None:
            self.emu.reads_refused += 1
            raise self.emu.read_quota.refusal(wait)
        self.emu.reads += 1

    async def Search(self, request: pb.SearchTalkRequest, context: aio.ServicerContext) -> pb.SearchTalkResponse:
        async with guarded(self.emu, context):
            self._read(request.project_id)
            filters = search_filters(request, self.emu.options.user_key_prefix)
            size = request.page_size or 100
            if not 1 <= size <= 1000:
                reject(grpc.StatusCode.INVALID_ARGUMENT, "page_size must be in 1..1000")
            try:
                offset = int(request.page_token or 0)
            except ValueError:
                reject(grpc.StatusCode.INVALID_ARGUMENT, "bad page_token")
            visible = time.time() - self.emu.options.index_lag
            ids, total = self.emu.store.search(request.connection_id, filters, offset, size, visible)
            following = str(offset + size) if offset + size < total else ""
            return pb.SearchTalkResponse(talk_ids=ids, talks_count=total, next_page_token=following)
        raise AssertionError("unreachable: aborted")  # pragma: no cover

    async def Get(self, request: pb.GetTalkRequest, context: aio.ServicerContext) -> pb.GetTalkResponse:
        async with guarded(self.emu, context):
            self._read(request.project_id)
            if not request.talk_ids:
                reject(grpc.StatusCode.INVALID_ARGUMENT, "talk_ids is empty")
            talks = self.emu.store.get_many(request.talk_ids)
            if request.connection_id:
                talks = [t for t in talks if t.connection_id == request.connection_id]
            now, processing = time.time(), self.emu.options.processing
            return pb.GetTalkResponse(talk=[talk_message(t, now, processing) for t in talks])
        raise AssertionError("unreachable: aborted")  # pragma: no cover
