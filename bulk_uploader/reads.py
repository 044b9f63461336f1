"""The read budget: how many Search and Get calls a process may make, and the gate that keeps to it.

The service's one published quota is for reads, per project: 20/s, 200/min, 2,000/h and
20,000/day, counting the API's Search and Get calls together with the dialogs people open
in the SpeechSense interface. A migration runs for hours or days beside the analysts who
work in that project, so it must leave them nearly all of it. By default a process takes
DEFAULT_READ_SHARE, a tenth, of every window (2/s, 20/min, 200/h, 2,000/day): with up
to 100 rows settled per Search and 100 talks per Get, 2,000 reads a day settle or verify
on the order of 100,000 rows, while the analysts keep nine tenths of the quota (18
dialogs a second, 18,000 a day). Shards divide the share between them, so N machines
together still take a tenth.

The gate counts every call it lets through, refused ones too, over sliding windows (any
fixed window the service counts in then holds no more than the budget), and a refusal
by the service (RESOURCE_EXHAUSTED: the analysts, or other clients, spent the quota) holds
every read for the server's pushback or a backoff growing from 1 s to a minute, whichever
is longer. Reads wait; they never fail a row for the quota (bulk_uploader.lookup).
"""

from __future__ import annotations

import math
from collections import deque

from bulk_uploader.clock import SYSTEM_CLOCK, Clock
from bulk_uploader.errors import ConfigError
from bulk_uploader.records import FrozenRecord, record

# The documented read quota per project: (reads, window in seconds).
DOCUMENTED_READ_QUOTA: tuple[tuple[int, float], ...] = ((20, 1.0), (200, 60.0), (2000, 3600.0), (20000, 86400.0))
DEFAULT_READ_SHARE = 0.1
REFUSAL_BACKOFF = (1.0, 60.0)  # seconds all reads wait after a refusal: first, and at most (doubling)
_UNITS = {"s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, "hour": 3600.0, "d": 86400.0, "day": 86400.0}


def parse_quota(spec: str) -> tuple[tuple[int, float], ...]:
    """`20/s,200/min,2000/h,20000/day` as ((reads, window seconds), ...); `off` is none. ConfigError if unreadable."""
    if spec.strip().lower() in ("off", "none", ""):
        return ()
    limits = []
    for part in spec.split(","):
        reads, _, unit = part.strip().replace("_", "").partition("/")
        try:
            count, window = int(reads), _UNITS[unit.strip().lower()]
        except (ValueError, KeyError):
            raise ConfigError(f"read quota {spec!r}: each part is READS/UNIT with UNIT s, min, h or day "
                              f"(e.g. 20/s,200/min,2000/h,20000/day), not {part.strip()!r}") from None
        if count < 1:
            raise ConfigError(f"read quota {spec!r}: {part.strip()!r} must allow at least one read")
        limits.append((count, window))
    return tuple(limits)


def describe_limits(limits: tuple[tuple[int, float], ...]) -> str:
    """`2/s, 20/min, 200/h, 2,000/day`."""
    names = {1.0: "s", 60.0: "min", 3600.0: "h", 86400.0: "day"}
    return ", ".join(f"{reads:,}/{names.get(window, f'{window:g} s')}" for reads, window in limits) or "none"


@record
class ReadBudget(FrozenRecord):
    """The reads one process may make: `share` of the project's `quota` in every window."""

    share: float = DEFAULT_READ_SHARE
    quota: tuple[tuple[int, float], ...] = DOCUMENTED_READ_QUOTA

    def __post_init__(self) -> None:
        if not 0.0 < self.share <= 1.0:
            raise ConfigError(f"--read-share must be above 0 and at most 1, not {self.share:g}")
        if not self.quota:
            raise ConfigError("--read-quota needs at least one READS/UNIT: reads are always budgeted")

    @property
    def limits(self) -> tuple[tuple[int, float], ...]:
        """This process's reads per window (at least one in each)."""
        return tuple((max(1, math.floor(reads * self.share + 1e-9)), window) for reads, window in self.quota)

    def describe(self) -> str:
        """How the summary and the estimate name it."""
        return (f"{describe_limits(self.limits)} ({self.share:.0%} of the project's read quota, "
                f"{describe_limits(self.quota)})")

    def seconds_for(self, reads: int) -> float:
        """The least time `reads` reads take within the budget, from a fresh start."""
        if reads <= 0:
            return 0.0
        return max((math.ceil(reads / limit) - 1) * window for limit, window in self.limits)


class ReadGate:
    """Lets reads through within a ReadBudget, and holds them all after the service refuses one."""

    def __init__(self, budget: ReadBudget, clock: Clock = SYSTEM_CLOCK) -> None:
        self.budget = budget
        self.clock = clock
        self._limits = budget.limits
        self._longest = max(window for _, window in self._limits)
        self._made: deque[float] = deque()  # when each read within the longest window left
        self._hold_until = float("-inf")
        self._refusals = 0  # in a row

    def wait_time(self) -> float:
        """Seconds until the next read may leave (0: now)."""
        now = self.clock.monotonic()
        made = self._made
        while made and made[0] <= now - self._longest:
            made.popleft()
        wait = self._hold_until - now
        for limit, window in self._limits:
            # A window may hold `limit` reads: the next leaves once the read `limit` back
            # from the newest is out of the window.
            if len(made) >= limit:
                wait = max(wait, made[len(made) - limit] + window - now)
        return max(0.0, wait)

    async def ready(self) -> None:
        """Return once a read may leave."""
        while (wait := self.wait_time()) > 0:
            await self.clock.sleep(wait)

    async def take(self) -> None:
        """Wait for a read's turn and count it as made."""
        await self.ready()
        self._made.append(self.clock.monotonic())

    def refused(self, pushback: float | None) -> None:
        """The service refused a read for its quota: hold every read for the pushback or the backoff."""
        self._refusals += 1
        first, most = REFUSAL_BACKOFF
        hold = max(pushback or 0.0, min(most, first * 2 ** (self._refusals - 1)))
        self._hold_until = max(self._hold_until, self.clock.monotonic() + hold)

    def answered(self) -> None:
        """A read went through: the next refusal starts the backoff afresh."""
        self._refusals = 0
