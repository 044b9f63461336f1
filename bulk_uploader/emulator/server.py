"""A local SpeechSense TalkService: the real wire format, the real rules, faults on demand.
It also serves the IAM token service, for service account keys.

Used by the test suite, the benchmarks and users rehearsing a migration. It checks the
`authorization` header, knows its connections and rejects what the real service would
(rules shared with the uploader through bulk_uploader.schema and bulk_uploader.audio),
stores every accepted talk in SQLite and injects the faults of FaultOptions.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import grpc
from grpc import aio

from bulk_uploader.audio import SNIFF_BYTES, AudioError, AudioFormat, check_audio
from bulk_uploader.emulator.faults import FaultInjector, FaultOptions
from bulk_uploader.emulator.store import TalkStore, messages_digest
from bulk_uploader.proto import iam_pb2, iam_pb2_grpc
from bulk_uploader.proto import speechsense_pb2 as pb
from bulk_uploader.proto import speechsense_pb2_grpc as pb_grpc
from bulk_uploader.sakey import ServiceAccountKey, check_jwt
from bulk_uploader.schema import ConnectionSchema, check_fields, dialog_user_ids

DEFAULT_CONNECTIONS = (
    ConnectionSchema.default("audio", "demo-audio"),
    ConnectionSchema.default("chat", "demo-chat"),
)
MAX_RECEIVE_BYTES = 256 * 1024 * 1024  # the real limit is unknown; the API documents 128 MB uploads
IDEMPOTENCY_HEADER = "idempotency-key"

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


@dataclass(frozen=True, kw_only=True)
class EmulatorOptions:
    """How to run the emulator; credentials are the ones it accepts."""

    host: str = "127.0.0.1"
    port: int = 0  # 0 picks a free port
    api_keys: Sequence[str] = ()
    iam_tokens: Sequence[str] = ()
    connections: Sequence[ConnectionSchema] = DEFAULT_CONNECTIONS
    store_path: Path | str = ":memory:"
    faults: FaultOptions = field(default_factory=FaultOptions)
    # How Search names user metadata keys: unknown for the real service (`user.` or `userMeta.`).
    user_key_prefix: str = "user."
    max_receive_bytes: int = MAX_RECEIVE_BYTES
    # Accept IAM tokens minted with this secret by mint_token() in any process, until they
    # expire: lets a token command (a separate process) hand out short-lived tokens.
    token_secret: str | None = None
    # Service account keys whose JWTs IamTokenService.Create exchanges for IAM tokens
    # that live iam_token_ttl seconds (the real service: up to 12 hours).
    service_account_keys: Sequence[ServiceAccountKey] = ()
    iam_token_ttl: float = 12 * 3600.0


def mint_token(secret: str, ttl_seconds: float) -> str:
    """An IAM token the emulator started with `token_secret=secret` accepts for ttl_seconds."""
    expiry = f"{time.time() + ttl_seconds:.3f}"
    mac = hmac.new(secret.encode(), expiry.encode(), hashlib.sha256).hexdigest()
    return f"emu1.{expiry}.{mac}"


class _Rejected(Exception):
    """A call the emulator refuses: aborted with this code and message."""

    def __init__(self, code: grpc.StatusCode, message: str, trailers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.code, self.message, self.trailers = code, message, trailers


def _reject(code: grpc.StatusCode, message: str) -> NoReturn:
    raise _Rejected(code, message)


def _users(meta: pb.TalkMetadata) -> list[dict[str, Any]]:
    users = []
    for user in meta.users:
        if not user.id:
            _reject(grpc.StatusCode.INVALID_ARGUMENT, "user metadata needs an id")
        if user.role not in _ROLES:
            _reject(grpc.StatusCode.INVALID_ARGUMENT, f"user {user.id!r} has no role (operator, client or bot)")
        users.append({"id": user.id, "role": _ROLES[user.role], "fields": dict(user.fields)})
    return users


async def _sleep_until(deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining > 0:
        await asyncio.sleep(remaining)


class _TalkServicer(pb_grpc.TalkServiceServicer):
    def __init__(self, emulator: Emulator) -> None:
        self.emu = emulator

    # --- shared checks -------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _call(self, context: aio.ServicerContext) -> AsyncIterator[None]:
        """Authenticate, admit and time one call; turn _Rejected into a gRPC status.

        Latency is response time: the call is handled at once and answered `delay` after it
        arrived (not after `delay` plus the handling), so a load of N calls in flight at
        latency L is served at N/L, as a service with that response time would.
        """
        emu = self.emu
        faults = emu.injector
        admitted = False
        answer_at = 0.0
        try:
            header = dict(context.invocation_metadata() or ()).get("authorization", "")
            if not emu.authorized(header):
                _reject(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid credentials")
            refused = faults.enter()
            if refused:
                raise _Rejected(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    refused,
                    (("grpc-retry-pushback-ms", str(faults.pushback_ms())),),
                )
            admitted = True
            answer_at = time.monotonic() + faults.delay()
            code = faults.error()
            if code is not None:
                _reject(code, f"injected fault: {code.name}")
            yield
            await _sleep_until(answer_at)
        except _Rejected as exc:
            await _sleep_until(answer_at)
            emu.rejections[exc.code.name] = emu.rejections.get(exc.code.name, 0) + 1
            await context.abort(exc.code, exc.message, trailing_metadata=exc.trailers)
        finally:
            if admitted:
                faults.leave()

    def _connection(self, meta: pb.TalkMetadata, kind: str) -> ConnectionSchema:
        schema = self.emu.connections.get(meta.connection_id)
        if schema is None:
            _reject(grpc.StatusCode.NOT_FOUND, f"connection {meta.connection_id!r} not found")
        if schema.type != kind:
            _reject(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"connection {meta.connection_id!r} is a {schema.type} connection, not {kind}",
            )
        problems = check_fields(meta.fields, schema)
        if problems:
            _reject(grpc.StatusCode.INVALID_ARGUMENT, "; ".join(problems))
        return schema

    def _store(self, context: aio.ServicerContext, meta: pb.TalkMetadata, users: list[dict[str, Any]], **talk: Any) -> str:
        talk_id = secrets.token_hex(10)
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
            _reject(grpc.StatusCode.UNAVAILABLE, "connection reset (injected: talk stored, answer lost)")
        return talk_id

    def _update(self, talk_id: str, meta: pb.TalkMetadata, kind: str) -> str:
        talk = self.emu.store.get(talk_id)
        if talk is None:
            _reject(grpc.StatusCode.NOT_FOUND, f"talk {talk_id!r} not found")
        if meta.connection_id and meta.connection_id != talk.connection_id:
            _reject(grpc.StatusCode.INVALID_ARGUMENT, f"talk {talk_id!r} belongs to another connection")
        meta.connection_id = talk.connection_id
        self._connection(meta, "chat" if talk.rpc == "UploadText" else kind)
        self.emu.store.update_metadata(talk_id, meta.fields, _users(meta))
        return talk_id

    @staticmethod
    def _audio_format(meta: pb.AudioMetadata, head: bytes) -> str:
        kind = meta.WhichOneof("AudioFormat")
        if kind == "raw_audio":
            raw = meta.raw_audio
            if raw.audio_encoding != pb.RawAudio.AUDIO_ENCODING_LINEAR16_PCM:
                _reject(grpc.StatusCode.INVALID_ARGUMENT, "raw audio must be LINEAR16_PCM")
            declared, rate, channels = AudioFormat.PCM, raw.sample_rate_hertz, raw.audio_channel_count
        elif kind == "container_audio":
            declared = _CONTAINER_FORMATS.get(meta.container_audio.container_audio_type)
            if declared is None:
                _reject(grpc.StatusCode.INVALID_ARGUMENT, "container audio type is unspecified")
            rate = channels = None
        else:
            _reject(grpc.StatusCode.INVALID_ARGUMENT, "audio metadata gives no format")
        try:
            return check_audio(head, declared, sample_rate=rate, channels=channels).format.value
        except AudioError as exc:
            _reject(grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    # --- rpcs ------------------------------------------------------------------------

    def _update_of(self, request: pb.UploadTalkRequest | pb.UploadTextRequest, payload: str, kind: str) -> str | None:
        """For a request with talk_id (a metadata update, no payload): apply it and return the id."""
        if not request.talk_id:
            return None
        if request.HasField(payload):
            _reject(grpc.StatusCode.INVALID_ARGUMENT, f"talk_id is for metadata updates; send no {payload} with it")
        return self._update(request.talk_id, request.metadata, kind)

    async def Upload(self, request: pb.UploadTalkRequest, context: aio.ServicerContext) -> pb.UploadTalkResponse:
        async with self._call(context):
            updated = self._update_of(request, "audio", "audio")
            if updated:
                return pb.UploadTalkResponse(talk_id=updated)
            self._connection(request.metadata, "audio")
            users = _users(request.metadata)
            data = request.audio.audio_data.data
            fmt = self._audio_format(request.audio.audio_metadata, data[:SNIFF_BYTES])
            talk_id = self._store(
                context, request.metadata, users,
                rpc="Upload", format=fmt, size=len(data), sha256=hashlib.sha256(data).hexdigest(),
            )
            return pb.UploadTalkResponse(talk_id=talk_id)
        raise AssertionError("unreachable: aborted")  # pragma: no cover

    async def UploadAsStream(self, request_iterator: Any, context: aio.ServicerContext) -> pb.UploadTalkResponse:
        async with self._call(context):
            meta: pb.TalkMetadata | None = None
            audio_meta: pb.AudioMetadata | None = None
            users: list[dict[str, Any]] = []
            digest, size, head = hashlib.sha256(), 0, b""
            async for message in request_iterator:
                event = message.WhichOneof("Event")
                audio_event = message.audio.WhichOneof("AudioEvent") if event == "audio" else None
                if meta is None:
                    if event != "metadata":
                        _reject(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be the talk metadata")
                    meta = message.metadata
                    self._connection(meta, "audio")  # fail fast, before the audio is sent
                    users = _users(meta)
                elif audio_meta is None:
                    if audio_event != "audio_metadata":
                        _reject(grpc.StatusCode.INVALID_ARGUMENT, "the second message must be the audio metadata")
                    audio_meta = message.audio.audio_metadata
                elif audio_event != "chunk":
                    _reject(grpc.StatusCode.INVALID_ARGUMENT, "after the audio metadata only audio chunks may follow")
                else:
                    data = message.audio.chunk.data
                    if len(head) < SNIFF_BYTES:
                        head += data[: SNIFF_BYTES - len(head)]
                    digest.update(data)
                    size += len(data)
            if meta is None or audio_meta is None:
                _reject(grpc.StatusCode.INVALID_ARGUMENT, "stream ended before the talk and audio metadata")
            fmt = self._audio_format(audio_meta, head)
            talk_id = self._store(
                context, meta, users, rpc="UploadAsStream", format=fmt, size=size, sha256=digest.hexdigest()
            )
            return pb.UploadTalkResponse(talk_id=talk_id)
        raise AssertionError("unreachable: aborted")  # pragma: no cover

    async def UploadText(self, request: pb.UploadTextRequest, context: aio.ServicerContext) -> pb.UploadTextResponse:
        async with self._call(context):
            updated = self._update_of(request, "text_content", "chat")
            if updated:
                return pb.UploadTextResponse(talk_id=updated)
            self._connection(request.metadata, "chat")
            users = _users(request.metadata)
            messages = request.text_content.messages
            if not messages:
                _reject(grpc.StatusCode.INVALID_ARGUMENT, "the dialog has no messages")
            allowed = dialog_user_ids(request.metadata.fields)
            canonical = []
            for n, msg in enumerate(messages, 1):
                if msg.user_id not in allowed:
                    _reject(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"message {n}: user_id {msg.user_id!r} is not the dialog's operator, client or bot id",
                    )
                if not msg.HasField("timestamp"):
                    _reject(grpc.StatusCode.INVALID_ARGUMENT, f"message {n} has no timestamp")
                if not msg.HasField("text"):
                    _reject(grpc.StatusCode.INVALID_ARGUMENT, f"message {n} has no text")
                canonical.append((msg.user_id, msg.timestamp.ToJsonString(), msg.text.text))
            sha, count = messages_digest(canonical)
            talk_id = self._store(
                context, request.metadata, users,
                rpc="UploadText", format="chat", size=request.text_content.ByteSize(), sha256=sha,
                message_count=count,
            )
            return pb.UploadTextResponse(talk_id=talk_id)
        raise AssertionError("unreachable: aborted")  # pragma: no cover

    async def Search(self, request: pb.SearchTalkRequest, context: aio.ServicerContext) -> pb.SearchTalkResponse:
        async with self._call(context):
            prefix = self.emu.options.user_key_prefix
            filters = []
            for f in request.filters:
                if f.WhichOneof("filter") != "any_match":
                    _reject(grpc.StatusCode.UNIMPLEMENTED, "the emulator supports any_match filters only")
                key = f"user:{f.key[len(prefix):]}" if prefix and f.key.startswith(prefix) else f.key
                filters.append((key, list(f.any_match.values), f.inverse))
            size = request.page_size or 100
            if not 1 <= size <= 1000:
                _reject(grpc.StatusCode.INVALID_ARGUMENT, "page_size must be in 1..1000")
            try:
                offset = int(request.page_token or 0)
            except ValueError:
                _reject(grpc.StatusCode.INVALID_ARGUMENT, "bad page_token")
            ids, total = self.emu.store.search(request.connection_id, filters, offset, size)
            following = str(offset + size) if offset + size < total else ""
            return pb.SearchTalkResponse(talk_ids=ids, talks_count=total, next_page_token=following)
        raise AssertionError("unreachable: aborted")  # pragma: no cover


class _IamTokenServicer(iam_pb2_grpc.IamTokenServiceServicer):
    """IamTokenService.Create for service account keys: checks the JWT, answers an IAM token."""

    def __init__(self, emulator: Emulator) -> None:
        self.emu = emulator
        self.keys = {key.key_id: key for key in emulator.options.service_account_keys}

    async def Create(self, request: iam_pb2.CreateIamTokenRequest, context: aio.ServicerContext
                     ) -> iam_pb2.CreateIamTokenResponse:
        if request.WhichOneof("identity") != "jwt":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "only jwt is supported by the emulator")
        try:
            check_jwt(request.jwt, self.keys)
        except ValueError as exc:
            self.emu.jwts_refused += 1
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"invalid JWT: {exc}")
        ttl = self.emu.options.iam_token_ttl
        response = iam_pb2.CreateIamTokenResponse(iam_token=self.emu.issue_token(ttl))
        response.expires_at.FromNanoseconds(int((time.time() + ttl) * 1e9))
        self.emu.iam_tokens_issued += 1
        return response


class Emulator:
    """The TalkService emulator, run in-process (tests) or by `bulk-upload emulator`.

        async with Emulator(EmulatorOptions(api_keys=["k"])) as emu:
            target = emu.target  # "127.0.0.1:<port>"
    """

    def __init__(self, options: EmulatorOptions | None = None) -> None:
        self.options = options or EmulatorOptions()
        self.connections = {c.id: c for c in self.options.connections if c.id}
        self.store = TalkStore(self.options.store_path)
        self.injector = FaultInjector(self.options.faults)
        self._tokens: dict[str, float | None] = {t: None for t in self.options.iam_tokens}
        self.rejections: dict[str, int] = {}  # status name -> calls refused with it
        self.answers_lost = 0
        self.tokens_seen: set[str] = set()  # distinct minted tokens accepted
        self.iam_tokens_issued = 0  # by IamTokenService.Create
        self.jwts_refused = 0
        self.port = 0
        self._server: aio.Server | None = None

    @property
    def target(self) -> str:
        """host:port to dial."""
        return f"{self.options.host}:{self.port}"

    def set_faults(self, faults: FaultOptions) -> None:
        """Change the injected faults while running."""
        self.injector = FaultInjector(faults)

    def issue_token(self, ttl_seconds: float | None = None) -> str:
        """Mint an IAM token the emulator accepts, expiring after ttl_seconds (None: never)."""
        token = "t1." + secrets.token_urlsafe(24)
        self._tokens[token] = None if ttl_seconds is None else time.monotonic() + ttl_seconds
        return token

    def authorized(self, header: str) -> bool:
        """Whether an `authorization` header carries a key or an unexpired token it accepts."""
        scheme, _, secret = header.partition(" ")
        if scheme == "Api-Key":
            return secret in self.options.api_keys
        if scheme == "Bearer" and secret in self._tokens:
            expiry = self._tokens[secret]
            return expiry is None or time.monotonic() < expiry
        if scheme == "Bearer" and self.options.token_secret and secret.startswith("emu1."):
            expiry_text, _, mac = secret[5:].rpartition(".")
            good = hmac.new(self.options.token_secret.encode(), expiry_text.encode(), hashlib.sha256).hexdigest()
            try:
                live = time.time() < float(expiry_text)
            except ValueError:
                return False
            if hmac.compare_digest(mac, good) and live:
                self.tokens_seen.add(secret)
                return True
        return False

    async def start(self) -> int:
        """Bind and start serving; returns the port."""
        limit = self.options.max_receive_bytes
        self._server = aio.server(
            options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]
        )
        pb_grpc.add_TalkServiceServicer_to_server(_TalkServicer(self), self._server)
        iam_pb2_grpc.add_IamTokenServiceServicer_to_server(_IamTokenServicer(self), self._server)
        self.port = self._server.add_insecure_port(f"{self.options.host}:{self.options.port}")
        await self._server.start()
        return self.port

    async def stop(self, grace: float | None = 1.0) -> None:
        """Stop serving (letting calls in flight finish within grace) and close the store."""
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        self.store.close()

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop(grace=0.2)
