"""Migration kit: another vendor's export -> mapping -> manifest -> upload, and mapping errors."""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import API_KEY, ThreadedEmulator, cli_env, run_cli, upload_argv

from bulk_uploader import samples
from bulk_uploader.emulator import EmulatorOptions, TalkStore
from bulk_uploader.errors import ConfigError, MappingError
from bulk_uploader.manifest import read_manifest
from bulk_uploader.mapping import load_mapping
from bulk_uploader.results import read_records
from bulk_uploader.schema import ConnectionSchema

# The old vendor's naming: nested agent/customer objects, day-first dates in Moscow time,
# INBOUND/OUTBOUND, and columns the new connection does not define.
VENDOR_MAPPING = """\
[row]
id = "CallID"
dedupe_key = "CallID"
unmapped = "drop"

[rename]
CallID = "call_id"
"Agent.Name" = "operator_name"
"Agent.Login" = "operator_id"
"Customer.Name" = "client_name"
"Customer.Phone" = "client_id"
StartTime = "date"
Direction = "direction_outgoing"
Recording = "audio_path"

[values.direction_outgoing]
INBOUND = false
OUTBOUND = true

[dates.date]
format = "%d.%m.%Y %H:%M:%S"
timezone = "Europe/Moscow"

[defaults]
language = "ru-RU"

[constants]
connection_id = "vendor-calls"
"""

CONNECTION = ConnectionSchema("vendor-calls", "audio", ConnectionSchema.default("audio").keys, frozenset({"call_id"}))


def vendor_record(n: int) -> dict[str, object]:
    return {
        "CallID": f"CX-{1000 + n}",
        "Agent": {"Name": f"Agent {n % 5}", "Login": f"agent{n % 5}"},
        "Customer": {"Name": f"Customer {n}", "Phone": f"+7900000{n:04d}"},
        "StartTime": f"{1 + n % 28:02d}.03.2024 {n % 24:02d}:{n % 60:02d}:07",
        "Direction": "OUTBOUND" if n % 3 == 0 else "inbound",  # the old system's case varies
        "QueueName": "sales",
        "DurationSec": 30 + n,
    }


def expected_date(n: int) -> str:
    return f"2024-03-{1 + n % 28:02d}T{n % 24:02d}:{n % 60:02d}:07.000+03:00"


@pytest.fixture
def vendor_served(tmp_path: Path) -> Iterator[ThreadedEmulator]:
    server = ThreadedEmulator(EmulatorOptions(api_keys=[API_KEY], store_path=tmp_path / "store.sqlite3",
                                              connections=(CONNECTION,)))
    try:
        yield server
    finally:
        server.close()


def stored(tmp_path: Path) -> dict[str, dict]:
    """The store's talks by call_id."""
    store = TalkStore(tmp_path / "store.sqlite3")
    try:
        return {talk.fields["call_id"]: talk.to_json() for talk in store.talks()}
    finally:
        store.close()


def write_sidecar_export(root: Path, count: int) -> dict[str, str]:
    """Recordings in per-day folders, each with a vendor sidecar; returns sha256 by CallID."""
    digests = {}
    for n in range(count):
        folder = root / "2024" / "03" / f"{1 + n % 3:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        maker, ext = (samples.wav, "wav") if n % 2 else (samples.mp3, "mp3")
        data = maker(4000 + 100 * n, seed=n)
        record = vendor_record(n)
        (folder / f"rec{n:04d}.{ext}").write_bytes(data)
        sidecar = f"rec{n:04d}.json" if n % 4 else f"rec{n:04d}.{ext}.json"  # both sidecar namings
        (folder / sidecar).write_text(json.dumps(record), encoding="utf-8")
        digests[str(record["CallID"])] = hashlib.sha256(data).hexdigest()
    return digests


def test_sidecar_export_becomes_a_manifest_that_uploads_completely(tmp_path: Path, vendor_served: ThreadedEmulator) -> None:
    export = tmp_path / "export"
    digests = write_sidecar_export(export, 40)
    # What real exports also hold: a recording whose sidecar is missing, a sidecar whose
    # recording is missing, and a record the mapping cannot read.
    (export / "2024" / "lost.wav").write_bytes(samples.wav(1000))
    (export / "2024" / "orphan.json").write_text("{}", encoding="utf-8")
    bad = vendor_record(99) | {"Direction": "TRANSFER"}
    (export / "2024" / "bad.wav").write_bytes(samples.wav(1000))
    (export / "2024" / "bad.json").write_text(json.dumps(bad), encoding="utf-8")
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(VENDOR_MAPPING, encoding="utf-8")
    manifest = tmp_path / "calls.jsonl"

    built = run_cli("manifest", str(export), "--mapping", str(mapping), "-o", str(manifest))
    assert built.returncode == 1, built.stderr  # problems were found and listed
    assert "40 row(s) written" in built.stdout
    for kind in ("NO_SIDECAR: 1", "SIDECAR_WITHOUT_AUDIO: 1", "MAPPING: 1"):
        assert kind in built.stdout
    assert "'TRANSFER' is not in [values.direction_outgoing]" in built.stdout
    assert "--dedupe-key call_id" in built.stdout
    problems = [json.loads(line) for line in (tmp_path / "calls.jsonl.problems.jsonl").read_text().splitlines()]
    assert sorted(p["code"] for p in problems) == ["MAPPING", "NO_SIDECAR", "SIDECAR_WITHOUT_AUDIO"]
    assert "Traceback" not in built.stdout + built.stderr

    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert {r["id"] for r in rows} == set(digests)
    assert all(not r["audio_path"].startswith("/") for r in rows)  # relative to the manifest

    env = cli_env(API_KEY=API_KEY)
    argv = upload_argv(vendor_served.target, manifest, "--dedupe-key", "call_id", "--quiet")[3:]
    first = run_cli(*argv, env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    talks = stored(tmp_path)
    assert set(talks) == set(digests)
    for n in range(40):
        talk = talks[f"CX-{1000 + n}"]
        assert talk["sha256"] == digests[f"CX-{1000 + n}"]
        assert talk["connection_id"] == "vendor-calls"
        assert talk["fields"] == {
            "call_id": f"CX-{1000 + n}", "operator_name": f"Agent {n % 5}", "operator_id": f"agent{n % 5}",
            "client_name": f"Customer {n}", "client_id": f"+7900000{n:04d}", "date": expected_date(n),
            "direction_outgoing": "true" if n % 3 == 0 else "false", "language": "ru-RU",
        }
    again = run_cli(*argv, env=env)
    assert again.returncode == 0 and "uploaded 0, skipped (done before) 40" in again.stderr
    assert len(stored(tmp_path)) == 40


def test_csv_export_joined_on_a_column(tmp_path: Path, vendor_served: ThreadedEmulator) -> None:
    audio = tmp_path / "recordings"
    (audio / "a").mkdir(parents=True)
    (audio / "b").mkdir()
    export = tmp_path / "export.csv"
    with export.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["CallID", "Recording", "Agent.Name", "Agent.Login", "Customer.Name", "Customer.Phone",
                         "StartTime", "Direction", "QueueName"])
        for n in range(30):
            sub = "a" if n % 2 else "b"
            (audio / sub / f"call_{n}.wav").write_bytes(samples.wav(2000, seed=n))
            # The export names recordings three ways: a path under the folder, a file name, a stem.
            reference = [f"{sub}/call_{n}.wav", f"call_{n}.wav", f"call_{n}"][n % 3]
            r = vendor_record(n)
            writer.writerow([r["CallID"], reference, f"Agent {n % 5}", f"agent{n % 5}", f"Customer {n}",
                             f"+7900000{n:04d}", r["StartTime"], r["Direction"], "sales"])
        writer.writerow(["CX-9999", "missing.wav", "A", "a", "C", "c", "01.03.2024 10:00:00", "INBOUND", "x"])
    (audio / "a" / "not_in_export.wav").write_bytes(samples.wav(1000))
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(VENDOR_MAPPING.replace('Recording = "audio_path"\n', ""), encoding="utf-8")
    manifest = tmp_path / "joined.jsonl"

    built = run_cli("manifest", str(audio), "--export", str(export), "--join", "Recording",
                    "--mapping", str(mapping), "-o", str(manifest))
    assert built.returncode == 1
    assert "30 row(s) written" in built.stdout
    assert "AUDIO_NOT_FOUND: 1" in built.stdout and "AUDIO_WITHOUT_ROW: 1" in built.stdout
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert all("Recording" not in r["metadata"] for r in rows)

    done = run_cli(*upload_argv(vendor_served.target, manifest, "--quiet")[3:], env=cli_env(API_KEY=API_KEY))
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(stored(tmp_path)) == 30


def test_upload_applies_a_mapping_while_reading(tmp_path: Path, vendor_served: ThreadedEmulator) -> None:
    """The vendor's CSV itself as the manifest: bad rows are invalid with the mapping's reason."""
    manifest = tmp_path / "vendor.csv"
    with manifest.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["CallID", "Recording", "Agent.Name", "Agent.Login", "Customer.Name", "Customer.Phone",
                         "StartTime", "Direction"])
        for n in range(12):
            (tmp_path / f"r{n}.wav").write_bytes(samples.wav(1500, seed=n))
            r = vendor_record(n)
            start = "2024-03-01 10:00" if n == 5 else r["StartTime"]  # not the export's date format
            writer.writerow([r["CallID"], f"r{n}.wav", "A", "a", "C", "c", start, r["Direction"]])
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(VENDOR_MAPPING, encoding="utf-8")

    done = run_cli(*upload_argv(vendor_served.target, manifest, "--mapping", str(mapping))[3:],
                   env=cli_env(API_KEY=API_KEY))
    assert done.returncode == 1
    assert "uploaded 11" in done.stderr
    assert "CX-1005 (line 7): [MAPPING] date: '2024-03-01 10:00' does not match the date format" in done.stderr
    outcome = {r["id"]: r["status"] for r in read_records(tmp_path / "vendor.csv.results.jsonl")}
    assert outcome["CX-1005"] == "invalid" and sum(s == "uploaded" for s in outcome.values()) == 11
    # The mapping's dedupe column became --dedupe-key: the talks carry call_id, one each.
    assert len(stored(tmp_path)) == 11
    # The row to fix is in the source: report cannot write it out mapped, and says so.
    report = run_cli("report", str(tmp_path / "vendor.csv.results.jsonl"), "--manifest", str(manifest),
                     "--mapping", str(mapping))
    assert report.returncode == 1
    assert "0 row(s) to retry" in report.stdout and "1 row(s) cannot be retried as they are" in report.stdout
    assert not manifest.with_name(manifest.stem + ".retry.jsonl").exists()  # no empty retry file


@pytest.mark.parametrize(
    ("text", "line", "where"),
    [
        ('[rename]\nA = "x"\n[dates.date]\nformat = "%H:%M"\ntimezone = "UTC"\n', 4, "[dates.date] format"),
        ('[dates.date]\nformat = "%d.%m.%Y"\n\ntimezone = "Mars/Base"\n', 4, "[dates.date] timezone"),
        ('[dates]\ndate = { format = "%d.%m.%Y" }\n', 2, "[dates.date]"),
        ('[values.direction_outgoing]\nIN = false\nin = true\n', 3, "[values.direction_outgoing] in"),
        ('[row]\nunmapped = "sometimes"\n', 2, "[row] unmapped"),
        ('[row]\ndedupe_key = "File"\n[rename]\nFile = "audio_path"\n', 2, "[row] dedupe_key"),
        ('[rename]\nA = "x"\nB = "x"\n', 3, "[rename] B"),
        ('[colums]\nA = "x"\n', 1, "[colums]"),
        ('[rename]\nA = \n', 2, "Invalid value"),
    ],
)
def test_mapping_file_errors_name_line_and_key(tmp_path: Path, text: str, line: int, where: str) -> None:
    path = tmp_path / "m.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(MappingError) as error:
        load_mapping(path)
    message = str(error.value)
    assert where in message and (f"line {line}" in message), message
    assert isinstance(error.value, ConfigError)


def test_a_bad_mapping_stops_the_run_before_any_row(tmp_path: Path, served: ThreadedEmulator) -> None:
    manifest = samples.write_dataset(tmp_path, 5, sizes=(500,))
    mapping = tmp_path / "m.toml"
    mapping.write_text('[dates.date]\nformat = "%d.%m.%Y"\ntimezone = "Nowhere/City"\n', encoding="utf-8")
    done = run_cli(*upload_argv(served.target, manifest, "--mapping", str(mapping))[3:], env=cli_env(API_KEY=API_KEY))
    assert done.returncode == 2
    assert "m.toml line 3, [dates.date] timezone: unknown time zone 'Nowhere/City'" in done.stderr
    assert not (tmp_path / "manifest.jsonl.results.jsonl").exists()
    assert "Traceback" not in done.stderr


def test_date_rules_and_value_maps(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text(
        '[dates.date]\nformat = "unix_ms"\ntimezone = "Asia/Almaty"\noutput = "utc"\n'
        '[dates.when]\nformat = "%m/%d/%Y %I:%M %p"\ntimezone = "-05:00"\noutput = "local"\n'
        '[dates.iso]\nformat = "iso"\ntimezone = "+03:00"\n'
        '[values.direction_outgoing]\n"1" = true\n"*" = false\n', encoding="utf-8")
    mapping = load_mapping(path)
    out, problems = mapping.apply({"date": "1711029933123", "when": "03/21/2024 02:05 PM", "iso": "2024-03-21T14:05:33",
                                   "direction_outgoing": "7"})
    assert problems == []
    assert out["date"] == "2024-03-21T14:05:33.123Z"
    assert out["when"] == "2024-03-21T14:05:00.000"
    assert out["iso"] == "2024-03-21T14:05:33.000+03:00"
    assert out["direction_outgoing"] == "false"
    assert mapping.apply({"direction_outgoing": " 1 "})[0]["direction_outgoing"] == "true"


def test_json_manifest_through_a_mapping_flattens_nested_objects(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps(vendor_record(1) | {"Recording": "x.wav"}) + "\n", encoding="utf-8")
    mapping = tmp_path / "map.toml"
    mapping.write_text(VENDOR_MAPPING, encoding="utf-8")
    (row,) = read_manifest(manifest, load_mapping(mapping))
    assert row.problem is None and row.key == "CX-1001"
    assert row.data["audio_path"] == "x.wav" and row.data["connection_id"] == "vendor-calls"
    assert row.data["metadata"]["operator_id"] == "agent1"
    assert "QueueName" not in row.data["metadata"]  # unmapped = "drop"


def test_unmapped_error_names_each_column_left_out_of_the_mapping(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text('[row]\nid = "CallID"\nunmapped = "error"\ndrop = ["Queue"]\n[rename]\nAgent = "operator_name"\n',
                    encoding="utf-8")
    out, problems = load_mapping(path).apply({"CallID": "7", "Agent": "Ann", "Queue": "q", "Extra": "e"})
    assert out == {"id": "7", "operator_name": "Ann"}
    assert problems == ["column 'Extra' is not in the mapping's [rename]"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('row = 1\n', "line 1, top level row: must be a table, e.g. [row]"),
        ('[row]\ndrop = "x"\n', "line 2, [row] drop: must be a list of source column names"),
        ('[rename]\nA = "user0.id"\n', "line 2, [rename] A: users are numbered from 1 (user1.id)"),
        ('[values.d]\nIN = [1]\n', "line 2, [values.d] IN: the value sent must be a string, number or boolean"),
        ('[dates.date]\nformat = "%Y %d"\ntimezone = "UTC"\n',
         "line 2, [dates.date] format: '%Y %d' has no month (strptime codes such as %Y %m %d)"),
        ('[dates.date]\nformat = "%d.%m.%Y"\noutput = "mars"\ntimezone = "UTC"\n',
         "line 3, [dates.date] output: must be one of zoned, utc, local, not 'mars'"),
        ('[constants]\nconnection_id = [1]\n', "line 2, [constants] connection_id: must be a string, number or boolean"),
        ('[row]\ndedupe_key = "File"\nunmapped = "drop"\n',
         "line 2, [row] dedupe_key: column 'File' must become a metadata key (Search finds talks by those)"),
    ],
)
def test_mapping_file_error_messages_in_full(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "m.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(MappingError) as error:
        load_mapping(path)
    assert str(error.value) == f"{path} {message}"


@pytest.mark.parametrize(("value", "formats"), [
    ("24.04.2025 11:34", ["%d.%m.%Y %H:%M"]),  # Excel, Russian locale
    ("24.04.2025 11:34:19", ["%d.%m.%Y %H:%M:%S"]),
    ("24.04.2025", ["%d.%m.%Y"]),
    ("4/24/2025 11:34 AM", ["%m/%d/%Y %I:%M %p"]),  # Excel, US locale: only the month can come first
    ("24/04/2025 11:34", ["%d/%m/%Y %H:%M"]),
    ("04/05/2025 10:00", ["%d/%m/%Y %H:%M", "%m/%d/%Y %H:%M"]),  # either way round: both are said
    ("2025-04-24 11:34:19", ["%Y-%m-%d %H:%M:%S"]),
    ("2025-04-24T11:34:19", ["%Y-%m-%dT%H:%M:%S"]),  # ISO without milliseconds or zone
    ("2025-04-24 11:34:19,250", ["%Y-%m-%d %H:%M:%S,%f"]),
    ("1745490859", ["unix"]),
    ("1745490859000", ["unix_ms"]),
    ("2025-13-45 10:00", []),  # no such day: nothing to suggest
    ("вчера", []),
])
def test_a_refused_date_gets_the_mapping_format_that_reads_it(value: str, formats: list[str]) -> None:
    from bulk_uploader.mapping import DateRule
    from bulk_uploader.mapping_hints import guess_date_formats, metadata_fix
    from bulk_uploader.schema import check_value

    assert check_value("date", value) is not None  # the service refuses it as it is
    assert guess_date_formats(value) == formats
    for fmt in formats:  # each suggestion, used as a mapping's rule, gives a date the service takes
        assert check_value("date", DateRule(fmt, None, "local").convert(value)) is None
    fix = metadata_fix({"date": value})
    assert fix is not None and "--mapping" in fix and (not formats or f'format = "{formats[0]}"' in fix)
    assert metadata_fix({"date": "2025-04-24T11:34:19.000"}) is None


def test_rows_in_the_exports_own_column_names_say_which_mapping_entries_send_them(
        tmp_path: Path, served: ThreadedEmulator) -> None:
    # Another vendor's column names and no language column: every row is refused with the
    # entries a mapping needs; the mapping written from them sends every row.
    manifest = samples.write_dataset(tmp_path, 6, sizes=(2000,), name="source.jsonl")
    names = {"operator_name": "Agent", "operator_id": "AgentLogin", "client_name": "Customer",
             "client_id": "Phone", "date": "Started", "direction_outgoing": "Outbound"}
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    export = tmp_path / "export.csv"
    with export.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["id", "audio_path", *names.values()])
        for row in rows:
            writer.writerow([row["id"], row["audio_path"], *(row["metadata"][key] for key in names)])
    result = run_cli(*upload_argv(served.target, export)[3:], env=cli_env(API_KEY=API_KEY))
    assert result.returncode == 1, result.stderr
    records = read_records(export.with_name("export.csv.results.jsonl"))
    assert len(records) == 6 and {r["code"] for r in records} == {"INVALID_METADATA"}
    for record in records:
        assert '[defaults] language = "ru-RU"' in record["error"], record
        assert ('[rename] "<export column>" = "<key>" for each of client_id, client_name, date, direction_outgoing, '
                "operator_id, operator_name") in record["error"]
    assert served.emulator.store.count() == 0

    mapping = tmp_path / "vendor.toml"
    mapping.write_text("[rename]\n" + "".join(f'{column} = "{key}"\n' for key, column in names.items())
                       + '[defaults]\nlanguage = "ru-RU"\n')
    result = run_cli(*upload_argv(served.target, export, "--mapping", str(mapping))[3:], env=cli_env(API_KEY=API_KEY))
    assert result.returncode == 0, result.stderr
    assert sorted(t.fields["client_id"] for t in served.emulator.store.talks()) == sorted(
        r["metadata"]["client_id"] for r in rows)
