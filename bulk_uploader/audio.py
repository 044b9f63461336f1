"""Audio formats SpeechSense takes, recognised from the bytes themselves.

Shared by the uploader's preflight and the emulator's checks, so both agree on what a
WAV, MP3 or OGG Opus file is. Only the first SNIFF_BYTES of a file are looked at.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

# Enough for a RIFF header plus the LIST/JUNK chunks some recorders put before "fmt ".
SNIFF_BYTES = 4096

MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 48_000


class AudioFormat(str, enum.Enum):
    """The audio formats the service accepts, by the name used in manifests."""

    WAV = "wav"
    MP3 = "mp3"
    OGG_OPUS = "ogg_opus"
    PCM = "pcm"  # raw 16-bit signed little-endian LPCM, rate and channels given separately

    @classmethod
    def parse(cls, name: str) -> AudioFormat:
        """Read a manifest's `format` value (case-insensitive; `ogg` and `opus` mean ogg_opus)."""
        key = name.strip().lower().replace("-", "_")
        key = {"ogg": "ogg_opus", "opus": "ogg_opus", "lpcm": "pcm", "raw": "pcm"}.get(key, key)
        try:
            return cls(key)
        except ValueError:
            raise ValueError(f"unknown format {name!r}: use wav, mp3, ogg_opus or pcm") from None


class AudioError(ValueError):
    """Raised when bytes are not audio the service accepts; the message says why."""


@dataclass(frozen=True, slots=True)
class AudioInfo:
    """What the first bytes of a file say about it."""

    format: AudioFormat
    sample_rate: int | None = None
    channels: int | None = None


def check_pcm_params(sample_rate: int | None, channels: int | None) -> None:
    """Raise AudioError unless a raw LPCM rate and channel count are ones the service takes."""
    if sample_rate is None or not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise AudioError(
            f"raw PCM needs sample_rate between {MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE} Hz, got {sample_rate}"
        )
    if channels is None or not 1 <= channels <= 2:
        raise AudioError(f"raw PCM needs channels 1 or 2, got {channels}")


def _wav(head: bytes) -> AudioInfo:
    pos = 12
    while pos + 8 <= len(head):
        chunk_id, size = head[pos : pos + 4], struct.unpack_from("<I", head, pos + 4)[0]
        if chunk_id == b"fmt ":
            if pos + 8 + 16 > len(head):
                break
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", head, pos + 8)
            if tag == 0xFFFE and size >= 40 and pos + 8 + 26 <= len(head):
                tag = struct.unpack_from("<H", head, pos + 8 + 24)[0]  # WAVE_FORMAT_EXTENSIBLE sub-format
            if tag != 1:
                raise AudioError(f"WAV is not LPCM (format tag {tag:#06x}); the service takes LPCM WAV only")
            if bits != 16:
                raise AudioError(f"WAV has {bits}-bit samples; the service takes 16-bit LPCM")
            if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
                raise AudioError(
                    f"WAV sample rate {rate} Hz is outside {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz"
                )
            return AudioInfo(AudioFormat.WAV, rate, channels)
        pos += 8 + size + (size & 1)
    raise AudioError("WAV header has no readable fmt chunk")


def _is_mp3_frame(head: bytes) -> bool:
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return False
    version, layer = (head[1] >> 3) & 3, (head[1] >> 1) & 3
    bitrate, rate = head[2] >> 4, (head[2] >> 2) & 3
    return version != 1 and layer == 1 and bitrate not in (0, 15) and rate != 3


def _ogg(head: bytes) -> AudioInfo:
    if len(head) < 28:
        raise AudioError("OGG file is truncated")
    payload = 27 + head[26]
    if head[payload : payload + 8] == b"OpusHead":
        channels = head[payload + 9] if len(head) > payload + 9 else None
        return AudioInfo(AudioFormat.OGG_OPUS, 48_000, channels)
    codec = head[payload : payload + 8].strip(b"\x00\x01").decode("ascii", "replace") or "unknown"
    raise AudioError(f"OGG file carries {codec!r}, not Opus; the service takes OGG Opus only")


def sniff(head: bytes) -> AudioInfo | None:
    """Recognise a container format from a file's first bytes.

    Returns None when the bytes are no known container (they may still be raw PCM);
    raises AudioError for a known container the service does not take (e.g. 8-bit WAV).
    """
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return _wav(head)
    if head[:4] == b"OggS":
        return _ogg(head)
    if head[:3] == b"ID3" or _is_mp3_frame(head):
        return AudioInfo(AudioFormat.MP3)
    return None


def check_audio(
    head: bytes,
    declared: AudioFormat | None,
    *,
    sample_rate: int | None = None,
    channels: int | None = None,
) -> AudioInfo:
    """Check a file's first bytes against the format the row declares (None: whatever they are).

    Raises AudioError with a readable reason when the bytes are empty, not audio, or not
    the declared format.
    """
    if not head:
        raise AudioError("audio is empty")
    found = sniff(head)
    if declared is AudioFormat.PCM:
        if found is not None:
            raise AudioError(f"declared raw pcm but the bytes are {found.format.value}")
        check_pcm_params(sample_rate, channels)
        return AudioInfo(AudioFormat.PCM, sample_rate, channels)
    if found is None:
        raise AudioError(
            "bytes are not WAV, MP3 or OGG Opus" + ("" if declared else " (raw PCM needs format pcm)")
        )
    if declared is not None and found.format is not declared:
        raise AudioError(f"declared {declared.value} but the bytes are {found.format.value}")
    return found
