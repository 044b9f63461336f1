"""A client built only from the vendor SDK's stubs (run in its own process by the tests).

    python sdk_client.py TARGET WAV_FILE BIG_FILE   (the key comes from env API_KEY)

Uploads WAV_FILE with Upload, BIG_FILE with UploadAsStream in 1 MiB chunks, and a chat
with UploadText; prints {"upload": id, "stream": id, "text": id}.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator

import grpc
from yandex.cloud.speechsense.v1 import audio_pb2, talk_service_pb2, talk_service_pb2_grpc, text_pb2

CHAT = [("op-1", "2025-04-24T11:34:19Z", "Здравствуйте!"), ("cl-1", "2025-04-24T11:34:30.125Z", "Добрый день")]
FIELDS = {
    "operator_name": "Operator", "operator_id": "op-1", "client_name": "Client", "client_id": "cl-1",
    "date": "2025-04-24T11:34:19Z", "direction_outgoing": "false", "language": "ru-RU",
}


def main() -> None:
    target, wav_path, big_path = sys.argv[1:4]
    auth = (("authorization", f"Api-Key {os.environ['API_KEY']}"),)
    channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)])
    stub = talk_service_pb2_grpc.TalkServiceStub(channel)
    wav_meta = audio_pb2.AudioMetadata(
        container_audio=audio_pb2.ContainerAudio(container_audio_type=audio_pb2.ContainerAudio.CONTAINER_AUDIO_TYPE_WAV)
    )
    audio_meta = talk_service_pb2.TalkMetadata(connection_id="demo-audio", fields=FIELDS)
    with open(wav_path, "rb") as f:
        uploaded = stub.Upload(
            talk_service_pb2.UploadTalkRequest(
                metadata=audio_meta, audio=audio_pb2.AudioRequest(audio_metadata=wav_meta, audio_data=audio_pb2.AudioChunk(data=f.read()))
            ),
            metadata=auth,
        )

    def stream() -> Iterator[talk_service_pb2.StreamTalkRequest]:
        yield talk_service_pb2.StreamTalkRequest(metadata=audio_meta)
        yield talk_service_pb2.StreamTalkRequest(audio=audio_pb2.AudioStreamingRequest(audio_metadata=wav_meta))
        with open(big_path, "rb") as f:
            while chunk := f.read(1024 * 1024):
                yield talk_service_pb2.StreamTalkRequest(audio=audio_pb2.AudioStreamingRequest(chunk=audio_pb2.AudioChunk(data=chunk)))

    streamed = stub.UploadAsStream(stream(), metadata=auth)
    content = text_pb2.TextContent()
    for user, stamp, text in CHAT:
        message = content.messages.add(user_id=user, text=text_pb2.TextPayload(text=text))
        message.timestamp.FromJsonString(stamp)
    chat_meta = talk_service_pb2.TalkMetadata(connection_id="demo-chat", fields={**FIELDS, "bot_name": "Bot", "bot_id": "bot-1"})
    texted = stub.UploadText(talk_service_pb2.UploadTextRequest(metadata=chat_meta, text_content=content), metadata=auth)
    print(json.dumps({"upload": uploaded.talk_id, "stream": streamed.talk_id, "text": texted.talk_id}))


if __name__ == "__main__":
    main()
