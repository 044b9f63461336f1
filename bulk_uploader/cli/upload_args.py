"""The options of `bulk-upload upload`, in groups: where to send, credentials, speed, exactly once,
reads, migration and output (`verify` shares where to send, credentials and reads). Each group is one dataclass whose
fields cannot be assigned (arggroups.option_group); its fields are the options, with the names, defaults and help text
the command line has always had.

No `from __future__ import annotations` here: typer needs the annotations evaluated, and the
module's compiled code evaluates them for less than typing.get_type_hints does from strings.
"""

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from bulk_uploader.auth import DEFAULT_TOKEN_REFRESH
from bulk_uploader.cli.arggroups import OptionGroup, option_group
from bulk_uploader.options import (
    DEFAULT_BUDGET,
    DEFAULT_ENDPOINT,
    DEFAULT_IAM_ENDPOINT,
    DEFAULT_SEARCH_PREFIX,
    DEFAULT_SETTLE_DELAY,
)
from bulk_uploader.reads import DEFAULT_READ_SHARE


class EventLoop(str, Enum):
    """--event-loop"""

    uvloop = "uvloop"
    asyncio = "asyncio"


@option_group
class DestinationArgs(OptionGroup):
    """Where the talks go: the service, the transport, the connections and their keys."""

    panel = "Where to send"
    endpoint: Annotated[str, typer.Option(help="SpeechSense gRPC endpoint HOST:PORT")] = DEFAULT_ENDPOINT
    insecure: Annotated[bool, typer.Option("--insecure", help="Plaintext gRPC (the emulator); TLS otherwise")] = False
    connection_id: Annotated[Optional[str], typer.Option(help="Connection for rows that name none")] = None
    chat_connection_id: Annotated[
        Optional[str], typer.Option(help="Connection for chat rows that name none \\[default: --connection-id]")
    ] = None
    connection_schema: Annotated[
        Optional[Path], typer.Option(help="TOML file describing the connections' keys")
    ] = None


@option_group
class AuthArgs(OptionGroup):
    """Where the credentials come from; with none of these, env API_KEY or IAM_TOKEN."""

    panel = "Credentials"
    api_key_file: Annotated[Optional[Path], typer.Option(help="File holding the API key (else env API_KEY)")] = None
    iam_token_file: Annotated[
        Optional[Path], typer.Option(help="File holding an IAM token (else env IAM_TOKEN)")
    ] = None
    iam_token_command: Annotated[
        Optional[str], typer.Option(help="Command printing a fresh IAM token; re-run before expiry and when refused")
    ] = None
    token_refresh_seconds: Annotated[
        float, typer.Option(help="Renew the IAM token of --iam-token-command or --sa-key this often (sooner if it expires)")
    ] = DEFAULT_TOKEN_REFRESH
    sa_key: Annotated[
        Optional[Path], typer.Option(help="Service account key file (`yc iam key create` JSON), exchanged for IAM tokens")
    ] = None
    iam_endpoint: Annotated[
        str, typer.Option(help="IAM token service HOST:PORT, for --sa-key (plaintext with --insecure)")
    ] = DEFAULT_IAM_ENDPOINT


@option_group
class SpeedArgs(OptionGroup):
    """How fast and how hard: parallelism, caps, message sizes, deadlines, retries, the event loop."""

    panel = "Speed"
    concurrency: Annotated[int, typer.Option(help="Rows uploaded at once")] = 8
    connections: Annotated[
        Optional[int], typer.Option(help="TCP connections to the service \\[default: automatic, from the round trip, "
                                         "the concurrency and the calls a connection takes]", show_default=False)
    ] = None
    rps: Annotated[float, typer.Option(help="Cap on requests per second (0: none)")] = 0.0
    max_mbps: Annotated[float, typer.Option(help="Cap on audio bandwidth, megabits per second (0: none)")] = 0.0
    chunk_size_kib: Annotated[int, typer.Option(help="UploadAsStream chunk size, KiB")] = 1024
    stream_threshold_mib: Annotated[float, typer.Option(help="Files above this many MiB are streamed")] = 4.0
    buffer_mib: Annotated[
        int, typer.Option(help="Audio held in memory at once (read ahead and in flight), MiB")
    ] = DEFAULT_BUDGET // (1024 * 1024)
    timeout: Annotated[
        float, typer.Option(help="Seconds per attempt (grows with the bytes in flight and on a slow link)")
    ] = 60.0
    retries: Annotated[int, typer.Option(help="Further attempts after a transient error")] = 10
    outage_patience: Annotated[
        float, typer.Option(help="Seconds the service may be unreachable (the run waits) before it stops")
    ] = 900.0
    stall_seconds: Annotated[
        float, typer.Option(help="A connection with calls in flight and nothing moving this long (plus the "
                                 "time the bytes in flight take at 1 MiB/s, or slower as measured) is replaced by a new one")
    ] = 30.0
    event_loop: Annotated[
        EventLoop, typer.Option(help="uvloop (where installed) or asyncio's own")
    ] = EventLoop.uvloop


@option_group
class ExactlyOnceArgs(OptionGroup):
    """The key that makes a re-send safe after an unknown outcome, and how rows are settled."""

    panel = "Exactly once"
    dedupe_key: Annotated[
        Optional[str], typer.Option(help="Metadata key unique per row; after an unknown outcome, reads find the "
                                         "row's talk by it before anything is sent again")
    ] = None
    search_user_prefix: Annotated[
        str, typer.Option(help="How Search names a metadata key (the docs: userMeta.<key>; the .proto: user.)")
    ] = DEFAULT_SEARCH_PREFIX
    settle_delay: Annotated[
        float, typer.Option(help="Seconds after an unknown outcome before reads ask whether the talk is stored "
                                 "(how soon Search sees a new talk is not documented)")
    ] = DEFAULT_SETTLE_DELAY


@option_group
class ReadArgs(OptionGroup):
    """Where Search and Get look, and how much of the project's read quota they may spend."""

    panel = "Reads"
    organization_id: Annotated[str, typer.Option(help="Search and Get scope: organization id")] = ""
    space_id: Annotated[str, typer.Option(help="Search and Get scope: space id")] = ""
    project_id: Annotated[str, typer.Option(help="Search and Get scope: project id")] = ""
    read_share: Annotated[
        Optional[float], typer.Option(help=f"Share of the read quota this process may spend "
                                           f"(default {DEFAULT_READ_SHARE:g}, divided between shards)")
    ] = None
    read_quota: Annotated[
        str, typer.Option(help="The project's read quota, shared with the analysts (READS/UNIT,...)")
    ] = "20/s,200/min,2000/h,20000/day"


@option_group
class MigrationArgs(OptionGroup):
    """Moving a whole archive: another vendor's columns, shards, time zones, the rehearsal."""

    panel = "Migration"
    mapping: Annotated[
        Optional[Path], typer.Option(help="TOML mapping from another vendor's columns (see bulk-upload manifest)")
    ] = None
    shard: Annotated[
        Optional[str], typer.Option(help="Only shard K/N of the rows \\[default: from Slurm or Kubernetes, if set]")
    ] = None
    shard_count: Annotated[
        Optional[int], typer.Option(help="Number of shards, with a Kubernetes Indexed Job's JOB_COMPLETION_INDEX")
    ] = None
    assume_timezone: Annotated[
        Optional[str], typer.Option(help="Zone for chat timestamps without one (Europe/Moscow, +03:00)")
    ] = None
    estimate_rate: Annotated[
        float, typer.Option(help="Files/s for the dry run's time estimate \\[default: measured by earlier runs]",
                            show_default=False)
    ] = 0.0
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check every row and the files' first bytes, send nothing; report and estimate")
    ] = False
    transcode: Annotated[
        bool, typer.Option(help="Convert audio the service would refuse (G.711, FLAC, AAC, ...) while sending it")
    ] = False
    swap_channels: Annotated[
        bool, typer.Option(help="Swap left and right of every two-channel file whose row does not say (agent on the right)")
    ] = False
    encoding: Annotated[
        Optional[str], typer.Option(help="The manifest's encoding (cp1251, utf-16, ...) \\[default: detected]")
    ] = None
    delimiter: Annotated[
        Optional[str], typer.Option(help="CSV delimiter: , ; tab | \\[default: detected from the header]")
    ] = None


@option_group
class OutputArgs(OptionGroup):
    """Where outcomes are written, what is shown while it runs, and how a Ctrl-C ends it."""

    panel = "Output"
    results: Annotated[Optional[Path], typer.Option(help="Results file \\[default: MANIFEST.results.jsonl]")] = None
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress display")] = False
    grace: Annotated[float, typer.Option(help="Seconds uploads in flight get after the first Ctrl-C")] = 10.0
