"""The local SpeechSense emulator: its options, the server's start and stop, and who may call it.

Used by the test suite, the benchmarks and users rehearsing a migration. Emulator serves
the TalkService (talks.py: the real wire format and the real rules, faults on demand) and
the IAM token service for service account keys (iam.py) on one grpc.aio server; it holds
the connections it knows, the SQLite talk store (store.py) and the fault injector
(faults.py), and decides which `authorization` headers it accepts.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from grpc import aio

from bulk_uploader.emulator.faults import FaultInjector, FaultOptions
from bulk_uploader.emulator.iam import IamTokenServicer
from bulk_uploader.emulator.store import TalkStore
from bulk_uploader.emulator.talks import TalkServicer
from bulk_uploader.proto import iam_pb2_grpc
from bulk_uploader.proto import speechsense_pb2_grpc as pb_grpc
from bulk_uploader.sakey import ServiceAccountKey
from bulk_uploader.schema import ConnectionSchema

DEFAULT_CONNECTIONS = (
    ConnectionSchema.default("audio", "demo-audio"),
    ConnectionSchema.default("chat", "demo-chat"),
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
    # How Search names user metadata keys: unknown for the real service (`user.` or `userMeta.`).
    user_key_prefix: str = "user."
    max_receive_bytes: int = MAX_RECEIVE_BYTES
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


class Emulator:
    """The TalkService emulator, run in-process (tests) or by `bulk-upload emulator`.

        async with Emulator(EmulatorOptions(api_keys=["k"])) as emu:
            target = emu.target  # "127.0.0.1:<port>"
    """

    def __init__(self, options: EmulatorOptions | None = None) -> None:
        self.options = options or EmulatorOptions()
        self.connections = {c.id: c for c in self.options.connections if c.id}
        self.store = TalkStore(self.options.store_path)
        self.injector = FaultInjector(self.options.faults)
        self._tokens: dict[str, float | None] = {t: None for t in self.options.iam_tokens}
        self.rejections: dict[str, int] = {}  # status name -> calls refused with it
        self.answers_lost = 0
        # What the decoder found in the audio of the latest talks: talk id -> (channels, seconds).
        # For tests and rehearsals; only the latest talks.DECODED_KEPT are kept.
        self.decoded: dict[str, tuple[int, float]] = {}
        self.tokens_seen: set[str] = set()  # distinct minted tokens accepted
        self.iam_tokens_issued = 0  # by IamTokenService.Create
        self.jwts_refused = 0
        self.port = 0
        self._server: aio.Server | None = None

    @property
    def target(self) -> str:
        """host:port to dial."""
        return f"{self.options.host}:{self.port}"

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

    async def start(self) -> int:
        """Bind and start serving; returns the port."""
        limit = self.options.max_receive_bytes
        self._server = aio.server(
            options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]
        )
        pb_grpc.add_TalkServiceServicer_to_server(TalkServicer(self), self._server)
        iam_pb2_grpc.add_IamTokenServiceServicer_to_server(IamTokenServicer(self), self._server)
        self.port = self._server.add_insecure_port(f"{self.options.host}:{self.options.port}")
        await self._server.start()
        return self.port

    async def stop(self, grace: float | None = 1.0) -> None:
        """Stop serving (letting calls in flight finish within grace) and close the store."""
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        self.store.close()

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop(grace=0.2)
