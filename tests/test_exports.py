"""Manifests as spreadsheets write them: Excel's Russian-locale CSV (windows-1251, `;`, CRLF), its
"Unicode text" (UTF-16 LE with a BOM, tab-separated), bytes that do not decode, headers with a
column twice or misspelt, and a JSON array saved as .jsonl; uploaded by the real CLI to a real
emulator, or refused before anything is sent."""

from __future__ import annotations

import codecs
import csv
import io
import json
from pathlib import Path

import pytest
from conftest import API_KEY, ThreadedEmulator, cli_env, run_cli

from bulk_uploader import samples
from bulk_uploader.errors import ConfigError
from bulk_uploader.manifest import count_rows, read_manifest
from bulk_uploader.textfile import detect_format, first_bad_byte

OPERATORS = ["Анна Смирнова", "Пётр Ёлкин", "Ольга Кузнецова", "Сергей Иванов", "Мария Соколова"]
CLIENTS = ["ООО «Ромашка»", "Иван Петров; директор", 'Наталья "Ната" Орлова', "Фёдор Щукин", "Юлия Эйдельман"]
COLUMNS = ["id", "audio_path", "operator_name", "operator_id", "client_name", "client_id", "date",
           "direction_outgoing", "language"]


def row_fields(n: int, operators: list[str] = OPERATORS, clients: list[str] = CLIENTS) -> dict[str, str]:
    """The metadata of row n: Cyrillic names, some with the delimiter, quotes and guillemets in them."""
    return samples.metadata(n) | {"operator_name": operators[n % 5], "client_name": clients[n % 5]}


def excel_text(folder: Path, rows: int, delimiter: str, operators: list[str] = OPERATORS,
               clients: list[str] = CLIENTS) -> str:
    """A header and `rows` rows as Excel writes them (quoted only where needed, CRLF), with the audio on disk."""
    (folder / "audio").mkdir(exist_ok=True)
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for n in range(rows):
        rel = f"audio/call-{n:04d}.wav"
        (folder / rel).write_bytes(samples.wav(2_000, seed=n))
        fields = row_fields(n, operators, clients)
        writer.writerow([f"call-{n:04d}", rel, *(fields[key] for key in COLUMNS[2:])])
    return out.getvalue()


def upload(served: ThreadedEmulator, manifest: Path, *extra: str) -> tuple[int, str]:
    result = run_cli(str(manifest), "--endpoint", served.target, "--insecure", "--connection-id", "demo-audio",
                     *extra, env=cli_env(API_KEY=API_KEY))
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, result.stderr


def assert_stored_exactly(served: ThreadedEmulator, rows: int) -> None:
    talks = {talk.fields["client_id"]: talk.fields for talk in served.emulator.store.talks()}
    assert len(talks) == rows
    for n in range(rows):
        assert talks[f"cl-{n}"] == row_fields(n)


def assert_nothing_sent(served: ThreadedEmulator, manifest: Path) -> None:
    assert served.emulator.store.count() == 0
    assert not manifest.with_name(manifest.name + ".results.jsonl").exists()


def test_excel_cp1251_semicolon_crlf_csv_is_detected_and_uploads_exact_fields(
        tmp_path: Path, served: ThreadedEmulator) -> None:
    manifest = tmp_path / "calls.csv"
    manifest.write_bytes(excel_text(tmp_path, 40, ";").encode("cp1251"))
    code, err = upload(served, manifest)
    assert code == 0, err
    assert "calls.csv: read as cp1251 (detected from its Cyrillic text), ';'-separated" in err
    assert_stored_exactly(served, 40)


def test_excel_dates_and_flags_are_refused_with_the_mapping_that_converts_them_which_then_uploads(
        tmp_path: Path, served: ThreadedEmulator) -> None:
    # Excel in a Russian locale writes dates as 04.04.2025 03:03 and the sheet's flags as да/нет.
    text = excel_text(tmp_path, 12, ";")
    for n in range(12):
        iso = row_fields(n)["date"]  # 2025-04-04T03:03:00.000
        text = text.replace(iso, f"{iso[8:10]}.{iso[5:7]}.{iso[:4]} {iso[11:16]}")
    text = text.replace(";true;", ";да;").replace(";false;", ";нет;")
    manifest = tmp_path / "calls.csv"
    manifest.write_bytes(text.encode("cp1251"))
    code, err = upload(served, manifest)
    assert code == 1, err
    records = [json.loads(line) for line in manifest.with_name("calls.csv.results.jsonl").read_text().splitlines()[1:]]
    assert len(records) == 12 and {r["code"] for r in records} == {"INVALID_METADATA"}
    for record in records:
        assert "a mapping file (--mapping" in record["error"], record
        assert 'format = "%d.%m.%Y %H:%M"' in record["error"] and "[values.direction_outgoing]" in record["error"]
    assert served.emulator.store.count() == 0

    # The mapping the messages describe, written as they say: the rows go.
    (tmp_path / "excel.toml").write_text('[dates.date]\nformat = "%d.%m.%Y %H:%M"\ntimezone = "Europe/Moscow"\n'
                                         '[values.direction_outgoing]\n"да" = true\n"нет" = false\n')
    code, err = upload(served, manifest, "--mapping", str(tmp_path / "excel.toml"))
    assert code == 0, err
    talks = {talk.fields["client_id"]: talk.fields for talk in served.emulator.store.talks()}
    assert len(talks) == 12
    for n in range(12):
        want = row_fields(n)
        assert talks[f"cl-{n}"] == want | {"date": want["date"] + "+03:00"}


def test_cp1251_too_short_to_detect_stops_with_a_hint_then_uploads_with_encoding(
        tmp_path: Path, served: ThreadedEmulator) -> None:
    # One Cyrillic word among ASCII rows: too little text to tell code pages apart.
    operators = ["Ёлка", "Petr", "Olga", "X", "X"]
    manifest = tmp_path / "calls.csv"
    manifest.write_bytes(excel_text(tmp_path, 12, ";", operators, ["X"] * 5).encode("cp1251"))
    code, err = upload(served, manifest)
    assert code == 2
    assert "calls.csv line 2: 0xA8 (offset 126) is not UTF-8; give the file's encoding with --encoding" in err
    assert "--encoding cp1251" in err
    assert_nothing_sent(served, manifest)

    code, err = upload(served, manifest, "--encoding", "cp1251")
    assert code == 0, err
    talks = {talk.fields["client_id"]: talk.fields for talk in served.emulator.store.talks()}
    assert talks == {f"cl-{n}": row_fields(n, operators, ["X"] * 5) for n in range(12)}


def test_excel_unicode_text_utf16_tab_separated_uploads_exact_fields(tmp_path: Path, served: ThreadedEmulator) -> None:
    manifest = tmp_path / "calls.txt"  # Excel saves "Unicode Text" as .txt
    manifest.write_bytes(codecs.BOM_UTF16_LE + excel_text(tmp_path, 30, "\t").encode("utf-16-le"))
    code, err = upload(served, manifest)
    assert code == 0, err
    assert "calls.txt: read as utf-16 (byte order mark), tab-separated" in err
    assert_stored_exactly(served, 30)


def test_a_bad_byte_on_line_2002_of_2011_stops_before_sending_and_names_the_line(
        tmp_path: Path, served: ThreadedEmulator) -> None:
    lines = excel_text(tmp_path, 1, ",").split("\r\n")[:2]
    header, first = lines[0], lines[1]
    body = [first.replace("call-0000", f"call-{n:04d}").replace("cl-0", f"cl-{n}") for n in range(2010)]
    data = [line.encode("utf-8") for line in [header, *body]]
    assert len(data) == 2011
    data[2001] = data[2001].replace("Анна".encode(), "Анна".encode("cp1251"))  # line 2,002
    manifest = tmp_path / "calls.csv"
    manifest.write_bytes(b"\r\n".join(data) + b"\r\n")
    code, err = upload(served, manifest)
    assert code == 2
    assert "calls.csv line 2002: 0xC0 " in err and "--encoding" in err
    assert_nothing_sent(served, manifest)


def test_counting_and_reading_agree(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    # Excel's sep= line, a quoted cell spanning lines, blank lines, a short row, CRLF.
    manifest.write_bytes("sep=;\r\nid;audio_path;note\r\na;a.wav;\"two\r\nlines\"\r\n\r\n;;\r\nb;b.wav\r\n"
                         "c;c.wav;x\r\n".encode("cp1251"))
    fmt = detect_format(manifest, encoding="cp1251")
    assert fmt.delimiter == ";" and fmt.sep_line
    rows = list(read_manifest(manifest, fmt=fmt))
    assert [(row.line, row.key, row.problem is None) for row in rows] == [(3, "a", True), (7, "line:7", False),
                                                                         (8, "c", True)]
    assert rows[0].data["metadata"] == {"note": "two\r\nlines"}
    assert count_rows(manifest, fmt) == len(rows) == 3
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_bytes(b'\xef\xbb\xbf{"id": "a"}\r\n\r\n  \n{"id": "b"}\n{torn\n')
    assert count_rows(jsonl) == len(list(read_manifest(jsonl))) == 3


def test_a_bad_byte_is_found_across_chunks_and_in_utf16(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    line = "row,Привет\n".encode()
    path.write_bytes(line * 200_000 + b"row,\xff\n" + line)  # past the first megabyte
    bad = first_bad_byte(path, "utf-8")
    assert bad is not None and (bad.line, bad.offset, bad.data, bad.ascii_before) == (
        200_001, len(line) * 200_000 + 4, b"\xff", False)
    utf16 = tmp_path / "odd.txt"
    utf16.write_bytes(codecs.BOM_UTF16_LE + "a\tb\r\n1\t2\r\n".encode("utf-16-le") + b"\x00\xdc")  # a lone surrogate
    with pytest.raises(ConfigError, match=r"odd.txt line 3: .* is not utf-16 \(byte order mark\)"):
        count_rows(utf16)


def test_a_bad_byte_after_ascii_megabytes_or_a_character_cut_at_a_chunks_end_is_found(tmp_path: Path) -> None:
    path = tmp_path / "ascii.jsonl"
    path.write_bytes(b"row\n" * 600_000 + b"r\xffw\n")  # ASCII chunks, whose lines are counted without decoding
    assert first_bad_byte(path, "utf-8") == (600_001, 4 * 600_000 + 1, b"\xff", True)
    cut = tmp_path / "cut.jsonl"
    chunk = 1024 * 1024
    cut.write_bytes(b"a\n" * (chunk // 2 - 1) + b"a\xd0" + b"b\n" * 100)  # a character's first byte ends a chunk
    assert first_bad_byte(cut, "utf-8") == (chunk // 2, chunk - 1, b"\xd0", True)
    fine = tmp_path / "fine.jsonl"
    fine.write_bytes(b"a\n" * (chunk // 2 - 1) + b"a" + "ж\n".encode() + b"b\n" * 100)  # and its second the next
    assert first_bad_byte(fine, "utf-8") is None


@pytest.mark.parametrize("header, message", [
    ("id,audio_path,operator_name,operator_name", "names a column more than once, so one of its values would be "
                                                  "lost on every row: 'operator_name' (columns 3, 4)"),
    ("ID,Audio_Path,operator_name,User1.ID", "column names are exact, and the header has 'ID' (meant 'id'?), "
                                             "'Audio_Path' (meant 'audio_path'?), 'User1.ID' (meant 'user1.id'?)"),
])
def test_header_mistakes_are_named_at_once_and_nothing_is_sent(tmp_path: Path, served: ThreadedEmulator,
                                                               header: str, message: str) -> None:
    manifest = tmp_path / "calls.csv"
    manifest.write_text(header + "\n" + "\n".join(f"c{n},a.wav,x,y" for n in range(50)) + "\n")
    code, err = upload(served, manifest)
    assert code == 2
    assert err.count("bulk-upload: ") == 1 and message in err
    assert_nothing_sent(served, manifest)


def test_misspelt_json_fields_are_named_at_once_and_nothing_is_sent(tmp_path: Path, served: ThreadedEmulator) -> None:
    samples.write_dataset(tmp_path, 10)
    manifest = tmp_path / "calls.jsonl"
    manifest.write_text("".join(json.dumps({"ID": f"c{n}", "Audio_Path": f"audio/call-{n:06d}.wav",
                                            "metadata": samples.metadata(n)}) + "\n" for n in range(10)))
    code, err = upload(served, manifest)
    assert code == 2
    assert ("bulk-upload: calls.jsonl line 1: field names are exact, and the first row has 'ID' (meant 'id'?), "
            "'Audio_Path' (meant 'audio_path'?)") in err
    assert_nothing_sent(served, manifest)


def test_a_pretty_printed_json_array_saved_as_jsonl_is_one_error(tmp_path: Path, served: ThreadedEmulator) -> None:
    manifest = tmp_path / "calls.jsonl"
    rows = [{"id": f"c{n}", "audio_path": "a.wav", "metadata": samples.metadata(n)} for n in range(20)]
    manifest.write_text(json.dumps(rows, indent=2))
    code, err = upload(served, manifest)
    assert code == 2
    assert err.strip().splitlines() == [
        "bulk-upload: calls.jsonl line 1 starts a JSON array, but a .jsonl manifest has one JSON object per line: "
        "convert it, e.g. jq -c '.[]' calls.jsonl > rows.jsonl"]
    assert_nothing_sent(served, manifest)


def test_the_builder_reads_an_excel_export_and_names_a_missing_join_column(tmp_path: Path) -> None:
    folder = tmp_path / "recordings"
    folder.mkdir()
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";", lineterminator="\r\n")
    writer.writerow(["Запись", "Оператор", "Клиент"])
    for n in range(30):
        (folder / f"rec{n}.wav").write_bytes(samples.wav(1_000, seed=n))
        writer.writerow([f"rec{n}.wav", OPERATORS[n % 5], CLIENTS[n % 5]])
    export = tmp_path / "export.csv"
    export.write_bytes(out.getvalue().encode("cp1251"))
    manifest = tmp_path / "calls.jsonl"
    wrong = run_cli("manifest", str(folder), "--export", str(export), "--join", "запись", "-o", str(manifest))
    assert wrong.returncode == 2
    assert "export.csv has no column 'запись' for --join; did you mean 'Запись'?" in wrong.stderr
    assert not manifest.exists()
    built = run_cli("manifest", str(folder), "--export", str(export), "--join", "Запись", "-o", str(manifest))
    assert built.returncode == 0, built.stderr
    assert "export.csv: read as cp1251 (detected from its Cyrillic text), ';'-separated" in built.stderr
    rows = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 30
    assert {(r["metadata"]["Оператор"], r["metadata"]["Клиент"]) for r in rows} == set(zip(OPERATORS, CLIENTS, strict=True))


def test_report_writes_the_rows_left_of_an_excel_csv_as_utf8_jsonl(tmp_path: Path, served: ThreadedEmulator) -> None:
    manifest = tmp_path / "calls.csv"
    manifest.write_bytes(excel_text(tmp_path, 20, ";").encode("cp1251"))
    (tmp_path / "audio" / "call-0003.wav").unlink()
    code, err = upload(served, manifest)
    assert code == 1, err
    results = tmp_path / "calls.csv.results.jsonl"
    report = run_cli("report", str(results), "--manifest", str(manifest))
    assert report.returncode == 1, report.stderr
    assert "1 row(s) to retry written to" in report.stdout
    (row,) = [json.loads(line) for line in (tmp_path / "calls.retry.jsonl").read_text(encoding="utf-8").splitlines()]
    assert row["id"] == "call-0003" and row["metadata"] == row_fields(3)
