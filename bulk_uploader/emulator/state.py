"""The emulator's state: its options, the connections it knows, the talk store, the faults it
injects, the credentials it accepts and what it has counted. The services (talks.py,
iam.py, guard.py) work on this; server.py adds the grpc.aio server around it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bulk_uploader.emulator.faults import FaultInjector, FaultOptions
from bulk_uploader.emulator.metadata import default_connection
from bulk_uploader.emulator.reading import DOCUMENTED_READ_QUOTA, Processing, ReadQuota
from bulk_uploader.emulator.store import TalkStore
from bulk_uploader.sakey import ServiceAccountKey
from bulk_uploader.schema import ConnectionSchema

DEFAULT_CONNECTIONS = (
    default_connection("audio", "demo-audio"),
    default_connection("chat", "demo-chat"),
)
MAX_RECEIVE_BYTES = 256 * 1024 * 1024  # the real limit is unknown; the API documents 128 MB uploads


@dataclass(frozen=True, kw_only=True)
class EmulatorOptions:
    """How to run the emulator; credentials are the ones it accepts."""

    host: str = "127.0.0.1"
    port: int = 0  # 0 picks a free port
    api_keys: Sequence[str] = ()
    iam_tokens: Sequence[str] = ()
    connections: Sequence[ConnectionSchema] = DEFAULT_CONNECTIONS
    store_path: Path | str = ":memory:"
    faults: FaultOptions = field(default_factory=FaultOptions)
    # How Search names the metadata given at upload: the documentation's `userMeta.<field>`
    # (the .proto comment says `user.`); a bare field name matches nothing.
    user_key_prefix: str = "userMeta."
    # Reads (Search, Get) admitted per project: (reads, window seconds); () enforces none.
    read_quota: Sequence[tuple[int, float]] = DOCUMENTED_READ_QUOTA
    index_lag: float = 0.0  # seconds before Search sees a stored talk (Get sees it at once)
    processing: Processing = field(default_factory=Processing)
    max_receive_bytes: int = MAX_RECEIVE_BYTES
    # Calls (HTTP/2 streams) one client connection may carry at once, as front ends limit
    # them (often 100); the streams beyond are refused (REFUSED_STREAM). 0: gRPC's default, no limit.
    max_streams: int = 0
    # Accept IAM tokens minted with this secret by mint_token() in any process, until they
    # expire: lets a token command (a separate process) hand out short-lived tokens.
    token_secret: str | None = None
    # Service account keys whose JWTs IamTokenService.Create exchanges for IAM tokens
    # that live iam_token_ttl seconds (the real service: up to 12 hours).
    service_account_keys: Sequence[ServiceAccountKey] = ()
    iam_token_ttl: float = 12 * 3600.0
    # Seconds of each upload's audio decoded (the rest is demuxed, which gives its length):
    # proves the codec's data decodes without paying to decode hours of audio per talk.
    audio_decode_seconds: float = 60.0


def mint_token(secret: str, ttl_seconds: float) -> str:
    """An IAM token the emulator started with `token_secret=secret` accepts for ttl_seconds."""
    expiry = f"{time.time() + ttl_seconds:.3f}"
    mac = hmac.new(secret.encode(), expiry.encode(), hashlib.sha256).hexdigest()
    return f"emu1.{expiry}.{mac}"


class EmulatorState:
    """What the services share: the options, the connections, the store, the faults, who may call, the counts."""

    def __init__(self, options: EmulatorOptions | None = None) -> None:
        self.options = options or EmulatorOptions()
        self.connections = {c.id: c for c in self.options.connections if c.id}
        self.store = TalkStore(self.options.store_path)
        self.injector = FaultInjector(self.options.faults)
        self.read_quota = ReadQuota(self.options.read_quota)
        self._tokens: dict[str, float | None] = {t: None for t in self.options.iam_tokens}
        self.rejections: dict[str, int] = {}  # status name -> calls refused with it
        self.answers_lost = 0
        self.peers: dict[str, int] = {}  # client address and port (one per TCP connection) -> calls it carried
        # What the decoder found in the audio of the latest talks: talk id -> (channels, seconds).
        # For tests and rehearsals; only the latest talks.DECODED_KEPT are kept.
        self.decoded: dict[str, tuple[int, float]] = {}
        self.talks_lost: list[str] = []  # ids answered but never stored (FaultOptions.lose_every)
        self.reads = 0  # Search and Get calls admitted under the read quota
        self.reads_refused = 0  # refused for the read quota
        self.tokens_seen: set[str] = set()  # distinct minted tokens accepted
        self.iam_tokens_issued = 0  # by IamTokenService.Create
        self.jwts_refused = 0

    def set_faults(self, faults: FaultOptions) -> None:
        """Change the injected faults while running."""
        self.injector = FaultInjector(faults)

    def issue_token(self, ttl_seconds: float | None = None) -> str:
        """Mint an IAM token the emulator accepts, expiring after ttl_seconds (None: never)."""
        token = "t1." + secrets.token_urlsafe(24)
        self._tokens[token] = None if ttl_seconds is None else time.monotonic() + ttl_seconds
        return token

    def authorized(self, header: str) -> bool:
        """Whether an `authorization` header carries a key or an unexpired token it accepts."""
        scheme, _, secret = header.partition(" ")
        if scheme == "Api-Key":
            return secret in self.options.api_keys
        if scheme == "Bearer" and secret in self._tokens:
            expiry = self._tokens[secret]
            return expiry is None or time.monotonic() < expiry
        if scheme == "Bearer" and self.options.token_secret and secret.startswith("emu1."):
            expiry_text, _, mac = secret[5:].rpartition(".")
            good = hmac.new(self.options.token_secret.encode(), expiry_text.encode(), hashlib.sha256).hexdigest()
            try:
                live = time.time() < float(expiry_text)
            except ValueError:
                return False
            if hmac.compare_digest(mac, good) and live:
                self.tokens_seen.add(secret)
                return True
        return False
