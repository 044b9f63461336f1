"""The one home of PyAV (FFmpeg): decoding, remuxing and encoding audio.

Imported only where a decoder is needed (--transcode, the emulator's audio check, sample
and test data), never by a plain upload or a dry run: importing it loads FFmpeg.

PyAV's wheels bundle FFmpeg built as LGPL (version 3 or later); see README.md, "Formats
and conversion", for what else the wheels carry.
"""

from __future__ import annotations

import io
import math
from array import array
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import IO, Any

import av
import av.error

from bulk_uploader.records import FrozenRecord, record

Input = str | Path | IO[bytes]
MediaError = av.error.FFmpegError  # raised for data FFmpeg cannot read

# FFmpeg's demuxer names -> the container names bulk_uploader.audio uses.
_CONTAINERS = {"mov,mp4,m4a,3gp,3g2,mj2": "mp4", "matroska,webm": "matroska", "mp3": "mp3", "ogg": "ogg",
               "wav": "wav", "flac": "flac", "amr": "amr", "aac": "adts", "aiff": "aiff", "au": "au", "w64": "w64",
               "caf": "caf"}


@record(slots=True)
class Measured(FrozenRecord):
    """What FFmpeg finds in a file: its demuxer, codec, rate, channels, and lengths (seconds)."""

    container: str  # FFmpeg's demuxer name, e.g. "wav", "mp3", "ogg", "mov,mp4,m4a,3gp,3g2,mj2"
    codec: str  # FFmpeg's codec name, e.g. "pcm_s16le", "mp3", "opus", "aac"
    sample_rate: int
    channels: int
    duration: float  # as demuxed (and decoded, up to decode_seconds)
    header_duration: float | None  # what the container's headers promise, where they say

    @property
    def our_container(self) -> str:
        """The container's name as bulk_uploader.audio.Probe has it."""
        return _CONTAINERS.get(self.container, self.container)


def _audio_stream(container: Any) -> Any:
    if not container.streams.audio:
        raise av.error.InvalidDataError(0, "no audio stream")
    return container.streams.audio[0]


def _header_duration(container: Any, stream: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return container.duration / av.time_base if container.duration is not None else None


def measure(source: Input, *, fmt: str | None = None, options: dict[str, str] | None = None,
            decode_seconds: float = math.inf) -> Measured:
    """Open `source` (as `fmt` if given), decode its first decode_seconds and demux the rest.

    Decoding proves the codec's data is readable; demuxing to the end gives the length
    without paying for decoding hours of audio. Raises MediaError when FFmpeg cannot read it.
    """
    with av.open(source, format=fmt, options=options or {}) as container:
        stream = _audio_stream(container)
        ctx = stream.codec_context
        end, decoded_until = 0.0, 0.0
        for packet in container.demux(stream):
            if packet.pts is None or packet.time_base is None:
                if packet.size and decoded_until < decode_seconds:
                    ctx.decode(packet)
                continue
            finish = float((packet.pts + (packet.duration or 0)) * packet.time_base)
            if decoded_until < decode_seconds:
                for frame in ctx.decode(packet):
                    decoded_until = float(frame.pts * frame.time_base) + frame.samples / frame.sample_rate \
                        if frame.pts is not None else decoded_until + frame.samples / frame.sample_rate
            end = max(end, finish)
        return Measured(container.format.name, ctx.codec.canonical_name, ctx.sample_rate, ctx.channels,
                        end, _header_duration(container, stream))


def describe(path: str | Path) -> Measured:
    """What a file holds by its headers alone (codec, rate, channels, length), for planning a conversion."""
    with av.open(str(path)) as container:
        stream = _audio_stream(container)
        ctx = stream.codec_context
        length = _header_duration(container, stream)
        return Measured(container.format.name, ctx.codec.canonical_name, ctx.sample_rate, ctx.channels,
                        length or 0.0, length)


def decode_pcm(path: str | Path, rate: int, chunk_bytes: int) -> Iterator[bytes]:
    """The first audio stream as interleaved native 16-bit PCM at `rate`, in pieces of about chunk_bytes.

    The channel layout is kept as it is (the resampler is given none), so channels are
    never mixed; resampling keeps the length.
    """
    with av.open(str(path)) as container:
        stream = _audio_stream(container)
        resampler = av.AudioResampler(format="s16", layout=None, rate=rate)
        pending: list[bytes] = []
        held = 0
        for frame in _frames(container, stream):
            for out in resampler.resample(frame):
                piece = bytes(out.planes[0])[: out.samples * 2 * len(out.layout.channels)]
                pending.append(piece)
                held += len(piece)
                if held >= chunk_bytes:
                    held = 0
                    yield _drained(pending)  # not held here while the chunk is sent
        for out in resampler.resample(None):
            pending.append(bytes(out.planes[0])[: out.samples * 2 * len(out.layout.channels)])
        if pending:
            yield _drained(pending)


def _drained(pieces: list[bytes]) -> bytes:
    """The pieces joined; the list emptied."""
    joined = b"".join(pieces)
    pieces.clear()
    return joined


def _frames(container: Any, stream: Any) -> Iterator[Any]:
    for packet in container.demux(stream):
        yield from stream.codec_context.decode(packet)


class _Collector(io.RawIOBase):
    """A write-only file the muxer writes into; its bytes are taken as they come."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.parts.append(bytes(data))
        self.size += len(data)
        return len(data)

    def take(self) -> bytes:
        data, self.parts, self.size = b"".join(self.parts), [], 0
        return data


def remux(path: str | Path, fmt: str, chunk_bytes: int) -> Iterator[bytes]:
    """The first audio stream's packets, unchanged, in container `fmt` (e.g. Opus from WebM into OGG)."""
    sink = _Collector()
    with av.open(str(path)) as source, av.open(sink, "w", format=fmt) as out:
        stream = _audio_stream(source)
        target = out.add_stream_from_template(stream)
        for packet in source.demux(stream):
            if packet.dts is None:
                continue
            packet.stream = target
            out.mux(packet)
            if sink.size >= chunk_bytes:
                yield sink.take()
    if sink.size:
        yield sink.take()


def _tone_frames(rate: int, channels: int, seconds: float, freqs: Iterable[float]) -> Iterator[Any]:
    """Frames of one sine per channel (0 Hz: silence), so each channel can be told apart after a conversion.

    Whole-hertz tones repeat every second: one second is computed per channel, then sliced.
    """
    freqs = list(freqs)
    second = [array("h", (int(8000 * math.sin(2 * math.pi * freqs[c % len(freqs)] * i / rate)) for i in range(rate)))
              .tobytes() for c in range(channels)]
    total, step = int(rate * seconds), 4096
    layout = {1: "mono", 2: "stereo"}.get(channels, f"{channels}c")
    for start in range(0, total, step):
        n = min(step, total - start)
        frame = av.AudioFrame(format="s16p", layout=layout, samples=n)
        at = start % rate
        for c in range(channels):
            piece = second[c][2 * at : 2 * (at + n)]
            if len(piece) < 2 * n:  # the frame wraps into the next second
                piece += second[c][: 2 * n - len(piece)]
            frame.planes[c].update(piece)
        frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
        yield frame


def synthesize(target: str | Path | IO[bytes], fmt: str, codec: str, *, rate: int, channels: int, seconds: float,
               freqs: Iterable[float] = (440.0, 0.0), bit_rate: int | None = None,
               codec_options: dict[str, str] | None = None, format_options: dict[str, str] | None = None) -> None:
    """Encode tones with FFmpeg's encoder `codec` into container `fmt` (test corpora and samples)."""
    layout = {1: "mono", 2: "stereo"}.get(channels, f"{channels}c")
    with av.open(target, "w", format=fmt, options=format_options or {}) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        if bit_rate:
            stream.bit_rate = bit_rate
        if codec_options:
            stream.codec_context.options = codec_options
        for frame in _tone_frames(rate, channels, seconds, freqs):
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def encoded_packets(codec: str, *, rate: int, channels: int, seconds: float, bit_rate: int,
                    seed: int = 0) -> tuple[list[bytes], bytes, int]:
    """An encoded tone's packets, the whole encoded file (the template of its stream) and samples per packet.

    MP3 is encoded without the bit reservoir, so every frame stands alone and the packets
    can be repeated in any order (sample files of any size without encoding them whole).
    """
    buffer = io.BytesIO()
    fmt = {"libmp3lame": "mp3", "libopus": "ogg"}[codec]
    options = {"reservoir": "0"} if codec == "libmp3lame" else None
    synthesize(buffer, fmt, codec, rate=rate, channels=channels, seconds=seconds, bit_rate=bit_rate,
               codec_options=options, freqs=(300.0 + seed % 500, 200.0 + seed % 3 * 200))
    buffer.seek(0)
    with av.open(buffer, format=fmt) as container:
        stream = _audio_stream(container)
        packets = [p for p in container.demux(stream) if p.size]
        step = round(packets[len(packets) // 2].duration * packets[0].time_base * rate)
        return [bytes(p) for p in packets], buffer.getvalue(), step


def tile(fmt: str, template: bytes, packets: list[bytes], step: int, target_bytes: int) -> bytes:
    """A file in container `fmt` of `packets` (step samples each) repeated until it holds about target_bytes."""
    sink = io.BytesIO()
    with av.open(io.BytesIO(template), format=fmt) as source, av.open(sink, "w", format=fmt) as out:
        stream = _audio_stream(source)
        rate = stream.codec_context.sample_rate
        target = out.add_stream_from_template(stream)
        pts, size, n = 0, 0, 0
        while size < target_bytes or n == 0:
            data = packets[n % len(packets)]
            packet = av.Packet(data)
            packet.stream, packet.pts, packet.dts = target, pts, pts
            packet.duration, packet.time_base = step, Fraction(1, rate)
            out.mux(packet)
            pts, size, n = pts + step, size + len(data), n + 1
    return sink.getvalue()
