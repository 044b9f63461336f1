"""`bulk-upload upload MANIFEST`, the default command: its option groups turned into checked
UploadOptions and the run started; the command reads the environment (credentials, the shard a
scheduler assigned) and the arguments `main` ran with, and hands both down.

Its annotations are evaluated as the module loads (see bulk_uploader.cli.application); those that
name what only a run loads are quoted.
"""

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bulk_uploader.cli.application import app, fail, invoked_argv
from bulk_uploader.cli.arggroups import grouped_command
from bulk_uploader.cli.upload_args import (
    AuthArgs,
    DestinationArgs,
    ExactlyOnceArgs,
    MigrationArgs,
    OutputArgs,
    ReadArgs,
    SpeedArgs,
)
from bulk_uploader.errors import ConfigError, SchemaError

if TYPE_CHECKING:  # what the run needs is loaded to run, not to parse or show --help
    from datetime import tzinfo

    from bulk_uploader.options import UploadOptions
    from bulk_uploader.reads import ReadBudget
    from bulk_uploader.shard import Shard


def _timezone(text: str | None) -> "tzinfo | None":
    if text is None:
        return None
    from bulk_uploader.chat import parse_timezone

    try:
        return parse_timezone(text)
    except ValueError as exc:
        raise ConfigError(f"--assume-timezone: {exc}") from None


def read_budget(reads: ReadArgs, shard: "Shard | None" = None) -> "ReadBudget":
    """The reads a process may make: --read-share of --read-quota; by default a tenth, split between shards."""
    from bulk_uploader.reads import DEFAULT_READ_SHARE, ReadBudget, parse_quota

    share = reads.read_share if reads.read_share is not None else DEFAULT_READ_SHARE / (shard.count if shard else 1)
    return ReadBudget(share, parse_quota(reads.read_quota))


def upload_options(manifest: Path, env: Mapping[str, str], *, destination: DestinationArgs, auth: AuthArgs,
                   speed: SpeedArgs, once: ExactlyOnceArgs, reads: ReadArgs, migration: MigrationArgs,
                   output: OutputArgs) -> "UploadOptions":
    """The run's options, checked; ConfigError or SchemaError names the first thing wrong."""
    from bulk_uploader.cli.credentials import choose_credentials
    from bulk_uploader.options import SearchScope, UploadOptions
    from bulk_uploader.schema import load_schemas
    from bulk_uploader.shard import parse_shard, shard_from_environment
    from bulk_uploader.textfile import MANIFEST_SUFFIXES, detect_format

    if migration.mapping:
        from bulk_uploader.mapping import load_mapping  # only for another vendor's export

        column_mapping = load_mapping(migration.mapping)
    else:
        column_mapping = None
    credentials = choose_credentials(auth, destination.insecure, env)
    # Detected here, once, so the notice is printed before the run and the run reads the file one way.
    readable = manifest.is_file() and manifest.suffix.lower() in MANIFEST_SUFFIXES  # else UploadOptions says why
    text_format = detect_format(manifest, encoding=migration.encoding, delimiter=migration.delimiter) \
        if readable else None
    shard = parse_shard(migration.shard) if migration.shard else shard_from_environment(env, migration.shard_count)
    return UploadOptions(
        manifest=manifest,
        results=output.results,
        endpoint=destination.endpoint,
        insecure=destination.insecure,
        credentials=credentials,
        connection_id=destination.connection_id,
        chat_connection_id=destination.chat_connection_id,
        assume_timezone=_timezone(migration.assume_timezone),
        schemas=tuple(load_schemas(destination.connection_schema)) if destination.connection_schema else (),
        concurrency=speed.concurrency,
        connections=speed.connections,
        retries=speed.retries,
        timeout=speed.timeout,
        chunk_size=speed.chunk_size_kib * 1024,
        stream_threshold=int(speed.stream_threshold_mib * 1024 * 1024),
        memory_budget=speed.buffer_mib * 1024 * 1024,
        dry_run=migration.dry_run,
        estimate_rate=migration.estimate_rate,
        grace=output.grace,
        dedupe_key=once.dedupe_key or (column_mapping.dedupe_key if column_mapping else None),
        search_scope=SearchScope(reads.organization_id, reads.space_id, reads.project_id),
        search_user_prefix=once.search_user_prefix,
        settle_delay=once.settle_delay,
        read_budget=read_budget(reads, shard),
        rps=speed.rps,
        max_mbps=speed.max_mbps,
        shard=shard,
        mapping=column_mapping,
        text_format=text_format,
        outage_patience=speed.outage_patience,
        stall_seconds=speed.stall_seconds,
        transcode=migration.transcode,
        swap_channels=migration.swap_channels,
    )


@app.command("upload")
@grouped_command
def upload(
    ctx: typer.Context,
    manifest: Annotated[Path, typer.Argument(metavar="MANIFEST", help="Manifest: .jsonl, or .csv (.tsv, .txt)")],
    destination: DestinationArgs,
    auth: AuthArgs,
    speed: SpeedArgs,
    once: ExactlyOnceArgs,
    reads: ReadArgs,
    migration: MigrationArgs,
    output: OutputArgs,
) -> None:
    """Upload every row of MANIFEST not uploaded before; results go to the results file."""
    from bulk_uploader.cli.runtime import retry_command, run_cli_upload  # the pipeline: loaded to run, not to parse
    from bulk_uploader.progress import make_reporter

    try:
        options = upload_options(manifest, os.environ, destination=destination, auth=auth, speed=speed,
                                 once=once, reads=reads, migration=migration, output=output)
    except (ConfigError, SchemaError) as exc:
        raise fail(str(exc)) from None
    reporter = make_reporter(quiet=output.quiet)
    notice = options.text_format.notice(manifest) if options.text_format else None
    if notice:
        reporter.message(notice)
    argv = invoked_argv(ctx)
    shown = retry_command(argv) if argv is not None else None
    raise typer.Exit(run_cli_upload(options, reporter, shown, speed.event_loop))
