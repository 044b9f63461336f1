"""Stage 3: read audio from disk with aiofiles, so files load while other rows upload.

A file is read whole when it goes in one Upload message, or in chunk_size pieces for
UploadAsStream; either way its first bytes are checked against the declared format
(bulk_uploader.audio) before anything is sent. Chat files are read and checked here too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiofiles
import aiofiles.os

from bulk_uploader.audio import SNIFF_BYTES, AudioError, AudioInfo, check_audio
from bulk_uploader.chat import ChatError, ChatMessage, messages_from_document
from bulk_uploader.validation import Job, RowInvalid, Validator


def check_head(job: Job, head: bytes) -> AudioInfo:
    """Check a file's first bytes against the row's declared format; RowInvalid if they do not fit."""
    try:
        return check_audio(head, job.format, sample_rate=job.sample_rate, channels=job.channels)
    except AudioError as exc:
        raise RowInvalid(f"{job.audio_path}: {exc}", "BAD_AUDIO") from None


def _unreadable(job: Job, exc: OSError) -> RowInvalid:
    return RowInvalid(f"cannot read {job.audio_path}: {exc.strerror or exc}", "FILE_UNREADABLE")


# Small files are read ahead by the feeder, PRELOAD_BATCH at a time in one executor hop:
# per file, the hop costs more than the read. Memory: (concurrency + batch) x 256 KiB at most.
PRELOAD_MAX_BYTES = 256 * 1024
PRELOAD_BATCH = 16


def _read_all(paths: list[Path]) -> list[bytes | None]:
    out: list[bytes | None] = []
    for path in paths:
        try:
            out.append(path.read_bytes())
        except OSError:
            out.append(None)  # read_whole reads it again and reports the error as the row's
    return out


_read_many = aiofiles.os.wrap(_read_all)


async def preload(jobs: list[Job]) -> list[Job]:
    """The jobs with their (small) files' bytes attached, read in one executor hop."""
    if not jobs:
        return jobs
    datas = await _read_many([job.path for job in jobs])
    for job, data in zip(jobs, datas, strict=True):
        job.data = data
    return jobs


def _head(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(SNIFF_BYTES)


# One executor hop per file instead of three (open, read, close): with thousands of small
# files a second, the hops and their GIL hand-offs are the cost.
_read_bytes = aiofiles.os.wrap(Path.read_bytes)
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
        data = job.data if job.data is not None else await _read_bytes(job.path)
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
    """Yield a file in chunk_size pieces; memory stays at one chunk whatever the file's size."""
    assert job.path is not None
    try:
        async with aiofiles.open(job.path, "rb") as f:
            while chunk := await f.read(chunk_size):
                yield chunk
    except OSError as exc:
        raise _unreadable(job, exc) from None
