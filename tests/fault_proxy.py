"""A TCP proxy between the client and the emulator that fails the way networks do, on command.

    forward    pass bytes both ways (new and open connections)
    refuse     nothing listens: new connections are refused, open ones are reset
    blackhole  open connections go silent (bytes dropped, nothing closed); new ones pass
    stall      new connections are accepted and then hear nothing; open ones pass

and, in any mode that passes bytes: throttle(rate) caps what goes from clients to the server
at `rate` bytes/s in all (a slow uplink), and silence_oldest() silences one open connection,
the oldest, as blackhole does all of them.

It runs its own event loop on a thread, so a test can drive a CLI subprocess beside it.
"""

from __future__ import annotations

import asyncio
import socket
import threading


class FaultProxy:
    """Listens on 127.0.0.1:port and forwards to `target` (host:port) as the mode says."""

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self._upstream = (host, int(port))
        self.mode = "forward"
        self.rate = 0.0  # bytes/s from clients to the server in all (0: no cap)
        self._next_send = 0.0  # loop time the capped direction may send again
        self._pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter, list[bool]]] = []
        self._silenced: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter, list[bool]]] = []
        self._server: asyncio.Server | None = None
        self._loop = asyncio.new_event_loop()
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), name="fault-proxy", daemon=True)
        self._thread.start()
        assert ready.wait(10)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._listen())
        ready.set()
        self._loop.run_forever()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "stall":
            await reader.read()  # hear it all, say nothing
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.close()
            return
        alive = [True]
        pair = (writer, up_writer, alive)
        self._pairs.append(pair)
        try:
            await asyncio.gather(self._pipe(reader, up_writer, alive, capped=True), self._pipe(up_reader, writer, alive))
        finally:
            # Closed: no longer one of the open connections that silence_oldest and set() act on
            # (the client's round-trip handshakes close at once, and must not be taken for its channels).
            if pair in self._pairs:
                self._pairs.remove(pair)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, alive: list[bool],
                    capped: bool = False) -> None:
        loop = asyncio.get_running_loop()
        try:
            while data := await reader.read(16384 if capped and self.rate else 65536):
                if capped and self.rate:  # each piece waits for its turn at the shared rate
                    self._next_send = max(self._next_send, loop.time()) + len(data) / self.rate
                    await asyncio.sleep(self._next_send - loop.time())
                if alive[0]:
                    writer.write(data)
                    await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if alive[0]:
                writer.close()

    def throttle(self, rate: float) -> None:
        """Cap what clients send at `rate` bytes/s in all (0: no cap)."""
        self.rate = rate

    def silence_oldest(self) -> None:
        """The oldest open connection goes silent (bytes dropped, nothing closed); the others pass."""
        asyncio.run_coroutine_threadsafe(self._silence_oldest(), self._loop).result(10)

    async def _silence_oldest(self) -> None:
        pair = self._pairs.pop(0)
        pair[2][0] = False
        self._silenced.append(pair)

    def set(self, mode: str) -> None:
        """Switch to a mode (forward, refuse, blackhole, stall)."""
        asyncio.run_coroutine_threadsafe(self._switch(mode), self._loop).result(10)

    async def _switch(self, mode: str) -> None:
        self.mode = mode
        if mode in ("refuse", "blackhole"):
            pairs, self._pairs = self._pairs, []
            self._silenced += pairs
            for client, upstream, alive in pairs:
                alive[0] = False
                if mode == "refuse":
                    for side in (client, upstream):
                        transport = side.transport
                        sock = transport.get_extra_info("socket")
                        if sock is not None and not transport.is_closing():  # reset, as a host that went away does
                            try:
                                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                            except OSError:
                                pass
                        transport.abort()
        if mode == "refuse" and self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        elif mode != "refuse" and self._server is None:
            await self._listen()

    def close(self) -> None:
        """Stop listening, close every connection, end the thread."""
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _shutdown(self) -> None:
        await self._switch("refuse")
        for client, upstream, _ in self._silenced:
            for side in (client, upstream):
                side.close()
        current = asyncio.current_task()
        tasks = [task for task in asyncio.all_tasks() if task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
