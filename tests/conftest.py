"""Shared fixtures: a real emulator on port 0, a channel to it, sample data on disk."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from grpc import aio

from bulk_uploader.emulator import Emulator, EmulatorOptions
from bulk_uploader.proto import speechsense_pb2_grpc as pb_grpc

API_KEY = "emulator-test-key"  # accepted by the test emulator only; not a real credential
AUTH = (("authorization", f"Api-Key {API_KEY}"),)
REPO = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long tests first: the workers share tests out in collection order, so each long one
    starts at once beside the short ones instead of holding the suite up at its end."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


@pytest.fixture(scope="session")
def vendor_python() -> Path:
    """The interpreter of the pinned vendor environment (tests/vendor_env.py), built on first use."""
    from vendor_env import vendor_python as build

    return build()


@pytest.fixture
async def emulator(tmp_path: Path) -> AsyncIterator[Emulator]:
    emu = Emulator(EmulatorOptions(api_keys=[API_KEY], store_path=tmp_path / "store.sqlite3"))
    await emu.start()
    try:
        yield emu
    finally:
        await emu.stop(grace=0.2)


@pytest.fixture
async def stub(emulator: Emulator) -> AsyncIterator[pb_grpc.TalkServiceStub]:
    async with aio.insecure_channel(emulator.target) as channel:
        yield pb_grpc.TalkServiceStub(channel)


def cli_env(**extra: str) -> dict[str, str]:
    """Environment for a CLI subprocess: no inherited credentials, plain output."""
    env = {k: v for k, v in os.environ.items() if k not in ("API_KEY", "IAM_TOKEN")}
    env.update({"PYTHONUNBUFFERED": "1", "COLUMNS": "200", **extra})
    return env


def upload_argv(target: str, manifest: Path, *extra: str) -> list[str]:
    """`bulk-upload MANIFEST` against a plaintext emulator, as argv for a process."""
    return [sys.executable, "-m", "bulk_uploader", str(manifest), "--endpoint", target, "--insecure",
            "--connection-id", "demo-audio", *extra]


def start_upload(target: str, manifest: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`bulk-upload MANIFEST` started in the background (for signal and kill tests)."""
    return subprocess.Popen(upload_argv(target, manifest, *extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env or cli_env(API_KEY=API_KEY))


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `bulk-upload ARGS` as a real process."""
    return subprocess.run(
        [sys.executable, "-m", "bulk_uploader", *args],
        capture_output=True, text=True, timeout=timeout, env=env or cli_env(), stdin=subprocess.DEVNULL,
    )


class EmulatorProcess:
    """`bulk-upload emulator` in its own process (for tests that kill or signal it)."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bulk_uploader", "emulator", "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(), stdin=subprocess.DEVNULL,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert "listening on" in line, line + (self.proc.stderr.read() if self.proc.stderr else "")
        self.target = line.rsplit(" ", 1)[1].strip()
        self.proc.stdout.readline()  # connections line

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
        out, _ = self.proc.communicate(timeout=30)
        return out


@pytest.fixture
def emulator_process() -> Iterator[type[EmulatorProcess]]:
    started: list[EmulatorProcess] = []

    class Tracked(EmulatorProcess):
        def __init__(self, *args: str) -> None:
            super().__init__(*args)
            started.append(self)

    yield Tracked
    for process in started:
        if process.proc.poll() is None:
            process.proc.kill()
        process.proc.communicate(timeout=30)  # reaps it and closes the pipes


class ThreadedEmulator:
    """An in-process emulator on its own event loop thread, for tests that block (CLI subprocesses)."""

    def __init__(self, options: EmulatorOptions) -> None:
        import asyncio
        import threading

        self.emulator = Emulator(options)
        self._loop = asyncio.new_event_loop()
        started = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self.emulator.start())
            started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="emulator", daemon=True)
        self._thread.start()
        assert started.wait(10), "emulator did not start"

    @property
    def target(self) -> str:
        return self.emulator.target

    def close(self) -> None:
        import asyncio

        asyncio.run_coroutine_threadsafe(self.emulator.stop(grace=0.2), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ThreadedEmulator]:
    """The emulator on a background thread, storing to tmp_path/store.sqlite3."""
    server = ThreadedEmulator(EmulatorOptions(api_keys=[API_KEY], store_path=tmp_path / "store.sqlite3"))
    try:
        yield server
    finally:
        server.close()
