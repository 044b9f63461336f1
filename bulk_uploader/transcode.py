"""--transcode and the channel options: what a row's audio becomes on its way, streamed.

A Plan says how a row's file(s) become what is sent:

    as-is    the file, byte for byte (whatever --transcode says)
    rewrap   16-bit LPCM in an RF64 file or a WAV whose header was never finished: a new
             44-byte WAV header, then the file's own audio bytes
    unwrap   MP3 inside a RIFF/WAV wrapper: the MP3 frames alone, not re-encoded
    remux    Opus inside WebM/Matroska: the same packets in OGG, not re-encoded
    decode   anything else, and every row that swaps channels or joins two mono files:
             decoded to 16-bit LPCM and sent as raw PCM, at the source's rate (brought
             into 8..48 kHz) and with its channels as they are, never mixed

Raw LPCM is lossless, costs next to no CPU beyond decoding, and needs no header that
would have to know the length in advance, so it streams (README.md, "Formats and
conversion", has the cost per audio hour). Every converted row goes through
UploadAsStream, its chunks made as they are sent: a converted row holds one chunk in
memory, whatever the file's length. Each attempt converts again.
"""

from __future__ import annotations

import os
import struct
import sys
from array import array
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import field
from pathlib import Path
from typing import Literal

import anyio.to_thread

from bulk_uploader.audio import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, AudioError, AudioFormat, AudioInfo, Probe
from bulk_uploader.records import Record, record

How = Literal["as-is", "rewrap", "unwrap", "remux", "decode"]


@record(slots=True)
class Plan(Record):
    """How one row's audio is sent: `info` is the format on the wire, `source` what the file was."""

    how: How
    info: AudioInfo
    estimate: int  # bytes expected on the wire (for the attempt's deadline)
    path: str | Path | None = None
    right_path: str | Path | None = None  # the right channel's own mono file
    data_range: tuple[int, int] | None = None
    swap: bool = False
    probes: tuple[Probe, ...] = field(default=(), repr=False)

    def __init__(self, how: How, info: AudioInfo, estimate: int, path: str | Path | None = None,
                 right_path: str | Path | None = None, data_range: tuple[int, int] | None = None, swap: bool = False,
                 probes: tuple[Probe, ...] = ()) -> None:  # made once a row (bulk_uploader.records)
        self.how = how
        self.info = info
        self.estimate = estimate
        self.path = path
        self.right_path = right_path
        self.data_range = data_range
        self.swap = swap
        self.probes = probes

    @property
    def source(self) -> str:
        """What the file (or files) are, for the results file."""
        return " + ".join(p.describe() for p in self.probes)

    @property
    def converted(self) -> bool:
        """Whether what is sent differs from the file's bytes."""
        return self.how != "as-is"

    def chunks(self, chunk_size: int) -> Iterator[bytes]:
        """The bytes to send, about chunk_size at a time (run it in a worker thread: it decodes)."""
        assert self.path is not None
        if self.how in ("rewrap", "unwrap"):
            assert self.data_range is not None
            header = wav_header(self.info, self.data_range[1]) if self.how == "rewrap" else b""
            return _file_range(self.path, *self.data_range, chunk_size, header)
        from bulk_uploader import media

        if self.how == "remux":
            return media.remux(self.path, "ogg", chunk_size)
        rate = self.info.sample_rate or MIN_SAMPLE_RATE
        left = media.decode_pcm(self.path, rate, chunk_size)
        if self.right_path is not None:
            right = media.decode_pcm(self.right_path, rate, chunk_size // 2)
            return _joined(right, left, chunk_size) if self.swap else _joined(left, right, chunk_size)
        return _swapped(left) if self.swap else _native(left)


def wav_header(info: AudioInfo, data_size: int) -> bytes:
    """A canonical 44-byte header for 16-bit LPCM of data_size bytes."""
    rate, channels = info.sample_rate or 0, info.channels or 1
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * channels * 2, channels * 2, 16)
    return (b"RIFF" + struct.pack("<I", 36 + data_size) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
            + b"data" + struct.pack("<I", data_size))


def _file_range(path: str | Path, offset: int, size: int, chunk_size: int, header: bytes) -> Iterator[bytes]:
    with open(path, "rb") as f:
        f.seek(offset)
        first = True
        while size > 0:
            piece = f.read(min(chunk_size, size))
            if not piece:
                raise AudioError(f"{os.path.basename(path)} ended {size:,} bytes early while it was being sent")
            size -= len(piece)
            yield header + piece if first else piece
            first = False


def _little_endian(samples: array[int]) -> bytes:
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tobytes()


def _native(pieces: Iterator[bytes]) -> Iterator[bytes]:
    if sys.byteorder == "little":
        return pieces
    return (_little_endian(array("h", piece)) for piece in pieces)


def _swapped(pieces: Iterator[bytes]) -> Iterator[bytes]:
    """Two-channel PCM with left and right exchanged (each piece holds whole frames)."""
    for piece in pieces:
        samples = array("h", piece)
        out = array("h", samples)
        out[0::2], out[1::2] = samples[1::2], samples[0::2]
        yield _little_endian(out)


def _pull(source: Iterator[bytes], buffer: bytearray, want: int) -> bool:
    """Fill buffer to `want` bytes from source; False once the source is exhausted."""
    while len(buffer) < want:
        piece = next(source, None)
        if piece is None:
            return False
        buffer += piece
    return True


def _joined(left: Iterator[bytes], right: Iterator[bytes], chunk_size: int) -> Iterator[bytes]:
    """Two mono PCM streams as one two-channel stream; the shorter is padded with silence to the longer."""
    lbuf, rbuf = bytearray(), bytearray()
    want = max(2, chunk_size // 2)
    while True:
        more = _pull(left, lbuf, want) | _pull(right, rbuf, want)
        n = min(len(lbuf), len(rbuf)) if more else max(len(lbuf), len(rbuf))
        n -= n % 2
        if n == 0 and not more:
            return
        out = array("h", bytes(2 * n))
        out[0::2] = array("h", bytes(lbuf[:n]).ljust(n, b"\0"))
        out[1::2] = array("h", bytes(rbuf[:n]).ljust(n, b"\0"))
        del lbuf[:n], rbuf[:n]
        yield _little_endian(out)


async def stream(plan: Plan, chunk_size: int, frame: Callable[[bytes], bytes] = bytes
                 ) -> AsyncGenerator[tuple[bytes, int], None]:
    """A plan's chunks, each made in a worker thread, so decoding never holds up the event loop,
    and yielded as frame(chunk) (the request carrying it) with its size; the chunk itself is let
    go once framed."""
    chunks = plan.chunks(chunk_size)
    try:
        while (piece := await anyio.to_thread.run_sync(next, chunks, None)) is not None:
            size = len(piece)
            message = frame(piece)
            del piece
            yield message, size
            del message  # not held while the next chunk is made
    finally:
        chunks.close() if hasattr(chunks, "close") else None


def clamp_rate(rate: int | None) -> int:
    """A rate the service takes: the source's, brought into 8..48 kHz."""
    return min(max(rate or MIN_SAMPLE_RATE, MIN_SAMPLE_RATE), MAX_SAMPLE_RATE)


def pcm_plan(probes: tuple[Probe, ...], paths: tuple[str | Path, ...], *, swap: bool) -> Plan:
    """Decode to raw PCM: one file (perhaps swapped), or two mono files joined left and right."""
    rate = clamp_rate(max(p.sample_rate or 0 for p in probes))
    channels = 2 if len(paths) == 2 else probes[0].channels or 1
    duration = max(p.duration or 0.0 for p in probes)
    return Plan("decode", AudioInfo(AudioFormat.PCM, rate, channels), int(duration * rate * channels * 2),
                path=paths[0], right_path=paths[1] if len(paths) == 2 else None, swap=swap, probes=probes)


def single_plan(probe: Probe, path: str | Path, size: int) -> Plan:
    """How one file the service would refuse is converted: the lightest way that gives an accepted format."""
    rate_ok = MIN_SAMPLE_RATE <= (probe.sample_rate or 0) <= MAX_SAMPLE_RATE
    if probe.container in ("wav", "rf64") and probe.data_range is not None:
        if probe.codec == "pcm_s16le" and rate_ok:
            info = AudioInfo(AudioFormat.WAV, probe.sample_rate, probe.channels)
            return Plan("rewrap", info, probe.data_range[1] + 44, path=path, data_range=probe.data_range,
                        probes=(probe,))
        if probe.codec == "mp3":
            return Plan("unwrap", AudioInfo(AudioFormat.MP3), probe.data_range[1], path=path,
                        data_range=probe.data_range, probes=(probe,))
    if probe.container in ("webm", "matroska") and probe.codec == "opus":
        return Plan("remux", AudioInfo(AudioFormat.OGG_OPUS), size, path=path, probes=(probe,))
    return pcm_plan((probe,), (path,), swap=False)
