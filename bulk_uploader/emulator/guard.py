"""The envelope of every TalkService call: credentials, admission, injected faults, response time.

A call is authenticated, admitted past the fault injector's caps and handed an injected
error if one is drawn; a Rejected raised inside the envelope becomes the call's gRPC status
and is counted in Emulator.rejections.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc
from grpc import aio

from bulk_uploader.emulator.checks import Rejected, reject

if TYPE_CHECKING:
    from bulk_uploader.emulator.state import EmulatorState


async def sleep_until(deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining > 0:
        await asyncio.sleep(remaining)


@contextlib.asynccontextmanager
async def guarded(emu: EmulatorState, context: aio.ServicerContext) -> AsyncIterator[None]:
    """Authenticate, admit and time one call; turn Rejected into a gRPC status.

    Latency is response time: the call is handled at once and answered `delay` after it
    arrived (not after `delay` plus the handling), so a load of N calls in flight at
    latency L is served at N/L, as a service with that response time would.
    """
    faults = emu.injector
    admitted = False
    answer_at = 0.0
    peer = context.peer()
    emu.peers[peer] = emu.peers.get(peer, 0) + 1
    try:
        header = dict(context.invocation_metadata() or ()).get("authorization", "")
        if not emu.authorized(header):
            reject(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid credentials")
        refused = faults.enter()
        if refused:
            raise Rejected(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                refused,
                (("grpc-retry-pushback-ms", str(faults.pushback_ms())),),
            )
        admitted = True
        answer_at = time.monotonic() + faults.delay()
        code = faults.error()
        if code is not None:
            reject(code, f"injected fault: {code.name}")
        yield
        await sleep_until(answer_at)
    except Rejected as exc:
        await sleep_until(answer_at)
        emu.rejections[exc.code.name] = emu.rejections.get(exc.code.name, 0) + 1
        await context.abort(exc.code, exc.message, trailing_metadata=exc.trailers)
    finally:
        if admitted:
            faults.leave()
