"""Stage 4: speak to SpeechSense. The one home of grpc and of the generated code.

    messages.py   request messages built from Jobs (those carrying audio in wire form), the Idempotency-Key
    status.py     every gRPC error mapped to a CallFailure, in exactly one place: classify()
    channel.py    Transport: the channel, the calls (UploadAsStream driven by hand with
                  write/done_writing, never a request iterator, so a read error surfaces as
                  itself), preflight, reconnection after a stall
    iam.py        IamTokenExchange, for service account keys
"""

from bulk_uploader.transport.channel import Transport
from bulk_uploader.transport.iam import DEFAULT_IAM_ENDPOINT, IamTokenExchange
from bulk_uploader.transport.messages import (
    audio_metadata,
    chunk_prefix,
    chunk_request,
    idempotency_key,
    place_upload,
    talk_metadata,
    upload_request,
    upload_room,
)
from bulk_uploader.transport.status import classify

__all__ = ["DEFAULT_IAM_ENDPOINT", "IamTokenExchange", "Transport", "audio_metadata", "chunk_prefix", "chunk_request",
           "classify", "idempotency_key", "place_upload", "talk_metadata", "upload_request", "upload_room"]
