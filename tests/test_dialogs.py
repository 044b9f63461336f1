"""Chats, per-user metadata, raw audio and metadata updates, end to end through the CLI."""

from __future__ import annotations

import csv
import hashlib
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from conftest import API_KEY, ThreadedEmulator, cli_env, run_cli
from google.protobuf.timestamp_pb2 import Timestamp

from bulk_uploader import samples
from bulk_uploader.emulator import messages_digest
from bulk_uploader.results import read_records

CHAT_FIELDS = samples.metadata(5) | {"bot_name": "Helper", "bot_id": "bot-1"}  # operator op-5, client cl-5


def run(served: ThreadedEmulator, manifest: Path, *extra: str) -> Any:
    return run_cli(str(manifest), "--endpoint", served.target, "--insecure", "--connection-id", "demo-audio",
                   "--chat-connection-id", "demo-chat", *extra, env=cli_env(API_KEY=API_KEY))


def chat(n: int, *, start: str = "2025-04-24T11:00:00+03:00") -> list[dict[str, str]]:
    t0 = datetime.fromisoformat(start)
    users = ["op-5", "cl-5", "bot-1"]
    return [{"user_id": users[i % 3], "text": f"сообщение {i}", "timestamp": (t0 + timedelta(seconds=7 * i)).isoformat()}
            for i in range(n)]


def expected_digest(messages: list[dict[str, str]], assume: timezone | None = None) -> str:
    canonical = []
    for m in messages:
        stamp = datetime.fromisoformat(m["timestamp"])
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=assume)
        ts = Timestamp()
        ts.FromDatetime(stamp.astimezone(timezone.utc))
        canonical.append((m["user_id"], ts.ToJsonString(), m["text"]))
    return messages_digest(canonical)[0]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def by_id(manifest: Path) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in read_records(manifest.with_name(manifest.name + ".results.jsonl"))}


def test_one_manifest_of_every_audio_format_and_chats_uploads_completely(tmp_path: Path, served: ThreadedEmulator) -> None:
    audio = tmp_path / "audio"
    audio.mkdir()
    files = {
        "wav": samples.wav(20_000, rate=16000), "mp3": samples.mp3(30_000), "ogg": samples.ogg_opus(25_000),
        "raw": samples.pcm(16_000),
    }
    for ext, data in files.items():
        (audio / f"a.{ext}").write_bytes(data)
    inline, by_file = chat(12), chat(40, start="2025-05-01T09:00:00Z")
    (tmp_path / "dialog.json").write_text(json.dumps({"messages": by_file}, ensure_ascii=False), encoding="utf-8")
    rows = [
        {"id": "wav", "audio_path": "audio/a.wav", "metadata": samples.metadata(1)},
        {"id": "mp3", "audio_path": "audio/a.mp3", "format": "mp3", "metadata": samples.metadata(2)},
        {"id": "ogg", "audio_path": "audio/a.ogg", "format": "ogg_opus", "metadata": samples.metadata(3)},
        {"id": "pcm", "audio_path": "audio/a.raw", "format": "pcm", "sample_rate": 16000, "channels": 1,
         "metadata": samples.metadata(4)},
        {"id": "chat-inline", "messages": inline, "metadata": CHAT_FIELDS | {"client_id": "cl-5"}},
        {"id": "chat-file", "chat_path": "dialog.json", "metadata": CHAT_FIELDS | {"ticket_id": "T-9"}},
    ]
    manifest = write_jsonl(tmp_path / "mixed.jsonl", rows)
    result = run(served, manifest)
    assert result.returncode == 0, result.stderr
    records = by_id(manifest)
    store = served.emulator.store
    expected = {"wav": ("Upload", "wav"), "mp3": ("Upload", "mp3"), "ogg": ("Upload", "ogg_opus"), "pcm": ("Upload", "pcm")}
    for key, (rpc, fmt) in expected.items():
        talk = store.get(records[key]["talk_id"])
        assert talk is not None and (talk.rpc, talk.format) == (rpc, fmt)
        assert talk.sha256 == hashlib.sha256(files["raw" if key == "pcm" else key]).hexdigest()
    for key, messages in (("chat-inline", inline), ("chat-file", by_file)):
        talk = store.get(records[key]["talk_id"])
        assert talk is not None and (talk.rpc, talk.format, talk.message_count) == ("UploadText", "chat", len(messages))
        assert talk.connection_id == "demo-chat"
        assert talk.sha256 == expected_digest(messages)
    assert store.get(records["chat-file"]["talk_id"]).fields["ticket_id"] == "T-9"  # type: ignore[union-attr]
    assert store.count() == 6

    csv_manifest = tmp_path / "chats.csv"
    with csv_manifest.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "chat_path", *CHAT_FIELDS])
        writer.writerow(["csv-chat", "dialog.json", *(CHAT_FIELDS | {"client_name": "CSV"}).values()])
    assert run(served, csv_manifest).returncode == 0
    talk = store.get(by_id(csv_manifest)["csv-chat"]["talk_id"])
    assert talk is not None and talk.message_count == 40 and talk.sha256 == expected_digest(by_file)


def test_bad_chats_are_invalid_with_clear_reasons_and_an_assumed_zone_fixes_naive_times(
    tmp_path: Path, served: ThreadedEmulator
) -> None:
    naive = [{"user_id": "op-5", "text": "hello", "timestamp": "2025-04-24 11:34:19"},
             {"user_id": "cl-5", "text": "hi", "timestamp": "2025-04-24T11:34:25.250"}]
    rows = [
        {"id": "foreign", "messages": chat(3) + [{"user_id": "intruder", "text": "x", "timestamp": "2025-04-24T11:00:00Z"}],
         "metadata": CHAT_FIELDS},
        {"id": "naive", "messages": naive, "metadata": CHAT_FIELDS},
        {"id": "no-bot", "messages": chat(3), "metadata": {k: v for k, v in CHAT_FIELDS.items() if k != "bot_id"}},
        {"id": "empty", "messages": [], "metadata": CHAT_FIELDS},
        {"id": "good", "messages": chat(3), "metadata": CHAT_FIELDS},
    ]
    manifest = write_jsonl(tmp_path / "chats.jsonl", rows)
    result = run(served, manifest)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    records = by_id(manifest)
    reasons = {
        "foreign": "message 4: user_id 'intruder' is not the dialog's operator_id, client_id or bot_id",
        "naive": "has no time zone; pass --assume-timezone ZONE",
        "no-bot": "missing required metadata keys for the chat connection: bot_id",
        "empty": "the dialog has no messages",
    }
    for key, reason in reasons.items():
        assert records[key]["status"] == "invalid" and reason in records[key]["error"], records[key]
    assert records["good"]["status"] == "uploaded"

    fixed = run(served, manifest, "--assume-timezone", "+03:00")
    assert fixed.returncode == 1  # the other three are still invalid
    records = by_id(manifest)
    assert records["naive"]["status"] == "uploaded"
    talk = served.emulator.store.get(records["naive"]["talk_id"])
    assert talk is not None
    assert talk.sha256 == expected_digest(naive, timezone(timedelta(hours=3)))
    # 11:34:19 at +03:00 is 08:34:19 UTC.
    assert talk.sha256 == messages_digest([("op-5", "2025-04-24T08:34:19Z", "hello"),
                                           ("cl-5", "2025-04-24T08:34:25.250Z", "hi")])[0]
    assert run(served, manifest, "--assume-timezone", "Mars/Olympus").returncode == 2


def test_a_large_chat_uploads_and_one_over_the_message_limit_is_refused_clearly(
    tmp_path: Path, served: ThreadedEmulator
) -> None:
    rows = [{"id": "big", "messages": chat(30_000), "metadata": CHAT_FIELDS},
            {"id": "huge", "messages": [m | {"text": m["text"] * 30} for m in chat(30_000)], "metadata": CHAT_FIELDS}]
    manifest = write_jsonl(tmp_path / "large.jsonl", rows)
    result = run(served, manifest)
    records = by_id(manifest)
    assert records["big"]["status"] == "uploaded"
    assert served.emulator.store.get(records["big"]["talk_id"]).message_count == 30_000  # type: ignore[union-attr]
    assert records["huge"]["code"] == "CHAT_TOO_LARGE" and "split the dialog" in records["huge"]["error"]
    assert result.returncode == 1


def test_users_metadata_arrives_with_roles_and_fields_from_jsonl_and_csv(tmp_path: Path, served: ThreadedEmulator) -> None:
    (tmp_path / "a.wav").write_bytes(samples.wav(4000))
    users = [{"id": "op-1", "role": "operator", "fields": {"team": "north", "grade": "senior"}},
             {"id": "cl-1", "role": "client", "fields": {"segment": "vip"}}]
    manifest = write_jsonl(tmp_path / "users.jsonl", [
        {"id": "u1", "audio_path": "a.wav", "metadata": samples.metadata(1), "users": users},
        {"id": "bad-role", "audio_path": "a.wav", "metadata": samples.metadata(1), "users": [{"id": "x", "role": "boss"}]},
    ])
    result = run(served, manifest)
    assert result.returncode == 1
    records = by_id(manifest)
    assert "role must be one of operator, client, bot, not 'boss'" in records["bad-role"]["error"]
    talk = served.emulator.store.get(records["u1"]["talk_id"])
    assert talk is not None and talk.users == users

    csv_manifest = tmp_path / "users.csv"
    with csv_manifest.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "audio_path", *samples.metadata(2), "user1.id", "user1.role", "user1.team", "user2.id", "user2.role"])
        writer.writerow(["u2", "a.wav", *samples.metadata(2).values(), "op-2", "operator", "south", "cl-2", "client"])
    assert run(served, csv_manifest).returncode == 0
    talk = served.emulator.store.get(by_id(csv_manifest)["u2"]["talk_id"])
    assert talk is not None
    assert talk.users == [{"id": "op-2", "role": "operator", "fields": {"team": "south"}},
                          {"id": "cl-2", "role": "client", "fields": {}}]


def test_update_run_over_a_results_files_talk_ids_changes_metadata_and_creates_no_talk(
    tmp_path: Path, served: ThreadedEmulator
) -> None:
    manifest = samples.write_dataset(tmp_path, 10, sizes=(1000,))
    assert run(served, manifest).returncode == 0
    uploaded = by_id(manifest)
    updates = []
    for n, (key, record) in enumerate(sorted(uploaded.items())):
        fields = samples.metadata(n) | {"client_name": f"Corrected {n}"}
        updates.append({"id": f"fix-{key}", "talk_id": record["talk_id"], "metadata": fields,
                        "users": [{"id": f"op-{n}", "role": "operator", "fields": {"checked": "yes"}}]})
    updates.append({"id": "fix-unknown", "talk_id": "no-such-talk", "metadata": samples.metadata(0)})
    update_manifest = write_jsonl(tmp_path / "updates.jsonl", updates)
    result = run(served, update_manifest)
    assert result.returncode == 1
    records = by_id(update_manifest)
    assert records["fix-unknown"]["status"] == "failed" and records["fix-unknown"]["code"] == "NOT_FOUND"
    assert served.emulator.store.count() == 10
    for n, (key, record) in enumerate(sorted(uploaded.items())):
        assert records[f"fix-{key}"]["status"] == "uploaded" and records[f"fix-{key}"]["talk_id"] == record["talk_id"]
        talk = served.emulator.store.get(record["talk_id"])
        assert talk is not None and talk.fields["client_name"] == f"Corrected {n}" and talk.updated_at
        assert talk.users[0]["fields"] == {"checked": "yes"}


def test_wav_and_pcm_parameters_are_checked_before_sending(tmp_path: Path, served: ThreadedEmulator) -> None:
    (tmp_path / "8bit.wav").write_bytes(samples.wav(4000, bits=8))
    (tmp_path / "96k.wav").write_bytes(samples.wav(4000, rate=96000))
    (tmp_path / "a.raw").write_bytes(samples.pcm(4000))
    manifest = write_jsonl(tmp_path / "params.jsonl", [
        {"id": "8bit", "audio_path": "8bit.wav", "metadata": samples.metadata(1)},
        {"id": "96k", "audio_path": "96k.wav", "metadata": samples.metadata(1)},
        {"id": "pcm-rate", "audio_path": "a.raw", "format": "pcm", "sample_rate": 4000, "channels": 1, "metadata": samples.metadata(1)},
        {"id": "pcm-undeclared", "audio_path": "a.raw", "metadata": samples.metadata(1)},
    ])
    assert run(served, manifest).returncode == 1
    records = by_id(manifest)
    assert "8-bit LPCM WAV (8000 Hz, 2 ch" in records["8bit"]["error"]
    assert "run with --transcode" in records["8bit"]["error"] and records["8bit"]["code"] == "NEEDS_TRANSCODE"
    assert "sample rate 96000 Hz is outside 8000..48000 Hz" in records["96k"]["error"]
    assert "sample_rate between 8000 and 48000" in records["pcm-rate"]["error"]
    assert "no audio format known here" in records["pcm-undeclared"]["error"]
    assert "when its row says format pcm with sample_rate and channels" in records["pcm-undeclared"]["error"]
    assert served.emulator.store.count() == 0


def test_connection_schema_catches_keys_the_connection_does_not_define(tmp_path: Path, served: ThreadedEmulator) -> None:
    schema = tmp_path / "schema.toml"
    schema.write_text('[[connections]]\nid = "demo-audio"\ntype = "audio"\noptional_keys = ["ticket_id"]\n')
    (tmp_path / "a.wav").write_bytes(samples.wav(4000))
    manifest = write_jsonl(tmp_path / "s.jsonl", [
        {"id": "extra", "audio_path": "a.wav", "metadata": samples.metadata(1) | {"favourite": "x"}},
        {"id": "linked", "audio_path": "a.wav", "metadata": samples.metadata(2) | {"ticket_id": "T-1"}},
    ])
    result = run(served, manifest, "--connection-schema", str(schema), "--dry-run")
    assert result.returncode == 1
    assert "keys the connection does not define: favourite" in result.stderr
    assert "valid 1, invalid 1" in result.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text("[[connections]]\ntype = 'video'\n")
    bad = run(served, manifest, "--connection-schema", str(broken))
    assert bad.returncode == 2 and "type must be 'audio' or 'chat'" in bad.stderr
