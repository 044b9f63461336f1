"""The run's retry policy and the token refresh, on a clock the tests move (no sleeps)."""

from __future__ import annotations

import itertools
import random

import anyio
import pytest
from fakes import FakeClock, settle

from bulk_uploader.auth import _RefreshingToken
from bulk_uploader.errors import AuthError, CallFailure
from bulk_uploader.flow import AdaptiveLimiter
from bulk_uploader.ledger import PreviousResults
from bulk_uploader.pipeline.summary import RunSummary
from bulk_uploader.retry import MAX_LOST_STATUSES, RetryPolicy
from bulk_uploader.stats import RunStats


class CountingToken(_RefreshingToken):
    """A refreshing credential whose source is a counter: token-1, token-2, ..."""

    def __init__(self, refresh_every: float, clock: FakeClock, lifetime: float | None = None) -> None:
        super().__init__(refresh_every, clock)
        self.fetches = 0
        self.lifetime = lifetime

    async def _obtain(self) -> tuple[str, float | None]:
        self.fetches += 1
        return f"token-{self.fetches}", self.lifetime


async def run_after(attempts: object, failure: CallFailure, clock: FakeClock) -> float:
    """Seconds of fake time attempts.after(failure) waited (it must return)."""
    before = len(clock.slept)
    async with anyio.create_task_group() as group:
        group.start_soon(attempts.after, failure)  # type: ignore[attr-defined]
        await settle()
        waited = sum(clock.slept[before:])
        await clock.advance(waited)
    return sum(clock.slept[before:])


def test_backoff_is_equal_jitter_within_half_to_all_of_the_capped_exponential() -> None:
    policy = RetryPolicy(backoff_base=0.2, backoff_max=20.0, random=random.Random(7))
    for retry in range(1, 12):
        cap = min(20.0, 0.2 * 2 ** (retry - 1))
        draws = [policy.backoff(retry) for _ in range(200)]
        assert all(cap / 2 <= d <= cap for d in draws)
        assert max(draws) - min(draws) > cap / 4  # jittered, not fixed


async def test_transient_failures_wait_and_use_up_the_retries_then_raise() -> None:
    clock = FakeClock()
    stats = RunStats()
    policy = RetryPolicy(retries=3, backoff_base=1.0, backoff_max=100.0, stats=stats, clock=clock)
    attempts = policy.attempts()
    failure = CallFailure("UNAVAILABLE", "down")
    waits = [await run_after(attempts, failure, clock) for _ in range(3)]
    assert [1 / 2 <= waits[0] <= 1, 1 <= waits[1] <= 2, 2 <= waits[2] <= 4] == [True] * 3
    with pytest.raises(CallFailure):
        await attempts.after(failure)
    assert stats.retries == 3


async def test_a_servers_pushback_is_waited_exactly() -> None:
    clock = FakeClock()
    attempts = RetryPolicy(retries=3, clock=clock).attempts()
    assert await run_after(attempts, CallFailure("UNAVAILABLE", "busy", pushback=2.5), clock) == 2.5


async def test_a_lost_answer_is_tried_again_apart_from_the_retries_a_bounded_number_of_times() -> None:
    clock = FakeClock()
    stats = RunStats()
    attempts = RetryPolicy(retries=1, clock=clock, stats=stats).attempts()
    lost = CallFailure("INTERNAL", "Internal error from Core", status_lost=True)
    for _ in range(MAX_LOST_STATUSES):
        await run_after(attempts, lost, clock)
    assert (stats.lost_answers, stats.retries) == (MAX_LOST_STATUSES, 0)
    await run_after(attempts, lost, clock)  # beyond the bound: an ordinary retry, which uses up the one
    assert (stats.lost_answers, stats.retries) == (MAX_LOST_STATUSES, 1)
    with pytest.raises(CallFailure):
        await attempts.after(lost)


async def test_definite_refusals_are_not_retried() -> None:
    attempts = RetryPolicy(retries=5, clock=FakeClock()).attempts()
    for code in ("INVALID_ARGUMENT", "NOT_FOUND", "PERMISSION_DENIED", "UNAUTHENTICATED"):
        with pytest.raises(CallFailure):
            await attempts.after(CallFailure(code, "no"))


async def test_throttling_does_not_use_up_retries_until_nothing_went_through_for_the_patience() -> None:
    clock = FakeClock()
    limiter = AdaptiveLimiter(16, clock)
    stats = RunStats()
    policy = RetryPolicy(retries=1, throttle_patience=60.0, limiter=limiter, stats=stats, clock=clock)
    attempts = policy.attempts()
    throttled = CallFailure("RESOURCE_EXHAUSTED", "slow down", pushback=1.0, sent_at=clock.now)
    for _ in range(5):  # five refusals, one retry allowed: throttling is not a failure of the row
        assert await run_after(attempts, throttled, clock) == 0.0  # the limiter holds the pushback instead
    assert stats.throttled == 5 and limiter.current < 16
    await clock.advance(59.0)
    policy.succeeded(clock.now)  # something went through: patience starts again
    await clock.advance(59.0)
    await run_after(attempts, throttled, clock)
    await clock.advance(2.0)  # 61 s without progress
    with pytest.raises(CallFailure):
        await attempts.after(throttled)


async def test_a_call_out_of_time_lowers_the_concurrency_only_when_none_went_through_meanwhile() -> None:
    clock = FakeClock()
    limiter = AdaptiveLimiter(16, clock)
    stats = RunStats()
    policy = RetryPolicy(retries=5, limiter=limiter, stats=stats, clock=clock)
    await clock.advance(1.0)
    sent = clock.now
    await clock.advance(10.0)
    policy.succeeded(clock.now - 5.0)  # another call went through while this one was out
    await run_after(policy.attempts(), CallFailure("DEADLINE_EXCEEDED", "late", sent_at=sent), clock)
    assert limiter.current == 16 and stats.overruns == 0  # a late call among calls going through: the call's
    sent = clock.now
    await clock.advance(10.0)
    for _ in range(8):  # the calls sent together all ran out with none going through: one signal
        await run_after(policy.attempts(), CallFailure("DEADLINE_EXCEEDED", "late", sent_at=sent), clock)
    assert limiter.current == 8 and stats.overruns == 8 and stats.concurrency == 8
    assert stats.retries == 9  # each is retried as before: only the concurrency changed


async def test_a_refused_token_is_refreshed_twice_per_operation_then_the_refusal_stands() -> None:
    clock = FakeClock()
    token = CountingToken(3600.0, clock)
    await token.start()
    stats = RunStats()
    attempts = RetryPolicy(credentials=token, stats=stats, clock=clock).attempts()
    for _ in range(2):
        await attempts.after(CallFailure("UNAUTHENTICATED", "expired", auth_header=token.header()))
    assert token.fetches == 3 and stats.token_refreshes == 2
    with pytest.raises(CallFailure):
        await attempts.after(CallFailure("UNAUTHENTICATED", "expired", auth_header=token.header()))


async def test_a_refusal_of_a_token_someone_else_already_refreshed_fetches_no_other() -> None:
    clock = FakeClock()
    token = CountingToken(3600.0, clock)
    await token.start()
    stale = token.header()
    assert await token.refresh(stale) and await token.refresh(stale)
    assert token.fetches == 2  # the second caller saw the token had changed since its call


async def test_tokens_are_renewed_at_the_interval_or_at_80_percent_of_a_shorter_life() -> None:
    clock = FakeClock()
    token = CountingToken(60.0, clock)
    await token.start()
    async with anyio.create_task_group() as group:
        group.start_soon(token.keep_fresh)
        await clock.advance(59.0)
        assert token.fetches == 1
        await clock.advance(2.0)
        assert token.fetches == 2
        token.lifetime = 10.0  # the next tokens live 10 s: renewed every 8 s
        await clock.advance(60.0)  # fetched at 120 s, living 10 s: due at 128 s
        assert token.fetches == 3
        await clock.advance(6.9)
        assert token.fetches == 3
        await clock.advance(0.2)
        assert token.fetches == 4
        group.cancel_scope.cancel()


class SlowToken(CountingToken):
    """A source that takes `took` seconds to answer, its token living `lifetime` from the answer."""

    def __init__(self, clock: FakeClock, lifetime: float, took: float) -> None:
        super().__init__(3600.0, clock, lifetime)
        self.took = took
        self.arrivals: list[float] = []

    async def _obtain(self) -> tuple[str, float | None]:
        await self.clock.sleep(self.took)
        self.arrivals.append(self.clock.monotonic())
        return await super()._obtain()


@pytest.mark.parametrize(("lifetime", "took"), [(10.0, 0.5), (10.0, 3.0), (1.0, 0.3)])
async def test_a_token_is_renewed_early_enough_for_its_renewal_to_arrive_before_it_expires(
        lifetime: float, took: float) -> None:
    clock = FakeClock()
    token = SlowToken(clock, lifetime, took)

    async def start_and_keep_fresh() -> None:  # the first token, too, takes `took` of the clock's time
        await token.start()
        await token.keep_fresh()

    async with anyio.create_task_group() as group:
        group.start_soon(start_and_keep_fresh)
        for _ in range(int(5 * lifetime / 0.05)):
            await clock.advance(0.05)
        group.cancel_scope.cancel()
    gaps = [later - earlier for earlier, later in itertools.pairwise(token.arrivals)]
    assert len(gaps) >= 3
    assert max(gaps) < lifetime  # each token came before the one in hand expired
    # ...and not sooner than it need: a fifth of the life left, or two renewals' time.
    assert min(gaps) >= lifetime - max(0.2 * lifetime, 2 * took) + took - 0.05


class FailingAfterFirst(CountingToken):
    """Gives one token, then fails: a session that ended."""

    async def _obtain(self) -> tuple[str, float | None]:
        if self.fetches:
            self.fetches += 1
            raise AuthError("--iam-token-command exited with status 4: session expired")
        return await super()._obtain()


async def test_a_failing_token_source_is_retried_while_the_token_in_hand_is_valid() -> None:
    clock = FakeClock()
    token = FailingAfterFirst(60.0, clock, lifetime=300.0)  # renewed at 240 s, valid until 300 s
    await token.start()
    failed: list[BaseException] = []
    failed_at: list[float] = []

    async def keep() -> None:
        try:
            await token.keep_fresh()
        except AuthError as exc:
            failed.append(exc)
            failed_at.append(clock.now - 1000.0)

    async with anyio.create_task_group() as group:
        group.start_soon(keep)
        await clock.advance(250.0)
        assert token.fetches >= 2 and not failed  # the renewal failed; the token is still good
        for _ in range(60):
            await clock.advance(1.0)
        assert token.fetches > 4 and failed and "session expired" in str(failed[0])
        assert 300.0 <= failed_at[0] <= 301.0  # given up when the token in hand expired, not before


async def test_a_refused_token_whose_source_fails_is_retried_then_the_error_stands() -> None:
    clock = FakeClock()
    token = FailingAfterFirst(3600.0, clock)
    await token.start()
    async with anyio.create_task_group() as group:
        outcome: list[BaseException] = []

        async def refresh() -> None:
            try:
                await token.refresh(token.header())
            except AuthError as exc:
                outcome.append(exc)

        group.start_soon(refresh)
        await clock.advance(10.0)
    assert outcome and token.fetches == 1 + 3  # three tries of the source, a second apart and more


def test_the_summary_tells_lost_answers_apart_from_retries() -> None:
    stats = RunStats(uploaded=3, lost_answers=2)
    lines = RunSummary(stats, "r.jsonl", PreviousResults()).lines()
    assert any(line.endswith(", 0 retries") for line in lines)
    assert any("answer gRPC lost (grpc#36066): 2, each sent again" in line for line in lines)
    assert not any("gRPC lost" in line for line in RunSummary(RunStats(uploaded=3), "r.jsonl",
                                                              PreviousResults()).lines())
