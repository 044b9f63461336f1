"""The connections to the service: a pool of gRPC channels, each its own TCP connection, and
which of them a call goes over.

One connection is not always enough. Its TCP send buffer (the kernel's largest, tcp_wmem,
4 MiB by default) caps what it carries per round trip, so one connection cannot fill a link
whose bandwidth-delay product is larger (1 Gbit/s at 40 ms: 5 MB); and a server or front end
lets one connection carry only so many calls at once (HTTP/2's MAX_CONCURRENT_STREAMS, often
100): gRPC's client queues the calls beyond on that connection, and refuses a few more with
REFUSED_STREAM when the server still counts streams the client saw end. So calls spread
over several connections:

- a call takes the connection with the fewest payload bytes in flight (then the fewest
  calls) among those with room for one more stream, so a big file does not slow the calls
  queued behind it on one connection; one whose last call found no service comes last
  until its channel connects again, as calls on it would fail at once;
- automatic sizing, for the bytes in flight: a link carries its bandwidth times the round
  trip in flight, and one connection at most its send buffer, so once the round trip is
  measured (preflight), enough connections are opened that their send buffers together hold
  what LINK_RATE bytes/s keep in flight (1 Gbit/s at 40 ms RTT: 4; a LAN: 1, as one
  connection's buffer then covers any link and more would only cost CPU), at most
  MAX_CONNECTIONS_FOR_BYTES: more flows fill a link no better, and lose more to each other;
- automatic sizing, for the calls: a connection is assumed to take STREAMS_PER_CONNECTION
  streams; ceil(concurrency / STREAMS_PER_CONNECTION) are opened at once, and another
  whenever none has room, up to MAX_CONNECTIONS;
- a fixed size opens that many and no more, assumes no stream limit, and a call that finds
  them all full waits for room;
- a refusal shows a connection takes fewer streams than assumed (refused(): the refused
  call is then sent again at once, elsewhere); as the server may count a stream a little
  longer than the client does, a limit learned too low grows back by one after
  PROBE_ROUNDS rounds at it without a refusal.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import grpc
from grpc import aio

from bulk_uploader.errors import CallFailure
from bulk_uploader.flow import wait_in_line
from bulk_uploader.proto import speechsense_pb2 as pb
from bulk_uploader.proto import speechsense_pb2_grpc as pb_grpc
from bulk_uploader.records import Record, record
from bulk_uploader.transport.delivery import DeliveryRate

# Streams a connection is assumed to take at once until a refusal shows fewer: what front
# ends commonly allow, and the least HTTP/2 advises a server to allow.
STREAMS_PER_CONNECTION = 100
MAX_CONNECTIONS = 32  # the most automatic sizing opens
LINK_RATE = 400e6  # bytes/s (3.2 Gbit/s) whose bandwidth-delay product the connections' send buffers hold
MAX_CONNECTIONS_FOR_BYTES = 8
PROBE_ROUNDS = 4  # rounds of calls at a learned limit, without a refusal, before trying one more
DEFAULT_SEND_BUFFER = 4 * 1024 * 1024  # Linux's default tcp_wmem maximum
# Refusals of a full connection one call may meet, each sent again at once elsewhere; past
# them it is the caller's failure (a call that never reached the service).
MAX_REFUSED_STREAMS = 20
# The slowest the uplink may carry the payload in flight (bytes/s) before the calls' deadlines,
# and a connection's allowance before it counts as stalled, run out (UploadOptions.min_rate),
# until calls that went through show a slower one (DeliveryRate).
MIN_RATE = 1024 * 1024
# Until calls that went through show the link's rate, the allowances assume the slowest uplink
# the start of a run is made for: the first files sent whole (the window, or one on each
# connection: up to 8 x 4 MiB) must cross it within them.
START_RATE = 125_000  # bytes/s: 1 Mbit/s
# The payload of files sent whole that may be in flight at the start of a run (beyond one
# call on each connection), until calls that went through show what the link carries
# (DeliveryRate), which the allowances then follow: such a call shows nothing until it ends,
# and calls sharing a link all end late, together, so more than the link carries within the
# allowances made for an unknown one would all run out of time at once.
INITIAL_WINDOW = 4 * 1024 * 1024
# How calls can end without a word from the server: such an end is no sign the connection is alive.
_ENDS_UNHEARD = frozenset({"DEADLINE_EXCEEDED", "UNAVAILABLE", "CANCELLED"})
T = TypeVar("T")
Ready = Callable[[], Awaitable[object]] | None  # awaited once a call has a connection, just before it leaves


def send_buffer_bytes(path: Path = Path("/proc/sys/net/ipv4/tcp_wmem")) -> int:
    """The most one TCP connection may hold unacknowledged: the kernel's largest send buffer."""
    try:
        return max(64 * 1024, int(path.read_text().split()[2]))
    except (OSError, ValueError, IndexError):
        return DEFAULT_SEND_BUFFER


def talk_stub(channel: aio.Channel) -> pb_grpc.TalkServiceStub:
    """The TalkService stub, its Upload and UploadAsStream taking requests in wire form (bytes:
    transport.messages builds them), so that a file's bytes are not copied into a message and
    out again; gRPC sends bytes as they are when a method has no serializer."""
    stub = pb_grpc.TalkServiceStub(channel)
    service = pb.DESCRIPTOR.services_by_name["TalkService"].full_name
    answer = pb.UploadTalkResponse.FromString
    stub.Upload = channel.unary_unary(f"/{service}/Upload", response_deserializer=answer,  # type: ignore[method-assign]
                                      _registered_method=True)
    stub.UploadAsStream = channel.stream_unary(  # type: ignore[method-assign]
        f"/{service}/UploadAsStream", response_deserializer=answer, _registered_method=True)
    return stub


@record(slots=True, eq=False)
class Connection(Record):
    """One channel (one TCP connection) and what is in flight on it."""

    channel: aio.Channel
    stub: pb_grpc.TalkServiceStub
    limit: int  # streams it takes at once, as far as is known
    calls: int = 0
    bytes: int = 0  # payload of the calls in flight
    full_ends: int = 0  # calls ended while it was at its limit, since its last refusal or growth
    # Monotonic time something last moved on it: a call began on it idle, a stream's message
    # left, or the server answered a call.
    moved_at: float = 0.0
    # The most payload in flight on every connection since: the calls on the others shared the
    # link with its own, so its silence may last as long as all of that takes to cross.
    ahead: int = 0
    # A call on it found no service (its connection lost or refused) and none has gone through
    # since: calls go elsewhere while its channel is not connected (they would fail at once).
    down: bool = False

    def __init__(self, channel: aio.Channel, stub: pb_grpc.TalkServiceStub, limit: int, calls: int = 0,
                 bytes: int = 0, full_ends: int = 0, moved_at: float = 0.0,
                 ahead: int = 0, down: bool = False) -> None:  # bulk_uploader.records
        self.channel = channel
        self.stub = stub
        self.limit = limit
        self.calls = calls
        self.bytes = bytes
        self.full_ends = full_ends
        self.moved_at = moved_at
        self.ahead = ahead
        self.down = down

    def connected(self, ask: bool = False) -> bool:
        """Whether its channel is connected now (`ask`: asking it to connect if idle, as an idle one waits to be asked)."""
        return self.channel.get_state(try_to_connect=ask) is grpc.ChannelConnectivity.READY

    def unready(self) -> bool:
        """Down and not connected again yet."""
        if self.connected(ask=True):
            self.down = False
        return self.down

    def moved(self, in_flight: int) -> None:
        """Something came through: the connection is alive (`in_flight`: the pool's payload in flight)."""
        self.moved_at = time.monotonic()
        self.ahead = in_flight


class ConnectionPool:
    """The run's connections; `size` None sizes them from the concurrency and the bytes in flight."""

    def __init__(self, open_channel: Callable[[], aio.Channel], *, size: int | None, concurrency: int,
                 rate: float = MIN_RATE) -> None:
        self._open_channel = open_channel
        self.concurrency = concurrency
        self.rate = rate
        self.fixed = size is not None
        self.ceiling = size if size is not None else min(MAX_CONNECTIONS, concurrency)
        # What a connection is assumed to take until refusals show less; and a new one, since.
        self.assumed_limit = STREAMS_PER_CONNECTION if size is None else concurrency
        self.stream_limit = self.assumed_limit
        self.send_buffer = send_buffer_bytes()
        self.refused_streams = 0  # refusals of a full connection, sent again elsewhere
        self.refused_above = 0  # the limit the latest refusal showed (0: none refused)
        self.bytes = 0  # payload of the calls in flight, on every connection, old ones included
        self.whole = 0  # of which calls sent whole carry (within the window)
        self.delivery = DeliveryRate()
        self._waiters: deque[asyncio.Future[None]] = deque()
        first = size if size is not None else min(self.ceiling, math.ceil(concurrency / STREAMS_PER_CONNECTION))
        self.connections = [self._new() for _ in range(max(1, first))]

    def _new(self) -> Connection:
        channel = self._open_channel()
        return Connection(channel, talk_stub(channel), self.stream_limit)

    @property
    def window(self) -> float:
        """How much payload of calls sent whole may be in flight: INITIAL_WINDOW until the delivery
        rate is measured, which the allowances follow from then on; then no limit."""
        return math.inf if self.delivery.measured else INITIAL_WINDOW

    def _take(self, size: int, whole: bool = False) -> Connection | None:
        """The connection for a call of `size` payload bytes (`whole`: sent in one message, within
        the window), counted as on it; None when all are full or the window is."""
        # Past the window, a call sent whole still goes on a connection that carries nothing, so
        # that every connection's TCP window opens from the start, as it would with calls to carry.
        idle_only = whole and self.whole and self.whole + size > self.window
        best, rank = None, None
        for connection in self.connections:  # the least loaded, one that is down last
            if connection.calls < connection.limit and not (idle_only and connection.calls):
                mine = (connection.down and connection.unready(), connection.bytes, connection.calls)
                if best is None or mine < rank:
                    best, rank = connection, mine
        if best is None and not idle_only and not self.fixed and len(self.connections) < self.ceiling:
            best = self._new()
            self.connections.append(best)
        if best is None:
            return None
        if not best.calls:
            best.moved(self.bytes)  # idle until now: its silence counts from here (its own payload: below)
        best.calls += 1
        best.bytes += size
        self.bytes += size
        for connection in self.connections:
            if connection.ahead < self.bytes:
                connection.ahead = self.bytes
        if whole:
            self.whole += size
        self.delivery.began(time.monotonic())
        return best

    def measured(self, round_trip: float) -> None:
        """The path's round trip (seconds) is known: open the connections whose send buffers
        together hold what the link keeps in flight (automatic sizing)."""
        wanted = min(MAX_CONNECTIONS_FOR_BYTES, self.ceiling, math.ceil(round_trip * LINK_RATE / self.send_buffer))
        while not self.fixed and len(self.connections) < wanted:
            self.connections.append(self._new())

    def try_take(self, size: int, whole: bool = False) -> Connection | None:
        """A connection with room now for one more call of `size` bytes, when no call waits for room
        (a plain call: the usual case costs no coroutine); None otherwise."""
        return self._take(size, whole) if not self._waiters else None

    async def acquire(self, size: int, whole: bool = False) -> Connection:
        """A connection with room for one more call of `size` bytes, waiting for room if none has it."""
        if (connection := self.try_take(size, whole)) is not None:
            return connection
        while True:
            await wait_in_line(self._waiters, self._wake)
            if (connection := self._take(size, whole)) is not None:
                self._wake()  # more room may have come than this call needed
                return connection

    async def call(self, size: int, call: Callable[[Connection], Awaitable[T]], whole: bool = False,
                   ready: Ready = None) -> T:
        """`call` on a connection with room for `size` payload bytes (`whole`: sent in one message,
        within the window); again at once on another when the connection refuses it for being
        full (CallFailure.refused_stream). `ready` is awaited once a connection is taken, just
        before the call first leaves (the attempt's journal line: never written for a call that
        waited for room and did not leave)."""
        refusals = 0
        while True:
            connection = self.try_take(size, whole)
            if connection is None:
                connection = await self.acquire(size, whole)
            calls_at_start = connection.calls
            delivered = 0
            try:
                if ready is not None:
                    await ready()
                    ready = None
                result = await call(connection)
            except CallFailure as failure:
                if failure.code not in _ENDS_UNHEARD:
                    connection.moved(self.bytes)
                if failure.not_sent and not failure.refused_stream:
                    connection.down = True
                if not (failure.refused_stream and refusals < MAX_REFUSED_STREAMS
                        and self.refused(connection, calls_at_start)):
                    raise
                refusals += 1
            else:
                connection.moved(self.bytes)
                connection.down = False
                delivered = size
                return result
            finally:
                self.release(connection, size, delivered, whole)

    def release(self, connection: Connection, size: int, delivered: int = 0, whole: bool = False) -> None:
        """A call of `size` bytes on `connection` has ended (`delivered`: `size` if it went through)."""
        self.delivery.ended(time.monotonic(), delivered)
        if whole:
            self.whole -= size
        if connection.calls >= connection.limit < self.assumed_limit:
            connection.full_ends += 1
            if connection.full_ends >= PROBE_ROUNDS * connection.limit:
                connection.limit += 1
                connection.full_ends = 0
                self.stream_limit = max(self.stream_limit, connection.limit)
        connection.calls -= 1
        connection.bytes -= size
        self.bytes -= size
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def refused(self, connection: Connection, calls_at_start: int) -> bool:
        """A stream refused on `connection`, which carried `calls_at_start` calls (this one
        included) when it began: whether that was its stream limit, so the call is sent again.

        The server counts no more streams than this client had open on it, so it took at most
        `calls_at_start - 1`: the limit comes down to that (a little lower, when the server
        still counted streams the client had seen end; release() lets it grow back). A
        connection that carried nothing else refused for another reason (the server going
        away): that is the caller's failure.
        """
        if calls_at_start < 2:
            return False
        connection.limit = min(connection.limit, calls_at_start - 1)
        connection.full_ends = 0
        self.stream_limit = self.refused_above = connection.limit
        self.refused_streams += 1
        return True

    # The connections most often share one uplink, so the allowances below count the payload in
    # flight on all of them: over a slow link, each call goes at a share of it.

    def allowed_rate(self, now: float) -> float:
        """The rate the allowances assume: `rate`, or the delivery rate where calls showed a slower
        one; START_RATE until calls that went through have shown any."""
        if not self.delivery.measured:
            return min(self.rate, START_RATE)
        measured = self.delivery.rate(now)
        return self.rate if measured is None else min(self.rate, measured)

    def deadline(self, timeout: float, size: int) -> float:
        """The deadline of a call of `size` payload bytes whose own is `timeout` seconds: plus the
        time the payload of the calls beside it takes at allowed_rate() (those in flight now, or as
        many more of its size as the concurrency lets join it, whichever is more: calls that join
        later slow it too)."""
        return timeout + max(self.bytes - size, size * (self.concurrency - 1)) / self.allowed_rate(time.monotonic())

    def stalled(self, seconds: float) -> list[Connection]:
        """The connections with calls in flight on which nothing has moved for `seconds`, plus the
        time the payload in flight takes at allowed_rate(): a call sent whole shows nothing until
        it ends, and the calls sharing a slow link all end late, together. The payload is the most
        that was in flight since the connection last moved: calls that ended elsewhere since
        shared the link with its own."""
        now = time.monotonic()
        rate = self.allowed_rate(now)
        return [c for c in self.connections if c.calls and now - c.moved_at > seconds + c.ahead / rate]

    def replace(self, stalled: list[Connection]) -> list[aio.Channel]:
        """Open a new connection in place of each of `stalled`; returns their channels, to be closed.

        Calls still on an old connection end with it; their releases count against it, not
        against its replacement.
        """
        self.connections = [self._new() if c in stalled else c for c in self.connections]
        for _ in range(len(self._waiters)):
            self._wake()
        return [c.channel for c in stalled]
