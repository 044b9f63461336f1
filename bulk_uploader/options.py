"""UploadOptions: everything a run needs, normalised and checked once at the edge.

The CLI builds it from argv and the environment; nothing below the CLI reads either.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bulk_uploader.errors import ConfigError
from bulk_uploader.reads import ReadBudget
from bulk_uploader.records import FrozenRecord, record

if TYPE_CHECKING:  # annotations only: the command line's --help reads this module's defaults
    from datetime import tzinfo

    from bulk_uploader.auth import AuthProvider
    from bulk_uploader.mapping import ColumnMapping
    from bulk_uploader.schema import ConnectionSchema
    from bulk_uploader.shard import Shard
    from bulk_uploader.textfile import TextFormat

DEFAULT_ENDPOINT = "api.speechsense.yandexcloud.net:443"
DEFAULT_IAM_ENDPOINT = "iam.api.cloud.yandex.net:443"  # where service account keys are exchanged for tokens
# Audio held at once, read ahead and in flight (--buffer-mib); see benchmarks/RESULTS.md, "Memory with big files".
DEFAULT_BUDGET = 224 * 1024 * 1024
# How Search names the metadata given at upload, as the documentation's search guide does
# (`userMeta.ticket_id`); the .proto comment says `user.`.
DEFAULT_SEARCH_PREFIX = "userMeta."
# Seconds after an unknown outcome before a read asks whether the talk is stored. How soon
# Search sees a new talk is not documented: a minute is many times a search index's usual
# refresh, and costs a run at most a minute at its end.
DEFAULT_SETTLE_DELAY = 60.0
MiB = 1024 * 1024


@record(slots=True)
class SearchScope(FrozenRecord):
    """Where Search looks: the organization, space and project ids (any may be blank)."""

    organization_id: str = ""
    space_id: str = ""
    project_id: str = ""


def results_path_for(manifest: Path) -> Path:
    """Default results file: beside the manifest, `<manifest name>.results.jsonl`."""
    return manifest.with_name(manifest.name + ".results.jsonl")


def check_endpoint(endpoint: str, option: str = "--endpoint") -> None:
    """Raise ConfigError unless `endpoint` is HOST:PORT (a URL such as https://host:443 is not)."""
    if "://" in endpoint:
        host_port = endpoint.split("://", 1)[1].rstrip("/")
        raise ConfigError(f"{option} takes HOST:PORT, not a URL: {option} {host_port} (TLS is the default; "
                          "--insecure for a plaintext server such as the emulator)")
    host, _, port = endpoint.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{option} must be HOST:PORT (e.g. api.speechsense.yandexcloud.net:443), not {endpoint!r}")


def is_loopback(endpoint: str) -> bool:
    """Whether host:port names this machine."""
    import ipaddress

    host = endpoint.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@record(kw_only=True)
class UploadOptions(FrozenRecord):
    """Options of one run over a manifest.

    Memory: the audio read ahead and being sent never exceeds `memory_budget` bytes
    (bulk_uploader.budget): a file up to `stream_threshold` is read ahead whole and sent as
    one Upload (held twice while in flight), a larger one is streamed in `chunk_size`
    pieces; when files are big the budget, not `concurrency`, limits the rows in flight.
    """

    manifest: Path
    results: Path | None = None  # default: results_path_for(manifest)
    endpoint: str = DEFAULT_ENDPOINT
    insecure: bool = False  # plaintext gRPC (the emulator); TLS otherwise
    credentials: AuthProvider | None = None
    connection_id: str | None = None  # rows may carry their own connection_id
    chat_connection_id: str | None = None  # for chat rows without one (default: connection_id)
    assume_timezone: tzinfo | None = None  # applied to chat timestamps that name no zone
    schemas: Sequence[ConnectionSchema] = ()  # --connection-schema; default: documented keys
    concurrency: int = 8  # rows in flight at once
    connections: int | None = None  # TCP connections to the service; None: sized automatically (transport.pool)
    retries: int = 10  # further attempts after a transient failure
    timeout: float = 60.0  # seconds per attempt, plus size / min_rate
    min_rate: float = 1 * MiB  # bytes/s the calls in flight together may not fall below before their deadlines
    stream_threshold: int = 4 * MiB  # larger files go through UploadAsStream; the largest chat sent
    chunk_size: int = 1 * MiB  # UploadAsStream chunk size (the vendor's examples use 1 MiB)
    memory_budget: int = DEFAULT_BUDGET  # bytes of audio held at once, read ahead and in flight (--buffer-mib)
    backoff_base: float = 0.2  # seconds; the nth retry waits up to base * 2**n (full jitter)
    backoff_max: float = 20.0
    dry_run: bool = False
    estimate_rate: float = 0.0  # dry run: files/s for the time estimate (0: measure from the results file)
    grace: float = 10.0  # seconds in-flight uploads get to finish after the first Ctrl-C
    # Exactly once: a metadata key unique per row; after an unknown outcome, rows are settled
    # in batches (Search for their values within search_scope, Get the talks found) at least
    # settle_delay seconds later, before anything is sent again; reads keep to read_budget.
    dedupe_key: str | None = None
    search_scope: SearchScope = SearchScope()
    search_user_prefix: str = DEFAULT_SEARCH_PREFIX  # Search key = prefix + the dedupe key
    settle_delay: float = DEFAULT_SETTLE_DELAY
    read_budget: ReadBudget = ReadBudget()
    rps: float = 0.0  # requests per second cap (0: none)
    max_mbps: float = 0.0  # audio bandwidth cap in megabits per second (0: none)
    throttle_patience: float = 600.0  # seconds of nothing but RESOURCE_EXHAUSTED before rows fail
    outage_patience: float = 900.0  # seconds the service may be unreachable before the run stops (exit 3)
    stall_seconds: float = 30.0  # calls in flight and nothing moving this long: open a new connection
    preflight_timeout: float = 15.0  # seconds to connect before the first row
    shard: Shard | None = None  # only the rows whose key hashes to this shard
    mapping: ColumnMapping | None = None  # --mapping: the manifest is another vendor's export
    text_format: TextFormat | None = None  # the manifest's encoding and delimiter (None: detected)
    # Convert what the service would refuse (bulk_uploader.transcode). Each converted row
    # holds one chunk_size piece in memory while it streams, and a decoder's CPU in a thread.
    transcode: bool = False
    swap_channels: bool = False  # for rows that do not say: the export has the agent on the other channel

    def __post_init__(self) -> None:
        from bulk_uploader import media_extra
        from bulk_uploader.textfile import MANIFEST_SUFFIXES

        if not 1 <= self.concurrency <= 4096:
            raise ConfigError("--concurrency must be between 1 and 4096")
        if self.connections is not None and not 1 <= self.connections <= 256:
            raise ConfigError("--connections must be between 1 and 256")
        if self.retries < 0:
            raise ConfigError("--retries must not be negative")
        if self.timeout <= 0:
            raise ConfigError("--timeout must be positive")
        if self.chunk_size < 1024 or self.stream_threshold < self.chunk_size:
            raise ConfigError("chunk size must be at least 1 KiB and not above the stream threshold")
        if self.memory_budget < MiB:
            raise ConfigError("--buffer-mib must be at least 1")
        if self.manifest.suffix.lower() not in MANIFEST_SUFFIXES:
            raise ConfigError(f"{self.manifest}: a manifest is .jsonl, or .csv (.tsv, .txt): a workbook? "
                              "save it from Excel as CSV UTF-8 or Unicode Text")
        if not self.manifest.is_file():
            raise ConfigError(f"{self.manifest}: manifest not found")
        check_endpoint(self.endpoint)
        if self.transcode:
            media_extra.require("--transcode")
        if self.outage_patience <= 0 or self.stall_seconds <= 0 or self.preflight_timeout <= 0:
            raise ConfigError("--outage-patience, --stall-seconds and the preflight timeout must be positive")
        if self.rps < 0 or self.max_mbps < 0 or self.estimate_rate < 0:
            raise ConfigError("--rps, --max-mbps and --estimate-rate must not be negative")
        if self.dedupe_key is not None and not self.dedupe_key.strip():
            raise ConfigError("--dedupe-key is empty")
        if self.settle_delay < 0:
            raise ConfigError("--settle-delay must not be negative")
        if not self.dry_run and self.credentials is None:
            raise ConfigError("no credentials: set API_KEY or IAM_TOKEN, or pass --api-key-file/--iam-token-file")

    @property
    def results_path(self) -> Path:
        """Where outcomes are recorded (each shard has its own file)."""
        if self.results is not None:
            return self.results
        if self.shard is not None:
            name = f"{self.manifest.name}.shard-{self.shard.index}-of-{self.shard.count}.results.jsonl"
            return self.manifest.with_name(name)
        return results_path_for(self.manifest)

    def attempt_timeout(self, size: int) -> float:
        """Deadline of one attempt for a payload of `size` bytes alone: it grows with the size (the
        transport adds the time the payload in flight beside it takes: ConnectionPool.deadline)."""
        return self.timeout + size / self.min_rate
