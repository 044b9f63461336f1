"""Stage 4: speak to SpeechSense. The one home of grpc and of the generated code.

    messages.py   request messages built from Jobs (those carrying audio in wire form), the Idempotency-Key
    status.py     every gRPC error mapped to a CallFailure, in exactly one place: classify()
    channel.py    Transport: the calls (UploadAsStream driven by hand with write/done_writing,
                  never a request iterator, so a read error surfaces as itself), preflight,
                  reconnection after a stall
    pool.py       ConnectionPool: the channels (one TCP connection each, stubs that take requests
                  in wire form), which one a call
                  takes, how many are opened, a stream a full connection refused sent again
    delivery.py   DeliveryRate: what the calls that went through carried, which the allowances follow
    iam.py        IamTokenExchange, for service account keys
"""

from __future__ import annotations

import importlib
from typing import Any

# Loaded on first use, so that building requests (messages, protobuf only) does not load gRPC.
_HOMES = {
    "Transport": "channel", "IamTokenExchange": "iam", "DEFAULT_IAM_ENDPOINT": "iam", "classify": "status",
    **{name: "messages" for name in ("audio_metadata", "chunk_prefix", "chunk_request", "idempotency_key",
                                     "place_upload", "talk_metadata", "upload_request", "upload_room")},
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
