"""Transport: the connections to the service, the calls the pipeline makes on them, preflight and reconnection."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc
from grpc import aio

from bulk_uploader.audio import AudioInfo
from bulk_uploader.auth import AuthProvider
from bulk_uploader.errors import ConfigError
from bulk_uploader.model import Job, TalkRecord
from bulk_uploader.options import SearchScope
from bulk_uploader.proto import speechsense_pb2 as pb
from bulk_uploader.transport.messages import (
    IDEMPOTENCY_HEADER,
    idempotency_key,
    stream_messages,
    talk_metadata,
)
from bulk_uploader.transport.pool import MIN_RATE, Connection, ConnectionPool, Ready
from bulk_uploader.transport.status import LOST_STATUS, classify, closed_under

if TYPE_CHECKING:
    from bulk_uploader.chat import ChatMessage

CAUTIOUS_WAIT = 1.0  # seconds a stream retried after a lost answer waits for an early one
SEARCH_PAGE_SIZE = 1000  # the most a Search page may hold: fewest reads
# NOT_STARTED, PROCESSING, ...; a state this code does not know (a newer service) keeps its number.
_STATES = {number: name.removeprefix("PROCESSING_STATE_") for name, number in pb.ProcessingState.items()}


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


async def _preflight(channel: aio.Channel, endpoint: str, insecure: bool, timeout: float) -> None:
    """Wait up to `timeout` for `channel` to connect, or raise ConfigError saying why it does not.

    A failure with a definite cause (nothing listening, a name that does not resolve, TLS
    against plaintext or the reverse), seen twice a second apart, ends the wait at once.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    seen: str | None = None
    while loop.time() < deadline:
        state = channel.get_state(try_to_connect=True)
        if state is grpc.ChannelConnectivity.READY:
            return
        if state is grpc.ChannelConnectivity.TRANSIENT_FAILURE:
            reason, definite = await _diagnose(endpoint, insecure)
            if definite and reason == seen:
                break
            seen = reason if definite else None
            if definite:
                await asyncio.sleep(1.0)
                continue
        try:
            await asyncio.wait_for(channel.wait_for_state_change(state), max(0.0, deadline - loop.time()))
        except TimeoutError:
            break
    if channel.get_state() is grpc.ChannelConnectivity.READY:
        return
    reason, _ = await _diagnose(endpoint, insecure)
    raise ConfigError(f"cannot reach the service at {endpoint}: {reason}; nothing was sent")


async def _diagnose(endpoint: str, insecure: bool) -> tuple[str, bool]:
    """Why a channel to `endpoint` does not connect, as a user can act on it, and whether that is
    definite (waiting longer would not help)."""
    host, _, port = endpoint.rpartition(":")
    try:
        await asyncio.wait_for(asyncio.to_thread(_tcp_connect, host.strip("[]"), int(port)), 6)
    except socket.gaierror:
        return f"the name {host} does not resolve (DNS)", True
    except ConnectionRefusedError:
        return "nothing is listening there (connection refused)", True
    except (OSError, TimeoutError) as exc:
        return f"no connection ({getattr(exc, 'strerror', None) or type(exc).__name__})", False
    other = aio.insecure_channel(endpoint) if not insecure else aio.secure_channel(endpoint, grpc.ssl_channel_credentials())
    try:
        await asyncio.wait_for(other.channel_ready(), 3)
        if insecure:
            return "the server speaks TLS: leave out --insecure", True
        return "the server speaks plaintext, not TLS: for the emulator add --insecure", True
    except TimeoutError:
        return ("a TCP connection opens, but gRPC gets no answer on it (the server hangs, or TLS or HTTP/2 "
                "fails on the way)"), False
    finally:
        await other.close()


async def _round_trip(endpoint: str, samples: int = 3) -> float:
    """About one network round trip to `endpoint`: the shortest of a few TCP handshakes with it at
    once (the name resolved beforehand); 0.0 when none completes."""
    host, _, port = endpoint.rpartition(":")
    try:
        address = (await asyncio.get_running_loop().getaddrinfo(host.strip("[]"), int(port),
                                                                 type=socket.SOCK_STREAM))[0][4]
    except OSError:
        return 0.0

    async def handshake() -> float:
        started = time.perf_counter()
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(address[0], address[1]), 3)
        except (OSError, TimeoutError):
            return 0.0
        took = time.perf_counter() - started
        writer.close()
        return took

    took = [t for t in await asyncio.gather(*(handshake() for _ in range(samples))) if t]
    return min(took, default=0.0)


def _tcp_connect(host: str, port: int) -> None:
    with socket.create_connection((host, port), timeout=5):
        pass


class Transport:
    """The connections to the service (a ConnectionPool) and the calls the pipeline makes on them.

    A call a full connection refuses (REFUSED_STREAM) never reached the service: the pool sends
    it again at once on a connection with room, within the call, so the caller never sees it.
    """

    def __init__(
        self,
        endpoint: str,
        credentials: AuthProvider | None,
        *,
        insecure: bool,
        max_message_bytes: int,
        concurrency: int = 1,
        connections: int | None = None,
        min_rate: float = MIN_RATE,
    ) -> None:
        self._credentials = credentials
        self.endpoint = endpoint
        self.insecure = insecure
        self._options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.enable_retries", 0),  # retries are ours: grpc's never apply past its 256 KiB buffer
            # After an outage, try to connect again within seconds, not grpc's default of up to 2 minutes.
            ("grpc.initial_reconnect_backoff_ms", 500),
            ("grpc.max_reconnect_backoff_ms", 4000),
            # The longest a connection attempt may take (gRPC's default: 20 s): a server that accepts
            # and then says nothing (an overloaded balancer) is tried again within seconds instead.
            ("grpc.min_reconnect_backoff_ms", 5000),
            # A channel of its own connections: gRPC otherwise shares them between channels to one
            # target, so the channels of the pool, and the one that replaces a stalled one, would
            # all be the same connection.
            ("grpc.use_local_subchannel_pool", 1),
        ]
        self._closing: set[asyncio.Task[None]] = set()
        self.pool = ConnectionPool(self._open, size=connections, concurrency=concurrency, rate=min_rate)

    def _open(self) -> aio.Channel:
        if self.insecure:
            channel = aio.insecure_channel(self.endpoint, options=self._options)
        else:
            channel = aio.secure_channel(self.endpoint, grpc.ssl_channel_credentials(), options=self._options)
        channel.get_state(try_to_connect=True)  # connect now, not on the first call
        return channel

    async def close(self) -> None:
        """Close every channel, cancelling calls still in flight."""
        for connection in self.pool.connections:
            await connection.channel.close()
        for task in list(self._closing):
            await task

    def replace_stalled(self, seconds: float) -> int:
        """Open a new connection in place of each that has stalled (ConnectionPool.stalled) and
        close the old one, which ends the calls still on it; returns how many were replaced."""
        stalled = self.pool.stalled(seconds)
        if not stalled:
            return 0
        loop = asyncio.get_running_loop()
        for old in self.pool.replace(stalled):
            task = loop.create_task(old.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        return len(stalled)

    async def wait_ready(self, timeout: float) -> bool:
        """Whether a connection of the pool connects within `timeout` seconds (0: is connected now)."""
        if (now := any(c.connected() for c in self.pool.connections)) or timeout <= 0:
            return now
        waits = [asyncio.ensure_future(c.channel.channel_ready()) for c in self.pool.connections]
        done, pending = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for wait in pending:
            wait.cancel()
        # A connection replaced meanwhile (stalled) ends its wait with its channel closed: not ready.
        return any(not wait.cancelled() and wait.exception() is None for wait in done)

    async def preflight(self, timeout: float) -> None:
        """Connect before the first row, and measure the round trip the pool sizes itself by;
        raise ConfigError saying why the service cannot be reached."""
        round_trip = asyncio.ensure_future(_round_trip(self.endpoint))
        try:
            await _preflight(self.pool.connections[0].channel, self.endpoint, self.insecure, timeout)
            self.pool.measured(await round_trip)
        finally:
            round_trip.cancel()

    def _metadata(self, job: Job | None = None) -> tuple[aio.Metadata, str]:
        """Request headers and the authorization value among them (as gRPC's Metadata: a tuple
        would be converted call by call, after a check against typing.Sequence)."""
        auth = self._credentials.header() if self._credentials is not None else ""
        headers = [("authorization", auth)] if auth else []
        if job is not None:
            headers.append((IDEMPOTENCY_HEADER, idempotency_key(job.connection_id, job.key)))
        return aio.Metadata(*headers), auth

    async def _unary(self, method: str, request: Any, job: Job | None, timeout: float, size: int = 0,
                     ready: Ready = None) -> Any:
        headers, auth = self._metadata(job)

        async def once(connection: Connection) -> Any:
            try:
                return await getattr(connection.stub, method)(
                    request, metadata=headers, timeout=self.pool.deadline(timeout, size))
            except aio.AioRpcError as exc:
                raise classify(exc, auth_header=auth) from None
            except asyncio.CancelledError:
                raise closed_under(auth) from None

        return await self.pool.call(size, once, whole=True, ready=ready)

    async def upload(self, job: Job, request: bytes, timeout: float, ready: Ready = None) -> str:
        """Send a whole file in one Upload (`request`: messages.upload_request, in wire form);
        returns the talk id or raises CallFailure."""
        response = await self._unary("Upload", request, job, timeout, len(request), ready)
        return str(response.talk_id)

    async def upload_text(self, job: Job, messages: Sequence[ChatMessage], timeout: float, ready: Ready = None) -> str:
        """Send a chat dialog with UploadText; returns the talk id or raises CallFailure."""
        content = pb.TextContent()
        for message in messages:
            item = content.messages.add(user_id=message.user_id, text=pb.TextPayload(text=message.text))
            item.timestamp.FromDatetime(message.timestamp)
        request = pb.UploadTextRequest(metadata=talk_metadata(job), text_content=content)
        response = await self._unary("UploadText", request, job, timeout, request.ByteSize(), ready)
        return str(response.talk_id)

    async def update(self, job: Job, timeout: float, ready: Ready = None) -> str:
        """Replace the metadata of an existing talk (talk_id set, no audio)."""
        request = pb.UploadTalkRequest(metadata=talk_metadata(job), talk_id=job.talk_id or "")
        response = await self._unary("Upload", request.SerializeToString(), job, timeout, 0, ready)
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
        response = await self._unary("Search", request, None, timeout)
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
        response = await self._unary("Get", request, None, timeout)
        return [
            TalkRecord(
                talk.id, talk.connection_id, {field.name: field.value for field in talk.talk_fields},
                _STATES.get(talk.talk_state.processing_state, f"STATE_{talk.talk_state.processing_state}"),
            )
            for talk in response.talk
        ]

    async def upload_stream(self, job: Job, info: AudioInfo,
                            chunks: Callable[[], AsyncGenerator[tuple[bytes, int], None]], timeout: float,
                            on_bytes: Callable[[int], None], *, size: int = 0, cautious: bool = False,
                            ready: Ready = None) -> str:
        """Stream a file of about `size` bytes: talk metadata, audio metadata, then the chunks
        `chunks()` gives (messages.chunk_request, each with the audio bytes it carries; called
        again for a stream sent again after a full connection refused it), driving the call by hand.

        `cautious` (after an attempt whose answer gRPC lost): pause after the metadata and
        after the first chunk for an early answer, so a refusal arrives while no write is
        in flight and its status is not lost again.
        """
        headers, auth = self._metadata(job)

        async def once(connection: Connection) -> str:
            call = connection.stub.UploadAsStream(metadata=headers, timeout=self.pool.deadline(timeout, size))
            source = chunks()

            def sent(n: int) -> None:  # a chunk left: the connection is alive, though the call has not ended
                connection.moved(self.pool.bytes)
                on_bytes(n)

            try:
                return await _drive_stream(call, stream_messages(job, info, source), sent, auth, cautious)
            finally:
                if not call.done():
                    call.cancel()
                await source.aclose()  # a stream refused or failed lets go of its file now, not when collected

        return await self.pool.call(size, once, ready=ready)


async def _drive_stream(call: aio.StreamUnaryCall, messages: AsyncIterator[tuple[bytes, int]],
                        on_bytes: Callable[[int], None], auth: str, cautious: bool) -> str:
    """Write an UploadAsStream's messages by hand, then read its answer; raise CallFailure."""
    complete = False
    try:
        written = 0
        async for message, audio_bytes in messages:
            if cautious and 0 < written <= 3:  # after the metadata, the audio metadata, the first chunk
                await _early_answer(call, CAUTIOUS_WAIT)
            if call.done():
                break  # the server has answered early (a rejection): stop writing, read its status
            await call.write(message)
            del message  # gRPC has its own copy now: not held while the next chunk is read
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
    except asyncio.CancelledError:
        raise closed_under(auth, request_complete=complete) from None
    return str(response.talk_id)
