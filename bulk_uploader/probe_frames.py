"""Formats read frame by frame or page by page: MPEG audio (after ID3 tags or junk), ADTS AAC, OGG, FLAC.

An MPEG frame is believed only when the frames after it follow on where its header says
they do, as a decoder's resync does: a stray 0xFF byte in a tag or in junk is not a frame.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from bulk_uploader.audio import Probe

SCAN_BYTES = 64 * 1024  # how far past the tags to look for the first frame
TAIL_BYTES = 65_307 + 8  # the largest OGG page: the last page starts within this many bytes of the end

# kbit/s by (MPEG-1?, layer) and the header's bitrate index; MPEG-2 and 2.5 share tables.
_BITRATES = {
    (True, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}  # by version bits
_ADTS_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)


ReadAt = Callable[[int, int], bytes]


class Source:
    """A file (or bytes already in memory) read at offsets: what the format parsers need."""

    def __init__(self, read_at: ReadAt, size: int) -> None:
        self.read_at = read_at
        self.size = size

    @classmethod
    def of_bytes(cls, data: bytes) -> Source:
        """A source over bytes in memory."""
        view = memoryview(data)
        return cls(lambda offset, n: bytes(view[offset : offset + n]), len(data))


class Frame:
    """One MPEG audio frame header."""

    __slots__ = ("version", "layer", "bitrate", "rate", "channels", "length", "samples")

    def __init__(self, version: int, layer: int, bitrate: int, rate: int, channels: int, padding: int) -> None:
        mpeg1 = version == 3
        self.version, self.layer, self.bitrate, self.rate, self.channels = version, layer, bitrate, rate, channels
        if layer == 1:
            self.length, self.samples = (12 * bitrate * 1000 // rate + padding) * 4, 384
        elif layer == 2 or mpeg1:
            self.length, self.samples = 144 * bitrate * 1000 // rate + padding, 1152
        else:
            self.length, self.samples = 72 * bitrate * 1000 // rate + padding, 576

    @classmethod
    def parse(cls, b: bytes, at: int) -> Frame | None:
        """The frame whose header starts at `at`, or None."""
        if at + 4 > len(b) or b[at] != 0xFF or b[at + 1] & 0xE0 != 0xE0:
            return None
        version, layer_bits = b[at + 1] >> 3 & 3, b[at + 1] >> 1 & 3
        index, rate_index = b[at + 2] >> 4, b[at + 2] >> 2 & 3
        if version == 1 or layer_bits == 0 or index in (0, 15) or rate_index == 3:
            return None
        layer = 4 - layer_bits
        bitrate = _BITRATES[(version == 3, layer)][index]
        rate = _RATES[version][rate_index]
        return cls(version, layer, bitrate, rate, 1 if b[at + 3] >> 6 == 3 else 2, b[at + 2] >> 1 & 1)

    def follows(self, other: Frame | None) -> bool:
        """Whether `other` is a frame of the same stream."""
        return other is not None and (other.version, other.layer, other.rate) == (self.version, self.layer, self.rate)


def _id3_end(source: Source, head: bytes) -> tuple[int, bytes]:
    """Where the ID3v2 tags at the start end, and the bytes from there."""
    pos, data = 0, head
    while data[:3] == b"ID3" and len(data) >= 10:
        size = 10 + (data[6] << 21 | data[7] << 14 | data[8] << 7 | data[9]) + (10 if data[5] & 0x10 else 0)
        pos += size
        data = data[size:] if size + 1024 <= len(data) else source.read_at(pos, SCAN_BYTES)
    return pos, data


def _chained(source: Source, data: bytes, base: int, at: int, frame: Frame, wanted: int) -> bool:
    """Whether `wanted` frames follow one another from `at` (or the file ends right after one)."""
    for _ in range(wanted):
        nxt = at + frame.length
        if base + nxt >= source.size:
            return base + nxt == source.size
        buf = data if nxt + 4 <= len(data) else source.read_at(base + nxt, 4)
        following = Frame.parse(buf, nxt if buf is data else 0)
        if not frame.follows(following):
            return False
        assert following is not None
        at, frame = nxt, following
    return True


def _duration(source: Source, data: bytes, base: int, at: int, frame: Frame) -> float:
    """From a Xing/Info or VBRI header in the first frame, else the size at the first frame's bitrate."""
    side = (32 if frame.channels == 2 else 17) if frame.version == 3 else (17 if frame.channels == 2 else 9)
    for offset, tag, frames_at in ((4 + side, (b"Xing", b"Info"), 8), (36, (b"VBRI",), 14)):
        block = data[at + offset : at + offset + frames_at + 4]
        if block[:4] in tag and (tag[0] == b"VBRI" or struct.unpack_from(">I", block, 4)[0] & 1):
            return struct.unpack_from(">I", block, frames_at)[0] * frame.samples / frame.rate
    return (source.size - base - at) * 8 / (frame.bitrate * 1000)


def _first_frame(source: Source, data: bytes, base: int) -> tuple[int, Frame] | None:
    at = data.find(b"\xff")
    while 0 <= at < len(data) - 3:
        frame = Frame.parse(data, at)
        if frame is not None and _chained(source, data, base, at, frame, 1 if at == 0 else 3):
            return at, frame
        at = data.find(b"\xff", at + 1)
    return None


def scan_mpeg(source: Source, head: bytes) -> Probe:
    """MPEG audio after any ID3 tags and junk, or AAC/FLAC behind an ID3 tag; Probe("unknown") otherwise."""
    base, data = _id3_end(source, head)
    tagged = base > 0
    if data[:4] == b"fLaC":
        return flac(data, 0)
    if len(data) >= 7 and data[0] == 0xFF and data[1] & 0xF6 == 0xF0:
        rate = _ADTS_RATES[data[2] >> 2 & 15] if data[2] >> 2 & 15 < len(_ADTS_RATES) else None
        return Probe("adts", "aac", rate, (data[2] & 1) << 2 | data[3] >> 6 or None)
    found = _first_frame(source, data, base)
    if found is None and len(data) < SCAN_BYTES and base + len(data) < source.size:
        data = source.read_at(base, SCAN_BYTES)  # junk before the first frame: look further
        found = _first_frame(source, data, base)
    if found is not None:
        at, frame = found
        return Probe("mp3", f"mp{frame.layer}", frame.rate, frame.channels,
                     _duration(source, data, base, at, frame), data_range=(base + at, source.size - base - at))
    if tagged:
        return Probe("unknown", damage="the file starts with an ID3 tag but no MPEG audio frames follow it")
    return Probe("unknown")


def flac(data: bytes, at: int) -> Probe:
    """FLAC's STREAMINFO: rate (20 bits), channels - 1 (3), bits - 1 (5), total samples (36)."""
    info = data[at + 8 : at + 8 + 34]
    if len(info) < 18:
        return Probe("flac", "flac", damage="the FLAC header is cut short")
    packed = int.from_bytes(info[10:18], "big")
    rate, channels, total = packed >> 44, (packed >> 41 & 7) + 1, packed & (1 << 36) - 1
    return Probe("flac", "flac", rate, channels, total / rate if rate and total else None)


def _first_packet(head: bytes) -> bytes:
    segments = head[27 : 27 + head[26]]
    size = 0
    for lace in segments:
        size += lace
        if lace < 255:
            break
    start = 27 + head[26]
    return head[start : start + size]


def _last_granule(source: Source, serial: bytes) -> int | None:
    """The granule position of the stream's last page that ends a packet."""
    for span in (8192, TAIL_BYTES):
        start = max(0, source.size - span)
        tail = source.read_at(start, span)
        at = tail.rfind(b"OggS")
        while at >= 0:
            if tail[at + 4] == 0 and tail[at + 14 : at + 18] == serial and len(tail) >= at + 27:
                granule = struct.unpack_from("<q", tail, at + 6)[0]
                if granule >= 0:
                    return granule
            at = tail.rfind(b"OggS", 0, at)
        if start == 0:
            break
    return None


def ogg(source: Source, head: bytes) -> Probe:
    """An OGG stream's codec from its first packet, and its length from its last page."""
    if len(head) < 28:
        return Probe("ogg", damage="the OGG file is cut short")
    packet, serial = _first_packet(head), head[14:18]
    granule = _last_granule(source, serial)
    if packet[:8] == b"OpusHead" and len(packet) >= 19:
        preskip = struct.unpack_from("<H", packet, 10)[0]
        duration = (granule - preskip) / 48000 if granule is not None else None
        return Probe("ogg", "opus", 48000, packet[9], duration)
    if packet[:7] == b"\x01vorbis" and len(packet) >= 16:
        rate = struct.unpack_from("<I", packet, 12)[0]
        return Probe("ogg", "vorbis", rate, packet[11], granule / rate if granule is not None and rate else None)
    if packet[:5] == b"\x7fFLAC":
        inner = flac(packet, 9)
        rate = inner.sample_rate
        return Probe("ogg", "flac", rate, inner.channels, granule / rate if granule is not None and rate else None)
    if packet[:8] == b"Speex   " and len(packet) >= 52:
        rate, channels = struct.unpack_from("<I", packet, 36)[0], struct.unpack_from("<I", packet, 48)[0]
        return Probe("ogg", "speex", rate, channels, granule / rate if granule is not None and rate else None)
    return Probe("ogg")
