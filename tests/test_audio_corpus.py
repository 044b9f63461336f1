"""Recordings as recorders export them, made by real encoders, uploaded plain and with --transcode.

Plain: every file the service takes is uploaded byte for byte and nothing else is sent.
With --transcode: every convertible file arrives in a format the emulator's decoder
accepts, with its channels and its length within 2%. Over 4 hours, over two channels,
damaged or contradicting the row's format: invalid either way, before anything is sent.
"""

from __future__ import annotations

import hashlib
import json
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from audio_corpus import CORPUS, Entry, make_corpus
from conftest import API_KEY, ThreadedEmulator, cli_env, run_cli

from bulk_uploader import media, samples
from bulk_uploader.model import Job
from bulk_uploader.reader import plan_audio
from bulk_uploader.results import read_records


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def manifest_for(folder: Path, corpus: dict[str, Path], entries: list[Entry]) -> Path:
    rows = []
    for n, entry in enumerate(entries):
        row: dict[str, Any] = {"id": entry.name, "audio_path": str(corpus[entry.name]), "metadata": samples.metadata(n)}
        if entry.declared:
            row["format"] = entry.declared
        if entry.declared == "pcm":
            row.update(sample_rate=8000, channels=1)
        rows.append(row)
    manifest = folder / "corpus.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def upload(served: ThreadedEmulator, manifest: Path, results: Path, *extra: str) -> dict[str, dict[str, Any]]:
    done = run_cli(str(manifest), "--endpoint", served.target, "--insecure", "--connection-id", "demo-audio",
                   "--results", str(results), "--quiet", *extra, env=cli_env(API_KEY=API_KEY), timeout=300)
    assert done.returncode == 1, done.stderr
    return {r["id"]: r for r in read_records(results) if r["status"] != "sending"}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_plain_sends_only_what_the_service_takes_byte_for_byte(tmp_path: Path, corpus: dict[str, Path],
                                                                served: ThreadedEmulator) -> None:
    records = upload(served, manifest_for(tmp_path, corpus, CORPUS), tmp_path / "plain.results.jsonl")
    store = served.emulator.store
    for entry in CORPUS:
        record = records[entry.name]
        if entry.plain == "as-is":
            assert record["status"] == "uploaded", record
            talk = store.get(record["talk_id"])
            assert talk is not None and talk.sha256 == sha(corpus[entry.name]), entry.name
            assert record["sent_format"] in ("wav", "mp3", "ogg_opus")
        else:
            assert (record["status"], record["code"]) == ("invalid", entry.plain), record
    assert store.count() == sum(e.plain == "as-is" for e in CORPUS)
    named = {"mulaw.wav": "G.711 mu-law WAV", "call.flac": "FLAC (16000 Hz, 2 ch", "id3-aac.aac": "AAC (ADTS)",
             "layer2.mp2": "MPEG layer II (MP2)", "quad.wav": "has 4 channels", "long.mp3": "is 4:05:00 long",
             "flac-as-pcm.raw": "declares raw pcm but the file is FLAC", "cut-short.wav": "file is cut short",
             "mp3-in-riff.wav": "MP3 in a RIFF/WAV wrapper", "long.wav": "at most 4 hours"}
    for name, words in named.items():
        assert words in records[name]["error"], records[name]


def test_transcode_sends_every_convertible_file_in_a_format_the_decoder_accepts(
    tmp_path: Path, corpus: dict[str, Path], served: ThreadedEmulator
) -> None:
    records = upload(served, manifest_for(tmp_path, corpus, CORPUS), tmp_path / "tc.results.jsonl", "--transcode")
    store, decoded = served.emulator.store, served.emulator.decoded
    for entry in CORPUS:
        record = records[entry.name]
        if entry.plain == "as-is":
            talk = store.get(record["talk_id"])
            assert talk is not None and talk.sha256 == sha(corpus[entry.name]), entry.name  # byte for byte still
        elif entry.converted is None:
            assert (record["status"], record["code"]) == ("invalid", entry.plain), record
        else:
            assert record["status"] == "uploaded", record
            assert record["sent_format"].split()[0] == entry.converted, record
            assert record["rpc"] == "UploadAsStream"
            channels, seconds = decoded[record["talk_id"]]
            source = media.measure(corpus[entry.name])
            assert channels == entry.channels == source.channels, entry.name
            assert abs(seconds - source.duration) <= 0.02 * source.duration, (entry.name, seconds, source.duration)
    converted = [e for e in CORPUS if e.converted]
    assert store.count() == sum(e.plain == "as-is" for e in CORPUS) + len(converted)


def channel_levels(pcm: bytes) -> tuple[float, float]:
    samples_ = array("h", pcm)
    left, right = samples_[0::2], samples_[1::2]
    return sum(abs(x) for x in left) / len(left), sum(abs(x) for x in right) / len(right)


def job_for(path: Path, **extra: Any) -> Job:
    return Job("k", 1, "audio", "demo-audio", {}, audio_path=path.name, path=path, size=path.stat().st_size, **extra)


def test_channels_are_never_mixed_swapped_on_request_and_two_mono_files_joined(tmp_path: Path) -> None:
    stereo = tmp_path / "agent-left.flac"  # a tone on the left, silence on the right
    media.synthesize(stereo, "flac", "flac", rate=16000, channels=2, seconds=2.0, freqs=(440.0, 0.0))
    kept = b"".join(plan_audio(job_for(stereo), transcode=True).chunks(64 * 1024))
    swapped_plan = plan_audio(job_for(stereo, swap_channels=True), transcode=False)
    swapped = b"".join(swapped_plan.chunks(64 * 1024))
    (kept_left, kept_right), (swapped_left, swapped_right) = channel_levels(kept), channel_levels(swapped)
    assert kept_left > 1000 and kept_right == 0
    assert swapped_left == 0 and swapped_right > 1000
    assert len(kept) == len(swapped) == 2 * 2 * 16000 * 2

    agent, client = tmp_path / "agent.wav", tmp_path / "client.mp3"
    media.synthesize(agent, "wav", "pcm_mulaw", rate=8000, channels=1, seconds=2.0, freqs=(440.0,))
    media.synthesize(client, "mp3", "libmp3lame", rate=16000, channels=1, seconds=3.0, freqs=(0.0,))
    joined_plan = plan_audio(job_for(agent, right_path=client, right_audio_path="client.mp3"), transcode=False)
    assert (joined_plan.info.sample_rate, joined_plan.info.channels) == (16000, 2)
    joined = b"".join(joined_plan.chunks(64 * 1024))
    left, right = channel_levels(joined)
    assert left > 500 and right < 5
    assert abs(len(joined) / (2 * 2 * 16000) - 3.0) < 0.06  # as long as the longer file


def test_channel_rows_upload_as_two_channel_audio_the_decoder_accepts(tmp_path: Path, served: ThreadedEmulator) -> None:
    media.synthesize(tmp_path / "both.m4a", "ipod", "aac", rate=16000, channels=2, seconds=2.0)
    media.synthesize(tmp_path / "mono.wav", "wav", "pcm_s16le", rate=8000, channels=1, seconds=2.0)
    media.synthesize(tmp_path / "a.wav", "wav", "pcm_alaw", rate=8000, channels=1, seconds=2.0)
    media.synthesize(tmp_path / "b.wav", "wav", "pcm_alaw", rate=8000, channels=1, seconds=2.5)
    rows = [
        {"id": "swap", "audio_path": "both.m4a", "swap_channels": True, "metadata": samples.metadata(1)},
        {"id": "join", "audio_path": "a.wav", "right_audio_path": "b.wav", "metadata": samples.metadata(2)},
        {"id": "swap-mono", "audio_path": "mono.wav", "swap_channels": "true", "metadata": samples.metadata(3)},
        {"id": "join-stereo", "audio_path": "both.m4a", "right_audio_path": "b.wav", "metadata": samples.metadata(4)},
    ]
    manifest = tmp_path / "channels.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    records = upload(served, manifest, tmp_path / "channels.results.jsonl")
    for key, seconds in (("swap", 2.0), ("join", 2.5)):
        assert records[key]["status"] == "uploaded", records[key]
        channels, decoded = served.emulator.decoded[records[key]["talk_id"]]
        assert channels == 2 and abs(decoded - seconds) < 0.04 * seconds
    assert "swap_channels needs a two-channel file" in records["swap-mono"]["error"]
    assert "joins two mono files, but both.m4a is AAC in MP4/M4A" in records["join-stereo"]["error"]


def test_a_conversion_streams_in_bounded_pieces(tmp_path: Path) -> None:
    path = tmp_path / "hour-ish.flac"
    media.synthesize(path, "flac", "flac", rate=48000, channels=2, seconds=60.0)
    pieces = [len(p) for p in plan_audio(job_for(path), transcode=True).chunks(256 * 1024)]
    assert sum(pieces) == 60 * 48000 * 2 * 2
    assert max(pieces) < 2 * 256 * 1024 and len(pieces) > 20


def test_dry_run_counts_conversions_and_reads_no_results_file_it_never_wrote(
    tmp_path: Path, corpus: dict[str, Path]
) -> None:
    manifest = manifest_for(tmp_path, corpus, CORPUS)
    done = run_cli(str(manifest), "--dry-run", "--transcode", "--connection-id", "demo-audio")
    assert done.returncode == 1, done.stderr
    converted = sum(e.converted is not None for e in CORPUS)
    assert f"to convert on the way (--transcode or channel options): {converted} row(s)" in done.stderr
    assert "G.711 mu-law WAV 1" in done.stderr
    assert not manifest.with_name(manifest.name + ".results.jsonl").exists()


def test_the_emulator_judges_the_corpus_by_itself(corpus: dict[str, Path], served: ThreadedEmulator) -> None:
    """Each file straight to the emulator, declared as its name says, no client code on the way:
    it takes the files the uploader sends as they are, and refuses the others with a reason,
    except the few the uploader is stricter about (STRICTER)."""
    import grpc

    from bulk_uploader.proto import speechsense_pb2 as pb
    from bulk_uploader.proto import speechsense_pb2_grpc as pb_grpc

    containers = {".mp3": pb.ContainerAudio.CONTAINER_AUDIO_TYPE_MP3, ".ogg": pb.ContainerAudio.CONTAINER_AUDIO_TYPE_OGG_OPUS}
    auth = (("authorization", f"Api-Key {API_KEY}"),)

    def messages(n: int, path: Path, kind: int) -> Iterator[pb.StreamTalkRequest]:
        yield pb.StreamTalkRequest(metadata=pb.TalkMetadata(connection_id="demo-audio", fields=samples.metadata(n)))
        audio = pb.StreamTalkRequest()
        audio.audio.audio_metadata.container_audio.container_audio_type = kind
        yield audio
        with path.open("rb") as f:
            while piece := f.read(4 << 20):
                chunk = pb.StreamTalkRequest()
                chunk.audio.chunk.data = piece
                yield chunk

    verdicts = {}
    with grpc.insecure_channel(served.target) as channel:
        stub = pb_grpc.TalkServiceStub(channel)
        for n, entry in enumerate(CORPUS):
            if entry.declared == "pcm":
                continue  # raw PCM is bytes by definition: nothing in them to judge
            path = corpus[entry.name]
            kind = containers.get(path.suffix, pb.ContainerAudio.CONTAINER_AUDIO_TYPE_WAV)
            try:
                stub.UploadAsStream(messages(n, path, kind), metadata=auth, timeout=120)
                verdicts[entry.name] = "taken"
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, (entry.name, exc)  # type: ignore[attr-defined]
                assert exc.details(), entry.name  # type: ignore[attr-defined]
                verdicts[entry.name] = "refused"
    expected = {e.name: "taken" if e.plain == "as-is" or e.name in STRICTER else "refused"
                for e in CORPUS if e.declared != "pcm"}
    assert verdicts == expected


# Files the uploader does not send as they are although a decoder reads them; what the service
# does with them is not documented (../shared/SPEECHSENSE.md: "WAV (LPCM only)").
STRICTER = {
    # RF64 is not RIFF WAV; --transcode sends the same audio bytes under a plain WAV header.
    "rf64.wav": "converted",
    # A copy cut short: a decoder plays the half that is there; the row is BAD_AUDIO so that no
    # partial call is recorded as uploaded.
    "cut-short.wav": "invalid",
}
