"""When a failed call is tried again, and when it is not: the one retry policy of a run.

Every operation that retries (an upload attempt, a Search, an IAM token exchange) keeps
an `Attempts` from the run's RetryPolicy and, after each failed call, awaits
`attempts.after(failure)`, which either waits as the failure asks or raises it:

- UNAUTHENTICATED: the credentials are refreshed (at most twice per operation) and the
  call goes again at once;
- a refusal of the credentials or any answer that is not transient: raised;
- a call that never reached the service (no connection, a refused stream): nothing was
  stored, so it does not count; the run's Outage holds every new call and probes until
  the service answers again, and gives up only after `outage_patience` seconds;
- a stream the server ended whose answer gRPC lost (grpc#36066): again soon, at most
  MAX_LOST_STATUSES times, counted neither against the retries nor among the run's
  (stats.lost_answers: a stream refused part-way through, for one, ends so under load);
- RESOURCE_EXHAUSTED: the limiter is told (it halves the calls in flight and holds new
  ones for the server's pushback); it does not use up the retries, and is raised only
  when nothing at all has gone through for `throttle_patience` seconds;
- any other transient answer: the server's pushback, else an exponential backoff with
  equal jitter (half to all of base * 2**n, capped), until `retries` are used up.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import field

import anyio

from bulk_uploader.auth import AuthProvider
from bulk_uploader.clock import SYSTEM_CLOCK, Clock
from bulk_uploader.errors import CallFailure, ServiceUnreachable
from bulk_uploader.flow import AdaptiveLimiter
from bulk_uploader.records import Record, record
from bulk_uploader.stats import RunStats

MAX_REFRESHES = 2  # credential refreshes per operation: a third refusal means the new credential is refused too
PROBE_SECONDS = 5.0  # one probe's wait for the service to answer again
MAX_LOST_STATUSES = 10  # tries of a stream whose answer gRPC lost (grpc#36066), beyond the retries


@record(kw_only=True)
class RetryPolicy(Record):
    """The run's rules for trying again; shared by every operation of the run."""

    retries: int = 10  # further attempts after a transient failure (throttling aside)
    backoff_base: float = 0.2  # seconds; the nth retry waits half to all of base * 2**(n-1)
    backoff_max: float = 20.0
    throttle_patience: float = 600.0  # seconds of nothing but RESOURCE_EXHAUSTED before an operation gives up
    credentials: AuthProvider | None = None
    limiter: AdaptiveLimiter | None = None  # told of throttling; None: throttling is an ordinary transient failure
    stats: RunStats | None = None  # counts retries, throttling and token refreshes
    clock: Clock = SYSTEM_CLOCK
    outage: Outage | None = None  # holds calls while the service cannot be reached; None: such failures count
    random: random.Random = field(default_factory=random.Random)
    last_progress: float = field(default=0.0)  # when a call last went through

    def __post_init__(self) -> None:
        self.last_progress = self.clock.monotonic()

    def attempts(self) -> Attempts:
        """Fresh retry state for one operation."""
        return Attempts(self)

    def backoff(self, retry: int) -> float:
        """Seconds before the `retry`th retry: equal jitter, half to all of the capped exponential."""
        cap = min(self.backoff_max, self.backoff_base * 2 ** (retry - 1))
        return self.random.uniform(cap / 2, cap)

    def succeeded(self, sent_at: float) -> None:
        """A call sent at `sent_at` went through: the service is making progress."""
        self.last_progress = self.clock.monotonic()
        if self.limiter is not None:
            self.limiter.succeeded(sent_at)
            if self.stats is not None:
                self.stats.concurrency = self.limiter.current

    def _overrun(self, sent_at: float) -> None:
        assert self.limiter is not None
        self.limiter.overrun(sent_at)
        if self.stats is not None:
            self.stats.overruns += 1
            self.stats.concurrency = self.limiter.current

    def _throttled(self, failure: CallFailure) -> None:
        assert self.limiter is not None
        self.limiter.throttled(failure.pushback, failure.sent_at)
        if self.stats is not None:
            self.stats.throttled += 1
            self.stats.concurrency = self.limiter.current


class Attempts:
    """One operation's count of failures and credential refreshes."""

    __slots__ = ("policy", "failures", "refreshes", "lost")

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.failures = 0
        self.refreshes = 0
        self.lost = 0

    async def after(self, failure: CallFailure) -> None:
        """Wait before the next try as `failure` asks, or raise it when the operation should stop."""
        lost = self.lost
        delay = await self._delay(failure)
        if self.policy.stats is not None:
            if self.lost > lost:
                self.policy.stats.lost_answers += 1
            else:
                self.policy.stats.retries += 1
        if delay > 0:
            await self.policy.clock.sleep(delay)

    async def _delay(self, failure: CallFailure) -> float:
        policy = self.policy
        if failure.code == "UNAUTHENTICATED" and self.refreshes < MAX_REFRESHES and policy.credentials is not None:
            self.refreshes += 1
            if await policy.credentials.refresh(failure.auth_header):
                if policy.stats is not None:
                    policy.stats.token_refreshes += 1
                return 0.0
        if failure.auth or not failure.transient:
            raise failure
        if failure.not_sent and policy.outage is not None:
            policy.outage.lost()
            await policy.outage.wait(failure)
            return 0.0
        if failure.status_lost and self.lost < MAX_LOST_STATUSES:
            # Nothing was stored and the server's real answer comes on the next try.
            self.lost += 1
            return policy.backoff(1)
        if (failure.code == "DEADLINE_EXCEEDED" and policy.limiter is not None
                and failure.sent_at >= policy.last_progress):
            policy._overrun(failure.sent_at)  # none went through while it was out: too much in flight
        if failure.code == "RESOURCE_EXHAUSTED" and policy.limiter is not None:
            policy._throttled(failure)
            if policy.clock.monotonic() - policy.last_progress > policy.throttle_patience:
                raise failure
            # With a pushback the limiter holds every call until it passes.
            return 0.0 if failure.pushback is not None else policy.backoff(self.failures + 1)
        if self.failures >= policy.retries:
            raise failure
        self.failures += 1
        return failure.pushback if failure.pushback is not None else policy.backoff(self.failures)


class Outage:
    """The service cannot be reached: every call waits here, one probe at a time, until it answers.

    `probe(seconds)` says whether the service answers within that time (a channel that
    connects; 0: one is connected now). An outage is counted, and stats.unreachable_since says
    since when for the display, once no connection answers: a call whose own connection was
    lost while another is up only waits for that check.
    """

    def __init__(self, probe: Callable[[float], Awaitable[bool]], *, patience: float, clock: Clock = SYSTEM_CLOCK,
                 stats: RunStats | None = None) -> None:
        self.probe = probe
        self.patience = patience
        self.clock = clock
        self.stats = stats
        self.since: float | None = None
        self.last = "no answer"  # what the last call that found no service was told
        self._told = False  # the outage since `since` was counted and shown (not a connection's blip)
        self._lock = anyio.Lock()

    def lost(self) -> None:
        """A call found no service."""
        if self.since is None:
            self.since = self.clock.monotonic()
            self._told = False

    def _tell(self) -> None:
        """No connection answers: the run waits, and the display and the summary say so."""
        if not self._told and self.stats is not None:
            self._told = True
            self.stats.outages += 1
            self.stats.unreachable_since = self.since

    def found(self) -> None:
        """The service answers again."""
        if self.since is not None and self._told and self.stats is not None:
            self.stats.outage_seconds += self.clock.monotonic() - self.since
            self.stats.unreachable_since = None
        self.since = None

    async def wait(self, failure: CallFailure | None = None) -> None:
        """Return once the service answers; raise ServiceUnreachable after `patience` seconds of outage."""
        while self.since is not None:
            waited = self.clock.monotonic() - self.since
            if waited > self.patience:
                self.last = failure.message if failure is not None else self.last
                raise ServiceUnreachable(f"the service was unreachable for {waited:.0f} s, longer than the outage "
                                         f"patience ({self.patience:.0f} s): {self.last}")
            async with self._lock:  # one probe at a time; the others find the outage over, or probe next
                if self.since is not None and await self._answers():
                    self.found()

    async def _answers(self) -> bool:
        """Whether the service answers: on a connection now (the call's own was lost, another is
        up: nothing to tell), or within a probe."""
        if await self.probe(0.0):
            return True
        self._tell()
        return await self.probe(min(PROBE_SECONDS, self.patience))
