"""What is written and read once per row, by hand where the general code costs too much per row:
a result line is byte for byte what the general JSON encoder writes, for awkward values too; a
metadata value's size limit counts UTF-8 bytes; a manifest line reads the same however it is encoded."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from bulk_uploader.manifest import read_manifest
from bulk_uploader.model import RowResult, encode_json
from bulk_uploader.schema import MAX_VALUE_BYTES, check_value

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
                                             ("error", ["a list"]), ("seconds", None)])
def test_a_value_of_another_type_than_declared_takes_the_general_encoder(name: str, value: object) -> None:
    result = full_result(**{name: value})
    if name == "seconds":
        with pytest.raises(TypeError):  # round(None) fails either way
            general_line(result)
        with pytest.raises(TypeError):
            result.to_line()
        return
    assert result.to_line() == general_line(result)


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
