"""The emulator's reads over a real channel: Get, processing states, the index lag, the read quota,
lost talks, and a Search that uses the index."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
from conftest import API_KEY, AUTH, run_cli
from grpc import aio
from test_emulator import rejected, upload_request

from bulk_uploader.emulator import DOCUMENTED_READ_QUOTA, Emulator, EmulatorOptions, FaultOptions, Processing
from bulk_uploader.proto import speechsense_pb2 as pb
from bulk_uploader.proto import speechsense_pb2_grpc as pb_grpc


@asynccontextmanager
async def serving(**options: Any) -> AsyncIterator[tuple[Emulator, pb_grpc.TalkServiceStub]]:
    async with Emulator(EmulatorOptions(api_keys=[API_KEY], **options)) as emu:
        async with aio.insecure_channel(emu.target) as channel:
            yield emu, pb_grpc.TalkServiceStub(channel)


def get_request(*ids: str, connection: str = "") -> pb.GetTalkRequest:
    request = pb.GetTalkRequest(talk_ids=ids, connection_id=connection)
    request.results_mask.SetInParent()
    return request


def search_request(key: str, *values: str) -> pb.SearchTalkRequest:
    return pb.SearchTalkRequest(connection_id="demo-audio", page_size=100,
                                filters=[pb.Filter(key=key, any_match=pb.AnyMatchFilter(values=values))])


async def test_get_answers_the_talks_it_holds_with_their_fields_and_state() -> None:
    async with serving() as (emu, stub):
        first = (await stub.Upload(upload_request(client_id="cl-1"), metadata=AUTH)).talk_id
        second = (await stub.Upload(upload_request(client_id="cl-2"), metadata=AUTH)).talk_id
        answer = await stub.Get(get_request(second, "no-such-talk", first), metadata=AUTH)
        assert [talk.id for talk in answer.talk] == [second, first]  # the order asked; unknown ids left out
        talk = answer.talk[0]
        assert {f.name: f.value for f in talk.talk_fields} == emu.store.get(second).fields  # type: ignore[union-attr]
        assert talk.connection_id == "demo-audio" and talk.created_at.seconds > 0
        assert talk.talk_state.processing_state == pb.PROCESSING_STATE_NOT_STARTED
        assert list((await stub.Get(get_request(first, connection="demo-chat"), metadata=AUTH)).talk) == []
        assert (await rejected(stub.Get(get_request(), metadata=AUTH))).code() == grpc.StatusCode.INVALID_ARGUMENT
        assert emu.reads == 3  # the refused call was a read as well


async def test_processing_moves_from_not_started_through_processing_to_success_or_failed() -> None:
    loop = asyncio.get_running_loop()
    # Seconds, not tenths: every talk is checked in each state even when uploading them is slow.
    async with serving(processing=Processing(delay=2.0, time=2.0, failure_rate=0.5)) as (_, stub):
        first = loop.time()
        ids = [(await stub.Upload(upload_request(client_id=f"cl-{n}"), metadata=AUTH)).talk_id for n in range(20)]
        last = loop.time()
        assert last - first < 1.5  # else no moment finds every talk in the same state

        async def states() -> set[int]:
            return {t.talk_state.processing_state for t in (await stub.Get(get_request(*ids), metadata=AUTH)).talk}

        assert await states() == {pb.PROCESSING_STATE_NOT_STARTED}
        await asyncio.sleep(last + 2.2 - loop.time())
        assert await states() == {pb.PROCESSING_STATE_PROCESSING}
        await asyncio.sleep(last + 4.2 - loop.time())
        ended = [t.talk_state.processing_state for t in (await stub.Get(get_request(*ids), metadata=AUTH)).talk]
        assert set(ended) == {pb.PROCESSING_STATE_SUCCESS, pb.PROCESSING_STATE_FAILED}
        again = [t.talk_state.processing_state for t in (await stub.Get(get_request(*ids), metadata=AUTH)).talk]
        assert again == ended  # which talks fail is fixed by their id


async def test_search_sees_a_talk_only_after_the_index_lag_and_get_at_once() -> None:
    async with serving(index_lag=0.5) as (_, stub):
        talk_id = (await stub.Upload(upload_request(client_id="cl-7"), metadata=AUTH)).talk_id
        assert list((await stub.Search(search_request("userMeta.client_id", "cl-7"), metadata=AUTH)).talk_ids) == []
        assert [t.id for t in (await stub.Get(get_request(talk_id), metadata=AUTH)).talk] == [talk_id]
        await asyncio.sleep(0.6)
        assert list((await stub.Search(search_request("userMeta.client_id", "cl-7"), metadata=AUTH)).talk_ids) == [talk_id]


async def test_the_search_key_prefix_is_configurable() -> None:
    async with serving(user_key_prefix="user.") as (_, stub):
        talk_id = (await stub.Upload(upload_request(client_id="cl-7"), metadata=AUTH)).talk_id
        assert list((await stub.Search(search_request("user.client_id", "cl-7"), metadata=AUTH)).talk_ids) == [talk_id]
        assert list((await stub.Search(search_request("userMeta.client_id", "cl-7"), metadata=AUTH)).talk_ids) == []


async def test_the_read_quota_refuses_reads_over_any_window_with_a_pushback() -> None:
    assert EmulatorOptions().read_quota == DOCUMENTED_READ_QUOTA == ((20, 1.0), (200, 60.0), (2000, 3600.0), (20000, 86400.0))
    # A 2 s window, not a tenth of that: three calls fit in it even when the machine is busy.
    async with serving(read_quota=((3, 2.0), (5, 60.0))) as (emu, stub):
        talk_id = (await stub.Upload(upload_request(), metadata=AUTH)).talk_id
        for _ in range(3):
            await stub.Get(get_request(talk_id), metadata=AUTH)
        refused = await rejected(stub.Search(search_request("userMeta.client_id", "x"), metadata=AUTH))
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "read quota" in (refused.details() or "")
        pushback = int(dict(refused.trailing_metadata() or ())["grpc-retry-pushback-ms"])
        assert 0 < pushback <= 2000
        await asyncio.sleep(pushback / 1000 + 0.05)
        await stub.Get(get_request(talk_id), metadata=AUTH)
        await stub.Get(get_request(talk_id), metadata=AUTH)
        await asyncio.sleep(0.5)
        minute = await rejected(stub.Get(get_request(talk_id), metadata=AUTH))  # 5 a minute, whatever the second
        assert int(dict(minute.trailing_metadata() or ())["grpc-retry-pushback-ms"]) > 50_000  # the minute's, not the 2 s window's
        await stub.Upload(upload_request(), metadata=AUTH)  # uploads are not reads
        assert (emu.reads, emu.reads_refused) == (5, 2)


async def test_the_documented_quota_admits_twenty_reads_a_second() -> None:
    async with serving() as (emu, stub):
        calls = [stub.Search(search_request("userMeta.client_id", "x"), metadata=AUTH) for _ in range(21)]
        answers = await asyncio.gather(*calls, return_exceptions=True)
        refused = [a for a in answers if isinstance(a, aio.AioRpcError)]
        assert len(refused) == 1 and refused[0].code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (emu.reads, emu.reads_refused) == (20, 1)


async def test_lose_every_nth_talk_answers_it_but_never_stores_it() -> None:
    async with serving(faults=FaultOptions(lose_every=3)) as (emu, stub):
        ids = [(await stub.Upload(upload_request(client_id=f"cl-{n}"), metadata=AUTH)).talk_id for n in range(7)]
        assert emu.talks_lost == [ids[2], ids[5]]
        assert emu.store.count() == 5
        assert [t.id for t in (await stub.Get(get_request(*ids), metadata=AUTH)).talk] == [
            i for i in ids if i not in emu.talks_lost]


async def test_search_goes_through_the_field_index() -> None:
    async with serving() as (emu, stub):
        await stub.Upload(upload_request(), metadata=AUTH)
        plan = emu.store.query_plan("demo-audio", [("client_id", ["cl-1", "cl-2"], False),
                                                   ("operator_id", ["op-1"], True)])
        assert "USING INDEX talk_fields_kv (key=? AND value=?)" in plan
        assert "SCAN t" not in plan and "SCAN talks" not in plan


def test_the_emulator_command_refuses_a_read_quota_it_cannot_read() -> None:
    result = run_cli("emulator", "--api-key", "k", "--read-quota", "20 per second", timeout=30)
    assert result.returncode == 2
    assert "read quota '20 per second': each part is READS/UNIT" in result.stderr


def test_the_emulator_command_takes_its_read_options(emulator_process: Any) -> None:
    started = time.monotonic()
    process = emulator_process("--api-key", "k", "--read-quota", "3/s,100/h", "--index-lag", "2", "--lose-every", "50",
                               "--processing-delay", "0", "--processing-time", "1", "--processing-failure-rate", "0.1")
    assert process.target and time.monotonic() - started < 30
    assert "emulator stopped" in process.stop()
