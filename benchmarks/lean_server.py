"""A lean TalkService for benchmarks: it takes every upload and checks and stores nothing, so
the client, not the server, is what a benchmark measures.

    python benchmarks/lean_server.py [--host H] [--port 0] [--latency-ms 100] [--max-streams 100]

Prints `listening on HOST:PORT` when ready. Requests are never parsed (bytes in, a fixed
answer out); each call answers after --latency-ms. It runs on uvloop where that is installed.
--max-streams sets HTTP/2's SETTINGS_MAX_CONCURRENT_STREAMS per connection, as many front
ends set it (100).
On SIGTERM or SIGINT it prints one JSON line of totals (calls, stream calls, bytes,
the most calls in flight at once, the client connections calls came over, its CPU seconds) and stops.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import grpc
from grpc import aio
from loop import run  # this script's folder is on sys.path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bulk_uploader.proto import speechsense_pb2 as pb  # noqa: E402

SERVICE = "yandex.cloud.speechsense.v1.TalkService"


class Lean:
    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.answer = pb.UploadTalkResponse(talk_id="lean").SerializeToString()
        self.totals = {"calls": 0, "streams": 0, "bytes": 0, "peak_in_flight": 0}
        self.in_flight = 0
        self.peers: set[str] = set()  # client address and port: one per TCP connection

    def _enter(self, context: aio.ServicerContext) -> None:
        self.peers.add(context.peer())
        self.totals["calls"] += 1
        self.in_flight += 1
        self.totals["peak_in_flight"] = max(self.totals["peak_in_flight"], self.in_flight)

    async def unary(self, request: bytes, context: aio.ServicerContext) -> bytes:
        self._enter(context)
        try:
            self.totals["bytes"] += len(request)
            if self.latency:
                await asyncio.sleep(self.latency)
            return self.answer
        finally:
            self.in_flight -= 1

    async def stream(self, requests: object, context: aio.ServicerContext) -> bytes:
        self._enter(context)
        self.totals["streams"] += 1
        try:
            async for message in requests:  # type: ignore[attr-defined]
                self.totals["bytes"] += len(message)
            if self.latency:
                await asyncio.sleep(self.latency)
            return self.answer
        finally:
            self.in_flight -= 1


async def serve(args: argparse.Namespace) -> None:
    lean = Lean(args.latency_ms / 1000)
    options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    if args.max_streams:
        options.append(("grpc.max_concurrent_streams", args.max_streams))
    server = aio.server(options=options)
    handlers = {
        "Upload": grpc.unary_unary_rpc_method_handler(lean.unary),
        "UploadText": grpc.unary_unary_rpc_method_handler(lean.unary),
        "UploadAsStream": grpc.stream_unary_rpc_method_handler(lean.stream),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port(f"{args.host}:{args.port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"listening on {args.host}:{port}", flush=True)  # after the handlers: a stop at once still reports
    try:
        await asyncio.wait_for(stop.wait(), args.max_seconds)
    except TimeoutError:
        pass
    await server.stop(0.5)
    times = os.times()
    print(json.dumps({**lean.totals, "connections": len(lean.peers), "cpu": round(times.user + times.system, 3)}),
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--max-streams", type=int, default=0, help="HTTP/2 streams per connection (0: gRPC's default)")
    parser.add_argument("--max-seconds", type=float, default=3600.0, help="stop by itself after this long")
    args = parser.parse_args()
    run(lambda: serve(args))  # the quicker loop takes less of the CPU the client shares with it


if __name__ == "__main__":
    main()
