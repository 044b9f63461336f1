"""The commands around an upload: `emulator`, `talks` and `demo` (the local SpeechSense stand-in),
`manifest` (a manifest from another vendor's export) and `report` (results summed, rows to
retry); each imports inside its body what only it needs (the emulator and sqlite3, cryptography,
the manifest builder), so an upload's start-up does not load them. Annotations are evaluated as the
module loads (see bulk_uploader.cli.application); those that name what only a command loads are quoted.
"""

import os
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from bulk_uploader import media_extra
from bulk_uploader.cli.application import EXIT_OK, EXIT_ROWS, app, fail
from bulk_uploader.errors import ConfigError

if TYPE_CHECKING:
    from bulk_uploader.emulator import EmulatorOptions, FaultOptions
    from bulk_uploader.pipeline import RunSummary
    from bulk_uploader.progress import Reporter
    from bulk_uploader.sakey import ServiceAccountKey


def _emulator_options(
    host: str,
    port: int,
    api_key: list[str],
    iam_token: list[str],
    config: Path | None,
    store: Path | None,
    faults: "FaultOptions",
    user_key_prefix: str,
    *,
    sa_keys: list[Path],
    iam_token_ttl: float,
    env: Mapping[str, str],
    reads: Mapping[str, Any],
    max_streams: int = 0,
) -> "EmulatorOptions":
    from bulk_uploader.emulator import EmulatorOptions
    from bulk_uploader.emulator.metadata import default_connection
    from bulk_uploader.emulator.server import DEFAULT_CONNECTIONS
    from bulk_uploader.schema import load_schemas

    keys = list(api_key) + ([env["EMULATOR_API_KEY"]] if env.get("EMULATOR_API_KEY") else [])
    if not keys and not iam_token and not sa_keys:
        raise ConfigError("the emulator needs --api-key (or env EMULATOR_API_KEY), --iam-token or --sa-key to accept")
    return EmulatorOptions(
        host=host,
        port=port,
        api_keys=tuple(keys),
        iam_tokens=tuple(iam_token),
        connections=tuple(load_schemas(config, default_connection)) if config else DEFAULT_CONNECTIONS,
        store_path=store or ":memory:",
        faults=faults,
        user_key_prefix=user_key_prefix,
        token_secret=env.get("EMULATOR_TOKEN_SECRET") or None,
        service_account_keys=tuple(_emulator_sa_key(path) for path in sa_keys),
        iam_token_ttl=iam_token_ttl,
        max_streams=max_streams,
        **reads,
    )


def _emulator_sa_key(path: Path) -> "ServiceAccountKey":
    """A key the emulator accepts: read from the file, or made and written there when it is absent."""
    import json

    from bulk_uploader.sakey import ServiceAccountKey, new_key

    if path.exists():
        return ServiceAccountKey.load(path, need_private=False)
    key = new_key(f"emu-key-{os.urandom(4).hex()}", "emu-service-account")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # a private key: owner only
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(key.to_json(), f, indent=2)
    print(f"wrote a new service account key to {path} (for --sa-key)", file=sys.stderr, flush=True)
    return key


async def _serve(options: "EmulatorOptions") -> None:
    import signal

    import anyio

    from bulk_uploader.emulator import Emulator

    emulator = Emulator(options)
    # Handlers first: a signal that arrives as soon as the address is printed still stops cleanly.
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        await emulator.start()
        connections = ", ".join(f"{c.id} ({c.type})" for c in options.connections if c.id)
        print(f"SpeechSense emulator listening on {emulator.target}", flush=True)
        print(f"connections: {connections}; store: {options.store_path}", flush=True)
        try:
            async for _ in signals:
                break
        finally:
            with anyio.CancelScope(shield=True):
                await emulator.stop(grace=2.0)
    print(f"emulator stopped; {options.store_path} holds the accepted talks", flush=True)


@app.command("emulator")
def emulator(
    port: Annotated[int, typer.Option(help="Port; 0 picks a free one (printed)")] = 0,
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    api_key: Annotated[list[str], typer.Option(help="API key to accept (repeatable; or env EMULATOR_API_KEY)")] = [],  # noqa: B006
    iam_token: Annotated[list[str], typer.Option(help="IAM token to accept (repeatable)")] = [],  # noqa: B006
    config: Annotated[Optional[Path], typer.Option(help="TOML file of connections")] = None,
    store: Annotated[Optional[Path], typer.Option(help="SQLite file for accepted talks \\[default: memory]")] = None,
    latency_ms: Annotated[float, typer.Option(help="Fixed latency per call")] = 0.0,
    jitter_ms: Annotated[float, typer.Option(help="Plus random latency up to this")] = 0.0,
    error_rate: Annotated[list[str], typer.Option(help="CODE=RATE, e.g. UNAVAILABLE=0.1 (repeatable)")] = [],  # noqa: B006
    rps: Annotated[float, typer.Option(help="Requests per second cap (RESOURCE_EXHAUSTED beyond)")] = 0.0,
    max_in_flight: Annotated[int, typer.Option(help="Calls in flight cap (RESOURCE_EXHAUSTED beyond)")] = 0,
    lose_answer_rate: Annotated[float, typer.Option(help="Store the talk, then answer UNAVAILABLE")] = 0.0,
    seed: Annotated[Optional[int], typer.Option(help="Seed for the random faults")] = None,
    user_key_prefix: Annotated[str, typer.Option(help="Search key prefix of the metadata given at upload")] = "userMeta.",
    read_quota: Annotated[str, typer.Option(help="Reads (Search, Get) per project: READS/UNIT,... or off")] = (
        "20/s,200/min,2000/h,20000/day"),
    index_lag: Annotated[float, typer.Option(help="Seconds before Search sees a stored talk")] = 0.0,
    processing_delay: Annotated[float, typer.Option(help="Seconds a talk waits before processing starts")] = 1.0,
    processing_time: Annotated[float, typer.Option(help="Seconds processing takes")] = 2.0,
    processing_failure_rate: Annotated[float, typer.Option(help="Share of talks whose processing fails")] = 0.0,
    lose_every: Annotated[int, typer.Option(help="Answer every Nth new talk but never store it (0: none)")] = 0,
    max_streams: Annotated[
        int, typer.Option(help="Calls one client connection may carry at once, the rest refused (0: no limit)")
    ] = 0,
    sa_key: Annotated[
        list[Path], typer.Option(help="Service account key file whose JWTs to accept (made if absent; repeatable)")
    ] = [],  # noqa: B006
    iam_token_ttl: Annotated[float, typer.Option(help="Seconds the IAM tokens it issues live")] = 12 * 3600.0,
) -> None:
    """Run the local SpeechSense emulator until SIGINT/SIGTERM."""
    from bulk_uploader.emulator import FaultOptions, Processing
    from bulk_uploader.reads import parse_quota

    try:
        faults = FaultOptions(
            latency_ms=latency_ms,
            jitter_ms=jitter_ms,
            error_rates=FaultOptions.parse_rates(error_rate),
            rps=rps,
            max_in_flight=max_in_flight,
            lose_answer_rate=lose_answer_rate,
            lose_every=lose_every,
            seed=seed,
        )
        reads = {"read_quota": parse_quota(read_quota), "index_lag": index_lag, "processing": Processing(
            delay=processing_delay, time=processing_time, failure_rate=processing_failure_rate)}
        options = _emulator_options(host, port, api_key, iam_token, config, store, faults, user_key_prefix,
                                    sa_keys=sa_key, iam_token_ttl=iam_token_ttl, env=os.environ, reads=reads,
                                    max_streams=max_streams)
        media_extra.require("the emulator, which decodes audio to judge it,")
    except (ValueError, ConfigError) as exc:
        raise fail(str(exc)) from None
    import asyncio

    asyncio.run(_serve(options))


@app.command("talks")
def talks(
    store: Annotated[Path, typer.Argument(help="The emulator's SQLite store")],
    talk_id: Annotated[Optional[str], typer.Option("--id", help="Show one talk")] = None,
    count: Annotated[bool, typer.Option(help="Print only how many talks are stored")] = False,
    duplicates: Annotated[Optional[str], typer.Option(help="Print values of this field held by several talks")] = None,
) -> None:
    """List what an emulator store holds, one JSON object per talk."""
    import json

    from bulk_uploader.emulator import TalkStore

    if not store.is_file():
        raise fail(f"{store}: no such store")
    db = TalkStore(store)
    try:
        if count:
            typer.echo(str(db.count()))
        elif duplicates:
            typer.echo(json.dumps(db.duplicates(duplicates), ensure_ascii=False))
        elif talk_id:
            talk = db.get(talk_id)
            if talk is None:
                raise fail(f"talk {talk_id} not found", EXIT_ROWS)
            typer.echo(json.dumps(talk.to_json(), ensure_ascii=False, indent=2))
        else:
            for item in db.talks():
                typer.echo(json.dumps(item.to_json(), ensure_ascii=False))
    finally:
        db.close()


@app.command("report")
def report(
    results: Annotated[list[Path], typer.Argument(help="Results files (shards, reruns)")],
    manifest: Annotated[Optional[Path], typer.Option(help="The manifest, to write the rows still to do")] = None,
    retry_manifest: Annotated[
        Optional[Path], typer.Option(help="Where to write them \\[default: MANIFEST.retry.jsonl]")
    ] = None,
    mapping: Annotated[
        Optional[Path], typer.Option(help="The mapping the manifest was uploaded with (rows are written mapped)")
    ] = None,
    encoding: Annotated[Optional[str], typer.Option(help="The manifest's encoding \\[default: detected]")] = None,
    delimiter: Annotated[Optional[str], typer.Option(help="The manifest's CSV delimiter \\[default: detected]")] = None,
) -> None:
    """Summarise results files and write the failed rows as a manifest ready to retry."""
    from bulk_uploader.report import summarize, write_retry_manifest

    column_mapping = None
    if mapping:
        from bulk_uploader.mapping import load_mapping  # its TOML parser, only with --mapping

        try:
            column_mapping = load_mapping(mapping)
        except ConfigError as exc:
            raise fail(str(exc)) from None
    missing = [str(p) for p in results if not p.is_file()]
    if missing:
        raise fail(f"no such results file: {', '.join(missing)}")
    summary = summarize(results)
    for line in summary.lines_out():
        typer.echo(line)
    if manifest is None:
        todo = summary.to_retry()
        if todo:
            typer.echo(f"{len(todo)} row(s) recorded but not uploaded; pass --manifest to write every row "
                       "still to do (rows with no results line too)")
        raise typer.Exit(EXIT_ROWS if todo else EXIT_OK)
    if not manifest.is_file():
        raise fail(f"{manifest}: manifest not found")
    out = retry_manifest or manifest.with_name(manifest.stem + ".retry.jsonl")
    from bulk_uploader.textfile import detect_format

    try:
        text_format = detect_format(manifest, encoding=encoding, delimiter=delimiter)
        written, unusable = write_retry_manifest(manifest, summary.ledger.uploaded, out, column_mapping, text_format)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    if written:
        typer.echo(f"{written} row(s) to retry written to {out}")
        dropped = [name for name, given in (("--mapping", mapping), ("--encoding", encoding), ("--delimiter", delimiter))
                   if given]
        same = f"the same options without {', '.join(dropped)}: it is mapped UTF-8 JSON lines" if dropped \
            else "the same options"
        typer.echo(f"retry with: bulk-upload {shlex.quote(str(out))} ({same})")
    else:
        typer.echo("0 row(s) to retry: every row of the manifest that can be sent is uploaded")
    if unusable:
        typer.echo(f"{unusable} row(s) cannot be retried as they are: malformed or repeated ids in the manifest")
    raise typer.Exit(EXIT_ROWS if written or unusable else EXIT_OK)


@app.command("manifest")
def manifest(
    folder: Annotated[Path, typer.Argument(help="Folder of recordings, searched recursively")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Manifest to write (.jsonl)")] = Path("manifest.jsonl"),
    mapping: Annotated[
        Optional[Path], typer.Option(help="TOML mapping from the export's columns \\[default: names kept as they are]")
    ] = None,
    export: Annotated[
        Optional[Path], typer.Option(help="One CSV or JSONL of metadata instead of .json sidecars")
    ] = None,
    join: Annotated[
        Optional[str], typer.Option(help="Column of --export naming each row's recording (path, file name or stem)")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace --out if it exists")] = False,
    encoding: Annotated[
        Optional[str], typer.Option(help="The export's encoding (cp1251, utf-16, ...) \\[default: detected]")
    ] = None,
    delimiter: Annotated[
        Optional[str], typer.Option(help="The export's CSV delimiter: , ; tab | \\[default: detected]")
    ] = None,
) -> None:
    """Build a manifest from recordings and their metadata, through a mapping.

    The metadata comes from sidecars (call.json beside call.wav) or one export (CSV or JSONL) joined on a column."""
    from bulk_uploader.builder import build_manifest
    from bulk_uploader.mapping import ColumnMapping, load_mapping
    from bulk_uploader.textfile import detect_format

    try:
        column_mapping = load_mapping(mapping) if mapping else ColumnMapping()
    except ConfigError as exc:
        raise fail(str(exc)) from None
    if not folder.is_dir():
        raise fail(f"{folder}: no such folder")
    if (export is None) != (join is None):
        raise fail("--export and --join go together: the export file and its column naming each recording")
    if export is not None and not export.is_file():
        raise fail(f"{export}: export file not found")
    if out.suffix.lower() not in (".jsonl", ".ndjson"):
        raise fail(f"{out}: the manifest is written as JSON lines; name it .jsonl")
    if out.exists() and not overwrite:
        raise fail(f"{out} exists; pass --overwrite to replace it")
    try:
        export_format = detect_format(export, encoding=encoding, delimiter=delimiter) if export else None
        if export_format is not None and (notice := export_format.notice(export)):  # type: ignore[arg-type]
            typer.echo(notice, err=True)
        summary = build_manifest(folder, out, column_mapping, export=export, join=join, export_format=export_format)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    for line in summary.lines():
        typer.echo(line)
    dedupe = f" --dedupe-key {shlex.quote(column_mapping.dedupe_key)}" if column_mapping.dedupe_key else ""
    typer.echo(f"check it with: bulk-upload {shlex.quote(str(out))} --dry-run{dedupe}")
    raise typer.Exit(EXIT_ROWS if summary.problems else EXIT_OK)


async def _demo(folder: Path, rows: int, concurrency: int, reporter: "Reporter") -> "tuple[RunSummary, int]":
    from bulk_uploader.auth import Credentials
    from bulk_uploader.cli.runtime import upload_with_signals
    from bulk_uploader.emulator import Emulator, EmulatorOptions
    from bulk_uploader.options import UploadOptions
    from bulk_uploader.samples import write_dataset

    recordings = min(rows, 40)
    manifest = write_dataset(folder, rows, sizes=(8 * 1024, 64 * 1024, 300 * 1024, 6 * 1024 * 1024),
                             distinct_files=recordings, connection_id="demo-audio")
    key = "demo-key"
    async with Emulator(EmulatorOptions(api_keys=[key], store_path=folder / "emulator.sqlite3")) as emu:
        reporter.message(f"emulator on {emu.target}; {rows} sample rows of {recordings} recordings in {manifest}")
        options = UploadOptions(
            manifest=manifest,
            endpoint=emu.target,
            insecure=True,
            credentials=Credentials("Api-Key", key),
            concurrency=concurrency,
        )
        summary = await upload_with_signals(options, reporter)
        return summary, emu.store.count()


NEXT_STEPS = (  # each line within 80 columns: the terminal would fold a longer one mid-word
    "next, your own recordings: list them in a manifest (JSONL, or CSV from Excel:",
    "id, audio_path and your connection's metadata keys; README.md, Manifest), then",
    "  export API_KEY=<your API key>",
    "  bulk-upload manifest.csv --connection-id <your connection id> --dry-run",
    "  bulk-upload manifest.csv --connection-id <your connection id>",
    "(the first checks every row and sends nothing; the second uploads)",
)


def _size_of(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


@app.command("demo")
def demo(
    rows: Annotated[int, typer.Option(help="Sample rows to make and upload")] = 200,
    concurrency: Annotated[int, typer.Option(help="Rows uploaded at once")] = 16,
    folder: Annotated[
        Optional[Path], typer.Option(help="Where to write the sample data, kept \\[default: a temp folder, removed]")
    ] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the temp folder's sample data")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress display")] = False,
) -> None:
    """Start the emulator in-process, make a sample data set and upload it: a full rehearsal."""
    try:
        media_extra.require("the demo (its emulator decodes audio, its samples are encoded)")
    except ConfigError as exc:
        raise fail(str(exc)) from None
    import asyncio
    import shutil
    import tempfile

    remove = folder is None and not keep
    folder = folder or Path(tempfile.mkdtemp(prefix="bulk-upload-demo-"))

    from bulk_uploader.progress import make_reporter

    reporter = make_reporter(quiet=quiet)
    try:
        summary, stored = asyncio.run(_demo(folder, rows, concurrency, reporter))
        size, store = _size_of(folder), folder / "emulator.sqlite3"
    finally:
        if remove:
            shutil.rmtree(folder, ignore_errors=True)
    lines = summary.lines()
    if remove:
        lines = [line for line in lines if not line.startswith("results: ")]
        lines.append(f"the emulator stored {stored} talks; the demo's files ({size / 1e6:.1f} MB in {folder}) "
                     "are removed (--keep keeps them)")
    else:
        lines.append(f"emulator store {store} holds {stored} talks; inspect with: bulk-upload talks {store}")
        lines.append(f"the demo's files: {size / 1e6:.1f} MB in {folder}; remove them with: "
                     f"rm -r {shlex.quote(str(folder))}")
    reporter.summary([*lines, *NEXT_STEPS])
    raise typer.Exit(summary.exit_code)
