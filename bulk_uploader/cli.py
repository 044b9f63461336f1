"""The command line: the one home of typer, argv and the environment.

    bulk-upload MANIFEST [options]     upload (the default command)
    bulk-upload demo                   emulator + sample data set + upload, all on this machine
    bulk-upload emulator [options]     run the local SpeechSense emulator
    bulk-upload talks STORE            list what an emulator store holds
    bulk-upload manifest FOLDER        build a manifest from another vendor's export
    bulk-upload report RESULTS...      summarise results files, write the rows to retry
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import sys
import tempfile
from collections.abc import Coroutine
from datetime import tzinfo
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import anyio
import typer
from typer.core import TyperGroup

from bulk_uploader.allocator import keep_big_buffers
from bulk_uploader.auth import DEFAULT_TOKEN_REFRESH, AuthProvider, Credentials, ServiceAccountAuth, TokenCommand
from bulk_uploader.chat import parse_timezone
from bulk_uploader.errors import BulkUploadError, ConfigError, SchemaError
from bulk_uploader.mapping import load_mapping
from bulk_uploader.options import DEFAULT_ENDPOINT, SearchScope, UploadOptions, is_loopback
from bulk_uploader.pipeline import RunControl, RunSummary, run_upload
from bulk_uploader.progress import Reporter, make_reporter
from bulk_uploader.schema import load_schemas
from bulk_uploader.shard import parse_shard, shard_from_environment
from bulk_uploader.transport import DEFAULT_IAM_ENDPOINT, IamTokenExchange

if TYPE_CHECKING:  # the emulator (and sqlite3), cryptography load only for the commands that use them
    from bulk_uploader.emulator import EmulatorOptions, FaultOptions
    from bulk_uploader.sakey import ServiceAccountKey

EXIT_OK, EXIT_ROWS, EXIT_USAGE = 0, 1, 2


class _DefaultToUpload(TyperGroup):
    """`bulk-upload manifest.jsonl ...` means `bulk-upload upload manifest.jsonl ...`."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["upload", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_DefaultToUpload,
    add_completion=False,
    # A traceback with local variables could show a credential: keep them plain.
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="Upload call recordings and chats to Yandex SpeechSense, concurrently and resumably.",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    typer.echo(f"bulk-upload: {message}", err=True)
    return typer.Exit(code)


def _read_secret(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} file {path}: {exc.strerror}") from None


def credentials_from(api_key_file: Path | None, iam_token_file: Path | None, env: dict[str, str]) -> Credentials | None:
    """Credentials from the files given, else from API_KEY / IAM_TOKEN as the vendor's docs name them."""
    if api_key_file and iam_token_file:
        raise ConfigError("give either --api-key-file or --iam-token-file, not both")
    if api_key_file:
        return Credentials("Api-Key", _read_secret(api_key_file, "API key"))
    if iam_token_file:
        return Credentials("Bearer", _read_secret(iam_token_file, "IAM token"))
    if env.get("API_KEY"):
        return Credentials("Api-Key", env["API_KEY"].strip())
    if env.get("IAM_TOKEN"):
        return Credentials("Bearer", env["IAM_TOKEN"].strip())
    return None


def _credentials(sa_key: Path | None, iam_endpoint: str, iam_token_command: str | None, refresh_every: float,
                 insecure: bool, api_key_file: Path | None, iam_token_file: Path | None) -> AuthProvider | None:
    """The run's credentials: a service account key, a token command, or a fixed key or token."""
    if sa_key and iam_token_command:
        raise ConfigError("give either --sa-key or --iam-token-command, not both")
    if sa_key:
        if insecure and not is_loopback(iam_endpoint):
            raise ConfigError(f"--insecure would send the service account's signed JWT in plaintext to {iam_endpoint}; "
                              "with the emulator, pass --iam-endpoint as well")
        from bulk_uploader.sakey import ServiceAccountKey  # cryptography, only when needed

        return ServiceAccountAuth(ServiceAccountKey.load(sa_key), IamTokenExchange(iam_endpoint, insecure=insecure),
                                  refresh_every=refresh_every)
    if iam_token_command:
        return TokenCommand(iam_token_command, refresh_every=refresh_every)
    return credentials_from(api_key_file, iam_token_file, dict(os.environ))


async def _watch_signals(control: RunControl, reporter: Reporter) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            if control.stopping:
                reporter.message("aborting now; rows in flight stay unrecorded and will be retried")
            else:
                reporter.message("stopping: finishing uploads in flight (press Ctrl-C again to abort)")
            control.stop()


async def _upload_with_signals(options: UploadOptions, reporter: Reporter) -> RunSummary:
    control = RunControl()
    error: BulkUploadError | None = None
    async with anyio.create_task_group() as group:
        group.start_soon(_watch_signals, control, reporter)
        try:
            summary = await run_upload(options, reporter, control)
        except BulkUploadError as exc:
            error = exc  # raised outside the group, so it is not wrapped in an ExceptionGroup
        finally:
            group.cancel_scope.cancel()
    if error is not None:
        raise error
    return summary


class EventLoop(str, Enum):
    """--event-loop"""

    uvloop = "uvloop"
    asyncio = "asyncio"


def _run_event_loop(main: Coroutine[Any, Any, RunSummary], event_loop: EventLoop) -> RunSummary:
    """Run the upload on uvloop where it is installed and asked for, else on asyncio's own loop.

    uvloop's loop turns faster: side by side with 2,000 files of 16 KiB (11 rounds) the run
    took 0.80 s against 0.81 s, and 0.73 against 0.78 s in another 7 (no change at 100 ms
    latency). It is a dependency where it builds (not on Windows).
    """
    if event_loop is EventLoop.uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(main)
    return asyncio.run(main)


def run_cli_upload(options: UploadOptions, reporter: Reporter, retry_command: str,
                   event_loop: EventLoop = EventLoop.uvloop) -> int:
    """Run an upload to its end and print the summary; returns the exit status."""
    if not options.dry_run:  # a dry run sends nothing; the setting is process-wide, so the command line makes it
        keep_big_buffers()
    for warning in warnings_for(options):
        reporter.message(f"warning: {warning}")
    try:
        summary = _run_event_loop(_upload_with_signals(options, reporter), event_loop)
    except BulkUploadError as exc:
        reporter.message(f"bulk-upload: {exc}")
        return EXIT_USAGE
    reporter.summary(summary.lines(retry_command))
    return summary.exit_code


def _timezone(text: str | None) -> tzinfo | None:
    if text is None:
        return None
    try:
        return parse_timezone(text)
    except ValueError as exc:
        raise ConfigError(f"--assume-timezone: {exc}") from None


def _shown_args(args: list[str]) -> list[str]:
    """argv fit to print: a token command may hold a secret expanded by the shell, so it is elided."""
    shown, hide_next = [], False
    for arg in args:
        if hide_next:
            shown.append("<same command>")
            hide_next = False
        elif arg == "--iam-token-command":
            shown.append(arg)
            hide_next = True
        elif arg.startswith("--iam-token-command="):
            shown.append("--iam-token-command=<same command>")
        else:
            shown.append(arg)
    return shown


def warnings_for(options: UploadOptions) -> list[str]:
    """Things worth saying before a run starts."""
    out = []
    if options.insecure and options.credentials is not None and not is_loopback(options.endpoint):
        out.append(f"sending credentials in plaintext to {options.endpoint} (--insecure)")
    return out


@app.command("upload")
def upload(
    manifest: Annotated[Path, typer.Argument(help="Manifest: .jsonl or .csv")],
    concurrency: Annotated[int, typer.Option(help="Rows uploaded at once")] = 8,
    connection_id: Annotated[Optional[str], typer.Option(help="Connection for rows that name none")] = None,
    chat_connection_id: Annotated[
        Optional[str], typer.Option(help="Connection for chat rows that name none [default: --connection-id]")
    ] = None,
    assume_timezone: Annotated[
        Optional[str], typer.Option(help="Zone for chat timestamps without one (Europe/Moscow, +03:00)")
    ] = None,
    endpoint: Annotated[str, typer.Option(help="SpeechSense gRPC endpoint HOST:PORT")] = DEFAULT_ENDPOINT,
    insecure: Annotated[bool, typer.Option(help="Plaintext gRPC (the emulator); TLS otherwise")] = False,
    results: Annotated[Optional[Path], typer.Option(help="Results file [default: MANIFEST.results.jsonl]")] = None,
    retries: Annotated[int, typer.Option(help="Further attempts after a transient error")] = 10,
    timeout: Annotated[float, typer.Option(help="Seconds per attempt (grows with file size)")] = 60.0,
    dry_run: Annotated[
        bool, typer.Option(help="Check every row and the files' first bytes, send nothing; report and estimate")
    ] = False,
    estimate_rate: Annotated[
        float, typer.Option(help="Files/s for the dry run's time estimate [default: measured by earlier runs]")
    ] = 0.0,
    quiet: Annotated[bool, typer.Option(help="No progress display")] = False,
    event_loop: Annotated[EventLoop, typer.Option(help="uvloop (where installed) or asyncio's own")] = EventLoop.uvloop,
    api_key_file: Annotated[Optional[Path], typer.Option(help="File holding the API key (else env API_KEY)")] = None,
    iam_token_file: Annotated[Optional[Path], typer.Option(help="File holding an IAM token (else env IAM_TOKEN)")] = None,
    connection_schema: Annotated[
        Optional[Path], typer.Option(help="TOML file describing the connections' keys")
    ] = None,
    chunk_size_kib: Annotated[int, typer.Option(help="UploadAsStream chunk size, KiB")] = 1024,
    stream_threshold_mib: Annotated[float, typer.Option(help="Files above this many MiB are streamed")] = 4.0,
    grace: Annotated[float, typer.Option(help="Seconds uploads in flight get after the first Ctrl-C")] = 10.0,
    dedupe_key: Annotated[
        Optional[str], typer.Option(help="Metadata key unique per row; Search for it before re-sending after an unknown outcome")
    ] = None,
    organization_id: Annotated[str, typer.Option(help="Search scope: organization id")] = "",
    space_id: Annotated[str, typer.Option(help="Search scope: space id")] = "",
    project_id: Annotated[str, typer.Option(help="Search scope: project id")] = "",
    search_user_prefix: Annotated[str, typer.Option(help="How Search names user metadata keys")] = "user.",
    rps: Annotated[float, typer.Option(help="Cap on requests per second (0: none)")] = 0.0,
    max_mbps: Annotated[float, typer.Option(help="Cap on audio bandwidth, megabits per second (0: none)")] = 0.0,
    iam_token_command: Annotated[
        Optional[str], typer.Option(help="Command printing a fresh IAM token; re-run before expiry and when refused")
    ] = None,
    token_refresh_seconds: Annotated[
        float, typer.Option(help="Renew the IAM token of --iam-token-command or --sa-key this often (sooner if it expires)")
    ] = DEFAULT_TOKEN_REFRESH,
    shard: Annotated[
        Optional[str], typer.Option(help="Only shard K/N of the rows [default: from Slurm or Kubernetes, if set]")
    ] = None,
    shard_count: Annotated[
        Optional[int], typer.Option(help="Number of shards, with a Kubernetes Indexed Job's JOB_COMPLETION_INDEX")
    ] = None,
    mapping: Annotated[
        Optional[Path], typer.Option(help="TOML mapping from another vendor's columns (see bulk-upload manifest)")
    ] = None,
    sa_key: Annotated[
        Optional[Path], typer.Option(help="Service account key file (`yc iam key create` JSON), exchanged for IAM tokens")
    ] = None,
    iam_endpoint: Annotated[
        str, typer.Option(help="IAM token service HOST:PORT, for --sa-key (plaintext with --insecure)")
    ] = DEFAULT_IAM_ENDPOINT,
) -> None:
    """Upload every row of MANIFEST not uploaded before; results go to the results file."""
    try:
        column_mapping = load_mapping(mapping) if mapping else None
        credentials = _credentials(sa_key, iam_endpoint, iam_token_command, token_refresh_seconds, insecure,
                                   api_key_file, iam_token_file)
        options = UploadOptions(
            manifest=manifest,
            results=results,
            endpoint=endpoint,
            insecure=insecure,
            credentials=credentials,
            connection_id=connection_id,
            chat_connection_id=chat_connection_id,
            assume_timezone=_timezone(assume_timezone),
            schemas=tuple(load_schemas(connection_schema)) if connection_schema else (),
            concurrency=concurrency,
            retries=retries,
            timeout=timeout,
            chunk_size=chunk_size_kib * 1024,
            stream_threshold=int(stream_threshold_mib * 1024 * 1024),
            dry_run=dry_run,
            estimate_rate=estimate_rate,
            grace=grace,
            dedupe_key=dedupe_key or (column_mapping.dedupe_key if column_mapping else None),
            search_scope=SearchScope(organization_id, space_id, project_id),
            search_user_prefix=search_user_prefix,
            rps=rps,
            max_mbps=max_mbps,
            shard=parse_shard(shard) if shard else shard_from_environment(os.environ, shard_count),
            mapping=column_mapping,
        )
    except (ConfigError, SchemaError) as exc:
        raise _fail(str(exc)) from None
    reporter = make_reporter(quiet=quiet)
    retry_command = "bulk-upload " + shlex.join(_shown_args(sys.argv[1:] if sys.argv[1:2] != ["upload"] else sys.argv[2:]))
    raise typer.Exit(run_cli_upload(options, reporter, retry_command, event_loop))


def _emulator_options(
    host: str,
    port: int,
    api_key: list[str],
    iam_token: list[str],
    config: Path | None,
    store: Path | None,
    faults: FaultOptions,
    user_key_prefix: str,
    sa_keys: list[Path] = [],  # noqa: B006
    iam_token_ttl: float = 12 * 3600.0,
) -> EmulatorOptions:
    from bulk_uploader.emulator import EmulatorOptions
    from bulk_uploader.emulator.server import DEFAULT_CONNECTIONS

    keys = list(api_key) + ([os.environ["EMULATOR_API_KEY"]] if os.environ.get("EMULATOR_API_KEY") else [])
    if not keys and not iam_token and not sa_keys:
        raise ConfigError("the emulator needs --api-key (or env EMULATOR_API_KEY), --iam-token or --sa-key to accept")
    return EmulatorOptions(
        host=host,
        port=port,
        api_keys=tuple(keys),
        iam_tokens=tuple(iam_token),
        connections=tuple(load_schemas(config)) if config else DEFAULT_CONNECTIONS,
        store_path=store or ":memory:",
        faults=faults,
        user_key_prefix=user_key_prefix,
        token_secret=os.environ.get("EMULATOR_TOKEN_SECRET") or None,
        service_account_keys=tuple(_emulator_sa_key(path) for path in sa_keys),
        iam_token_ttl=iam_token_ttl,
    )


def _emulator_sa_key(path: Path) -> ServiceAccountKey:
    """A key the emulator accepts: read from the file, or made and written there when it is absent."""
    from bulk_uploader.sakey import ServiceAccountKey, new_key

    if path.exists():
        return ServiceAccountKey.load(path, need_private=False)
    key = new_key(f"emu-key-{os.urandom(4).hex()}", "emu-service-account")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # a private key: owner only
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(key.to_json(), f, indent=2)
    print(f"wrote a new service account key to {path} (for --sa-key)", file=sys.stderr, flush=True)
    return key


async def _serve(options: EmulatorOptions) -> None:
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
    store: Annotated[Optional[Path], typer.Option(help="SQLite file for accepted talks [default: memory]")] = None,
    latency_ms: Annotated[float, typer.Option(help="Fixed latency per call")] = 0.0,
    jitter_ms: Annotated[float, typer.Option(help="Plus random latency up to this")] = 0.0,
    error_rate: Annotated[list[str], typer.Option(help="CODE=RATE, e.g. UNAVAILABLE=0.1 (repeatable)")] = [],  # noqa: B006
    rps: Annotated[float, typer.Option(help="Requests per second cap (RESOURCE_EXHAUSTED beyond)")] = 0.0,
    max_in_flight: Annotated[int, typer.Option(help="Calls in flight cap (RESOURCE_EXHAUSTED beyond)")] = 0,
    lose_answer_rate: Annotated[float, typer.Option(help="Store the talk, then answer UNAVAILABLE")] = 0.0,
    seed: Annotated[Optional[int], typer.Option(help="Seed for the random faults")] = None,
    user_key_prefix: Annotated[str, typer.Option(help="Search key prefix for user metadata")] = "user.",
    sa_key: Annotated[
        list[Path], typer.Option(help="Service account key file whose JWTs to accept (made if absent; repeatable)")
    ] = [],  # noqa: B006
    iam_token_ttl: Annotated[float, typer.Option(help="Seconds the IAM tokens it issues live")] = 12 * 3600.0,
) -> None:
    """Run the local SpeechSense emulator until SIGINT/SIGTERM."""
    from bulk_uploader.emulator import FaultOptions

    try:
        faults = FaultOptions(
            latency_ms=latency_ms,
            jitter_ms=jitter_ms,
            error_rates=FaultOptions.parse_rates(error_rate),
            rps=rps,
            max_in_flight=max_in_flight,
            lose_answer_rate=lose_answer_rate,
            seed=seed,
        )
        options = _emulator_options(host, port, api_key, iam_token, config, store, faults, user_key_prefix,
                                    sa_key, iam_token_ttl)
    except (ValueError, ConfigError) as exc:
        raise _fail(str(exc)) from None
    asyncio.run(_serve(options))


@app.command("talks")
def talks(
    store: Annotated[Path, typer.Argument(help="The emulator's SQLite store")],
    talk_id: Annotated[Optional[str], typer.Option("--id", help="Show one talk")] = None,
    count: Annotated[bool, typer.Option(help="Print only how many talks are stored")] = False,
    duplicates: Annotated[Optional[str], typer.Option(help="Print values of this field held by several talks")] = None,
) -> None:
    """List what an emulator store holds, one JSON object per talk."""
    from bulk_uploader.emulator import TalkStore

    if not store.is_file():
        raise _fail(f"{store}: no such store")
    db = TalkStore(store)
    try:
        if count:
            typer.echo(str(db.count()))
        elif duplicates:
            typer.echo(json.dumps(db.duplicates(duplicates), ensure_ascii=False))
        elif talk_id:
            talk = db.get(talk_id)
            if talk is None:
                raise _fail(f"talk {talk_id} not found", EXIT_ROWS)
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
        Optional[Path], typer.Option(help="Where to write them [default: MANIFEST.retry.jsonl]")
    ] = None,
    mapping: Annotated[
        Optional[Path], typer.Option(help="The mapping the manifest was uploaded with (rows are written mapped)")
    ] = None,
) -> None:
    """Summarise results files and write the failed rows as a manifest ready to retry."""
    from bulk_uploader.report import summarize, write_retry_manifest

    try:
        column_mapping = load_mapping(mapping) if mapping else None
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    missing = [str(p) for p in results if not p.is_file()]
    if missing:
        raise _fail(f"no such results file: {', '.join(missing)}")
    summary = summarize(results)
    for line in summary.lines_out():
        typer.echo(line)
    todo = summary.to_retry()
    if manifest is not None:
        if not manifest.is_file():
            raise _fail(f"{manifest}: manifest not found")
        out = retry_manifest or manifest.with_name(manifest.stem + ".retry.jsonl")
        written = write_retry_manifest(manifest, todo, out, column_mapping)
        typer.echo(f"{written} row(s) to retry written to {out}")
        if written < len(todo):
            typer.echo(f"{len(todo) - written} row(s) could not be written: malformed or no longer in the manifest")
        same = "the same options, without --mapping: its rows are mapped" if mapping else "the same options"
        typer.echo(f"retry with: bulk-upload {shlex.quote(str(out))} ({same})")
    elif todo:
        typer.echo(f"{len(todo)} row(s) to retry; pass --manifest to write them out")
    raise typer.Exit(EXIT_ROWS if todo else EXIT_OK)


@app.command("manifest")
def manifest(
    folder: Annotated[Path, typer.Argument(help="Folder of recordings, searched recursively")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Manifest to write (.jsonl)")] = Path("manifest.jsonl"),
    mapping: Annotated[
        Optional[Path], typer.Option(help="TOML mapping from the export's columns [default: names kept as they are]")
    ] = None,
    export: Annotated[
        Optional[Path], typer.Option(help="One CSV or JSONL of metadata instead of .json sidecars")
    ] = None,
    join: Annotated[
        Optional[str], typer.Option(help="Column of --export naming each row's recording (path, file name or stem)")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace --out if it exists")] = False,
) -> None:
    """Build a manifest from a folder of recordings with sidecar metadata (call.json beside
    call.wav) or with one export file joined on a column, through a mapping."""
    from bulk_uploader.builder import build_manifest
    from bulk_uploader.mapping import ColumnMapping

    try:
        column_mapping = load_mapping(mapping) if mapping else ColumnMapping()
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    if not folder.is_dir():
        raise _fail(f"{folder}: no such folder")
    if (export is None) != (join is None):
        raise _fail("--export and --join go together: the export file and its column naming each recording")
    if export is not None and not export.is_file():
        raise _fail(f"{export}: export file not found")
    if out.suffix.lower() not in (".jsonl", ".ndjson"):
        raise _fail(f"{out}: the manifest is written as JSON lines; name it .jsonl")
    if out.exists() and not overwrite:
        raise _fail(f"{out} exists; pass --overwrite to replace it")
    summary = build_manifest(folder, out, column_mapping, export=export, join=join)
    for line in summary.lines():
        typer.echo(line)
    dedupe = f" --dedupe-key {shlex.quote(column_mapping.dedupe_key)}" if column_mapping.dedupe_key else ""
    typer.echo(f"check it with: bulk-upload {shlex.quote(str(out))} --dry-run{dedupe}")
    raise typer.Exit(EXIT_ROWS if summary.problems else EXIT_OK)


async def _demo(folder: Path, rows: int, concurrency: int, reporter: Reporter) -> tuple[RunSummary, int]:
    from bulk_uploader.emulator import Emulator, EmulatorOptions
    from bulk_uploader.samples import write_dataset

    manifest = write_dataset(folder, rows, sizes=(8 * 1024, 64 * 1024, 300 * 1024, 6 * 1024 * 1024),
                             distinct_files=min(rows, 40), connection_id="demo-audio")
    key = "demo-key"
    async with Emulator(EmulatorOptions(api_keys=[key], store_path=folder / "emulator.sqlite3")) as emu:
        reporter.message(f"emulator on {emu.target}; {rows} sample rows in {manifest}")
        options = UploadOptions(
            manifest=manifest,
            endpoint=emu.target,
            insecure=True,
            credentials=Credentials("Api-Key", key),
            concurrency=concurrency,
        )
        summary = await _upload_with_signals(options, reporter)
        return summary, emu.store.count()


@app.command("demo")
def demo(
    rows: Annotated[int, typer.Option(help="Sample rows to make and upload")] = 200,
    concurrency: Annotated[int, typer.Option(help="Rows uploaded at once")] = 16,
    folder: Annotated[Optional[Path], typer.Option(help="Where to write the sample data [default: a temp folder]")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress display")] = False,
) -> None:
    """Start the emulator in-process, make a sample data set and upload it: a full rehearsal."""
    folder = folder or Path(tempfile.mkdtemp(prefix="bulk-upload-demo-"))
    reporter = make_reporter(quiet=quiet)
    summary, stored = asyncio.run(_demo(folder, rows, concurrency, reporter))
    lines = summary.lines()
    lines.append(f"emulator store {folder / 'emulator.sqlite3'} holds {stored} talks; "
                 f"inspect with: bulk-upload talks {folder / 'emulator.sqlite3'}")
    reporter.summary(lines)
    raise typer.Exit(summary.exit_code)


def main(argv: list[str] | None = None) -> Any:
    """Console-script entry point."""
    return app(args=argv, prog_name="bulk-upload")


if __name__ == "__main__":
    main()
