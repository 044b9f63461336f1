"""What the uploader knows about audio: the formats SpeechSense takes, what a file is, and the verdict.

    Probe     what a file is, read the way a decoder sees it (bulk_uploader.probe fills it in)
    judge()   the service's documented rules applied to a Probe: sent as it is, converted
              (--transcode), or invalid with a message that names what the file is and the fix

The rules (the vendor's documentation): MP3 (layer III), WAV with 16-bit LPCM at 8..48 kHz,
OGG Opus, or raw 16-bit LPCM with its rate and channel count given; at most 4 hours; at most
two channels (left = track 0, right = track 1). The emulator does not use this module: it
judges what it receives by decoding it (bulk_uploader.emulator.checks).
"""

from __future__ import annotations

import enum
from dataclasses import fields

from bulk_uploader.records import FrozenRecord, record

MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 48_000
MAX_CHANNELS = 2
MAX_SECONDS = 4 * 3600


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
    """Raised when audio cannot be sent, converted or not; the message names the file's format and the fix."""

    def __init__(self, message: str, code: str = "BAD_AUDIO") -> None:
        super().__init__(message)
        self.code = code


@record(slots=True)
class AudioInfo(FrozenRecord):
    """What is sent: a format the service takes, with the rate and channels raw PCM needs."""

    format: AudioFormat
    sample_rate: int | None = None
    channels: int | None = None

    def __init__(self, format: AudioFormat, sample_rate: int | None = None, channels: int | None = None) -> None:
        set_ = object.__setattr__  # made once a row (bulk_uploader.records); frozen: its own refuses
        set_(self, "format", format)
        set_(self, "sample_rate", sample_rate)
        set_(self, "channels", channels)

    def describe(self) -> str:
        """As the results file names it: `wav`, or `pcm 8000 Hz 2 ch`."""
        if self.format is AudioFormat.PCM:
            return f"pcm {self.sample_rate} Hz {self.channels} ch"
        return self.format.value


# Human names of the codecs recorders write (FFmpeg's codec names as keys).
CODEC_NAMES = {
    "pcm_s16le": "16-bit LPCM", "pcm_s16be": "16-bit big-endian LPCM", "pcm_u8": "8-bit LPCM",
    "pcm_s24le": "24-bit LPCM", "pcm_s32le": "32-bit LPCM", "pcm_f32le": "32-bit float",
    "pcm_f64le": "64-bit float", "pcm_mulaw": "G.711 mu-law", "pcm_alaw": "G.711 A-law",
    "gsm_ms": "GSM 6.10", "adpcm_ima_wav": "IMA ADPCM", "adpcm_ms": "Microsoft ADPCM",
    "g722": "G.722", "g726": "G.726 ADPCM", "mp3": "MP3", "mp2": "MPEG layer II (MP2)",
    "mp1": "MPEG layer I", "aac": "AAC", "opus": "Opus", "vorbis": "Vorbis", "flac": "FLAC",
    "speex": "Speex", "amr_nb": "AMR-NB", "amr_wb": "AMR-WB",
}
CONTAINER_NAMES = {
    "wav": "WAV", "rf64": "RF64 WAV", "mp3": "MPEG audio", "ogg": "OGG", "flac": "FLAC", "mp4": "MP4/M4A",
    "webm": "WebM", "matroska": "Matroska", "amr": "AMR", "adts": "AAC (ADTS)", "aiff": "AIFF", "au": "Sun AU",
    "caf": "Core Audio (CAF)", "w64": "Wave64",
}


@record(slots=True)
class Probe(FrozenRecord):
    """What a file is: container, codec, rate, channels, length; `damage` when it cannot be read as a whole.

    Fields a format does not record in its headers (the codec inside an MP4, an AMR file's
    length) are None; --transcode learns them from the decoder before anything is sent.
    """

    container: str  # a key of CONTAINER_NAMES, or "unknown"
    codec: str | None = None  # a key of CODEC_NAMES where known
    sample_rate: int | None = None
    channels: int | None = None
    duration: float | None = None  # seconds
    damage: str | None = None  # e.g. a WAV whose header promises more audio than the file holds
    data_range: tuple[int, int] | None = None  # (offset, size) of the audio inside the file, where a header tells
    note: str | None = None  # why a container the service takes still needs rewriting (RF64, unfinished header)

    def __init__(self, container: str, codec: str | None = None, sample_rate: int | None = None,
                 channels: int | None = None, duration: float | None = None, damage: str | None = None,
                 data_range: tuple[int, int] | None = None, note: str | None = None) -> None:
        # The fields in order, each through its slot's own setter: quicker than object.__setattr__,
        # and a dry run makes a Probe a row.
        set_ = _PROBE_SETTERS
        set_[0](self, container)
        set_[1](self, codec)
        set_[2](self, sample_rate)
        set_[3](self, channels)
        set_[4](self, duration)
        set_[5](self, damage)
        set_[6](self, data_range)
        set_[7](self, note)

    @property
    def name(self) -> str:
        """The format in a user's words: `G.711 mu-law WAV`, `FLAC`, `AAC in MP4/M4A`."""
        container = CONTAINER_NAMES.get(self.container, self.container)
        codec = CODEC_NAMES.get(self.codec or "", self.codec)
        if self.container == "unknown":
            return "unrecognised data"
        if codec is None or codec == container or self.container in ("flac", "adts"):
            return container
        if self.container in ("wav", "rf64") and self.codec in ("mp3", "mp2", "aac"):
            return f"{codec} in a RIFF/WAV wrapper"
        if self.container == "amr":
            return codec
        if self.container in ("wav", "rf64", "aiff", "au", "w64", "caf"):
            return f"{codec} {container}"
        if self.container == "mp3":
            return codec
        return f"{codec} in {container}"

    def describe(self) -> str:
        """The name with what is known of rate, channels and length: `FLAC (44100 Hz, 2 ch, 0:03:12)`."""
        parts = [f"{self.sample_rate} Hz"] * bool(self.sample_rate) + [f"{self.channels} ch"] * bool(self.channels)
        if self.duration is not None:
            parts.append(clock(self.duration))
        return f"{self.name} ({', '.join(parts)})" if parts else self.name


_PROBE_SETTERS = tuple(Probe.__dict__[f.name].__set__ for f in fields(Probe))


def clock(seconds: float) -> str:
    """H:MM:SS."""
    whole = int(round(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


@record(slots=True)
class Verdict(FrozenRecord):
    """judge()'s answer for a file that can be sent: as it is (`info`), or after converting (`convert`: why)."""

    probe: Probe
    info: AudioInfo | None = None  # the file goes byte for byte in this format
    convert: str | None = None  # what the service would refuse, when --transcode converts it

    def __init__(self, probe: Probe, info: AudioInfo | None = None, convert: str | None = None) -> None:
        set_ = object.__setattr__  # made once a row (bulk_uploader.records); frozen: its own refuses
        set_(self, "probe", probe)
        set_(self, "info", info)
        set_(self, "convert", convert)


_TAKES = "the service takes 16-bit LPCM WAV (8..48 kHz), MP3, OGG Opus or raw 16-bit PCM"


def check_pcm_params(sample_rate: int | None, channels: int | None) -> None:
    """Raise AudioError unless a raw LPCM rate and channel count are ones the service takes."""
    if sample_rate is None or not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise AudioError(
            f"raw PCM needs sample_rate between {MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE} Hz, got {sample_rate}",
            "BAD_FORMAT",
        )
    if channels is None or not 1 <= channels <= MAX_CHANNELS:
        raise AudioError(f"raw PCM needs channels 1 or 2, got {channels}", "BAD_FORMAT")


def check_limits(probe: Probe) -> None:
    """Raise AudioError for what no conversion may change: damage, over 4 hours, over two channels."""
    if probe.damage:
        raise AudioError(f"{probe.describe()}: {probe.damage}")
    if probe.duration is not None and probe.duration > MAX_SECONDS:
        raise AudioError(
            f"{probe.describe()} is {clock(probe.duration)} long; the service takes at most 4 hours: "
            "split the recording", "TOO_LONG")
    if probe.channels is not None and probe.channels > MAX_CHANNELS:
        raise AudioError(
            f"{probe.describe()} has {probe.channels} channels; the service takes at most two "
            "(left = track 0, right = track 1), and channels are never mixed: export the two parties' channels",
            "TOO_MANY_CHANNELS")


def _as_is(probe: Probe) -> tuple[AudioFormat | None, str]:
    """The format the file goes in as it is, or None and what the service would refuse."""
    if probe.note:
        return None, probe.note
    if probe.container == "wav" and probe.codec == "pcm_s16le":
        rate = probe.sample_rate or 0
        if MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
            return AudioFormat.WAV, ""
        return None, f"its sample rate {rate} Hz is outside {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz"
    if probe.container == "mp3" and probe.codec == "mp3":
        return AudioFormat.MP3, ""
    if probe.container == "ogg" and probe.codec == "opus":
        return AudioFormat.OGG_OPUS, ""
    return None, _TAKES


def _matches(declared: AudioFormat, probe: Probe) -> bool:
    if declared is AudioFormat.WAV:
        return probe.container in ("wav", "rf64")
    if declared is AudioFormat.MP3:
        return probe.codec in ("mp3", "mp2", "mp1")
    return probe.container == "ogg"


def judge(probe: Probe, declared: AudioFormat | None, *, transcode: bool = False,
          sample_rate: int | None = None, channels: int | None = None) -> Verdict:
    """The verdict on a probed file for a row that declares `declared` (None: whatever it is).

    Raises AudioError when the file cannot be sent: not audio, damaged, over 4 hours or two
    channels, contradicting its declared format, or needing a conversion without --transcode.
    """
    info = sent_as(probe, declared, transcode, sample_rate, channels)
    return Verdict(probe, info=info) if info is not None else Verdict(probe, convert=_as_is(probe)[1])


def sent_as(probe: Probe, declared: AudioFormat | None, transcode: bool = False,
            sample_rate: int | None = None, channels: int | None = None) -> AudioInfo | None:
    """judge()'s verdict without a Verdict (a dry run judges every row): the format the file goes
    in as it is, or None when --transcode converts it. Raises AudioError as judge() does."""
    if declared is AudioFormat.PCM:
        if probe.container != "unknown":
            raise AudioError(
                f"the row declares raw pcm but the file is {probe.describe()}: remove format pcm "
                "(and its sample_rate and channels) so the file is read as what it is")
        check_pcm_params(sample_rate, channels)
        return _info(AudioFormat.PCM, sample_rate, channels)
    if probe.container == "unknown":
        raise AudioError(
            f"{probe.damage or 'the bytes are no audio format known here'}; a headerless file is sent only "
            "as raw 16-bit PCM, when its row says format pcm with sample_rate and channels")
    if declared is not None and not _matches(declared, probe):
        raise AudioError(f"the row declares {declared.value} but the file is {probe.describe()}: "
                         "fix the row's format or leave it out")
    check_limits(probe)
    fmt, refused = _as_is(probe)
    if fmt is not None:
        return _info(fmt, probe.sample_rate, probe.channels)
    if not transcode:
        raise AudioError(f"{probe.describe()}: {refused}; run with --transcode to convert it on the way "
                         "(or convert it to one of those)", "NEEDS_TRANSCODE")
    return None


# AudioInfo made once for each (format, rate, channels) a run meets, up to a bound: a frozen
# instance costs several times a look-up, and a dry run makes one a row.
_INFOS: dict[tuple[str, int, int], AudioInfo] = {}
_MAX_INFOS = 256


def _info(fmt: AudioFormat, sample_rate: int | None, channels: int | None) -> AudioInfo:
    if type(sample_rate) is not int or type(channels) is not int:
        return AudioInfo(fmt, sample_rate, channels)  # (8000.0 would find 8000's, which describes itself otherwise)
    key = (fmt._value_, sample_rate, channels)  # _value_: the text, hashed without Enum.__hash__'s call
    found = _INFOS.get(key)
    if found is None:
        found = AudioInfo(fmt, sample_rate, channels)
        if len(_INFOS) < _MAX_INFOS:
            _INFOS[key] = found
    return found
