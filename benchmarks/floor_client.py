"""The floor client: the least a client must do per row to upload a manifest it cannot hold in
memory and keep a ledger a crash cannot falsify, with nothing else. Beside the ideal client
(everything prebuilt, only the calls timed) it shows what the ledger and reading at send time
cost by themselves, so bulk-upload's own overhead is told apart from the price of correctness.

Per row, in N tasks on one grpc.aio channel: the manifest line parsed as it is reached, the file
read whole and probed, the request built, a `sending` line written (one write) before the call
leaves, the call with its Idempotency-Key, and the outcome line (buffered, written every 256
rows: a lost outcome line leaves the `sending` line, which a next run settles). No checks of
the row, no retries, no progress, no memory budget. Timed from start-up done to the last
outcome written; glibc's allocator, the garbage collector and the event loop (uvloop) set as
bulk-upload sets them.

    python floor_client.py TARGET MANIFEST CONCURRENCY LEDGER   (key in env API_KEY)

LEDGER `-` runs it bare: no ledger and no Idempotency-Key, only the manifest line parsed, the
file read and probed and the request built at send time; it shows what reading at send time
costs by itself, the part of the floor no client that cannot hold its manifest in memory avoids.

Prints one JSON line: {"files": n, "bytes": b, "seconds": timed wall, "cpu": timed user+sys}.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

from grpc import aio
from ideal_client import cpu  # the same clock as the ideal client's (this script's folder is on sys.path)
from loop import run

from bulk_uploader.allocator import keep_big_buffers
from bulk_uploader.audio import judge
from bulk_uploader.cli import collector
from bulk_uploader.probe import probe_bytes
from bulk_uploader.proto import speechsense_pb2 as pb
from bulk_uploader.proto import speechsense_pb2_grpc as pb_grpc
from bulk_uploader.transport import audio_metadata
from bulk_uploader.transport.messages import IDEMPOTENCY_HEADER, idempotency_key

OUTCOMES_PER_WRITE = 256


async def main() -> None:
    keep_big_buffers()
    collector.collect_less()
    target, manifest, concurrency, ledger = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    auth = ("authorization", f"Api-Key {os.environ['API_KEY']}")
    bare = ledger == "-"
    fd = -1 if bare else os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o644)
    outcomes: list[bytes] = []
    totals = {"files": 0, "bytes": 0}
    channel = aio.insecure_channel(target, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)])
    stub = pb_grpc.TalkServiceStub(channel)
    await channel.channel_ready()
    cpu0, t0 = cpu(), time.perf_counter()
    with manifest.open("rb") as lines:  # noqa: ASYNC230 (the floor reads on the loop: small local files, quickest so)
        rows = enumerate(lines, 1)

        async def worker() -> None:
            for number, line in rows:
                row = json.loads(line)
                key, connection = row["id"], row.get("connection_id", "demo-audio")
                data = (manifest.parent / row["audio_path"]).read_bytes()
                request = pb.UploadTalkRequest(
                    metadata=pb.TalkMetadata(connection_id=connection, fields=row["metadata"]),
                    audio=pb.AudioRequest(audio_metadata=audio_metadata(judge(probe_bytes(data), None).info),
                                          audio_data=pb.AudioChunk(data=data)))
                totals["files"] += 1
                totals["bytes"] += len(data)
                if bare:
                    await stub.Upload(request, metadata=(auth,))
                    continue
                os.write(fd, b'{"id": %s, "status": "sending", "line": %d}\n' % (json.dumps(key).encode(), number))
                started = time.monotonic()
                response = await stub.Upload(request, metadata=(auth, (IDEMPOTENCY_HEADER,
                                                                        idempotency_key(connection, key))))
                outcomes.append(json.dumps({"id": key, "status": "uploaded", "talk_id": response.talk_id,
                                            "bytes": len(data), "seconds": round(time.monotonic() - started, 3),
                                            "line": number}).encode() + b"\n")
                if len(outcomes) >= OUTCOMES_PER_WRITE:
                    os.write(fd, b"".join(outcomes))
                    outcomes.clear()

        await asyncio.gather(*[worker() for _ in range(concurrency)])
    if not bare:
        os.write(fd, b"".join(outcomes))
        os.close(fd)
    seconds, used = time.perf_counter() - t0, cpu() - cpu0
    await channel.close()
    print(json.dumps({**totals, "seconds": seconds, "cpu": used}))


if __name__ == "__main__":
    run(main)
