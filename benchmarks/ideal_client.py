"""The ideal client: every request built in memory before the clock starts, N tasks awaiting
Upload (or a prebuilt UploadAsStream) on one grpc.aio channel (or CHANNELS, each its own
connection, taken in turn), nothing read or written while timed; glibc's allocator, the
garbage collector and the event loop (uvloop) set as bulk-upload sets them. The ceiling for
Python on this machine.

    python ideal_client.py TARGET MANIFEST CONCURRENCY STREAM_THRESHOLD [CHANNELS]   (key in env API_KEY)

Prints one JSON line: {"files": n, "bytes": b, "seconds": timed wall, "cpu": timed user+sys,
"build_seconds": wall}, build_seconds being the untimed reading, probing and building of every
request, the per-row work any client must also do before a call.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import time
from pathlib import Path

from grpc import aio
from loop import run  # uvloop where installed: the ceiling gets every advantage bulk-upload has

from bulk_uploader.allocator import keep_big_buffers
from bulk_uploader.audio import judge
from bulk_uploader.cli import collector
from bulk_uploader.probe import probe_bytes
from bulk_uploader.proto import speechsense_pb2 as pb
from bulk_uploader.proto import speechsense_pb2_grpc as pb_grpc
from bulk_uploader.transport import audio_metadata

CHUNK = 1024 * 1024


def cpu() -> float:
    t = os.times()
    return t.user + t.system


async def main() -> None:
    keep_big_buffers()  # the allocator and collector settings bulk-upload makes: the ceiling gets every advantage it has
    gc.freeze()
    collector.collect_less()
    target, manifest, concurrency, threshold = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    count = int(sys.argv[5]) if len(sys.argv) > 5 else 1
    auth = (("authorization", f"Api-Key {os.environ['API_KEY']}"),)
    build_t0 = time.perf_counter()
    jobs = []
    for line in manifest.read_text().splitlines():
        row = json.loads(line)
        data = (manifest.parent / row["audio_path"]).read_bytes()
        meta = pb.TalkMetadata(connection_id=row.get("connection_id", "demo-audio"), fields=row["metadata"])
        audio = audio_metadata(judge(probe_bytes(data), None).info)
        if len(data) <= threshold:
            jobs.append(("unary", pb.UploadTalkRequest(metadata=meta, audio=pb.AudioRequest(
                audio_metadata=audio, audio_data=pb.AudioChunk(data=data))), len(data)))
        else:
            messages = [pb.StreamTalkRequest(metadata=meta),
                        pb.StreamTalkRequest(audio=pb.AudioStreamingRequest(audio_metadata=audio))]
            messages += [pb.StreamTalkRequest(audio=pb.AudioStreamingRequest(chunk=pb.AudioChunk(data=data[i:i + CHUNK])))
                         for i in range(0, len(data), CHUNK)]
            jobs.append(("stream", messages, len(data)))
    build_seconds = time.perf_counter() - build_t0
    options = [("grpc.max_send_message_length", threshold + CHUNK), ("grpc.enable_retries", 0),
               ("grpc.use_local_subchannel_pool", 1)]  # each channel its own connection
    channels = [aio.insecure_channel(target, options=options) for _ in range(count)]
    try:
        stubs = [pb_grpc.TalkServiceStub(channel) for channel in channels]
        queue = list(reversed(jobs))

        async def worker() -> None:
            while queue:
                stub = stubs[len(queue) % count]
                kind, request, _ = queue.pop()
                if kind == "unary":
                    await stub.Upload(request, metadata=auth)
                else:
                    call = stub.UploadAsStream(metadata=auth)
                    for message in request:
                        await call.write(message)
                    await call.done_writing()
                    await call

        for channel in channels:
            await channel.channel_ready()
        cpu0, t0 = cpu(), time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        seconds, used = time.perf_counter() - t0, cpu() - cpu0
    finally:
        for channel in channels:
            await channel.close()
    print(json.dumps({"files": len(jobs), "bytes": sum(j[2] for j in jobs), "seconds": seconds, "cpu": used,
                      "build_seconds": build_seconds}))


if __name__ == "__main__":
    run(main)
