"""What the emulator's reads (Search and Get) answer, and the read quota they spend.

As SPEECHSENSE.md describes the service:
- Search filters the metadata given at upload ("user metadata") as `userMeta.<field>`
  (the prefix configurable: the .proto comment says `user.`); a bare field name, or any
  other key, matches nothing. A talk shows up in Search `index_lag` seconds after it was
  stored (how soon the real index sees it is not documented); Get finds it at once by id.
- Get answers the basic data of the talks asked for (ids, connection, times, the fields
  given at upload, talk_state); ids it does not hold are left out of the answer.
- Processing runs after upload: NOT_STARTED for `processing_delay` seconds, PROCESSING for
  `processing_time`, then SUCCESS, or FAILED for a `processing_failure_rate` share of the
  talks (which ones is fixed by their id, so every Get tells the same story).
- Reads are counted per project against the documented quota (20/s, 200/min, 2,000/h,
  20,000/day) over sliding windows; a read over it is refused RESOURCE_EXHAUSTED with a
  `grpc-retry-pushback-ms` trailer saying when a read would be admitted.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from bulk_uploader.emulator.checks import Rejected, reject
from bulk_uploader.emulator.store import StoredTalk
from bulk_uploader.proto import speechsense_pb2 as pb

# The documented read quota per project: (reads, window in seconds).
DOCUMENTED_READ_QUOTA: tuple[tuple[int, float], ...] = ((20, 1.0), (200, 60.0), (2000, 3600.0), (20000, 86400.0))
_PARTICIPANT = "user:"  # how the store keys participants' fields, which Search does not reach


@dataclass(frozen=True, kw_only=True)
class Processing:
    """How processing moves after upload: seconds in each state, and the share that fails."""

    delay: float = 1.0  # seconds NOT_STARTED
    time: float = 2.0  # seconds PROCESSING
    failure_rate: float = 0.0  # share of talks whose processing ends FAILED

    def __post_init__(self) -> None:
        if self.delay < 0 or self.time < 0 or not 0.0 <= self.failure_rate <= 1.0:
            raise ValueError("processing delay and time must not be negative, the failure rate in [0, 1]")

    def state(self, talk_id: str, age: float) -> pb.ProcessingState.ValueType:
        """The processing state of a talk stored `age` seconds ago."""
        if age < self.delay:
            return pb.PROCESSING_STATE_NOT_STARTED
        if age < self.delay + self.time:
            return pb.PROCESSING_STATE_PROCESSING
        roll = int.from_bytes(hashlib.sha256(talk_id.encode()).digest()[:4], "big") / 2**32
        return pb.PROCESSING_STATE_FAILED if roll < self.failure_rate else pb.PROCESSING_STATE_SUCCESS


class ReadQuota:
    """Reads per project over sliding windows; admit() says whether one more fits now."""

    def __init__(self, limits: Sequence[tuple[int, float]]) -> None:
        for reads, window in limits:
            if reads < 1 or window <= 0:
                raise ValueError("a read quota is a positive number of reads per positive window")
        self.limits = tuple(limits)
        self._longest = max((window for _, window in self.limits), default=0.0)
        self._log: dict[str, list[float]] = {}  # project -> times of admitted reads, ascending

    def admit(self, project: str, now: float) -> float | None:
        """Count a read at `now` and return None, or the seconds until one would be admitted."""
        if not self.limits:
            return None
        log = self._log.setdefault(project, [])
        if log and log[0] < now - self._longest:
            del log[: bisect.bisect_left(log, now - self._longest)]
        wait = 0.0
        for reads, window in self.limits:
            inside = len(log) - bisect.bisect_left(log, now - window)
            if inside >= reads:
                wait = max(wait, log[len(log) - reads] + window - now)
        if wait > 0:
            return wait
        log.append(now)
        return None

    def refusal(self, wait: float) -> Rejected:
        """The answer to a read over the quota."""
        shown = ", ".join(f"{reads}/{_window(window)}" for reads, window in self.limits)
        return Rejected(grpc.StatusCode.RESOURCE_EXHAUSTED, f"read quota exceeded ({shown} per project)",
                        (("grpc-retry-pushback-ms", str(max(1, math.ceil(wait * 1000)))),))


def _window(seconds: float) -> str:
    return {1.0: "s", 60.0: "min", 3600.0: "h", 86400.0: "day"}.get(seconds, f"{seconds:g} s")


def search_filters(request: pb.SearchTalkRequest, prefix: str) -> list[tuple[str, list[str], bool]]:
    """The request's filters as the store's (field, values, inverse); keys not in the documented form match nothing."""
    filters = []
    for f in request.filters:
        if f.WhichOneof("filter") != "any_match":
            reject(grpc.StatusCode.UNIMPLEMENTED, "the emulator supports any_match filters only")
        name = f.key[len(prefix):] if prefix and f.key.startswith(prefix) else ""
        if not name or name.startswith(_PARTICIPANT):
            name = "\x00no such field"  # a bare key, or another form: no talk has it
        filters.append((name, list(f.any_match.values), f.inverse))
    return filters


def talk_message(talk: StoredTalk, now: float, processing: Processing) -> pb.Talk:
    """A stored talk as Get answers it: its basic data, the fields given at upload, its state."""
    message = pb.Talk(
        id=talk.talk_id,
        connection_id=talk.connection_id,
        talk_fields=[pb.Field(name=name, value=value, type=pb.FIELD_TYPE_STRING)
                     for name, value in sorted(talk.fields.items())],
        talk_state=pb.TalkState(processing_state=processing.state(talk.talk_id, now - talk.created_at)),
    )
    message.created_at.FromNanoseconds(int(talk.created_at * 1e9))
    if talk.updated_at is not None:
        message.modified_at.FromNanoseconds(int(talk.updated_at * 1e9))
    return message
