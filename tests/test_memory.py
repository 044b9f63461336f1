"""The memory bound: requests built in wire form byte for byte as protobuf builds them, files read
straight into them, and the budget that covers read-ahead and calls in flight together."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest
from conftest import API_KEY, run_cli
from test_run_upload import Collecting

from bulk_uploader import reader, samples
from bulk_uploader.audio import AudioFormat, AudioInfo
from bulk_uploader.auth import Credentials
from bulk_uploader.budget import MemoryBudget, share
from bulk_uploader.emulator import Emulator
from bulk_uploader.emulator.faults import FaultOptions
from bulk_uploader.model import Job, User
from bulk_uploader.options import UploadOptions
from bulk_uploader.pipeline import run_upload
from bulk_uploader.proto import speechsense_pb2 as pb
from bulk_uploader.transport import chunk_prefix, chunk_request, place_upload, upload_request, upload_room

MiB = 1024 * 1024
FIELDS = {"operator_name": "Анна", "client_id": "c-1", "date": "2025-04-24T11:34:19Z", "k" * 200: "v" * 1024}
INFOS = [AudioInfo(AudioFormat.WAV), AudioInfo(AudioFormat.MP3), AudioInfo(AudioFormat.OGG_OPUS),
         AudioInfo(AudioFormat.PCM, 8000, 1), AudioInfo(AudioFormat.PCM, 48000, 2)]


def job(size: int, fmt: AudioFormat | None = None, **extra: object) -> Job:
    return Job("row-1", 1, "audio", "conn-1", dict(FIELDS), users=(User("op-7", "operator", {"team": "north"}),),
               size=size, format=fmt, **extra)  # type: ignore[arg-type]


def protobuf_upload(j: Job, info: AudioInfo, data: bytes) -> bytes:
    from bulk_uploader.transport import audio_metadata, talk_metadata

    request = pb.UploadTalkRequest(metadata=talk_metadata(j))
    request.audio.audio_metadata.CopyFrom(audio_metadata(info))
    request.audio.audio_data.data = data
    return request.SerializeToString(deterministic=True)  # map keys sorted, as ours are


# Sizes on both sides of every varint length boundary the prefixes have.
SIZES = [1, 2, 100, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, 4 * MiB]


@pytest.mark.parametrize("info", INFOS, ids=lambda i: i.describe())
def test_an_upload_built_in_wire_form_is_what_protobuf_serializes(info: AudioInfo) -> None:
    for size in SIZES:
        data = os.urandom(size)
        j = job(size, info.format if info.format is AudioFormat.PCM else None, sample_rate=info.sample_rate,
                channels=info.channels)
        wire = upload_request(j, info, data)
        assert wire == protobuf_upload(j, info, data)
        parsed = pb.UploadTalkRequest.FromString(wire)
        assert parsed.audio.audio_data.data == data and dict(parsed.metadata.fields) == FIELDS
        # Read into the room upload_room left: the room is set to the format found when it is sent.
        buffer = upload_room(j) + data
        assert place_upload(j, info, buffer) == wire


def test_a_room_that_guessed_wrong_is_rewritten_in_place_or_the_request_built_anew(tmp_path: Path) -> None:
    data = os.urandom(5000)
    path = tmp_path / "a.mp3"
    path.write_bytes(data)
    sniffed = job(len(data))  # room for a WAV; the file is an MP3: a prefix of the same length
    buffer = reader._read_file(path, len(data), 0, reader._buffer(len(data), upload_room(sniffed)))
    mp3 = AudioInfo(AudioFormat.MP3)
    assert place_upload(sniffed, mp3, buffer) is buffer  # rewritten in place
    assert buffer == protobuf_upload(sniffed, mp3, data)
    declared_pcm = job(len(data), AudioFormat.PCM, sample_rate=8000, channels=1)
    found = AudioInfo(AudioFormat.PCM, 48000, 2)  # a longer prefix than the room: built anew
    buffer = reader._read_file(path, len(data), 0, reader._buffer(len(data), upload_room(declared_pcm)))
    assert place_upload(declared_pcm, found, buffer) == protobuf_upload(declared_pcm, found, data)


def test_stream_chunks_in_wire_form_are_what_protobuf_serializes() -> None:
    for size in SIZES:
        chunk = os.urandom(size)
        message = pb.StreamTalkRequest()
        message.audio.chunk.data = chunk
        assert chunk_request(chunk) == chunk_prefix(size) + chunk == message.SerializeToString()
        assert pb.StreamTalkRequest.FromString(chunk_request(chunk)).audio.chunk.data == chunk


async def test_a_file_is_read_straight_after_its_room_whole_or_in_chunks(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    data = os.urandom(3 * MiB + 5)
    path.write_bytes(data)
    j = job(len(data), path=path, audio_path="a.wav")
    room = upload_room(j)
    assert reader._read_file(path, len(data), 0, reader._buffer(len(data), room)) == room + data
    [preloaded] = await reader.Preloader(room=upload_room)([j])
    assert preloaded.data == room + data
    pieces = [piece async for piece in reader.read_chunks(j, MiB, chunk_prefix)]
    assert [size for _, size in pieces] == [MiB, MiB, MiB, 5]
    assert b"".join(pb.StreamTalkRequest.FromString(m).audio.chunk.data for m, _ in pieces) == data


async def settle() -> None:
    """Let every task woken run to its next wait."""
    for _ in range(3):
        await asyncio.sleep(0)


def test_a_share_is_what_a_row_holds_at_its_peak() -> None:
    limits = {"stream_threshold": 4 * MiB, "chunk_size": MiB, "transcode": False}
    assert share(job(3 * MiB), **limits) == 6 * MiB  # the request and gRPC's copy
    assert share(job(4 * MiB + 1), **limits) == 2 * MiB  # streamed: a chunk, twice
    assert share(job(100), **{**limits, "transcode": True}) == 3 * MiB  # may be converted: decoder's piece too
    assert share(job(3 * MiB), **{**limits, "transcode": True}) == 6 * MiB
    assert share(job(100, swap_channels=True), **limits) == 3 * MiB
    assert share(Job("c", 1, "chat", "conn", {}), **limits) == 0


async def test_the_budget_never_lets_the_shares_held_exceed_it_and_a_big_one_goes_alone() -> None:
    budget = MemoryBudget(10)
    assert budget.try_take(6) and not budget.try_take(6)
    waiting = [asyncio.ensure_future(budget.take(n)) for n in (6, 3, 20)]  # in line, in this order
    await settle()
    assert not any(w.done() for w in waiting) and budget.held == 6
    assert not budget.try_take(1)  # nobody passes the line
    budget.give(6)
    await settle()
    assert [w.done() for w in waiting] == [True, True, False] and budget.held == 9
    budget.give(6)
    budget.give(3)
    await settle()
    assert waiting[2].done() and budget.held == 20  # bigger than the budget: alone
    budget.give(20)
    assert budget.held == 0 and budget.peak == 20


async def test_a_waiter_cancelled_gives_back_what_was_taken_for_it_and_lets_the_next_in() -> None:
    budget = MemoryBudget(10)
    budget.try_take(8)
    first, second = asyncio.ensure_future(budget.take(9)), asyncio.ensure_future(budget.take(2))
    await settle()
    first.cancel()
    await settle()
    assert second.done() and budget.held == 10
    budget.give(8)
    budget.give(2)
    late = asyncio.ensure_future(budget.take(5))
    await settle()
    assert late.done() and budget.held == 5
    budget.give(5)
    taken_then_cancelled = asyncio.ensure_future(budget.take(3))
    taken_then_cancelled.cancel()  # before it ran: never waited, holds nothing
    with pytest.raises(asyncio.CancelledError):
        await taken_then_cancelled
    assert budget.held == 0


async def test_rows_bigger_than_the_budget_go_one_at_a_time_and_every_one_arrives(
        emulator: Emulator, tmp_path: Path) -> None:
    # The emulator refuses a second call in flight: one would show as a throttled retry.
    emulator.set_faults(FaultOptions(max_in_flight=1, latency_ms=30))
    manifest = samples.write_dataset(tmp_path, 12, sizes=(600_000, 5 * MiB))
    options = UploadOptions(manifest=manifest, endpoint=emulator.target, insecure=True,
                            credentials=Credentials("Api-Key", API_KEY), connection_id="demo-audio", concurrency=8,
                            memory_budget=MiB)
    summary = await run_upload(options, Collecting())
    assert (summary.stats.uploaded, summary.stats.throttled, summary.stats.retries) == (12, 0, 0)
    stored = {t.sha256 for t in emulator.store.talks()}
    assert stored == {hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / "audio").iterdir()}


def test_the_buffer_option_is_checked(tmp_path: Path) -> None:
    manifest = samples.write_dataset(tmp_path, 1, sizes=(1000,))
    for value, message in (("0", "--buffer-mib must be at least 1"), ("lots", "'lots' is not a valid int")):
        done = run_cli(str(manifest), "--dry-run", "--connection-id", "c", "--buffer-mib", value)
        assert done.returncode == 2 and message in done.stderr, done.stderr
    done = run_cli(str(manifest), "--dry-run", "--connection-id", "c", "--buffer-mib", "64")
    assert done.returncode == 0, done.stderr
