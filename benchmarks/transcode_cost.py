"""CPU seconds --transcode spends per hour of audio, by source format, and a probe's cost per file.

    python benchmarks/transcode_cost.py [--minutes 10]

Each source is made with FFmpeg's encoders (GSM 6.10 with libsndfile's) (a tone, `--minutes` long), then converted the
way an upload converts it (bulk_uploader.reader.plan_audio -> Plan.chunks, 1 MiB pieces),
timed with process CPU time; the figure is scaled to one hour of audio.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bulk_uploader import media
from bulk_uploader.model import Job
from bulk_uploader.probe import probe_file
from bulk_uploader.reader import plan_audio

SOURCES = [
    ("G.711 mu-law WAV, 8 kHz mono", "wav", "pcm_mulaw", 8000, 1, {}),
    ("GSM 6.10 WAV, 8 kHz mono (made by libsndfile)", "wav", "gsm_ms", 8000, 1, {}),
    ("IMA ADPCM WAV, 8 kHz mono", "wav", "adpcm_ima_wav", 8000, 1, {}),
    ("AMR-NB, 8 kHz mono", "amr", "libopencore_amrnb", 8000, 1, {"bit_rate": 12200}),
    ("24-bit WAV, 48 kHz stereo", "wav", "pcm_s24le", 48000, 2, {}),
    ("FLAC, 44.1 kHz stereo", "flac", "flac", 44100, 2, {}),
    ("AAC/M4A, 44.1 kHz stereo", "ipod", "aac", 44100, 2, {}),
    ("Vorbis OGG, 44.1 kHz stereo", "ogg", "vorbis", 44100, 2, {"codec_options": {"strict": "experimental"}}),
    ("16-bit WAV, 96 kHz stereo (resampled to 48 kHz)", "wav", "pcm_s16le", 96000, 2, {}),
    ("Opus in WebM, stereo (remuxed, not decoded)", "webm", "libopus", 48000, 2, {}),
]


def gsm_wav(path: Path, seconds: float) -> None:
    """FFmpeg has no GSM 6.10 encoder; libsndfile (soundfile, in the test extra) has one."""
    import numpy
    import soundfile

    t = numpy.arange(int(seconds * 8000)) / 8000
    soundfile.write(path, (0.3 * numpy.sin(2 * numpy.pi * 440 * t) * 32767).astype(numpy.int16), 8000,
                    subtype="GSM610", format="WAV")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    args = parser.parse_args()
    seconds = args.minutes * 60
    print("| source | CPU s per audio hour | MB sent per audio hour |")
    print("|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for label, fmt, codec, rate, channels, extra in SOURCES:
            path = Path(folder) / f"source.{fmt}"
            if codec == "gsm_ms":
                gsm_wav(path, seconds)
            else:
                media.synthesize(path, fmt, codec, rate=rate, channels=channels, seconds=seconds, **extra)  # type: ignore[arg-type]
            job = Job("k", 1, "audio", "c", {}, audio_path=path.name, path=path, size=path.stat().st_size)
            started = time.process_time()
            sent = sum(len(piece) for piece in plan_audio(job, True).chunks(1 << 20))
            cpu = time.process_time() - started
            scale = 3600 / seconds
            print(f"| {label} | {cpu * scale:.1f} | {sent * scale / 1e6:.0f} |", flush=True)
        path = Path(folder) / "probe.wav"
        media.synthesize(path, "wav", "pcm_s16le", rate=8000, channels=1, seconds=1.0)
        started = time.process_time()
        for _ in range(10_000):
            probe_file(path)
        print(f"\nprobe of a 16-bit WAV: {(time.process_time() - started) / 10:.3f} ms CPU per file")


if __name__ == "__main__":
    main()
