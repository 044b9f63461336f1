"""Stage 3: read audio from disk, so files load while other rows upload.

Files sent whole are read ahead in batches (on the event loop while reads are quick, else
in a thread); streamed ones chunk by chunk in a thread. Each is read straight into the bytes of
the request that sends it, after room left for the request's start.

Before anything is sent, each file is probed (bulk_uploader.probe: as much of it as its
format needs) and judged against the service's rules (bulk_uploader.audio); the answer
is a transcode.Plan: send the file as it is, or convert it on the way (--transcode, or a
row that swaps channels or joins two mono files). Chat files are read and checked here too.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from bulk_uploader import media_extra
from bulk_uploader.allocator import new_bytes, writable
from bulk_uploader.audio import AudioError, Probe, judge, sent_as
from bulk_uploader.errors import RowInvalid
from bulk_uploader.model import Job
from bulk_uploader.probe import probe_bytes, probe_file
from bulk_uploader.transcode import Plan, pcm_plan, single_plan
from bulk_uploader.validation import Validator

if TYPE_CHECKING:
    from bulk_uploader.chat import ChatMessage

_T = TypeVar("_T")


def _in_executor(work: Callable[..., _T]) -> Callable[..., Awaitable[_T]]:
    """`work` as a coroutine function that runs it on the event loop's default executor
    (aiofiles.os.wrap: a lighter hop than anyio's). aiofiles loads with the first call: a run
    whose reads stay on the event loop never needs it."""
    wrapped: list[Callable[..., Awaitable[_T]]] = []

    async def run(*args: Any) -> _T:
        if not wrapped:
            import aiofiles.os

            wrapped.append(aiofiles.os.wrap(work))
        return await wrapped[0](*args)

    return run


def _decoder_facts(path: str | Path, probe: Probe) -> Probe:
    """A probe completed by the decoder, for containers whose headers we do not read (MP4, WebM, AMR, ...)."""
    if probe.container == "unknown" or probe.damage or None not in (probe.codec, probe.channels, probe.duration):
        return probe
    if not media_extra.available():
        return probe  # such a container needs --transcode anyway, which asks for the extra
    from bulk_uploader import media

    try:
        found = media.describe(path)
    except media.MediaError as exc:
        raise AudioError(f"{probe.name}: the decoder cannot read it ({exc})") from None
    return replace(probe, codec=probe.codec or found.codec, sample_rate=probe.sample_rate or found.sample_rate,
                   channels=probe.channels or found.channels, duration=probe.duration or found.duration or None)


def _channel_plan(job: Job, first: Probe) -> Plan:
    """A row that swaps channels or joins two mono files: both decoded, then laid out left and right."""
    assert job.path is not None
    paths = (job.path,) if job.right_path is None else (job.path, job.right_path)
    probes = [first] + [probe_file(p) for p in paths[1:]]
    probes = [_decoder_facts(p, probe) for p, probe in zip(paths, probes, strict=True)]
    for n, probe in enumerate(probes):
        judge(probe, job.format if n == 0 else None, transcode=True)
    if job.right_path is not None:
        for shown, probe in zip((job.audio_path, job.right_audio_path), probes, strict=True):
            if probe.channels != 1:
                raise AudioError(f"right_audio_path joins two mono files, but {shown} is {probe.describe()}")
    elif probes[0].channels != 2:
        raise AudioError(f"swap_channels needs a two-channel file; this is {probes[0].describe()}")
    return pcm_plan(tuple(probes), paths, swap=job.swap_channels)


def plan_audio(job: Job, transcode: bool, data: bytes | memoryview | None = None) -> Plan:
    """How the row's audio is sent (blocking: run it in a thread unless `data` is already read).

    Raises RowInvalid naming what the file is and the fix when it cannot be sent.
    """
    assert job.path is not None
    try:
        probe = probe_bytes(data) if data is not None else probe_file(job.path, job.size or None)
        if job.swap_channels or job.right_path is not None:
            return _channel_plan(job, probe)
        if transcode:
            probe = _decoder_facts(job.path, probe)
        info = sent_as(probe, job.format, transcode, job.sample_rate, job.channels)
    except AudioError as exc:
        raise RowInvalid(f"{job.audio_path}: {exc}", exc.code) from None
    except OSError as exc:
        raise _unreadable(job, exc) from None
    if info is not None:
        return Plan("as-is", info, job.size, job.path, probes=(probe,))
    return single_plan(probe, job.path, job.size)


def _changed(job: Job, exc: FileChanged) -> RowInvalid:
    return RowInvalid(f"{job.audio_path} {exc}; nothing of it was stored. Run again once the file is complete",
                      "FILE_CHANGED")


def _unreadable(job: Job, exc: OSError) -> RowInvalid:
    return RowInvalid(f"cannot read {job.audio_path}: {exc.strerror or exc}", "FILE_UNREADABLE")


# Files that go whole into one Upload are read ahead by the feeder, in batches of up to
# PRELOAD_BATCH files or PRELOAD_BATCH_BYTES, and wait in the job queue with their bytes
# (READ_AHEAD_BYTES at most, or one file bigger than that). Where reads are quick (page
# cache, local disk) they run on the event loop: handing a batch to a thread costs more
# than the reads, and that thread's GIL hand-offs stall the loop at every system call, a
# cost that weighs most when the files are small and many (benchmarks/RESULTS.md has the
# client's CPU per file). A batch slower than INLINE_READ_BUDGET sends the next ones to a
# thread, so a slow network file system never holds up the calls in flight; the thread
# times its reads the same way and brings them back once they are quick again.
PRELOAD_BATCH = 16
PRELOAD_BATCH_BYTES = 4 * 1024 * 1024
READ_AHEAD_BYTES = 16 * 1024 * 1024
INLINE_READ_BUDGET = 0.002  # seconds the event loop may spend reading one batch


class FileChanged(OSError):
    """Raised when a file's size or modification time is not what it was when its row was checked."""


def _unchanged(st: os.stat_result, size: int, mtime_ns: int, got: int) -> None:
    """Raise FileChanged unless the file is the one the row was checked with: `got` bytes read of
    the `size` it had then, and `st` (fstat after the read) the same size and modification time
    (0: not known). A file that grew shows in st's size, so nothing is read past `size` to find it."""
    found = got if got < size else st.st_size
    if found != size or (mtime_ns and st.st_mtime_ns != mtime_ns):
        raise FileChanged(f"changed since it was checked ({size} bytes then, {found} now"
                          f"{'' if found != size else ', modified since'})")


def _buffer(size: int, room: bytes) -> bytes | None:
    """A new bytes object for `room` then `size` bytes read into it, `room` written; None when it
    would be under two bytes (no object of its own: such a file is read as it is).

    Made where it is filled or on the event loop, never in another thread: glibc gives each
    thread its own heap, and big buffers freed into several heaps hold far more memory than
    the budget counts."""
    if len(room) + size < 2:
        return None
    data = new_bytes(len(room) + size)
    writable(data)[: len(room)] = room
    return data


def _read_end(fd: int, buffer: bytes | None, size: int) -> tuple[bytes, int]:
    """The next `size` bytes of `fd` read into the end of `buffer` (from _buffer()), and how many came."""
    if buffer is None:
        piece = os.read(fd, size)
        return piece, len(piece)
    view = writable(buffer)[len(buffer) - size :]
    got = 0
    while got < size and (n := os.readv(fd, (view[got:],))):
        got += n
    return buffer, got


def _read_file(path: str | Path, size: int, mtime_ns: int = 0, buffer: bytes | None = None) -> bytes:
    """A whole file whose size stat gave, read straight into the end of `buffer` (from _buffer():
    the start of the request that sends it, then room for the file), or a new bytes object of
    the file's size: no buffer bigger than the file, which would cost page faults on every file
    (benchmarks/RESULTS.md has the client's CPU per file), and no second copy. FileChanged is
    raised if it is not the file the row was checked with: fewer bytes came, or fstat after the
    read gives another size or modification time. A bare descriptor: no file object, and no
    system calls but open, read, fstat and close."""
    fd = os.open(path, os.O_RDONLY)
    try:
        data, got = _read_end(fd, buffer if buffer is not None else _buffer(size, b""), size)
        st = os.fstat(fd)
    finally:
        os.close(fd)
    _unchanged(st, size, mtime_ns, got)
    return data


def _read_all(files: list[tuple[str, int, int, bytes | None]]) -> tuple[list[bytes | None], float]:
    """Each file read into its buffer (None where a read failed) and the seconds the reads took."""
    started = time.perf_counter()
    out: list[bytes | None] = []
    for path, size, mtime_ns, buffer in files:
        try:
            out.append(_read_file(path, size, mtime_ns, buffer))
        except OSError:
            out.append(None)  # read_whole reads it again and reports the error as the row's
    return out, time.perf_counter() - started


_read_many = _in_executor(_read_all)


def no_room(job: Job) -> bytes:
    """Files read as they are, nothing before them."""
    return b""


class _QuickInline:
    """Batches of file work done on the event loop while a batch takes under `budget` seconds,
    else in a thread (one executor hop a batch, never one a file) until batches are quick again."""

    def __init__(self, budget: float, inline: bool = True) -> None:
        self.budget = budget
        self.inline = inline
        self.batches_in_thread = 0

    async def _batch(self, work: Callable[..., tuple[list[Any], float]],
                     in_thread: Callable[..., Awaitable[tuple[list[Any], float]]], *args: Any) -> list[Any]:
        if self.inline:
            out, seconds = work(*args)
        else:
            self.batches_in_thread += 1
            out, seconds = await in_thread(*args)
        self.inline = seconds < self.budget
        return out


class Preloader(_QuickInline):
    """Attaches the bytes of files sent whole to their jobs, on the event loop while reads are quick:
    each file after room(job), the start of the request that sends it (the file ends it)."""

    def __init__(self, budget: float = INLINE_READ_BUDGET, room: Callable[[Job], bytes] = no_room) -> None:
        super().__init__(budget)
        self.room = room

    async def __call__(self, jobs: list[Job]) -> list[Job]:
        if not jobs:
            return jobs
        files = [(str(job.path), job.size, job.mtime_ns, _buffer(job.size, self.room(job))) for job in jobs]
        for job, data in zip(jobs, await self._batch(_read_all, _read_many, files), strict=True):
            job.data = data
        return jobs


# One executor hop per file instead of three (open, read, close): with thousands of small
# files a second, the hops and their GIL hand-offs are the cost.
_read_bytes = _in_executor(_read_file)


_plan_in_thread = _in_executor(plan_audio)  # the loop's executor: a lighter hop than anyio's, once per row


async def inspect(job: Job, transcode: bool = False) -> Plan:
    """Probe and judge a file without reading it whole (streamed and converted files)."""
    return await _plan_in_thread(job, transcode)


# A dry run reads only heads, HEAD_BATCH files at a time: one executor hop per file would
# cost several times the read itself.
HEAD_BATCH = 64


def _plan_all(jobs: list[Job], transcode: bool) -> tuple[list[Plan | Exception], float]:
    """Each job's Plan, or the exception that stopped it (RowInvalid, or a bug the row reports), and the seconds taken."""
    started = time.perf_counter()
    out: list[Plan | Exception] = []
    for job in jobs:
        try:
            out.append(plan_audio(job, transcode))
        except Exception as exc:  # kept for its own row: the others of the batch go on
            out.append(exc)
    return out, time.perf_counter() - started


_plan_many = _in_executor(_plan_all)


class HeadReader(_QuickInline):
    """A dry run's read-ahead: probes and judges a batch of files at once and leaves each row's
    Plan (or why it cannot be sent) on `job.plan`. Like Preloader, on the event loop while a
    batch is quick, else in a thread until batches are quick again; always in a thread with
    --transcode, where the decoder may be asked about a file."""

    def __init__(self, transcode: bool = False, budget: float = INLINE_READ_BUDGET) -> None:
        super().__init__(budget, inline=not transcode)
        self.transcode = transcode

    async def __call__(self, jobs: list[Job]) -> list[Job]:
        if not jobs:
            return jobs
        plans = await self._batch(_plan_all, _plan_many, jobs, self.transcode)
        self.inline = self.inline and not self.transcode
        for job, plan in zip(jobs, plans, strict=True):
            job.plan = plan
        return jobs


async def read_whole(job: Job, transcode: bool = False, room: Callable[[Job], bytes] = no_room
                     ) -> tuple[bytes, Plan]:
    """A whole (small) file after room(job), preloaded (the job lets go of it) or read now, and
    how it is sent; the file is the last job.size bytes."""
    assert job.path is not None
    data, job.data = job.data, None
    try:
        if data is None:
            data = await _read_bytes(job.path, job.size, job.mtime_ns, _buffer(job.size, room(job)))
    except FileChanged as exc:
        raise _changed(job, exc) from None
    except OSError as exc:
        raise _unreadable(job, exc) from None
    audio = memoryview(data)[len(data) - job.size :]
    if not audio:
        raise RowInvalid(f"audio file is empty: {job.audio_path}", "EMPTY_FILE")
    if transcode:  # the decoder may be asked about the file: keep it off the event loop
        return data, await _plan_in_thread(job, transcode, audio)
    return data, plan_audio(job, transcode, audio)


async def read_chat(job: Job, validator: Validator) -> tuple[ChatMessage, ...]:
    """Read and check a chat file in the vendor's form {"messages": [...]}."""
    assert job.chat_path is not None
    import aiofiles

    from bulk_uploader.chat import ChatError, messages_from_document  # only chat rows load these

    try:
        async with aiofiles.open(job.chat_path, "rb") as f:
            data = await f.read()
    except OSError as exc:
        raise RowInvalid(f"cannot read {job.audio_path}: {exc.strerror or exc}", "FILE_UNREADABLE") from None
    try:
        raw = messages_from_document(data, str(job.audio_path))
    except ChatError as exc:
        raise RowInvalid(str(exc), "BAD_CHAT") from None
    return validator.chat_messages(raw, job.fields)


async def read_chunks(job: Job, chunk_size: int, room: Callable[[int], bytes] = lambda size: b""
                      ) -> AsyncGenerator[tuple[bytes, int], None]:
    """Yield a file in chunk_size pieces, each read straight after room(its size) (the start of
    the request that carries it) into one new bytes object, with its size; memory stays at one
    piece whatever the file's size.

    Raises RowInvalid (FILE_CHANGED) as soon as fewer bytes come than the row was checked
    with, or at the end when more are left or the file was modified: the caller then cancels
    its call, so a file cut short or rewritten while it streams is never stored in part.
    """
    assert job.path is not None
    read = 0
    try:
        with await _open_in_thread(job.path) as f:
            while read < job.size:
                size = min(chunk_size, job.size - read)
                message, got = await _read_piece(f.fileno(), _buffer(size, room(size)), size)
                read += got
                if got < size:
                    _unchanged(os.fstat(f.fileno()), job.size, job.mtime_ns, read)
                yield message, size
                del message  # not held while the next piece is read
            _unchanged(os.fstat(f.fileno()), job.size, job.mtime_ns, read)
    except FileChanged as exc:
        raise _changed(job, exc) from None
    except OSError as exc:
        raise _unreadable(job, exc) from None


def _open_raw(path: str | Path) -> BinaryIO:
    return open(path, "rb", buffering=0)


_open_in_thread = _in_executor(_open_raw)
_read_piece = _in_executor(_read_end)
