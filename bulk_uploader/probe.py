"""What an audio file is, read the way a decoder reads it, in pure Python and a few small reads.

Each format is read as far as it needs: a WAV's chunks up to `data` wherever they are (a
Broadcast WAV's bext and iXML chunks can push `fmt ` far past the first kilobytes), the
first MPEG frame after ID3 tags or junk (and its Xing header for the length), an OGG
stream's first page and its last one (for the length), FLAC's STREAMINFO. Other
containers (MP4, WebM, AMR, ...) are recognised by their signature; what is inside them
is the decoder's to tell (bulk_uploader.media), and only --transcode needs it.

This runs for every row of a dry run, so it stays cheap: no decoder, no import of one.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from bulk_uploader.audio import Probe
from bulk_uploader.probe_frames import Source, flac, ogg, scan_mpeg

HEAD_BYTES = 4096  # enough for most headers; formats that need more read on
WAV_HEAD_BYTES = 512  # the first read: a usual WAV header, whose chunks past it are read where they are.
# Reading 4 KiB for every row costs several times what 512 bytes do (a buffer outside Python's
# small-object allocator), and a dry run probes every row.
MAX_CHUNKS = 4096  # a WAV walk gives up after this many chunks

# A WAV's format tag -> FFmpeg's codec name (WAVE_FORMAT_* of mmreg.h).
WAV_CODECS = {
    0x0001: "pcm", 0x0002: "adpcm_ms", 0x0003: "float", 0x0006: "pcm_alaw", 0x0007: "pcm_mulaw",
    0x0011: "adpcm_ima_wav", 0x0031: "gsm_ms", 0x0040: "g721", 0x0045: "g726", 0x0050: "mp2", 0x0055: "mp3",
    0x0064: "g726", 0x0065: "g722", 0x00FF: "aac", 0x1610: "aac", 0x0022: "truespeech",
}
_PCM_BITS = {8: "pcm_u8", 16: "pcm_s16le", 24: "pcm_s24le", 32: "pcm_s32le"}
_FLOAT_BITS = {32: "pcm_f32le", 64: "pcm_f64le"}

def probe_file(path: str | Path, size: int | None = None) -> Probe:
    """Probe a file on disk (OSError if it cannot be read); `size` if a stat already told it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size if size is None else size
        return probe(Source(lambda offset, n: os.pread(fd, n, offset), size))
    finally:
        os.close(fd)


def probe_bytes(data: bytes) -> Probe:
    """Probe bytes already read."""
    return probe(Source.of_bytes(data))


def probe(source: Source) -> Probe:
    """What the source holds, by its first bytes and as much more as its format needs."""
    head = source.read_at(0, WAV_HEAD_BYTES)
    if head[:4] in (b"RIFF", b"RF64", b"BW64") and head[8:12] == b"WAVE":
        return _wav(source, head)
    if len(head) == WAV_HEAD_BYTES:
        head = source.read_at(0, HEAD_BYTES)  # the other formats look at the first HEAD_BYTES
    if head[:4] == b"OggS":
        return ogg(source, head)
    if head[:4] == b"fLaC":
        return flac(head, 0)
    found = _signature(head)
    if found is not None:
        return found
    return scan_mpeg(source, head)


def _signature(head: bytes) -> Probe | None:
    """Containers known by their first bytes whose insides the decoder reads."""
    if head[4:8] == b"ftyp":
        return Probe("mp4", "aac" if head[8:11] == b"M4A" else None)
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return Probe("webm" if b"webm" in head[:64] else "matroska")
    if head[:6] == b"#!AMR\n":
        return Probe("amr", "amr_nb", 8000, 1)
    if head[:9] == b"#!AMR-WB\n":
        return Probe("amr", "amr_wb", 16000, 1)
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return Probe("aiff")
    if head[:4] == b"caff":
        return Probe("caf")
    if head[:4] == b"riff" and head[4:8] == b"\x2e\x91\xcf\x11":
        return Probe("w64")
    if head[:4] == b".snd" and len(head) >= 24:
        encoding, rate, channels = struct.unpack_from(">III", head, 12)
        codec = {1: "pcm_mulaw", 27: "pcm_alaw", 2: "pcm_s8", 3: "pcm_s16be"}.get(encoding, f"encoding {encoding}")
        return Probe("au", codec, rate, channels)
    return None


# Made once: struct's module functions look the format up on every call, and a dry run probes every row.
_FMT = struct.Struct("<HHIIHH").unpack_from
_CHUNK_HEADER = struct.Struct("<4sI").unpack_from


def _wav_fmt(body: bytes) -> tuple[str, int, int, int, int]:
    """(codec, channels, rate, byte rate, bits) of a WAV `fmt ` chunk."""
    tag, channels, rate, byte_rate, _, bits = _FMT(body if len(body) >= 16 else body.ljust(16, b"\0"))
    if tag == 0xFFFE and len(body) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the sub-format GUID starts with the tag
        tag = struct.unpack_from("<H", body, 24)[0]
    codec = WAV_CODECS.get(tag) or f"format tag {tag:#06x}"  # (the name of an unknown tag only when met)
    if codec == "pcm":
        codec = _PCM_BITS.get(bits) or f"{bits}-bit pcm"
    elif codec == "float":
        codec = _FLOAT_BITS.get(bits) or f"{bits}-bit float"
    return codec, channels, rate, byte_rate, bits


def _wav_chunks(source: Source, head: bytes) -> tuple[bytes | None, int, int, int | None]:
    """(fmt body, data offset, data size, ds64 data size) of a RIFF/RF64 WAVE file; offset -1 without data."""
    fmt: bytes | None = None
    data_at, data_size, ds64 = -1, 0, None
    pos = 12
    for _ in range(MAX_CHUNKS):
        if pos + 8 <= len(head):
            chunk_id, size = _CHUNK_HEADER(head, pos)
        else:
            header = source.read_at(pos, 8)
            if len(header) < 8:
                break
            chunk_id, size = _CHUNK_HEADER(header)
        if chunk_id == b"ds64":
            ds64 = struct.unpack_from("<Q", source.read_at(pos + 16, 8).ljust(8, b"\0"))[0]
        elif chunk_id == b"fmt ":
            end = pos + 8 + min(size, 64)
            fmt = head[pos + 8 : end] if end <= len(head) else source.read_at(pos + 8, min(size, 64))
        elif chunk_id == b"data":
            data_at, data_size = pos + 8, size
            if fmt is not None:
                break
        pos += 8 + size + (size & 1)
    return fmt, data_at, data_size, ds64


def _wav(source: Source, head: bytes) -> Probe:
    container = "wav" if head[:4] == b"RIFF" else "rf64"
    fmt, data_at, size, ds64 = _wav_chunks(source, head)
    if fmt is None:
        return Probe(container, damage="the WAV has no fmt chunk (its header is broken)")
    codec, channels, rate, byte_rate, bits = _wav_fmt(fmt)
    if data_at < 0:
        return Probe(container, codec, rate, channels, damage="the WAV has no data chunk")
    note = None
    if container == "rf64":
        size = ds64 if ds64 is not None else size
        note = "RF64 is not a WAV the service is documented to take"
    elif size in (0, 0xFFFFFFFF) and source.size > data_at:
        size, note = source.size - data_at, "its header was never finished (the data size is not written)"
    held = source.size - data_at
    damage = None
    if size > held:
        damage = (f"the header promises {size:,} bytes of audio but the file holds {held:,}: "
                  "the file is cut short (copy it again from the source)")
    duration = size / byte_rate if byte_rate else None
    return Probe(container, codec, rate, channels, duration, damage, (data_at, min(size, held)), note)
