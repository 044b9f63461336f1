"""How gRPC's answers become CallFailures: the one place they are translated (classify)."""

from __future__ import annotations

import asyncio
import re

import grpc
from grpc import aio

from bulk_uploader.errors import CallFailure

PUSHBACK_TRAILER = "grpc-retry-pushback-ms"
# What gRPC says of a call that never reached the service: no connection (refused, DNS, a
# TLS handshake that failed), or a stream the server refused (HTTP/2 REFUSED_STREAM, code 7:
# most often the connection already carries as many streams as the server allows).
NO_CONNECTION = re.compile(r"failed to connect to all addresses|errors resolving|DNS resolution failed|"
                           r"name resolution|empty address list", re.IGNORECASE)
REFUSED_STREAM = re.compile(r"REFUSED_STREAM|RST_STREAM with error code 7|stream refused", re.IGNORECASE)
LOST_STATUS = "Internal error from Core"  # what grpc.aio reports in place of a status it lost


def classify(exc: BaseException, *, request_complete: bool = True, auth_header: str = "") -> CallFailure:
    """Map a grpc error (or a failure of the call machinery) to a CallFailure."""
    failure = _classify(exc)
    failure.request_complete, failure.auth_header = request_complete, auth_header
    return failure


def _classify(exc: BaseException) -> CallFailure:
    if isinstance(exc, aio.AioRpcError):
        pushback = None
        for key, value in exc.trailing_metadata() or ():
            if key == PUSHBACK_TRAILER:
                try:
                    pushback = max(0.0, int(value) / 1000.0)
                except ValueError:
                    pass
        details = exc.details() or exc.code().name
        failure = CallFailure(exc.code().name, details, pushback)
        if exc.code() == grpc.StatusCode.UNAVAILABLE:
            failure.refused_stream = REFUSED_STREAM.search(details) is not None
            failure.not_sent = failure.refused_stream or NO_CONNECTION.search(details) is not None
        return failure
    return CallFailure("UNAVAILABLE", f"{type(exc).__name__}: {exc}")


def closed_under(auth: str, *, request_complete: bool = True) -> BaseException:
    """What a call raises when asyncio cancelled it: our own cancellation stays one; a call
    cancelled because its channel was closed under it (a stalled connection replaced) is a
    failure like any lost connection (UNAVAILABLE), whose outcome is unknown once its request had left."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        return asyncio.CancelledError()
    return CallFailure("UNAVAILABLE", "the call's connection was closed while it was in flight",
                       request_complete=request_complete, auth_header=auth)


