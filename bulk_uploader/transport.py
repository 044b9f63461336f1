"""Stage 4: speak to SpeechSense. The one home of grpc and of the generated code.

Builds request messages from Jobs, drives the calls (UploadAsStream by hand with
write/done_writing, never with a request iterator, so a read error surfaces as itself),
and maps every gRPC error to a CallFailure in exactly one place: classify().
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc
from grpc import aio

from bulk_uploader.audio import AudioFormat, AudioInfo
from bulk_uploader.auth import AuthProvider
from bulk_uploader.chat import ChatMessage
from bulk_uploader.errors import AuthError, CallFailure
from bulk_uploader.model import Job, TalkRecord
from bulk_uploader.options import SearchScope
from bulk_uploader.proto import iam_pb2, iam_pb2_grpc
from bulk_uploader.proto import speechsense_pb2 as pb
from bulk_uploader.proto import speechsense_pb2_grpc as pb_grpc
from bulk_uploader.retry import RetryPolicy

PUSHBACK_TRAILER = "grpc-retry-pushback-ms"
LOST_STATUS = "Internal error from Core"  # what grpc.aio reports in place of a status it lost
CAUTIOUS_WAIT = 1.0  # seconds a stream retried after a lost answer waits for an early one
IDEMPOTENCY_HEADER = "idempotency-key"
SEARCH_PAGE_SIZE = 1000  # the most a Search page may hold: fewest reads
_IDEMPOTENCY_NAMESPACE = uuid.UUID("6f3c1a52-43c8-4f0e-9d59-3f0b8d7f2a11")

_CONTAINER = {
    AudioFormat.WAV: pb.ContainerAudio.CONTAINER_AUDIO_TYPE_WAV,
    AudioFormat.MP3: pb.ContainerAudio.CONTAINER_AUDIO_TYPE_MP3,
    AudioFormat.OGG_OPUS: pb.ContainerAudio.CONTAINER_AUDIO_TYPE_OGG_OPUS,
}
# NOT_STARTED, PROCESSING, ...; a state this code does not know (a newer service) keeps its number.
_STATES = {number: name.removeprefix("PROCESSING_STATE_") for name, number in pb.ProcessingState.items()}
_ROLE = {"operator": pb.USER_ROLE_OPERATOR, "client": pb.USER_ROLE_CLIENT, "bot": pb.USER_ROLE_BOT}


def classify(exc: BaseException, *, request_complete: bool = True, auth_header: str = "") -> CallFailure:
    """Map a grpc error (or a failure of the call machinery) to a CallFailure."""
    failure = _classify(exc)
    failure.request_complete, failure.auth_header = request_complete, auth_header
    return failure


def _classify(exc: BaseException) -> CallFailure:
    if isinstance(exc, aio.AioRpcError):
        pushback = None
        for key, value in exc.trailing_metadata() or ():
            if key == PUSHBACK_TRAILER:
                try:
                    pushback = max(0.0, int(value) / 1000.0)
                except ValueError:
                    pass
        return CallFailure(exc.code().name, exc.details() or exc.code().name, pushback)
    return CallFailure("UNAVAILABLE", f"{type(exc).__name__}: {exc}")


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


def _chunk_message(chunk: bytes) -> pb.StreamTalkRequest:
    """A StreamTalkRequest carrying one audio chunk, with the bytes copied once.

    pb.StreamTalkRequest(audio=pb.AudioStreamingRequest(chunk=pb.AudioChunk(data=chunk)))
    copies the chunk into each nested message in turn: three copies of every MiB.
    """
    message = pb.StreamTalkRequest()
    message.audio.chunk.data = chunk
    return message


async def _stream_messages(job: Job, info: AudioInfo, chunks: AsyncIterator[bytes]
                           ) -> AsyncIterator[tuple[pb.StreamTalkRequest, int]]:
    """An UploadAsStream's messages in order, each with the audio bytes it carries."""
    yield pb.StreamTalkRequest(metadata=talk_metadata(job)), 0
    yield pb.StreamTalkRequest(audio=pb.AudioStreamingRequest(audio_metadata=audio_metadata(info))), 0
    async for chunk in chunks:
        yield _chunk_message(chunk), len(chunk)


async def _early_answer(call: aio.StreamUnaryCall, seconds: float) -> None:
    """Wait up to `seconds` for the server to end the call (it may not: then go on)."""
    if call.done():
        return
    ended = asyncio.Event()
    call.add_done_callback(lambda _: ended.set())
    try:
        await asyncio.wait_for(ended.wait(), seconds)
    except TimeoutError:
        pass


class Transport:
    """One gRPC channel to the service and the calls the pipeline makes on it."""

    def __init__(
        self,
        endpoint: str,
        credentials: AuthProvider | None,
        *,
        insecure: bool,
        max_message_bytes: int,
    ) -> None:
        self._credentials = credentials
        options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.enable_retries", 0),  # retries are ours: grpc's never apply past its 256 KiB buffer
        ]
        if insecure:
            self._channel = aio.insecure_channel(endpoint, options=options)
        else:
            self._channel = aio.secure_channel(endpoint, grpc.ssl_channel_credentials(), options=options)
        self._stub = pb_grpc.TalkServiceStub(self._channel)
        self._channel.get_state(try_to_connect=True)  # connect now, not on the first call

    async def close(self) -> None:
        """Close the channel, cancelling calls still in flight."""
        await self._channel.close()

    def _metadata(self, job: Job | None = None) -> tuple[tuple[tuple[str, str], ...], str]:
        """Request headers and the authorization value among them."""
        auth = self._credentials.header() if self._credentials is not None else ""
        headers = [("authorization", auth)] if auth else []
        if job is not None:
            headers.append((IDEMPOTENCY_HEADER, idempotency_key(job.connection_id, job.key)))
        return tuple(headers), auth

    async def _unary(self, method: Any, request: Any, job: Job | None, timeout: float) -> Any:
        headers, auth = self._metadata(job)
        try:
            return await method(request, metadata=headers, timeout=timeout)
        except aio.AioRpcError as exc:
            raise classify(exc, auth_header=auth) from None

    async def upload(self, job: Job, data: bytes, info: AudioInfo, timeout: float) -> str:
        """Send a whole file in one Upload; returns the talk id or raises CallFailure."""
        request = pb.UploadTalkRequest(metadata=talk_metadata(job))
        request.audio.audio_metadata.CopyFrom(audio_metadata(info))
        request.audio.audio_data.data = data  # set in place: nested constructors copy the bytes at every level
        response = await self._unary(self._stub.Upload, request, job, timeout)
        return str(response.talk_id)

    async def upload_text(self, job: Job, messages: Sequence[ChatMessage], timeout: float) -> str:
        """Send a chat dialog with UploadText; returns the talk id or raises CallFailure."""
        content = pb.TextContent()
        for message in messages:
            item = content.messages.add(user_id=message.user_id, text=pb.TextPayload(text=message.text))
            item.timestamp.FromDatetime(message.timestamp)
        request = pb.UploadTextRequest(metadata=talk_metadata(job), text_content=content)
        response = await self._unary(self._stub.UploadText, request, job, timeout)
        return str(response.talk_id)

    async def update(self, job: Job, timeout: float) -> str:
        """Replace the metadata of an existing talk (talk_id set, no audio)."""
        request = pb.UploadTalkRequest(metadata=talk_metadata(job), talk_id=job.talk_id or "")
        response = await self._unary(self._stub.Upload, request, job, timeout)
        return str(response.talk_id or job.talk_id or "")

    async def search(self, scope: SearchScope, connection_id: str, key: str, values: Sequence[str], timeout: float,
                     page_token: str = "") -> tuple[list[str], str]:
        """One page of the ids of the talks in the connection whose `key` is any of `values`
        (AnyMatchFilter ORs them), and the next page's token ("" after the last)."""
        request = pb.SearchTalkRequest(
            organization_id=scope.organization_id,
            space_id=scope.space_id,
            project_id=scope.project_id,
            connection_id=connection_id,
            filters=[pb.Filter(key=key, any_match=pb.AnyMatchFilter(values=values))],
            page_size=SEARCH_PAGE_SIZE,
            page_token=page_token,
        )
        response = await self._unary(self._stub.Search, request, None, timeout)
        return list(response.talk_ids), str(response.next_page_token)

    async def get(self, scope: SearchScope, connection_id: str, talk_ids: Sequence[str], timeout: float
                  ) -> list[TalkRecord]:
        """The talks among `talk_ids` the service holds: their basic data only (ids, fields, state)."""
        request = pb.GetTalkRequest(
            organization_id=scope.organization_id,
            space_id=scope.space_id,
            project_id=scope.project_id,
            connection_id=connection_id,
            talk_ids=talk_ids,
        )
        request.results_mask.SetInParent()  # set and naming no paths: no analysis results, which are big
        response = await self._unary(self._stub.Get, request, None, timeout)
        return [
            TalkRecord(
                talk.id, talk.connection_id, {field.name: field.value for field in talk.talk_fields},
                _STATES.get(talk.talk_state.processing_state, f"STATE_{talk.talk_state.processing_state}"),
            )
            for talk in response.talk
        ]

    async def upload_stream(
        self,
        job: Job,
        info: AudioInfo,
        chunks: AsyncIterator[bytes],
        timeout: float,
        on_bytes: Callable[[int], None],
        *,
        cautious: bool = False,
    ) -> str:
        """Stream a file: talk metadata, audio metadata, then chunks, driving the call by hand.

        `cautious` (after an attempt whose answer gRPC lost): pause after the metadata and
        after the first chunk for an early answer, so a refusal arrives while no write is
        in flight and its status is not lost again.
        """
        headers, auth = self._metadata(job)
        call = self._stub.UploadAsStream(metadata=headers, timeout=timeout)
        complete = False
        try:
            try:
                written = 0
                async for message, audio_bytes in _stream_messages(job, info, chunks):
                    if cautious and 0 < written <= 3:  # after the metadata, the audio metadata, the first chunk
                        await _early_answer(call, CAUTIOUS_WAIT)
                    if call.done():
                        break  # the server has answered early (a rejection): stop writing, read its status
                    await call.write(message)
                    written += 1
                    if audio_bytes:
                        on_bytes(audio_bytes)
                else:
                    await call.done_writing()
                    complete = True
                response = await call
            except (aio.AioRpcError, asyncio.InvalidStateError, aio.UsageError) as exc:
                # A write fails once the server has ended the call; the call's own status
                # says why. grpc.aio may instead report "INTERNAL: Internal error from Core"
                # when the failed write is processed after the status arrived (grpc#36066):
                # the server's answer is lost, and the stream was not finished, so nothing
                # was stored. The policy tries such a row again without counting it.
                try:
                    await call
                except aio.AioRpcError as status:
                    failure = classify(status, request_complete=complete, auth_header=auth)
                else:
                    failure = classify(exc, request_complete=complete, auth_header=auth)
                failure.status_lost = not complete and failure.code == "INTERNAL" and LOST_STATUS in failure.message
                raise failure from None
            return str(response.talk_id)
        finally:
            if not call.done():
                call.cancel()


DEFAULT_IAM_ENDPOINT = "iam.api.cloud.yandex.net:443"


class IamTokenExchange:
    """Exchanges a service account's signed JWT for an IAM token (IamTokenService.Create).

    A channel per exchange: it happens about once an hour. Transient answers are tried
    again under `retry` (by default three more times, a few seconds apart); anything else
    raises AuthError, which stops the run.
    """

    def __init__(self, endpoint: str = DEFAULT_IAM_ENDPOINT, *, insecure: bool = False, timeout: float = 30.0,
                 retry: RetryPolicy | None = None) -> None:
        self.endpoint = endpoint
        self.insecure = insecure
        self.timeout = timeout
        self.retry = retry or RetryPolicy(retries=3, backoff_base=1.0, backoff_max=4.0)

    async def __call__(self, jwt: str) -> tuple[str, float]:
        """(IAM token, seconds it lives)."""
        attempts = self.retry.attempts()
        while True:
            try:
                response = await self._create(jwt)
                break
            except CallFailure as failure:
                try:
                    await attempts.after(failure)
                except CallFailure:
                    raise AuthError(f"the IAM token service at {self.endpoint} gave no token for the service "
                                    f"account key ({failure})") from None
        if not response.iam_token:
            raise AuthError(f"the IAM token service at {self.endpoint} answered without a token")
        lifetime = response.expires_at.seconds + response.expires_at.nanos / 1e9 - time.time()
        return response.iam_token, (max(1.0, lifetime) if response.HasField("expires_at") else 12 * 3600.0)

    async def _create(self, jwt: str) -> iam_pb2.CreateIamTokenResponse:
        channel = (aio.insecure_channel(self.endpoint) if self.insecure
                   else aio.secure_channel(self.endpoint, grpc.ssl_channel_credentials()))
        try:
            stub = iam_pb2_grpc.IamTokenServiceStub(channel)
            return await stub.Create(iam_pb2.CreateIamTokenRequest(jwt=jwt), timeout=self.timeout)
        except aio.AioRpcError as exc:
            raise classify(exc) from None
        finally:
            await channel.close()
