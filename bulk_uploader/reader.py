"""Stage 3: read audio from disk, so files load while other rows upload.

Files sent whole are read ahead in batches (on the event loop while reads are quick, else
in a thread); streamed ones chunk by chunk with aiofiles.

A file is read whole when it goes in one Upload message, or in chunk_size pieces for
UploadAsStream; either way its first bytes are checked against the declared format
(bulk_uploader.audio) before anything is sent. Chat files are read and checked here too.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiofiles
import aiofiles.os

from bulk_uploader.audio import SNIFF_BYTES, AudioError, AudioInfo, check_audio
from bulk_uploader.chat import ChatError, ChatMessage, messages_from_document
from bulk_uploader.errors import RowInvalid
from bulk_uploader.model import Job
from bulk_uploader.validation import Validator


def check_head(job: Job, head: bytes) -> AudioInfo:
    """Check a file's first bytes against the row's declared format; RowInvalid if they do not fit."""
    try:
        return check_audio(head, job.format, sample_rate=job.sample_rate, channels=job.channels)
    except AudioError as exc:
        raise RowInvalid(f"{job.audio_path}: {exc}", "BAD_AUDIO") from None


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
    """Raise FileChanged unless `got` bytes and `st` match what the row was checked with (0: not known)."""
    if got != size or (mtime_ns and st.st_mtime_ns != mtime_ns):
        raise FileChanged(f"changed since it was checked ({size} bytes then, {got} read"
                          f"{'' if got != size else ', modified since'})")


def _read_file(path: str | Path, size: int, mtime_ns: int = 0) -> bytes:
    """A whole file whose size stat gave: os calls rather than open(), which builds two file
    objects, and a first read of exactly that size, as os.read allocates what it is asked
    for: a buffer much bigger than the file costs page faults on every file, which add up
    over many small files (benchmarks/RESULTS.md has the client's CPU per file). The file
    is read on to its end, and FileChanged raised if it is not the file the row was checked with."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = [os.read(fd, size + 1)]
        while chunk := os.read(fd, 1 << 16 if len(chunks) == 1 else 1 << 20):
            chunks.append(chunk)
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        _unchanged(os.fstat(fd), size, mtime_ns, len(data))
    finally:
        os.close(fd)
    return data


def _read_all(files: list[tuple[str, int, int]]) -> tuple[list[bytes | None], float]:
    """The files' bytes (None where a read failed) and the seconds the reads took."""
    started = time.perf_counter()
    out: list[bytes | None] = []
    for path, size, mtime_ns in files:
        try:
            out.append(_read_file(path, size, mtime_ns))
        except OSError:
            out.append(None)  # read_whole reads it again and reports the error as the row's
    return out, time.perf_counter() - started


_read_many = aiofiles.os.wrap(_read_all)


class Preloader:
    """Attaches the bytes of files sent whole to their jobs, on the event loop while reads are quick."""

    def __init__(self, budget: float = INLINE_READ_BUDGET) -> None:
        self.budget = budget
        self.inline = True
        self.batches_in_thread = 0

    async def __call__(self, jobs: list[Job]) -> list[Job]:
        if not jobs:
            return jobs
        files = [(str(job.path), job.size, job.mtime_ns) for job in jobs]
        if self.inline:
            datas, seconds = _read_all(files)
        else:
            self.batches_in_thread += 1
            datas, seconds = await _read_many(files)
        self.inline = seconds < self.budget
        for job, data in zip(jobs, datas, strict=True):
            job.data = data
        return jobs


def _head(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(SNIFF_BYTES)


# One executor hop per file instead of three (open, read, close): with thousands of small
# files a second, the hops and their GIL hand-offs are the cost.
_read_bytes = aiofiles.os.wrap(_read_file)
_read_head = aiofiles.os.wrap(_head)


async def read_head(job: Job) -> AudioInfo:
    """Read and check only a file's first bytes (dry runs and streamed files)."""
    assert job.path is not None
    try:
        head = await _read_head(job.path)
    except OSError as exc:
        raise _unreadable(job, exc) from None
    return check_head(job, head)


async def read_whole(job: Job) -> tuple[bytes, AudioInfo]:
    """A whole (small) file, preloaded or read now, and checked."""
    assert job.path is not None
    try:
        data = job.data if job.data is not None else await _read_bytes(job.path, job.size, job.mtime_ns)
    except FileChanged as exc:
        raise _changed(job, exc) from None
    except OSError as exc:
        raise _unreadable(job, exc) from None
    if not data:
        raise RowInvalid(f"audio file is empty: {job.audio_path}", "EMPTY_FILE")
    return data, check_head(job, data[:SNIFF_BYTES])


async def read_chat(job: Job, validator: Validator) -> tuple[ChatMessage, ...]:
    """Read and check a chat file in the vendor's form {"messages": [...]}."""
    assert job.chat_path is not None
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


async def read_chunks(job: Job, chunk_size: int) -> AsyncIterator[bytes]:
    """Yield a file in chunk_size pieces; memory stays at one chunk whatever the file's size.

    Raises RowInvalid (FILE_CHANGED) as soon as more bytes come than the row was checked
    with, or at the end when fewer came or the file was modified: the caller then cancels
    its call, so a file cut short or rewritten while it streams is never stored in part.
    """
    assert job.path is not None
    read = 0
    try:
        async with aiofiles.open(job.path, "rb") as f:
            while chunk := await f.read(chunk_size):
                read += len(chunk)
                if read > job.size:
                    break
                yield chunk
            _unchanged(os.fstat(f.fileno()), job.size, job.mtime_ns, read)
    except FileChanged as exc:
        raise _changed(job, exc) from None
    except OSError as exc:
        raise _unreadable(job, exc) from None
