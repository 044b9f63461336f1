"""Several connections: calls spread over a pool of them, and a server's per-connection stream
limit met by sending a refused call again at once on a connection with room, never as a retry."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import math
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from conftest import API_KEY, ThreadedEmulator, cli_env, run_cli, upload_argv
from grpc import aio
from test_run_upload import Collecting, options

from bulk_uploader import samples
from bulk_uploader.audio import AudioFormat
from bulk_uploader.emulator import Emulator, EmulatorOptions, FaultOptions
from bulk_uploader.pipeline import run_upload
from bulk_uploader.results import read_records
from bulk_uploader.transport import Transport
from bulk_uploader.transport.delivery import DeliveryRate
from bulk_uploader.transport.pool import (
    INITIAL_WINDOW,
    MAX_CONNECTIONS_FOR_BYTES,
    PROBE_ROUNDS,
    START_RATE,
    STREAMS_PER_CONNECTION,
    ConnectionPool,
)

MiB = 1024 * 1024


@pytest.fixture
async def open_channel() -> AsyncIterator[Callable[[], aio.Channel]]:
    """Opens channels for a pool that makes no call (nothing needs to listen); all closed after."""
    channels: list[aio.Channel] = []

    def open_one() -> aio.Channel:
        channels.append(aio.insecure_channel("127.0.0.1:9"))
        return channels[-1]

    yield open_one
    for channel in channels:
        await channel.close()


def test_a_server_that_takes_four_calls_a_connection_gets_every_row_once_over_several(tmp_path: Path) -> None:
    server = ThreadedEmulator(EmulatorOptions(api_keys=[API_KEY], max_streams=4,
                                              faults=FaultOptions(latency_ms=20)))
    try:
        rows = 240
        manifest = samples.write_dataset(tmp_path, rows, sizes=(1000,))
        result = run_cli(*upload_argv(server.target, manifest, "--concurrency", "24")[3:],
                         env=cli_env(API_KEY=API_KEY))
        assert result.returncode == 0, result.stderr
        records = read_records(manifest.with_name("manifest.jsonl.results.jsonl"))
        assert len(records) == rows and {r["status"] for r in records} == {"uploaded"}
        assert {r["attempts"] for r in records} == {1} and not any(r.get("unknown_outcomes") for r in records)
        assert len({t.fields["client_id"] for t in server.emulator.store.talks()}) == server.emulator.store.count() == rows
        assert "possible duplicates" not in result.stderr and "unreachable" not in result.stderr
        assert " 0 retries" in result.stderr
        assert "call(s) it refused were sent again at once on a connection with room" in result.stderr  # the limit was met
        assert len(server.emulator.peers) > 1  # over more than one TCP connection
        assert sum(server.emulator.peers.values()) == rows  # refused streams never reached the service
    finally:
        server.close()


async def test_streams_over_a_fixed_pool_wait_for_room_and_arrive_whole(tmp_path: Path) -> None:
    emulator = Emulator(EmulatorOptions(api_keys=[API_KEY], max_streams=2, faults=FaultOptions(latency_ms=10)))
    await emulator.start()
    try:
        rows = 600  # enough calls ending and starting that some meet a connection the server still counts full
        manifest = samples.write_dataset(tmp_path, rows, sizes=(20_000,), formats=(AudioFormat.WAV,))
        run = options(emulator, manifest, concurrency=24, connections=2, stream_threshold=8 * 1024,
                      chunk_size=8 * 1024)
        summary = await run_upload(run, Collecting())
        assert (summary.stats.uploaded, summary.stats.retries, summary.stats.outages) == (rows, 0, 0)
        assert summary.stats.refused_streams > 0  # streams refused part-way through their chunks, sent again
        assert summary.stats.connections == 2 and len(emulator.peers) == 2
        assert summary.stats.bytes_sent == summary.stats.bytes_uploaded  # a refused try's bytes are not counted
        records = read_records(manifest.with_name("manifest.jsonl.results.jsonl"))
        assert {r["rpc"] for r in records} == {"UploadAsStream"} and len(records) == rows
        talks = {t.fields["client_id"]: t for t in emulator.store.talks()}
        assert len(talks) == rows
        for record in records:
            audio = (tmp_path / record["audio_path"]).read_bytes()
            assert record["bytes"] == len(audio)
            client = samples.metadata(record["line"] - 1)["client_id"]
            assert talks[client].sha256 == hashlib.sha256(audio).hexdigest()
    finally:
        await emulator.stop(grace=0.2)


async def test_the_pool_is_sized_by_the_round_trip_and_the_streams(
        open_channel: Callable[[], aio.Channel]) -> None:
    far = ConnectionPool(open_channel, size=None, concurrency=12)
    far.send_buffer = 4 * MiB
    assert len(far.connections) == 1
    far.measured(0.040)  # 1 Gbit/s at 40 ms keeps 5 MB in flight: more than one send buffer holds
    assert len(far.connections) == 4
    far.measured(0.5)
    assert len(far.connections) == MAX_CONNECTIONS_FOR_BYTES < far.ceiling
    near = ConnectionPool(open_channel, size=None, concurrency=12)
    near.measured(0.0005)  # a LAN: one connection's buffer covers any link
    assert len(near.connections) == 1

    two = ConnectionPool(open_channel, size=2, concurrency=8)
    big = await two.acquire(64 * MiB)
    small = [await two.acquire(MiB) for _ in range(3)]
    assert all(c is not big for c in small)  # calls go where the fewest bytes are in flight
    two.release(big, 64 * MiB)
    assert await two.acquire(MiB) is big
    two.measured(0.5)
    assert len(two.connections) == 2  # a fixed size stays as it is

    wide = ConnectionPool(open_channel, size=None, concurrency=250)
    assert len(wide.connections) == 3 and wide.connections[0].limit == STREAMS_PER_CONNECTION

    one = ConnectionPool(open_channel, size=1, concurrency=8)
    (first,) = one.connections
    assert not one.refused(first, 1)  # alone on its connection: not a stream limit
    assert one.refused(first, 5) and first.limit == 4 and one.stream_limit == 4
    taken = [await one.acquire(0) for _ in range(4)]
    for _ in range(PROBE_ROUNDS * 4):  # rounds at the limit without a refusal: one more is tried
        one.release(taken.pop(), 0)
        taken.append(await one.acquire(0))
    assert first.limit == 5 and one.stream_limit == 5


async def test_deadlines_and_stall_allowances_grow_with_the_bytes_that_share_the_uplink(
        open_channel: Callable[[], aio.Channel]) -> None:
    pool = ConnectionPool(open_channel, size=2, concurrency=8, rate=MiB)
    went_through(pool, 5 * MiB)  # faster than the 1 MiB/s assumed, which stands
    first = await pool.acquire(MiB)
    # Alone so far, yet up to 7 more calls of its size may join it.
    assert pool.deadline(60, MiB) == 60 + 7
    others = [await pool.acquire(8 * MiB) for _ in range(3)]
    assert {first, *others} == set(pool.connections)  # spread over both connections
    assert pool.deadline(60, MiB) == 60 + 24  # the 24 MiB beside it, on either connection, weigh more
    assert pool.deadline(60, 8 * MiB) == 60 + 7 * 8
    assert pool.stalled(30) == []  # nothing moved since the calls began: the allowance is 30 s + 25 s
    first.moved_at -= 56
    assert pool.stalled(30) == [first]
    old = pool.replace([first])
    assert old == [first.channel] and first not in pool.connections and pool.stalled(30) == []
    pool.release(first, MiB)  # a call on the old connection ended: it no longer weighs on the others
    assert pool.bytes == 24 * MiB


def went_through(pool: ConnectionPool, rate: float) -> None:
    """Calls that went through in the last 10 s showed `rate` bytes/s."""
    now = time.monotonic()
    pool.delivery.began(now - 10)
    pool.delivery.ended(now, int(10 * rate))


async def test_until_calls_go_through_the_allowances_let_a_first_round_cross_a_1_mbit_uplink(
        open_channel: Callable[[], aio.Channel]) -> None:
    pool = ConnectionPool(open_channel, size=4, concurrency=32, rate=MiB)
    assert pool.deadline(60, 4 * MiB) == 60 + 31 * 4 * MiB / START_RATE == 60 + 31 * 4 * MiB / 125_000
    first = [await pool.acquire(4 * MiB, whole=True) for _ in range(4)]  # the window, then one a connection
    assert set(first) == set(pool.connections)
    # 16 MiB over a 2 Mbit/s uplink take 67 s, all arriving then; at the 1 MiB/s assumed
    # before, the allowance was 30 s + 16 s and every connection was replaced as stalled.
    for connection in pool.connections:
        connection.moved_at -= 30 + 16 * MiB / START_RATE - 5
    assert pool.stalled(30) == []
    for connection in pool.connections:
        connection.moved_at -= 10
    assert pool.stalled(30) == pool.connections  # a connection silent past that is still replaced
    pool.release(first[0], 4 * MiB, 4 * MiB, whole=True)  # through: the rate it showed is used from here
    assert pool.allowed_rate(time.monotonic()) == MiB


async def test_a_connection_silent_while_calls_elsewhere_took_the_link_is_given_their_time(
        open_channel: Callable[[], aio.Channel]) -> None:
    pool = ConnectionPool(open_channel, size=2, concurrency=8, rate=MiB)
    went_through(pool, 5 * MiB)  # 1 MiB/s is allowed
    silent, other = [await pool.acquire(4 * MiB) for _ in range(2)]
    assert await pool.acquire(4 * MiB) is silent
    silent.moved(pool.bytes)  # an answer came on it while 12 MiB were in flight
    pool.release(other, 4 * MiB, 4 * MiB)  # the other connection's call ends
    later = [await pool.acquire(4 * MiB) for _ in range(2)]
    assert later == [other, other] and pool.bytes == 16 * MiB
    for connection in later:
        pool.release(connection, 4 * MiB, 4 * MiB)
    # 8 MiB are left, all on it; its silence may last as long as the most that was in flight
    # meanwhile takes to cross (16 MiB), not just what is left.
    assert pool.bytes == 8 * MiB and silent.ahead == 16 * MiB
    silent.moved_at -= 2 + 16 - 1
    assert pool.stalled(2) == []
    silent.moved_at -= 2
    assert pool.stalled(2) == [silent]


def test_the_delivery_rate_is_payload_through_per_second_of_calls_in_flight_over_the_last_window() -> None:
    rate = DeliveryRate()
    rate.began(100.0)
    rate.began(100.0)
    assert rate.rate(110.0) is None  # nothing through yet
    rate.ended(120.0, 2 * MiB)
    assert rate.rate(120.0) == 2 * MiB / 20
    rate.ended(130.0, 0)  # a call that failed carried nothing through; nothing in flight from here
    assert rate.rate(500.0) == 2 * MiB / 30  # idle time does not count
    rate.began(500.0)
    rate.ended(510.0, MiB)
    assert rate.rate(510.0) == 3 * MiB / 40
    rate.began(510.0)
    rate.ended(560.0, 5 * MiB)  # 90 s of calls in flight: the first 40 s, older than the window, leave it...
    assert rate.rate(560.0) == 8 * MiB / 90  # ... but the slower average over the horizon bounds it
    rate.began(560.0)
    rate.ended(1300.0, 600 * MiB)  # 830 s in all: both measure from the last mark before them, at 90 s
    assert rate.rate(1300.0) == 600 * MiB / 740


def test_thousands_of_calls_a_second_keep_the_rate_in_little_memory() -> None:
    # 4,000 small files a second for 30 s: a mark for each call that went through held 120,000
    # of them, about 14 MiB, for as long as the run went on at that pace.
    rate = DeliveryRate()
    tracemalloc.start()
    try:
        held = tracemalloc.get_traced_memory()[0]
        for n in range(120_000):  # 32 calls in flight, each 8 ms long
            now = n / 4000
            if n >= 32:
                rate.ended(now, 16 * 1024)
            rate.began(now)
        held = tracemalloc.get_traced_memory()[0] - held
    finally:
        tracemalloc.stop()
    assert held < 1024 * 1024, held
    measured = rate.rate(120_000 / 4000)
    assert measured is not None and abs(measured / (16 * 1024 * 4000) - 1) < 0.01, measured


def test_long_calls_ending_together_do_not_make_the_rate_look_faster_than_the_link() -> None:
    # 16 calls of 1 MiB share a 100 KiB/s link from t=0 and all end at 163.84 s; a 1 KiB call
    # goes through every 20 s meanwhile. The last 30 s hold all 16 MiB, but they crossed the
    # link over 164 s: counting them over 30 s would make the link look 3.8 times as fast, and
    # every deadline and stall allowance that follows as much too short.
    link = 100 * 1024
    rate = DeliveryRate()
    for _ in range(16):
        rate.began(0.0)
    for k in range(9):
        rate.began(20.0 * k)
        rate.ended(20.0 * k + 1, 1024)
    end = 16 * MiB / link
    for _ in range(16):
        rate.ended(end, MiB)
    measured = rate.rate(end)
    assert measured is not None and measured <= 1.05 * link, measured / link


async def test_allowances_follow_a_delivery_rate_slower_than_the_assumed_one(
        open_channel: Callable[[], aio.Channel]) -> None:
    pool = ConnectionPool(open_channel, size=1, concurrency=8, rate=MiB)
    assert pool.deadline(60, MiB) == 60 + 7 * MiB / START_RATE  # nothing through yet: 1 Mbit/s assumed
    now = time.monotonic()
    pool.delivery.began(now - 100)
    pool.delivery.ended(now - 80, 100 * MiB)  # 5 MiB/s: faster than assumed, which stands
    assert pool.deadline(60, MiB) == 60 + 7
    pool.delivery.began(now - 60)
    pool.delivery.ended(now, 2 * MiB)  # the last 60 s carried 2 MiB: 0.1 MiB/s over the last 30 s and more
    slow = pool.allowed_rate(time.monotonic())
    assert slow == pytest.approx(2 * MiB / 60, rel=0.01)
    assert pool.deadline(60, MiB) == pytest.approx(60 + 7 * MiB / slow, rel=0.01)
    await pool.acquire(4 * MiB)
    pool.connections[0].moved_at -= 30 + 4 * MiB / slow - 5
    assert pool.stalled(30) == []  # 4 MiB in flight take about 2 min at what came through
    pool.connections[0].moved_at -= 10
    assert pool.stalled(30) == pool.connections


async def test_files_sent_whole_start_within_a_window_until_calls_through_show_the_rate(
        open_channel: Callable[[], aio.Channel]) -> None:
    pool = ConnectionPool(open_channel, size=1, concurrency=16, rate=MiB)
    assert pool.window == INITIAL_WINDOW == 4 * MiB
    first = [await pool.acquire(MiB, whole=True) for _ in range(4)]
    waiting = asyncio.ensure_future(pool.acquire(MiB, whole=True))
    stream = await pool.acquire(64 * MiB)  # a stream shows its progress chunk by chunk: no window
    await asyncio.sleep(0.01)
    assert not waiting.done() and pool.whole == 4 * MiB and pool.bytes == 68 * MiB
    pool.release(first[0], MiB, 0, whole=True)  # failed: the window stays, the room it left is taken
    assert await waiting is first[0] and pool.window == 4 * MiB
    late = asyncio.ensure_future(pool.acquire(MiB, whole=True))
    await asyncio.sleep(0.01)
    assert not late.done()
    pool.release(first[1], MiB, MiB, whole=True)  # went through: the rate is known, the window opens
    assert pool.window == math.inf and await late is first[0]
    more = [await pool.acquire(8 * MiB, whole=True) for _ in range(4)]
    assert pool.whole == 36 * MiB and len(more) == 4
    pool.release(stream, 64 * MiB)
    for connection in [first[2], first[3], first[0], first[0]]:
        pool.release(connection, MiB, 0, whole=True)
    for connection in more:
        pool.release(connection, 8 * MiB, 0, whole=True)
    assert pool.whole == 0 and pool.bytes == 0


def test_past_the_window_a_file_sent_whole_goes_only_on_a_connection_that_carries_nothing(
        open_channel: Callable[[], aio.Channel]) -> None:
    pool = ConnectionPool(open_channel, size=3, concurrency=16, rate=MiB)
    big = pool._take(32 * MiB, whole=True)  # bigger than the window, on a connection of its own
    other = pool._take(2 * MiB, whole=True)
    assert big is not None and other is not None and big is not other
    third = pool._take(8 * MiB, whole=True)
    assert third is not None and third not in (big, other)
    assert pool._take(MiB, whole=True) is None  # every connection carries one: the window holds
    assert pool._take(MiB) is not None  # a stream is not held


async def test_a_connection_replaced_while_the_pool_waits_for_one_to_connect_is_not_ready() -> None:
    loop = asyncio.get_running_loop()
    told: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _, context: told.append(context))
    transport = Transport("127.0.0.1:9", None, insecure=True, max_message_bytes=MiB, connections=2)  # nothing listens
    try:
        waiting = asyncio.ensure_future(transport.wait_ready(5))
        await asyncio.sleep(0.2)
        await transport.pool.connections[0].channel.close()  # as the stall watcher closes a replaced one
        assert await waiting is False
        gc.collect()
        await asyncio.sleep(0)
        assert told == []  # no "Task exception was never retrieved" on the user's screen
    finally:
        loop.set_exception_handler(None)
        await transport.close()
