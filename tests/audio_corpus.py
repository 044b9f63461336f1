"""A corpus of recordings in the formats call recorders export, made by real encoders at test time
(FFmpeg's, and libsndfile's for GSM 6.10, which FFmpeg cannot encode).

Each entry: a file name, how it is made, and what is expected of it plain and with --transcode.
Layouts no encoder writes (a Broadcast WAV's chunks before `fmt `, junk before the first MP3
frame, a WAV cut short) are made from an encoder's output by moving, adding or cutting bytes.
"""

from __future__ import annotations

import io
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bulk_uploader import media

SECONDS = 3.0


@dataclass(frozen=True)
class Entry:
    """One corpus file: `plain` is what a plain run does with it, `converted` what --transcode sends."""

    name: str
    make: Callable[[Path], None]
    plain: str  # "as-is" or the invalid code
    converted: str | None = None  # the sent format's name with --transcode (None: as plain)
    declared: str | None = None  # the row's `format`
    channels: int = 1


def encode(fmt: str, codec: str, rate: int = 8000, channels: int = 1, seconds: float = SECONDS,
           **kwargs: object) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        media.synthesize(path, fmt, codec, rate=rate, channels=channels, seconds=seconds, **kwargs)  # type: ignore[arg-type]
    return make


def broadcast_wav(path: Path) -> None:
    """A 16-bit WAV as broadcast recorders write it: bext and iXML chunks (12 KiB) before `fmt `."""
    buffer = io.BytesIO()
    media.synthesize(buffer, "wav", "pcm_s16le", rate=16000, channels=1, seconds=SECONDS,
                     format_options={"write_bext": "0"})
    data = buffer.getvalue()
    chunks = data[12:]
    bext = b"bext" + struct.pack("<I", 8 * 1024) + bytes(8 * 1024)
    ixml = b"<BWFXML>" + b" " * 4000 + b"</BWFXML>"
    ixml_chunk = b"iXML" + struct.pack("<I", len(ixml)) + ixml + b"\0" * (len(ixml) & 1)
    body = b"WAVE" + bext + ixml_chunk + chunks
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def mp3_after(prefix: bytes) -> Callable[[Path], None]:
    """An MP3 (no ID3 tag) after `prefix` (junk, or zero padding), which decoders skip."""
    def make(path: Path) -> None:
        buffer = io.BytesIO()
        media.synthesize(buffer, "mp3", "libmp3lame", rate=16000, channels=1, seconds=SECONDS,
                         format_options={"id3v2_version": "0"})
        path.write_bytes(prefix + buffer.getvalue())
    return make


JUNK = bytes(random.Random(5).randrange(0, 255) for _ in range(1500)).replace(b"\xff", b"\x00")


def id3_layer2(path: Path) -> None:
    """MPEG Layer II audio behind an ID3v2 tag, as tagging tools leave it: the tag an MP3
    encoder's muxer wrote, then the MP2 encoder's frames (FFmpeg's mp2 muxer writes no tag)."""
    tagged, frames = io.BytesIO(), io.BytesIO()
    media.synthesize(tagged, "mp3", "libmp3lame", rate=16000, channels=1, seconds=0.5)
    media.synthesize(frames, "mp2", "mp2", rate=16000, channels=1, seconds=SECONDS)
    head = tagged.getvalue()
    assert head[:3] == b"ID3"
    size = 10 + sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(head[6:10]))  # syncsafe
    path.write_bytes(head[:size] + frames.getvalue())


def truncated_wav(path: Path) -> None:
    """A 16-bit WAV whose header promises twice the audio the file holds (a copy cut short)."""
    buffer = io.BytesIO()
    media.synthesize(buffer, "wav", "pcm_s16le", rate=8000, channels=1, seconds=SECONDS)
    data = buffer.getvalue()
    path.write_bytes(data[: 44 + (len(data) - 44) // 2])


def gsm_wav(path: Path) -> None:
    """A GSM 6.10 WAV (format tag 0x31), as call recorders write it, by libsndfile's encoder
    (FFmpeg has a GSM decoder only)."""
    import numpy
    import soundfile

    rate = 8000
    t = numpy.arange(int(SECONDS * rate)) / rate
    tone = (0.3 * numpy.sin(2 * numpy.pi * 440 * t) * 32767).astype(numpy.int16)
    soundfile.write(path, tone, rate, subtype="GSM610", format="WAV")


def long_wav(path: Path) -> None:
    media.synthesize(path, "wav", "pcm_s16le", rate=8000, channels=1, seconds=4 * 3600 + 300, freqs=(0.0,))


def long_mp3(path: Path) -> None:
    packets, template, step = media.encoded_packets("libmp3lame", rate=8000, channels=1, seconds=2.0, bit_rate=8000)
    seconds = 4 * 3600 + 300
    path.write_bytes(media.tile("mp3", template, packets, step, int(seconds * 8000 / 8)))


CORPUS = [
    # Taken as they are.
    Entry("pcm16.wav", encode("wav", "pcm_s16le", 8000, 2), "as-is", channels=2),
    Entry("broadcast.wav", broadcast_wav, "as-is"),
    Entry("lame.mp3", encode("mp3", "libmp3lame", 16000, 2), "as-is", channels=2),
    Entry("junk-first.mp3", mp3_after(JUNK), "as-is"),
    Entry("padded.mp3", mp3_after(bytes(4096)), "as-is"),
    Entry("opus.ogg", encode("ogg", "libopus", 48000, 2), "as-is", channels=2),
    # Converted with --transcode.
    Entry("mulaw.wav", encode("wav", "pcm_mulaw"), "NEEDS_TRANSCODE", "pcm"),
    Entry("alaw.wav", encode("wav", "pcm_alaw"), "NEEDS_TRANSCODE", "pcm"),
    Entry("gsm.wav", gsm_wav, "NEEDS_TRANSCODE", "pcm"),
    Entry("ima-adpcm.wav", encode("wav", "adpcm_ima_wav"), "NEEDS_TRANSCODE", "pcm"),
    Entry("ms-adpcm.wav", encode("wav", "adpcm_ms"), "NEEDS_TRANSCODE", "pcm"),
    Entry("u8.wav", encode("wav", "pcm_u8"), "NEEDS_TRANSCODE", "pcm"),
    Entry("s24.wav", encode("wav", "pcm_s24le", 16000, 2), "NEEDS_TRANSCODE", "pcm", channels=2),
    Entry("s32.wav", encode("wav", "pcm_s32le", 16000), "NEEDS_TRANSCODE", "pcm"),
    Entry("float.wav", encode("wav", "pcm_f32le", 16000, 2), "NEEDS_TRANSCODE", "pcm", channels=2),
    Entry("96k.wav", encode("wav", "pcm_s16le", 96000, 2), "NEEDS_TRANSCODE", "pcm", channels=2),
    Entry("rf64.wav", encode("wav", "pcm_s16le", 8000, 2, format_options={"rf64": "always"}), "NEEDS_TRANSCODE",
          "wav", channels=2),
    Entry("call.flac", encode("flac", "flac", 16000, 2), "NEEDS_TRANSCODE", "pcm", channels=2),
    Entry("vorbis.ogg", encode("ogg", "vorbis", 44100, 2, codec_options={"strict": "experimental"}),
          "NEEDS_TRANSCODE", "pcm", channels=2),
    Entry("call.m4a", encode("ipod", "aac", 44100, 2), "NEEDS_TRANSCODE", "pcm", channels=2),
    Entry("id3-aac.aac", encode("adts", "aac", 16000, 1, format_options={"write_id3v2": "1"}), "NEEDS_TRANSCODE",
          "pcm"),
    Entry("call.amr", encode("amr", "libopencore_amrnb", 8000, 1, bit_rate=12200), "NEEDS_TRANSCODE", "pcm"),
    Entry("layer2.mp2", encode("mp2", "mp2", 16000, 1), "NEEDS_TRANSCODE", "pcm"),
    Entry("id3-layer2.mp3", id3_layer2, "NEEDS_TRANSCODE", "pcm"),
    Entry("mp3-in-riff.wav", encode("wav", "libmp3lame", 16000, 1), "NEEDS_TRANSCODE", "mp3"),
    Entry("softphone.webm", encode("webm", "libopus", 48000, 2), "NEEDS_TRANSCODE", "ogg_opus", channels=2),
    # Invalid however they are sent.
    Entry("quad.wav", encode("wav", "pcm_s16le", 8000, 4), "TOO_MANY_CHANNELS", channels=4),
    Entry("cut-short.wav", truncated_wav, "BAD_AUDIO"),
    Entry("long.wav", long_wav, "TOO_LONG"),
    Entry("long.mp3", long_mp3, "TOO_LONG"),
    Entry("flac-as-pcm.raw", encode("flac", "flac", 8000, 1), "BAD_AUDIO", declared="pcm"),
    Entry("aac-as-mp3.mp3", encode("adts", "aac", 16000, 1, format_options={"write_id3v2": "1"}), "BAD_AUDIO",
          declared="mp3"),
]


def make_corpus(folder: Path) -> dict[str, Path]:
    """Write every corpus file into folder; name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for entry in CORPUS:
        path = folder / entry.name
        entry.make(path)
        paths[entry.name] = path
    return paths
