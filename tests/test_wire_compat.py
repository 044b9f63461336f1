"""Our protos, as users run them (their protobuf), against the vendor's own definitions: the SDK's
descriptors and classes, in a subprocess of the pinned vendor environment (tests/vendor_env.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, Callable

import pytest
from descriptor_summary import describe_message
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

from bulk_uploader.proto import iam_pb2
from bulk_uploader.proto import speechsense_pb2 as pb

FILES = (pb.DESCRIPTOR, iam_pb2.DESCRIPTOR)  # every proto file we declare

SDK_SIDE = Path(__file__).with_name("sdk_side.py")

pytestmark = pytest.mark.timeout(900)  # the first test may build the vendor environment


@pytest.fixture
def sdk(vendor_python: Path) -> Callable[[dict[str, Any]], Any]:
    def ask(command: dict[str, Any]) -> Any:
        out = subprocess.run(
            [str(vendor_python), str(SDK_SIDE)], input=json.dumps(command), capture_output=True, text=True, check=True
        )
        return json.loads(out.stdout)
    return ask


def our_messages() -> list[Descriptor]:
    found: list[Descriptor] = []

    def walk(d: Descriptor) -> None:
        found.append(d)
        for nested in d.nested_types:
            walk(nested)

    for file in FILES:
        for d in file.message_types_by_name.values():
            walk(d)
    return found


def our_enums() -> dict[str, dict[str, int]]:
    enums = {e.full_name: {v.name: v.number for v in e.values}
             for file in FILES for e in file.enum_types_by_name.values()}
    for d in our_messages():
        for e in d.enum_types:
            enums[e.full_name] = {v.name: v.number for v in e.values}
    return enums


def test_every_declared_message_matches_the_sdk_field_by_field(sdk: Callable[[dict[str, Any]], Any]) -> None:
    ours = {d.full_name: describe_message(d) for d in our_messages()}
    enums = our_enums()
    theirs = sdk({"op": "describe", "messages": sorted(ours), "enums": sorted(enums)})
    assert len(ours) >= 28
    for name, fields in ours.items():
        for field_name, facts in fields.items():
            assert field_name in theirs[name], f"{name}.{field_name} is not in the vendor's definition"
            assert facts == theirs[name][field_name], f"{name}.{field_name} differs from the vendor's"
    for name, values in enums.items():
        assert values == theirs[name], f"enum {name} differs"
    methods = [m for file in FILES for service in file.services_by_name.values() for m in service.methods]
    assert len(methods) == 6
    for method in methods:
        assert theirs["__rpcs__"][method.full_name] == [
            method.input_type.full_name, method.output_type.full_name,
            method.client_streaming, method.server_streaming,
        ]


def _talk_metadata() -> pb.TalkMetadata:
    return pb.TalkMetadata(
        connection_id="conn-1",
        fields={"operator_id": "op-7", "date": "2025-04-24T11:34:19Z", "ticket_id": "T-1"},
        users=[
            pb.UserMetadata(id="op-7", role=pb.USER_ROLE_OPERATOR, fields={"team": "north"}),
            pb.UserMetadata(id="cl-1", role=pb.USER_ROLE_CLIENT),
        ],
    )


def _requests() -> list[Message]:
    meta = _talk_metadata()
    text = pb.TextContent()
    for n, user in enumerate(["op-7", "cl-1", "op-7"]):
        message = text.messages.add(user_id=user, text=pb.TextPayload(text=f"сообщение {n}"))
        message.timestamp.FromJsonString(f"2025-04-24T11:34:{19 + n:02d}.250Z")
    raw = pb.AudioMetadata(raw_audio=pb.RawAudio(
        audio_encoding=pb.RawAudio.AUDIO_ENCODING_LINEAR16_PCM, sample_rate_hertz=16000, audio_channel_count=2))
    wav = pb.AudioMetadata(container_audio=pb.ContainerAudio(container_audio_type=pb.ContainerAudio.CONTAINER_AUDIO_TYPE_WAV))
    return [
        pb.UploadTalkRequest(metadata=meta, audio=pb.AudioRequest(audio_metadata=wav, audio_data=pb.AudioChunk(data=b"RIFF\x00\x01" * 50))),
        pb.UploadTalkRequest(metadata=meta, talk_id="talk-42"),
        pb.StreamTalkRequest(metadata=meta),
        pb.StreamTalkRequest(audio=pb.AudioStreamingRequest(audio_metadata=raw)),
        pb.StreamTalkRequest(audio=pb.AudioStreamingRequest(chunk=pb.AudioChunk(data=bytes(range(256)) * 8))),
        pb.UploadTextRequest(metadata=meta, text_content=text),
        pb.SearchTalkRequest(
            organization_id="org", space_id="sp", connection_id="conn-1", project_id="pr",
            filters=[pb.Filter(key="call_id", any_match=pb.AnyMatchFilter(values=["a", "b"]), inverse=True)],
            query=pb.Query(text="hello"), page_size=10, page_token="20",
        ),
        pb.SearchTalkResponse(talk_ids=["t1", "t2"], talks_count=2, next_page_token="x"),
        pb.UploadTalkResponse(talk_id="t1"),
        _get_request(),
        pb.GetTalkResponse(talk=[_talk()]),
        iam_pb2.CreateIamTokenRequest(jwt="eyJhbGciOiJQUzI1NiJ9.e30.c2ln"),
        iam_pb2.CreateIamTokenResponse(iam_token="t1.abc", expires_at={"seconds": 1_790_000_000, "nanos": 5}),
    ]


def _get_request() -> pb.GetTalkRequest:
    request = pb.GetTalkRequest(organization_id="org", space_id="sp", connection_id="conn-1", project_id="pr",
                                talk_ids=["t1", "t2"])
    request.results_mask.SetInParent()  # present and naming no paths: the basic data only
    return request


def _talk() -> pb.Talk:
    talk = pb.Talk(
        id="t1", organization_id="org", space_id="sp", connection_id="conn-1", project_ids=["pr"],
        created_by="sa-1", modified_by="sa-2",
        talk_fields=[pb.Field(name="client_id", value="cl-1", type=pb.FIELD_TYPE_STRING),
                     pb.Field(name="date", value="2025-04-24T11:34:19Z", type=pb.FIELD_TYPE_DATE)],
        talk_state=pb.TalkState(
            processing_state=pb.PROCESSING_STATE_PROCESSING,
            algorithm_processing_infos=[pb.AlgorithmProcessingInfo(algorithm=pb.ALGORITHM_SPEECHKIT,
                                                                   processing_state=pb.PROCESSING_STATE_SUCCESS)],
        ),
    )
    talk.created_at.FromJsonString("2025-04-24T11:34:19.500Z")
    talk.modified_at.FromJsonString("2025-04-24T11:35:00Z")
    return talk


def test_requests_round_trip_through_the_sdk_classes(sdk: Callable[[dict[str, Any]], Any]) -> None:
    requests = _requests()
    answers = sdk({"op": "parse", "items": [
        {"type": r.DESCRIPTOR.full_name, "hex": r.SerializeToString().hex()} for r in requests
    ]})
    for request, answer in zip(requests, answers, strict=True):
        # The SDK reads every field we wrote, with the same values...
        assert answer["json"] == json_format.MessageToDict(request)
        # ...and what it writes back parses, on our side, to the message we started with.
        back = type(request).FromString(bytes.fromhex(answer["hex"]))
        assert back == request
    stream_chunk = answers[4]["json"]["audio"]["chunk"]["data"]
    assert stream_chunk  # bytes crossed intact (base64 in JSON)
    assert answers[5]["json"]["textContent"]["messages"][1]["timestamp"] == "2025-04-24T11:34:20.250Z"
    get = next(a["json"] for r, a in zip(requests, answers, strict=True) if isinstance(r, pb.GetTalkRequest))
    assert get["resultsMask"] == ""  # the empty mask crossed as present, not dropped
    talk = next(a["json"] for r, a in zip(requests, answers, strict=True) if isinstance(r, pb.GetTalkResponse))
    assert talk["talk"][0]["talkState"]["processingState"] == "PROCESSING_STATE_PROCESSING"
