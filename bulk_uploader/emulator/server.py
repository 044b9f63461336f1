"""The local SpeechSense emulator's server: the grpc.aio server around the emulator's state.

Used by the test suite, the benchmarks and users rehearsing a migration. Emulator serves
the TalkService (talks.py: the real wire format and the real rules, faults on demand) and
the IAM token service for service account keys (iam.py) on one grpc.aio server; its state
(state.py) holds the connections it knows, the SQLite talk store (store.py), the fault
injector (faults.py) and which `authorization` headers it accepts.
"""

from __future__ import annotations

from grpc import aio

from bulk_uploader import media_extra
from bulk_uploader.emulator.iam import IamTokenServicer
from bulk_uploader.emulator.state import DEFAULT_CONNECTIONS, EmulatorOptions, EmulatorState, mint_token
from bulk_uploader.emulator.talks import TalkServicer
from bulk_uploader.proto import iam_pb2_grpc
from bulk_uploader.proto import speechsense_pb2_grpc as pb_grpc

__all__ = ["DEFAULT_CONNECTIONS", "Emulator", "EmulatorOptions", "mint_token"]


class Emulator(EmulatorState):
    """The TalkService emulator, run in-process (tests) or by `bulk-upload emulator`.

        async with Emulator(EmulatorOptions(api_keys=["k"])) as emu:
            target = emu.target  # "127.0.0.1:<port>"
    """

    def __init__(self, options: EmulatorOptions | None = None) -> None:
        super().__init__(options)
        self.port = 0
        self._server: aio.Server | None = None

    @property
    def target(self) -> str:
        """host:port to dial."""
        return f"{self.options.host}:{self.port}"

    async def start(self) -> int:
        """Bind and start serving; returns the port (ConfigError without the media extra: it judges audio)."""
        media_extra.require("the emulator, which decodes audio to judge it,")
        limit = self.options.max_receive_bytes
        options = [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]
        if self.options.max_streams:
            options.append(("grpc.max_concurrent_streams", self.options.max_streams))
        self._server = aio.server(options=options)
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
