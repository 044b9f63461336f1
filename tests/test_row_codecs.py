"""What is written and read once per row, by hand where the general code costs too much per row:
a result line is byte for byte what the general JSON encoder writes, for awkward values too; a
metadata value's size limit counts UTF-8 bytes; a manifest line reads the same however it is encoded
and as json.loads reads it; a row's key, its files' paths and its metadata checks come out as the
general code has them."""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest

from bulk_uploader.audio import AudioFormat, AudioInfo, Probe, judge, sent_as
from bulk_uploader.keyset import KeySet
from bulk_uploader.manifest import _json_value, read_manifest
from bulk_uploader.model import ManifestRow, RowResult, encode_json, row_key
from bulk_uploader.schema import _FORMED, MAX_VALUE_BYTES, ConnectionSchema, check_fields, check_value
from bulk_uploader.validation import Validator

AWKWARD_TEXT = ["", "plain", "Оператор ☎ 通话 🎧", 'quote " and \\ backslash', "\x00\x01\x1f\x7f control",
                "line\nbreak\ttab\r", "\u2028\u2029 separators", "</script>", None]
AWKWARD_NUMBERS = [0, -1, 7, 2**70]
AWKWARD_SECONDS = [0.0, -0.0, 1e-9, 0.0005, 123.4567, 1e300, 5, True, math.nan, math.inf, -math.inf]
TEXT_FIELDS = ["id", "status", "talk_id", "error", "code", "audio_path", "rpc", "source_format", "sent_format",
               "finished_at"]


def general_line(result: RowResult) -> bytes:
    """The line as the general encoder writes it (what to_line wrote before it was built by hand)."""
    data = {f.name: getattr(result, f.name) for f in dataclasses.fields(RowResult)}
    data["seconds"] = round(result.seconds, 3)
    return (encode_json(data) + "\n").encode("utf-8")


def full_result(**values: object) -> RowResult:
    result = RowResult("row-1", "uploaded", talk_id="t1", error="e", code="OK", attempts=2, bytes=10, seconds=0.25,
                       audio_path="a.wav", line=3, rpc="Upload", unknown_outcomes=1, reconciled=True,
                       source_format="WAV", sent_format="wav", finished_at="2026-01-01T00:00:00.000+00:00")
    for name, value in values.items():
        setattr(result, name, value)
    return result


def test_every_field_of_a_result_is_written() -> None:
    line = full_result().to_line()
    assert line == general_line(full_result())
    assert list(json.loads(line)) == [f.name for f in dataclasses.fields(RowResult)]  # a new field must be added


@pytest.mark.parametrize("name", TEXT_FIELDS)
@pytest.mark.parametrize("value", AWKWARD_TEXT)
def test_awkward_text_is_written_as_the_general_encoder_writes_it(name: str, value: str | None) -> None:
    result = full_result(**{name: value})
    if name == "finished_at" and not value:
        result.finished_at = "stamped"  # empty: to_line stamps the time
    line = result.to_line()
    assert line == general_line(result)
    assert json.loads(line)[name] == result.__getattribute__(name)


@pytest.mark.parametrize("name", ["attempts", "bytes", "line", "unknown_outcomes"])
@pytest.mark.parametrize("value", AWKWARD_NUMBERS)
def test_whole_numbers_are_written_as_the_general_encoder_writes_them(name: str, value: int) -> None:
    result = full_result(**{name: value})
    assert result.to_line() == general_line(result)
    assert json.loads(result.to_line())[name] == value


@pytest.mark.parametrize("value", AWKWARD_SECONDS)
def test_seconds_are_rounded_and_written_as_the_general_encoder_writes_them(value: float) -> None:
    result = full_result(seconds=value)
    assert result.to_line() == general_line(result)


@pytest.mark.parametrize(("name", "value"), [("attempts", "3"), ("code", 5), ("reconciled", 1), ("bytes", 1.5),
                                             ("line", True), ("error", ["a list"]), ("seconds", None)])
def test_a_value_of_another_type_than_declared_takes_the_general_encoder(name: str, value: object) -> None:
    result = full_result(**{name: value})
    if name == "seconds":
        with pytest.raises(TypeError):  # round(None) fails either way
            general_line(result)
        with pytest.raises(TypeError):
            result.to_line()
        return
    assert result.to_line() == general_line(result)


def test_the_time_a_line_is_stamped_with_is_written_as_isoformat_writes_it() -> None:
    before = datetime.now(timezone.utc)
    stamped = RowResult("row-1", "uploaded").to_line()
    after = datetime.now(timezone.utc)
    at = json.loads(stamped)["finished_at"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", at)
    assert before.replace(microsecond=before.microsecond // 1000 * 1000) <= datetime.fromisoformat(at) <= after


def test_text_that_is_not_unicode_fails_as_it_did() -> None:
    result = full_result(error="lone \ud800 surrogate")
    with pytest.raises(UnicodeEncodeError):
        general_line(result)
    with pytest.raises(UnicodeEncodeError):
        result.to_line()


@pytest.mark.parametrize(("value", "fine"), [
    ("x" * MAX_VALUE_BYTES, True), ("x" * (MAX_VALUE_BYTES + 1), False),
    ("ж" * (MAX_VALUE_BYTES // 2), True), ("ж" * (MAX_VALUE_BYTES // 2) + "x", False),  # 2 bytes a letter
    ("🎧" * (MAX_VALUE_BYTES // 4), True), ("🎧" * (MAX_VALUE_BYTES // 4 + 1), False),  # 4 bytes
])
def test_a_value_is_limited_by_its_utf8_bytes_not_its_letters(value: str, fine: bool) -> None:
    problem = check_value("client_name", value)
    assert (problem is None) is fine, problem
    if not fine:
        assert f"is {len(value.encode())} bytes" in problem


def test_manifest_lines_read_the_same_whatever_their_letters(tmp_path: Path) -> None:
    rows = [{"id": "a", "audio_path": "a.wav", "metadata": {"client_name": "Клиент ☎", "note": 'q"\\\u2028'}},
            {"id": "b", "audio_path": "b.wav", "metadata": {"client_name": "plain"}}]
    manifest = tmp_path / "m.jsonl"
    manifest.write_bytes(b"\xef\xbb\xbf" + "\n".join(json.dumps(r, ensure_ascii=False) for r in rows).encode()
                         + b"\n{not json\n")
    read = list(read_manifest(manifest))
    assert [r.data for r in read[:2]] == rows
    assert read[2].problem is not None and read[2].problem.startswith("malformed JSON on line 3")


@pytest.mark.parametrize("text", [
    '{"id": "a"}\n', '{"id": "a"}\r\n', '{"id": "a"}', '{"id": "a"}  \n', '{"id": "a"}\t\n', ' {"id": "a"}\n',
    '{"id": "a"}\x0b\n', '{"id": "a"}\u00a0\n', '{"id": "a"} {"id": "b"}\n', '{"id": "a"}x\n', '{"id": \n',
    '{not json\n', '{"id": "a",}\n', '{"a": NaN, "b": 1e400}\n', '[1, 2]\n', '"text"\n', '{"a": {"b": [1, {}]}}\n',
    '{"id": "\\ud800"}\n', '{"id": "a", "id": "b"}\n', '{}\n', '{',
])
def test_a_manifest_line_reads_as_json_loads_reads_it(text: str) -> None:
    try:
        expected: object = json.loads(text)
    except json.JSONDecodeError as exc:
        with pytest.raises(json.JSONDecodeError) as got:
            _json_value(text)
        assert str(got.value) == str(exc)
    else:
        value = _json_value(text)
        assert value == expected or (value != value and expected != expected)  # NaN is unequal to itself
        assert repr(value) == repr(expected)


@pytest.mark.parametrize(("data", "key"), [
    ({"id": " a ", "audio_path": "x.wav"}, "a"), ({"id": "  ", "audio_path": "x.wav"}, "x.wav"),
    ({"id": 7}, "7"), ({"id": True, "chat_path": " c.json"}, "c.json"), ({"audio_path": ""}, "line:4"), ({}, "line:4"),
])
def test_a_rows_key_is_its_id_else_its_file_else_its_line(data: dict[str, object], key: str) -> None:
    assert row_key(data, 4) == key


def test_a_key_set_tells_keys_seen_before_through_its_growth() -> None:
    keys = KeySet()
    assert all(keys.add(f"row-{n}") for n in range(5000))
    assert not any(keys.add(f"row-{n}") for n in range(0, 5000, 7))
    assert len(keys) == 5000 and "row-4999" in keys and "row-5000" not in keys


@pytest.mark.parametrize("folder", [".", "/", "/srv/calls", "calls", "calls/../x"])
@pytest.mark.parametrize("written", ["a.wav", "d/a.wav", "./a.wav", "d//a.wav", "d/./a.wav", "d/../a.wav", "d/a.wav/",
                                     "/abs/a.wav", "//a.wav", "a.wav/.", "...", " a b .wav", "~/a.wav", "d\\a.wav"])
def test_a_file_named_in_a_row_resolves_as_path_resolves_it(folder: str, written: str) -> None:
    validator = Validator(Path(folder), "c", ())
    assert validator._resolve(written) == str(Path(folder) / written)


def test_rows_naming_files_in_every_form_find_them(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.wav").write_bytes(b"RIFF")
    validator = Validator(tmp_path, "c", ())
    metadata = {"date": "2023-09-13T17:31:00.000", "direction_outgoing": "true", "language": "ru-RU",
                "operator_name": "o", "operator_id": "o1", "client_name": "c", "client_id": "c1"}
    for n, written in enumerate(["d/a.wav", "./d/a.wav", "d//a.wav", "d/./a.wav", str(tmp_path / "d/a.wav")]):
        job = validator.check(ManifestRow(n, f"k{n}", {"audio_path": written, "metadata": metadata}))
        assert job.path == str(tmp_path / written) and job.size == 4


def test_the_usual_values_checked_without_a_call_are_ones_check_value_accepts() -> None:
    assert all(check_value(key, value) is None for key, usual in _FORMED.items() for value in usual)


@pytest.mark.parametrize(("value", "fine"), [
    ("x" * MAX_VALUE_BYTES, True), ("x" * (MAX_VALUE_BYTES + 1), False), ("ж" * 257, True),
    ("🎧" * (MAX_VALUE_BYTES // 4), True), ("🎧" * (MAX_VALUE_BYTES // 4 + 1), False),
])
def test_every_value_of_a_row_is_limited_by_its_utf8_bytes(value: str, fine: bool) -> None:
    problems = check_fields({"client_name": value, "language": "RU-ru"}, ConnectionSchema.default("audio", strict=False))
    assert [p for p in problems if "bytes" in p] == ([] if fine else [check_value("client_name", value)])
    assert "language must be" not in " ".join(problems)  # any case: the form's, not one of the usual values


@pytest.mark.parametrize(("probe", "declared"), [
    (Probe("wav", "pcm_s16le", 8000, 1, 1.0), None), (Probe("wav", "pcm_s16le", 8000.0, 1, 1.0), AudioFormat.WAV),  # type: ignore[arg-type]
    (Probe("mp3", "mp3", 44100, 2, 3.0), None), (Probe("ogg", "opus", 48000, 2, 3.0), AudioFormat.OGG_OPUS),
    (Probe("unknown"), AudioFormat.PCM), (Probe("flac", "flac", 44100, 2, 3.0), None),
])
def test_what_a_dry_run_judges_is_what_judge_says(probe: Probe, declared: AudioFormat | None) -> None:
    verdict = judge(probe, declared, transcode=True, sample_rate=16000, channels=2)
    info = sent_as(probe, declared, True, 16000, 2)
    assert info == verdict.info and (info is None or info.describe() == AudioInfo(*dataclasses.astuple(info)).describe())
    if info is not None and declared is not AudioFormat.PCM:
        assert type(info.sample_rate) is type(probe.sample_rate)  # 8000.0 is not told as 8000


def test_a_probe_is_made_as_the_dataclass_would_make_it() -> None:
    names = [f.name for f in dataclasses.fields(Probe)]
    parameters = list(inspect.signature(Probe).parameters.values())
    assert [p.name for p in parameters] == names
    assert all(p.default is None for p in parameters[1:]) and parameters[0].default is inspect.Parameter.empty
    values = ["wav", "pcm_s16le", 8000, 1, 1.5, "cut", (44, 100), "note"]
    probe = Probe(*values)
    assert [getattr(probe, name) for name in names] == values == list(dataclasses.astuple(probe))
    assert probe == Probe(**dict(zip(names, values, strict=True))) and hash(probe) == hash(Probe(*values))
    with pytest.raises(dataclasses.FrozenInstanceError):
        probe.codec = "mp3"  # type: ignore[misc]
