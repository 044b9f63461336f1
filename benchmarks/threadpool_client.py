"""What a user would write instead: a thread pool over the synchronous stub, reading files.

    python threadpool_client.py TARGET MANIFEST THREADS   (key in env API_KEY)

Prints one JSON line: {"files": n, "bytes": b, "seconds": wall after start-up}.
"""

from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from bulk_uploader.proto import speechsense_pb2 as pb
from bulk_uploader.proto import speechsense_pb2_grpc as pb_grpc

CHUNK = 1024 * 1024
FORMATS = {b"RIFF": pb.ContainerAudio.CONTAINER_AUDIO_TYPE_WAV, b"OggS": pb.ContainerAudio.CONTAINER_AUDIO_TYPE_OGG_OPUS}


def main() -> None:
    target, manifest, threads = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    auth = (("authorization", f"Api-Key {os.environ['API_KEY']}"),)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 * CHUNK)])
    stub = pb_grpc.TalkServiceStub(channel)

    def upload(row: dict) -> int:
        path = manifest.parent / row["audio_path"]
        meta = pb.TalkMetadata(connection_id=row.get("connection_id", "demo-audio"), fields=row["metadata"])
        with open(path, "rb") as f:
            head = f.read(4)
            audio = pb.AudioMetadata(container_audio=pb.ContainerAudio(
                container_audio_type=FORMATS.get(head, pb.ContainerAudio.CONTAINER_AUDIO_TYPE_MP3)))
            size = os.fstat(f.fileno()).st_size
            if size <= 4 * CHUNK:
                f.seek(0)
                stub.Upload(pb.UploadTalkRequest(metadata=meta, audio=pb.AudioRequest(
                    audio_metadata=audio, audio_data=pb.AudioChunk(data=f.read()))), metadata=auth)
            else:
                def stream():  # type: ignore[no-untyped-def]
                    f.seek(0)
                    yield pb.StreamTalkRequest(metadata=meta)
                    yield pb.StreamTalkRequest(audio=pb.AudioStreamingRequest(audio_metadata=audio))
                    while chunk := f.read(CHUNK):
                        yield pb.StreamTalkRequest(audio=pb.AudioStreamingRequest(chunk=pb.AudioChunk(data=chunk)))
                stub.UploadAsStream(stream(), metadata=auth)
        return size

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        total = sum(pool.map(upload, rows))
    print(json.dumps({"files": len(rows), "bytes": total, "seconds": time.perf_counter() - t0}))


main()
