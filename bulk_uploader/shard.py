"""Splitting one manifest across machines: row K of N by a stable hash of its key.

The hash is blake2b of the row key, so the split is the same on every run and every
machine; each shard writes its own results file and `bulk-upload report` merges them.
"""

from __future__ import annotations

from collections.abc import Mapping

from bulk_uploader.errors import ConfigError
from bulk_uploader.records import FrozenRecord, record


@record(slots=True)
class Shard(FrozenRecord):
    """Shard `index` of `count` (0-based)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ConfigError(f"shard {self.index}/{self.count}: need 0 <= K < N")

    def contains(self, key: str) -> bool:
        """Whether the row with this key belongs to this shard."""
        import hashlib  # here, not at the top: loading it costs the start-up of every run that does not shard

        digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
        return int.from_bytes(digest, "big") % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """`K/N` as given to --shard."""
    index, sep, count = text.partition("/")
    try:
        return Shard(int(index), int(count))
    except ValueError:
        raise ConfigError(f"--shard takes K/N (e.g. 0/4), not {text!r}") from None


def shard_from_environment(env: Mapping[str, str], count: int | None) -> Shard | None:
    """The shard a scheduler assigned: Slurm arrays, or Kubernetes Indexed Jobs with the count given."""
    if env.get("SLURM_ARRAY_TASK_ID") and env.get("SLURM_ARRAY_TASK_COUNT"):
        try:
            # Slurm array ids may start anywhere (--array=1-8): offset by the minimum id when given.
            low = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
            return Shard(int(env["SLURM_ARRAY_TASK_ID"]) - low, int(env["SLURM_ARRAY_TASK_COUNT"]))
        except ValueError:
            raise ConfigError("SLURM_ARRAY_TASK_ID/COUNT are not numbers") from None
    if env.get("JOB_COMPLETION_INDEX"):
        if count is None:
            raise ConfigError("JOB_COMPLETION_INDEX is set: give the number of shards with --shard-count N")
        try:
            return Shard(int(env["JOB_COMPLETION_INDEX"]), count)
        except ValueError:
            raise ConfigError("JOB_COMPLETION_INDEX is not a number") from None
    return None
