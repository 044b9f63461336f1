"""Stage 4: speak to SpeechSense. The one home of grpc and of the generated code.

    messages.py   request messages built from Jobs, the Idempotency-Key
    status.py     every gRPC error mapped to a CallFailure, in exactly one place: classify()
    channel.py    Transport: the calls (UploadAsStream driven by hand with write/done_writing,
                  never a request iterator, so a read error surfaces as itself), preflight,
                  reconnection after a stall
    pool.py       ConnectionPool: the channels (one TCP connection each), which one a call
                  takes, how many are opened, a stream a full connection refused sent again
    iam.py        IamTokenExchange, for service account keys
"""

from bulk_uploader.transport.channel import Transport
from bulk_uploader.transport.iam import DEFAULT_IAM_ENDPOINT, IamTokenExchange
from bulk_uploader.transport.messages import audio_metadata, idempotency_key, talk_metadata
from bulk_uploader.transport.status import classify

__all__ = ["DEFAULT_IAM_ENDPOINT", "IamTokenExchange", "Transport", "audio_metadata", "classify",
           "idempotency_key", "talk_metadata"]
