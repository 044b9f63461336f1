"""The emulator over a real channel: every rejection rule, every fault, search, updates, shutdown."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import API_KEY, AUTH, run_cli
from grpc import aio

from bulk_uploader import samples
from bulk_uploader.emulator import Emulator, FaultOptions
from bulk_uploader.proto import speechsense_pb2 as pb
from bulk_uploader.proto import speechsense_pb2_grpc as pb_grpc

WAV = pb.AudioMetadata(container_audio=pb.ContainerAudio(container_audio_type=pb.ContainerAudio.CONTAINER_AUDIO_TYPE_WAV))
MP3 = pb.AudioMetadata(container_audio=pb.ContainerAudio(container_audio_type=pb.ContainerAudio.CONTAINER_AUDIO_TYPE_MP3))


def fields(**overrides: str | None) -> dict[str, str]:
    out = samples.metadata(1)
    for key, value in overrides.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def chat_fields(**overrides: str | None) -> dict[str, str]:
    return fields(**{"bot_name": "Bot", "bot_id": "bot-1", **overrides})


def upload_request(data: bytes | None = None, audio: pb.AudioMetadata = WAV, connection: str = "demo-audio",
                   **overrides: str | None) -> pb.UploadTalkRequest:
    return pb.UploadTalkRequest(
        metadata=pb.TalkMetadata(connection_id=connection, fields=fields(**overrides)),
        audio=pb.AudioRequest(audio_metadata=audio, audio_data=pb.AudioChunk(data=samples.wav(2000) if data is None else data)),
    )


async def rejected(call: Any) -> aio.AioRpcError:
    with pytest.raises(aio.AioRpcError) as info:
        await call
    return info.value


async def test_accepted_upload_is_stored_with_its_sha256(stub: pb_grpc.TalkServiceStub, emulator: Emulator) -> None:
    data = samples.wav(5000)
    response = await stub.Upload(upload_request(data), metadata=AUTH)
    talk = emulator.store.get(response.talk_id)
    assert talk is not None
    assert (talk.rpc, talk.format, talk.size) == ("Upload", "wav", len(data))
    assert talk.sha256 == hashlib.sha256(data).hexdigest()
    assert talk.fields == fields()


@pytest.mark.parametrize(
    ("header", "accepted"),
    [(None, False), ("Api-Key wrong", False), (f"Bearer {API_KEY}", False), (f"Api-Key {API_KEY}", True)],
)
async def test_authorization_header_is_checked(stub: pb_grpc.TalkServiceStub, header: str | None, accepted: bool) -> None:
    metadata = (("authorization", header),) if header else ()
    call = stub.Upload(upload_request(), metadata=metadata)
    if accepted:
        assert (await call).talk_id
    else:
        error = await rejected(call)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_bearer_tokens_are_accepted_until_they_expire(stub: pb_grpc.TalkServiceStub, emulator: Emulator) -> None:
    token = emulator.issue_token(ttl_seconds=0.3)
    assert (await stub.Upload(upload_request(), metadata=(("authorization", f"Bearer {token}"),))).talk_id
    await asyncio.sleep(0.4)
    error = await rejected(stub.Upload(upload_request(), metadata=(("authorization", f"Bearer {token}"),)))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("request_", "code", "message"),
    [
        (upload_request(connection="no-such-connection"), grpc.StatusCode.NOT_FOUND, "connection 'no-such-connection' not found"),
        (upload_request(connection="demo-chat"), grpc.StatusCode.INVALID_ARGUMENT, "is a chat connection"),
        (upload_request(client_id=None), grpc.StatusCode.INVALID_ARGUMENT, "missing required metadata keys for the audio connection: client_id"),
        (upload_request(favourite_colour="blue"), grpc.StatusCode.INVALID_ARGUMENT, "keys the connection does not define: favourite_colour"),
        (upload_request(client_name="x" * 1025), grpc.StatusCode.INVALID_ARGUMENT, "is 1025 bytes; the limit is 1024"),
        (upload_request(client_name="я" * 513), grpc.StatusCode.INVALID_ARGUMENT, "is 1026 bytes"),
        (upload_request(date="13.09.2023 17:31"), grpc.StatusCode.INVALID_ARGUMENT, "date '13.09.2023 17:31' is not"),
        (upload_request(date="2023-09-13T17:31:00"), grpc.StatusCode.INVALID_ARGUMENT, "date '2023-09-13T17:31:00' is not"),
        (upload_request(date="2023-02-30T17:31:00.000"), grpc.StatusCode.INVALID_ARGUMENT, "date '2023-02-30"),
        (upload_request(direction_outgoing="yes"), grpc.StatusCode.INVALID_ARGUMENT, "direction_outgoing must be"),
        (upload_request(language="en-US"), grpc.StatusCode.INVALID_ARGUMENT, "language must be"),
        (upload_request(b""), grpc.StatusCode.INVALID_ARGUMENT, "audio is empty"),
        (upload_request(samples.wav(100), audio=MP3), grpc.StatusCode.INVALID_ARGUMENT,
         "declared mp3, but the decoder cannot read the audio as mp3"),
        (upload_request(b"hello, not audio" * 10), grpc.StatusCode.INVALID_ARGUMENT,
         "declared wav, but the decoder cannot read the audio as wav"),
        (upload_request(samples.wav(100, bits=8)), grpc.StatusCode.INVALID_ARGUMENT,
         "declared wav, but the audio inside is pcm_u8; wav must carry pcm_s16le"),
        (upload_request(audio=pb.AudioMetadata()), grpc.StatusCode.INVALID_ARGUMENT, "gives no format"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
async def test_upload_rejections(stub: pb_grpc.TalkServiceStub, emulator: Emulator, request_: pb.UploadTalkRequest,
                                 code: grpc.StatusCode, message: str) -> None:
    error = await rejected(stub.Upload(request_, metadata=AUTH))
    assert error.code() == code
    assert message in (error.details() or "")
    assert emulator.store.count() == 0


@pytest.mark.parametrize("date", ["2023-09-13T17:31:00.000", "2025-04-24T11:34:19Z", "2025-04-24T14:34:19+03:00",
                                  "2025-04-24T14:34:19.5-01:30"])
async def test_both_documented_date_forms_are_accepted(stub: pb_grpc.TalkServiceStub, date: str) -> None:
    assert (await stub.Upload(upload_request(date=date), metadata=AUTH)).talk_id


async def test_kazakh_language_pair_and_raw_pcm_are_accepted(stub: pb_grpc.TalkServiceStub, emulator: Emulator) -> None:
    raw = pb.AudioMetadata(raw_audio=pb.RawAudio(audio_encoding=pb.RawAudio.AUDIO_ENCODING_LINEAR16_PCM,
                                                 sample_rate_hertz=16000, audio_channel_count=1))
    response = await stub.Upload(upload_request(samples.pcm(3200), audio=raw, language="RU-ru, kk-KZ"), metadata=AUTH)
    assert emulator.store.get(response.talk_id).format == "pcm"  # type: ignore[union-attr]
    bad_rate = pb.AudioMetadata(raw_audio=pb.RawAudio(audio_encoding=pb.RawAudio.AUDIO_ENCODING_LINEAR16_PCM,
                                                      sample_rate_hertz=96000, audio_channel_count=1))
    error = await rejected(stub.Upload(upload_request(samples.pcm(3200), audio=bad_rate), metadata=AUTH))
    assert "raw audio sample rate 96000 Hz is outside 8000..48000 Hz" in (error.details() or "")


# Values on both sides of each documented metadata rule (../shared/SPEECHSENSE.md, "Data rules").
DATES = ["2023-09-13T17:31:00.000", "2023-09-13T17:31:00", "2023-09-13T17:31:00.00", "2023-09-13T17:31:00.0000",
         "2025-04-24T11:34:19Z", "2025-04-24T11:34:19.5Z", "2025-04-24T11:34:19.123456789Z",
         "2025-04-24T11:34:19.1234567890Z", "2025-04-24T14:34:19+03:00", "2025-04-24T14:34:19-05:30",
         "2025-04-24T14:34:19.000+03:00", "2025-04-24T14:34:19+99:99", "2025-04-24T14:34:19+24:00",
         "2025-04-24T14:34:19+0300", "2025-04-24T14:34+03:00", "2025-04-24 14:34:19+03:00", "2025-04-24t14:34:19z",
         "2025-02-30T10:00:00.000", "2024-02-29T10:00:00.000", "2023-02-29T10:00:00Z", "2025-04-24T24:00:00Z",
         "2025-04-24T23:59:60Z", "\u0662\u0660\u0662\u0665-04-24T11:34:19Z", " 2025-04-24T11:34:19Z", "2025-04-24T11:34:19Z ",
         "2025-4-24T11:34:19Z", "2025-04-24T11:34:19.Z", "+2025-04-24T11:34:19Z", "20250424T113419Z", "24.04.2025 11:34",
         ""]
DIRECTIONS = ["true", "false", "True", "TRUE", "1", "yes", "", " true"]
LANGUAGES = ["ru-RU", "RU-ru", "ru-ru", "ru-RU, kk-KZ", "RU-ru, KK-kz", "ru-RU,kk-KZ", "ru-RU ,kk-KZ", "ru-RU,  kk-KZ",
             "kk-KZ", "en-US", "", "ru-RU, kk-KZ "]
SIZES = ["a" * 1024, "a" * 1025, "я" * 512, "я" * 513, "🎧" * 256, "🎧" * 256 + "a"]


@pytest.mark.parametrize(("key", "value"), [("date", v) for v in DATES] + [("direction_outgoing", v) for v in DIRECTIONS]
                         + [("language", v) for v in LANGUAGES] + [("client_name", v) for v in SIZES])
def test_the_uploader_and_the_emulator_read_the_metadata_rules_alike(key: str, value: str) -> None:
    # Two readings of the documentation, written apart: a value one accepts and the other
    # refuses is a misreading on one side, and this names it.
    from bulk_uploader.emulator.metadata import default_connection, field_problems
    from bulk_uploader.schema import check_fields

    connection = default_connection("audio", "demo-audio")
    row = fields(**{key: value})
    assert bool(check_fields(row, connection)) == bool(field_problems(row, connection))


def test_the_uploader_and_the_emulator_agree_on_which_keys_a_talk_needs() -> None:
    from bulk_uploader.emulator.metadata import default_connection, field_problems
    from bulk_uploader.schema import ConnectionSchema, check_fields

    for kind in ("audio", "chat"):
        ours, theirs = ConnectionSchema.default(kind, "c"), default_connection(kind, "c")  # type: ignore[arg-type]
        assert (ours.keys, ours.optional_keys) == (theirs.keys, theirs.optional_keys)
    connection = default_connection("audio", "demo-audio")
    for row in (fields(language=None), fields(ticket_id="T-1"), fields(extra="x"), {}):
        assert bool(check_fields(row, connection)) == bool(field_problems(row, connection)), row


def stream_messages(meta: pb.TalkMetadata, audio: pb.AudioMetadata, chunks: list[bytes]) -> list[pb.StreamTalkRequest]:
    return [
        pb.StreamTalkRequest(metadata=meta),
        pb.StreamTalkRequest(audio=pb.AudioStreamingRequest(audio_metadata=audio)),
        *[pb.StreamTalkRequest(audio=pb.AudioStreamingRequest(chunk=pb.AudioChunk(data=c))) for c in chunks],
    ]


async def send_stream(stub: pb_grpc.TalkServiceStub, messages: list[pb.StreamTalkRequest]) -> pb.UploadTalkResponse:
    call = stub.UploadAsStream(metadata=AUTH)
    try:
        for message in messages:
            await call.write(message)
        await call.done_writing()
    except (asyncio.InvalidStateError, aio.AioRpcError):
        pass  # the server ended the call early; the call's own status is below
    return await call


async def test_stream_upload_is_stored_with_its_sha256(stub: pb_grpc.TalkServiceStub, emulator: Emulator) -> None:
    data = samples.wav(3 * 1024 * 1024 + 17)
    chunks = [data[i : i + 1024 * 1024] for i in range(0, len(data), 1024 * 1024)]
    response = await send_stream(stub, stream_messages(upload_request().metadata, WAV, chunks))
    talk = emulator.store.get(response.talk_id)
    assert talk is not None and talk.rpc == "UploadAsStream" and talk.size == len(data)
    assert talk.sha256 == hashlib.sha256(data).hexdigest()


async def test_a_stream_cancelled_instead_of_half_closed_is_never_stored(stub: pb_grpc.TalkServiceStub,
                                                                           emulator: Emulator) -> None:
    # Every message of a whole, valid talk is written, then the call is cancelled: no request was
    # completed (../shared/SPEECHSENSE.md). gRPC's Python server at times reads a cancelled
    # stream's end as a clean end of stream, so one try could pass by luck: many are made.
    messages = stream_messages(upload_request().metadata, WAV, [samples.wav(2000)])
    for n in range(200):
        call = stub.UploadAsStream(metadata=AUTH)
        for message in messages:
            await call.write(message)
        await asyncio.sleep(0.001 * (n % 3))  # a cancel at once, and ones the writes have crossed over ahead of
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    for _ in range(3000):  # the handlers of the cancelled calls end (or store) on their own time
        if not emulator.injector.in_flight:
            break
        await asyncio.sleep(0.01)
    assert emulator.injector.in_flight == 0
    assert emulator.store.count() == 0
    assert (await send_stream(stub, messages)).talk_id  # the same messages, half-closed, are a talk


@pytest.mark.parametrize(
    ("order", "message"),
    [
        (["audio_meta", "meta", "chunk"], "the first message must be the talk metadata"),
        (["meta", "chunk"], "the second message must be the audio metadata"),
        (["meta", "audio_meta", "chunk", "meta"], "only audio chunks may follow"),
        (["meta", "audio_meta", "chunk", "audio_meta"], "only audio chunks may follow"),
        (["meta"], "stream ended before"),
        (["meta", "audio_meta"], "audio is empty"),
    ],
)
async def test_stream_message_order_is_strict(stub: pb_grpc.TalkServiceStub, emulator: Emulator, order: list[str], message: str) -> None:
    meta, audio_meta, chunk = stream_messages(upload_request().metadata, WAV, [samples.wav(1000)])
    parts = {"meta": meta, "audio_meta": audio_meta, "chunk": chunk}
    error = await rejected(send_stream(stub, [parts[p] for p in order]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (error.details() or "")
    assert emulator.store.count() == 0


async def test_stream_with_bad_metadata_fails_before_the_audio_is_sent(stub: pb_grpc.TalkServiceStub) -> None:
    bad = upload_request(language="xx").metadata
    call = stub.UploadAsStream(metadata=AUTH)
    await call.write(pb.StreamTalkRequest(metadata=bad))
    error = await rejected(call)
    assert "language must be" in (error.details() or "")


def chat_request(messages: list[tuple[str, str, str]], **overrides: str | None) -> pb.UploadTextRequest:
    content = pb.TextContent()
    for user, stamp, text in messages:
        message = content.messages.add(user_id=user, text=pb.TextPayload(text=text))
        message.timestamp.FromJsonString(stamp)
    return pb.UploadTextRequest(metadata=pb.TalkMetadata(connection_id="demo-chat", fields=chat_fields(**overrides)),
                                text_content=content)


async def test_chat_is_stored_with_message_count_and_digest(stub: pb_grpc.TalkServiceStub, emulator: Emulator) -> None:
    from bulk_uploader.emulator import messages_digest

    messages = [("op-1", "2025-04-24T11:34:19Z", "Здравствуйте"), ("cl-1", "2025-04-24T11:34:25.500Z", "Hi"),
                ("bot-1", "2025-04-24T11:35:00Z", "…")]
    response = await stub.UploadText(chat_request(messages), metadata=AUTH)
    talk = emulator.store.get(response.talk_id)
    assert talk is not None and (talk.rpc, talk.format, talk.message_count) == ("UploadText", "chat", 3)
    assert talk.sha256 == messages_digest(messages)[0]


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (chat_request([("stranger", "2025-04-24T11:34:19Z", "hi")]), "user_id 'stranger' is not the dialog's"),
        (chat_request([("op-1", "2025-04-24T11:34:19Z", "hi")], bot_id=None), "missing required metadata keys for the chat connection: bot_id"),
        (chat_request([]), "the dialog has no messages"),
    ],
)
async def test_chat_rejections(stub: pb_grpc.TalkServiceStub, request_: pb.UploadTextRequest, message: str) -> None:
    error = await rejected(stub.UploadText(request_, metadata=AUTH))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (error.details() or "")


async def test_metadata_update_changes_the_stored_talk(stub: pb_grpc.TalkServiceStub, emulator: Emulator) -> None:
    talk_id = (await stub.Upload(upload_request(), metadata=AUTH)).talk_id
    update = pb.UploadTalkRequest(
        talk_id=talk_id,
        metadata=pb.TalkMetadata(connection_id="demo-audio", fields=fields(client_name="Renamed"),
                                 users=[pb.UserMetadata(id="op-1", role=pb.USER_ROLE_OPERATOR, fields={"team": "A"})]),
    )
    assert (await stub.Upload(update, metadata=AUTH)).talk_id == talk_id
    talk = emulator.store.get(talk_id)
    assert talk is not None and talk.fields["client_name"] == "Renamed" and talk.updated_at
    assert talk.users == [{"id": "op-1", "role": "operator", "fields": {"team": "A"}}]
    assert emulator.store.count() == 1
    update.talk_id = "no-such-talk"
    assert (await rejected(stub.Upload(update, metadata=AUTH))).code() == grpc.StatusCode.NOT_FOUND


async def test_search_any_match_on_the_documented_key_form(stub: pb_grpc.TalkServiceStub) -> None:
    ids = []
    for n in range(5):
        request = upload_request(client_id=f"cl-{n % 2}", operator_id=f"op-{n}")
        request.metadata.users.add(id=f"op-{n}", role=pb.USER_ROLE_OPERATOR, fields={"team": "north" if n < 2 else "south"})
        ids.append((await stub.Upload(request, metadata=AUTH)).talk_id)

    async def search(*filters: pb.Filter, page_size: int = 100, token: str = "") -> pb.SearchTalkResponse:
        return await stub.Search(pb.SearchTalkRequest(connection_id="demo-audio", filters=filters,
                                                      page_size=page_size, page_token=token), metadata=AUTH)

    def any_match(key: str, *values: str, inverse: bool = False) -> pb.Filter:
        return pb.Filter(key=key, any_match=pb.AnyMatchFilter(values=values), inverse=inverse)

    assert list((await search(any_match("userMeta.client_id", "cl-1"))).talk_ids) == [ids[1], ids[3]]
    assert list((await search(any_match("userMeta.client_id", "cl-1", inverse=True))).talk_ids) == [ids[0], ids[2], ids[4]]
    assert list((await search(any_match("userMeta.operator_id", "op-0", "op-4", "op-9"))).talk_ids) == [ids[0], ids[4]]
    both = await search(any_match("userMeta.client_id", "cl-0"), any_match("userMeta.operator_id", "op-2", "op-3"))
    assert list(both.talk_ids) == [ids[2]]
    # Neither a bare field name nor the .proto comment's form (this emulator runs the documented one),
    # nor a participant's field, is a key Search knows.
    for key, value in (("client_id", "cl-1"), ("user.client_id", "cl-1"), ("userMeta.team", "north"),
                       ("userMeta.user:team", "north")):
        assert list((await search(any_match(key, value))).talk_ids) == [], key
    first = await search(page_size=2)
    assert first.talks_count == 5 and list(first.talk_ids) == ids[:2] and first.next_page_token
    second = await search(page_size=2, token=first.next_page_token)
    assert list(second.talk_ids) == ids[2:4]


async def test_fixed_and_random_latency(stub: pb_grpc.TalkServiceStub, emulator: Emulator) -> None:
    emulator.set_faults(FaultOptions(latency_ms=150))
    started = time.monotonic()
    await stub.Upload(upload_request(), metadata=AUTH)
    assert time.monotonic() - started >= 0.15
    emulator.set_faults(FaultOptions(jitter_ms=200, seed=1))

    async def timed() -> float:
        started = time.monotonic()
        await stub.Upload(upload_request(), metadata=AUTH)
        return time.monotonic() - started

    durations = await asyncio.gather(*[timed() for _ in range(12)])
    assert max(durations) - min(durations) > 0.05  # random, not fixed
    assert max(durations) < 0.2 + 0.5  # bounded by jitter_ms (plus slack for a busy machine)


async def test_receive_limit_takes_single_messages_over_grpcs_default_4_mib(emulator: Emulator) -> None:
    data = samples.wav(6 * 1024 * 1024)
    limit = [("grpc.max_send_message_length", 16 * 1024 * 1024)]
    async with aio.insecure_channel(emulator.target, options=limit) as channel:
        response = await pb_grpc.TalkServiceStub(channel).Upload(upload_request(data), metadata=AUTH)
    assert emulator.store.get(response.talk_id).size == len(data)  # type: ignore[union-attr]


@pytest.mark.parametrize("code", ["UNAVAILABLE", "RESOURCE_EXHAUSTED", "INTERNAL", "DEADLINE_EXCEEDED"])
async def test_error_rates_per_status_code(stub: pb_grpc.TalkServiceStub, emulator: Emulator, code: str) -> None:
    emulator.set_faults(FaultOptions(error_rates={code: 1.0}))
    error = await rejected(stub.Upload(upload_request(), metadata=AUTH))
    assert error.code() == grpc.StatusCode[code]
    emulator.set_faults(FaultOptions(error_rates={code: 0.3}, seed=7))
    outcomes = await asyncio.gather(*[stub.Upload(upload_request(), metadata=AUTH) for _ in range(300)],
                                    return_exceptions=True)
    failed = sum(isinstance(o, aio.AioRpcError) and o.code() == grpc.StatusCode[code] for o in outcomes)
    assert 60 <= failed <= 120  # 30% of 300, with a wide margin
    assert emulator.store.count() == 300 - failed


async def test_rps_cap_answers_resource_exhausted_with_pushback(stub: pb_grpc.TalkServiceStub, emulator: Emulator) -> None:
    emulator.set_faults(FaultOptions(rps=20))
    outcomes = await asyncio.gather(*[stub.Upload(upload_request(), metadata=AUTH) for _ in range(60)],
                                    return_exceptions=True)
    refused = [o for o in outcomes if isinstance(o, aio.AioRpcError)]
    assert all(o.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for o in refused)
    assert 30 <= len(refused) <= 45  # a burst of 60 against 20/s: about 20 admitted
    trailers = dict(refused[0].trailing_metadata() or ())
    assert int(trailers["grpc-retry-pushback-ms"]) > 0


async def test_in_flight_cap(stub: pb_grpc.TalkServiceStub, emulator: Emulator) -> None:
    emulator.set_faults(FaultOptions(max_in_flight=2, latency_ms=300))
    outcomes = await asyncio.gather(*[stub.Upload(upload_request(), metadata=AUTH) for _ in range(5)],
                                    return_exceptions=True)
    refused = [o for o in outcomes if isinstance(o, aio.AioRpcError)]
    assert len(refused) == 3 and all(o.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for o in refused)
    assert "too many calls in flight" in (refused[0].details() or "")


async def test_stored_but_answer_lost(stub: pb_grpc.TalkServiceStub, emulator: Emulator) -> None:
    emulator.set_faults(FaultOptions(lose_answer_rate=1.0))
    error = await rejected(stub.Upload(upload_request(), metadata=AUTH))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert emulator.store.count() == 1 and emulator.answers_lost == 1


def test_fault_options_reject_nonsense() -> None:
    with pytest.raises(ValueError):
        FaultOptions(error_rates={"NOT_A_CODE": 0.1})
    with pytest.raises(ValueError):
        FaultOptions(error_rates={"UNAVAILABLE": 0.7, "INTERNAL": 0.7})
    assert FaultOptions.parse_rates(["unavailable=0.25"]) == {"UNAVAILABLE": 0.25}


async def test_emulator_process_stops_cleanly_on_sigterm_and_keeps_talks(tmp_path: Path, emulator_process: Any) -> None:
    store = tmp_path / "talks.sqlite3"
    process = emulator_process("--api-key", API_KEY, "--store", str(store))
    async with aio.insecure_channel(process.target) as channel:
        stub = pb_grpc.TalkServiceStub(channel)
        ids = [(await stub.Upload(upload_request(samples.wav(100 + n)), metadata=AUTH)).talk_id for n in range(3)]
    process.proc.send_signal(signal.SIGTERM)
    out = process.stop()
    assert process.proc.returncode == 0, out
    listed = run_cli("talks", str(store))
    assert listed.returncode == 0
    assert [json.loads(line)["talk_id"] for line in listed.stdout.splitlines()] == ids
    assert run_cli("talks", str(store), "--count").stdout.strip() == "3"


def test_emulator_config_file_defines_connections(tmp_path: Path, emulator_process: Any) -> None:
    config = tmp_path / "connections.toml"
    config.write_text('[[connections]]\nid = "sales"\ntype = "audio"\noptional_keys = ["ticket_id", "region"]\n')
    process = emulator_process("--api-key", API_KEY, "--config", str(config))
    channel = grpc.insecure_channel(process.target)
    stub = pb_grpc.TalkServiceStub(channel)
    assert stub.Upload(upload_request(connection="sales", region="north"), metadata=AUTH).talk_id
    with pytest.raises(grpc.RpcError) as info:
        stub.Upload(upload_request(), metadata=AUTH)  # demo-audio is not defined by this config
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    channel.close()


def test_emulator_refuses_to_start_without_credentials() -> None:
    result = run_cli("emulator", "--port", "0")
    assert result.returncode == 2 and "needs --api-key" in result.stderr
