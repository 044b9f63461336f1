"""Small, valid audio files of each format the service takes, and a sample manifest.

Used by `bulk-upload demo`, the tests and the benchmarks: real audio, decodable by a real
decoder, without shipping binary fixtures. MP3 and OGG Opus come from FFmpeg's encoders
(LAME, libopus): a two-second clip encoded once, its packets repeated to the size asked.
"""

from __future__ import annotations

import functools
import json
import random
import struct
from pathlib import Path
from typing import Any

from bulk_uploader.audio import AudioFormat


def wav(payload_bytes: int, *, rate: int = 8000, channels: int = 2, bits: int = 16, seed: int = 0) -> bytes:
    """A RIFF/WAVE LPCM file with payload_bytes of (pseudo-random) samples."""
    data = random.Random(seed).randbytes(payload_bytes)
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * block, block, bits)
    return (
        b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE"
        + b"fmt " + struct.pack("<I", len(fmt)) + fmt
        + b"data" + struct.pack("<I", len(data)) + data
    )


@functools.lru_cache(maxsize=16)
def _clip(codec: str, rate: int, channels: int, bit_rate: int, seed: int) -> tuple[list[bytes], bytes, int]:
    from bulk_uploader import media  # loads FFmpeg: only when samples are made

    return media.encoded_packets(codec, rate=rate, channels=channels, seconds=2.0, bit_rate=bit_rate, seed=seed)


def _tiled(fmt: str, codec: str, payload_bytes: int, *, rate: int, channels: int, bit_rate: int, seed: int) -> bytes:
    from bulk_uploader import media

    packets, template, step = _clip(codec, rate, channels, bit_rate, seed % 8)
    order = packets[:]
    random.Random(seed).shuffle(order)  # files of the same size differ; any order decodes (frames stand alone)
    return media.tile(fmt, template, order, step, payload_bytes)


def mp3(payload_bytes: int, *, seed: int = 0) -> bytes:
    """A real MP3 (LAME, 128 kbit/s, 44.1 kHz stereo) of about payload_bytes."""
    return _tiled("mp3", "libmp3lame", payload_bytes, rate=44100, channels=2, bit_rate=128_000, seed=seed)


def ogg_opus(payload_bytes: int, *, channels: int = 2, seed: int = 0) -> bytes:
    """A real OGG Opus file (libopus, 48 kbit/s) of about payload_bytes."""
    return _tiled("ogg", "libopus", payload_bytes, rate=48000, channels=channels, bit_rate=48_000, seed=seed)


def pcm(payload_bytes: int, *, seed: int = 0) -> bytes:
    """Raw 16-bit little-endian samples (even length)."""
    return random.Random(seed).randbytes(payload_bytes - payload_bytes % 2 or 2)


MAKERS = {AudioFormat.WAV: wav, AudioFormat.MP3: mp3, AudioFormat.OGG_OPUS: ogg_opus, AudioFormat.PCM: pcm}
EXTENSIONS = {AudioFormat.WAV: "wav", AudioFormat.MP3: "mp3", AudioFormat.OGG_OPUS: "ogg", AudioFormat.PCM: "raw"}


def metadata(n: int) -> dict[str, str]:
    """Metadata for sample talk n that a default audio connection accepts."""
    return {
        "operator_name": f"Operator {n % 17}",
        "operator_id": f"op-{n % 17}",
        "client_name": f"Client {n}",
        "client_id": f"cl-{n}",
        "date": f"2025-04-{1 + n % 28:02d}T{n % 24:02d}:{n % 60:02d}:00.000",
        "direction_outgoing": "true" if n % 2 else "false",
        "language": "ru-RU",
    }


def write_dataset(
    folder: Path,
    count: int,
    *,
    sizes: tuple[int, ...] = (16 * 1024,),
    formats: tuple[AudioFormat, ...] = (AudioFormat.WAV, AudioFormat.MP3, AudioFormat.OGG_OPUS),
    distinct_files: int | None = None,
    connection_id: str | None = None,
    name: str = "manifest.jsonl",
) -> Path:
    """Write `count` audio files (or `distinct_files` shared by the rows) and a JSONL manifest."""
    audio_dir = folder / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    manifest = folder / name
    files = distinct_files or count
    with manifest.open("w", encoding="utf-8") as out:
        for n in range(count):
            f = n % files
            fmt = formats[f % len(formats)]
            size = sizes[f % len(sizes)]
            rel = f"audio/call-{f:06d}.{EXTENSIONS[fmt]}"
            if n < files:
                (folder / rel).write_bytes(MAKERS[fmt](size, seed=f))
            row: dict[str, Any] = {"id": f"call-{n:06d}", "audio_path": rel, "metadata": metadata(n)}
            if fmt is AudioFormat.PCM:
                row.update(format="pcm", sample_rate=8000, channels=1)
            if connection_id:
                row["connection_id"] = connection_id
            out.write(json.dumps(row) + "\n")
    return manifest
