"""The read budget, the Lookup and the Settler on a fake clock, over a transport fake at the seam."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import pytest
from fakes import FakeClock, settle

from bulk_uploader.errors import CallFailure, ConfigError
from bulk_uploader.lookup import Lookup
from bulk_uploader.model import Job, TalkRecord
from bulk_uploader.options import SearchScope
from bulk_uploader.reads import DOCUMENTED_READ_QUOTA, ReadBudget, ReadGate, parse_quota
from bulk_uploader.retry import RetryPolicy
from bulk_uploader.settle import UNSETTLED, SettleConflict, Settler
from bulk_uploader.stats import RunStats


def test_the_default_budget_is_a_tenth_of_the_documented_quota() -> None:
    budget = ReadBudget()
    assert budget.quota == DOCUMENTED_READ_QUOTA
    assert budget.limits == ((2, 1.0), (20, 60.0), (200, 3600.0), (2000, 86400.0))
    assert budget.describe() == ("2/s, 20/min, 200/h, 2,000/day (10% of the project's read quota, "
                                 "20/s, 200/min, 2,000/h, 20,000/day)")
    assert ReadBudget(0.0125).limits == ((1, 1.0), (2, 60.0), (25, 3600.0), (250, 86400.0))  # 8 shards: never 0
    # 3 reads: 2 this second, the third a second later; 10,000 reads: the daily window rules (5 days).
    assert budget.seconds_for(3) == 1.0
    assert budget.seconds_for(10_000) == 4 * 86400.0
    with pytest.raises(ConfigError, match="--read-share"):
        ReadBudget(0.0)


def test_a_quota_is_read_from_its_spec() -> None:
    assert parse_quota("20/s,200/min,2000/h,20000/day") == DOCUMENTED_READ_QUOTA
    assert parse_quota(" 5/sec , 1_000/hour ") == ((5, 1.0), (1000, 3600.0))
    assert parse_quota("off") == ()
    for bad in ("20 per second", "0/s", "20/week"):
        with pytest.raises(ConfigError, match="read quota"):
            parse_quota(bad)


async def test_the_gate_keeps_every_window_of_the_budget() -> None:
    clock = FakeClock()
    gate = ReadGate(ReadBudget(1.0, ((2, 1.0), (3, 60.0))), clock)
    made: list[float] = []

    async def reads(n: int) -> None:
        for _ in range(n):
            await gate.take()
            made.append(clock.monotonic() - 1000.0)

    async with anyio.create_task_group() as group:
        group.start_soon(reads, 5)
        await clock.advance(200)
    # Two at once, the third a second later; then the minute's three are spent, and the next two
    # leave when the first two have left the minute (t=60): two in that second, as it allows.
    assert made == [0.0, 0.0, 1.0, 60.0, 60.0]


async def test_a_refusal_holds_every_read_for_the_pushback_or_a_growing_backoff() -> None:
    clock = FakeClock()
    gate = ReadGate(ReadBudget(1.0), clock)
    gate.refused(pushback=5.0)
    assert gate.wait_time() == 5.0  # longer than the first backoff: the server's word
    await clock.advance(5)
    gate.refused(pushback=0.05)
    assert gate.wait_time() == 2.0  # the second refusal in a row: 2 s of backoff
    await clock.advance(2)
    gate.answered()
    gate.refused(pushback=None)
    assert gate.wait_time() == 1.0  # an answer in between starts the backoff afresh


class FakeTransport:
    """Search and Get over a dict of talks; records every call; can fail or refuse calls on demand."""

    def __init__(self, talks: Sequence[TalkRecord] = ()) -> None:
        self.talks = {t.id: t for t in talks}
        self.calls: list[tuple[str, Any]] = []
        self.failures: list[CallFailure] = []  # raised by the next calls, in order
        self.get_refuses_missing = False  # answer NOT_FOUND for a Get naming an id it does not hold

    def _fail(self) -> None:
        if self.failures:
            raise self.failures.pop(0)

    async def search(self, scope: SearchScope, connection_id: str, key: str, values: Sequence[str], timeout: float,
                     page_token: str = "") -> tuple[list[str], str]:
        self.calls.append(("Search", (key, tuple(values))))
        self._fail()
        field = key.removeprefix("userMeta.")
        return [t.id for t in self.talks.values() if t.fields.get(field) in values], ""

    async def get(self, scope: SearchScope, connection_id: str, talk_ids: Sequence[str], timeout: float
                  ) -> list[TalkRecord]:
        self.calls.append(("Get", tuple(talk_ids)))
        self._fail()
        if self.get_refuses_missing and any(i not in self.talks for i in talk_ids):
            raise CallFailure("NOT_FOUND", "talk not found")
        return [self.talks[i] for i in talk_ids if i in self.talks]


def fields(n: int) -> dict[str, str]:
    return {"call_id": f"c-{n}", "operator_name": "Anna"}


def job(n: int, connection: str = "conn") -> Job:
    return Job(f"row-{n}", n, "audio", connection, fields(n), dedupe=("userMeta.call_id", f"c-{n}"))


def lookup(transport: FakeTransport, clock: FakeClock, share: float = 1.0) -> tuple[Lookup, RunStats]:
    stats = RunStats()
    policy = RetryPolicy(retries=2, backoff_base=0.5, clock=clock)
    gate = ReadGate(ReadBudget(share), clock)
    return Lookup(transport, SearchScope(), gate, policy, 10.0, stats.reads), stats  # type: ignore[arg-type]


async def settle_all(settler: Settler, clock: FakeClock, asks: list[tuple[Job, float]], advance: float) -> list[Any]:
    outcomes: list[Any] = [None] * len(asks)

    async def ask(n: int, job: Job, since: float) -> None:
        try:
            outcomes[n] = await settler.settle(job, since)
        except (CallFailure, SettleConflict) as exc:
            outcomes[n] = exc

    async with anyio.create_task_group() as group:
        group.start_soon(settler.run)
        for n, (one, since) in enumerate(asks):
            group.start_soon(ask, n, one, since)
        await clock.advance(advance)
        group.cancel_scope.cancel()
    return outcomes


async def test_rows_are_settled_together_after_the_delay_and_only_a_matching_talk_is_taken() -> None:
    clock = FakeClock()
    stored = [TalkRecord("t0", "conn", fields(0), "PROCESSING"),
              TalkRecord("t2", "conn", {**fields(2), "operator_name": "Boris"}, "SUCCESS")]
    transport = FakeTransport(stored)
    reads, stats = lookup(transport, clock)
    settler = Settler(reads, "call_id", 10.0, clock, stats)
    now = clock.monotonic()
    asks = [(job(0), now), (job(1), now + 1), (job(2), now + 2)]
    outcomes = await settle_all(settler, clock, asks, 9.9)
    assert transport.calls == [] and outcomes == [None, None, None]  # nothing asked before the delay
    clock.now = now
    outcomes = await settle_all(settler, clock, asks, 16.0)
    # The first row alone when it is ready (t=10); the next round half the delay later takes the other two.
    assert transport.calls == [("Search", ("userMeta.call_id", ("c-0",))), ("Get", ("t0",)),
                               ("Search", ("userMeta.call_id", ("c-1", "c-2"))), ("Get", ("t2",))]
    assert outcomes[0] == "t0" and outcomes[1] is None
    assert isinstance(outcomes[2], SettleConflict) and outcomes[2].keys == ["operator_name"]
    assert "a talk with call_id='c-2' is stored (talk t2) but its fields differ in operator_name" in str(outcomes[2])
    assert (stats.settled, stats.not_stored, stats.reads.total) == (3, 1, 4)


async def test_a_batch_takes_at_most_a_hundred_rows_of_one_connection() -> None:
    clock = FakeClock()
    transport = FakeTransport()
    reads, stats = lookup(transport, clock)
    settler = Settler(reads, "call_id", 1.0, clock, stats)
    asks = [(job(n), clock.monotonic()) for n in range(150)] + [(job(n, "chat"), clock.monotonic()) for n in range(3)]
    outcomes = await settle_all(settler, clock, asks, 5.0)
    searches = [values for rpc, (_, values) in transport.calls if rpc == "Search"]
    assert sorted(len(values) for values in searches) == [3, 50, 100]
    assert outcomes == [None] * 153 and stats.reads.total == 3  # no Get when Search finds nothing


async def test_reads_that_fail_leave_the_rows_unsettled_and_refusals_only_wait() -> None:
    clock = FakeClock()
    transport = FakeTransport([TalkRecord("t0", "conn", fields(0), "SUCCESS")])
    transport.failures = [CallFailure("RESOURCE_EXHAUSTED", "read quota", pushback=3.0)] * 4
    reads, stats = lookup(transport, clock)
    settler = Settler(reads, "call_id", 1.0, clock, stats)
    outcomes = await settle_all(settler, clock, [(job(0), clock.monotonic())], 60.0)
    assert outcomes == ["t0"] and stats.reads.refused == 4  # refused four times, then answered: found
    transport.failures = [CallFailure("UNAVAILABLE", "down")] * 3  # past the 2 retries
    outcomes = await settle_all(settler, clock, [(job(0), clock.monotonic())], 60.0)
    assert isinstance(outcomes[0], CallFailure) and outcomes[0].code == "UNAVAILABLE"
    assert "not settled: Search/Get failed" in outcomes[0].message
    # Refused for longer than the patience (600 s): the read gives up, and the row stays unsettled.
    transport.failures = [CallFailure("RESOURCE_EXHAUSTED", "read quota", pushback=None)] * 30
    outcomes = await settle_all(settler, clock, [(job(0), clock.monotonic())], 3600.0)
    assert isinstance(outcomes[0], CallFailure) and outcomes[0].code == "RESOURCE_EXHAUSTED"
    assert 12 <= 30 - len(transport.failures) <= 16  # about 10 minutes of tries, a minute apart at most


async def test_a_stop_leaves_waiting_rows_unsettled() -> None:
    clock = FakeClock()
    reads, stats = lookup(FakeTransport(), clock)
    settler = Settler(reads, "call_id", 60.0, clock, stats)
    outcome: list[Any] = []

    async def ask() -> None:
        try:
            await settler.settle(job(0), clock.monotonic())
        except CallFailure as exc:
            outcome.append(exc.code)

    async with anyio.create_task_group() as group:
        group.start_soon(settler.run)
        group.start_soon(ask)
        await settle()
        assert stats.settling == 1
        settler.stop()
        await settle()
        group.cancel_scope.cancel()
    assert outcome == [UNSETTLED] and stats.settling == 0 and stats.reads.total == 0


async def test_a_get_refused_for_a_missing_id_is_split_until_the_missing_ids_are_alone() -> None:
    clock = FakeClock()
    talks = [TalkRecord(f"t{n}", "conn", fields(n), "SUCCESS") for n in range(8)]
    transport = FakeTransport(talks)
    transport.get_refuses_missing = True
    reads, _ = lookup(transport, clock)
    found = await reads.get([f"t{n}" for n in range(8)] + ["gone"])
    assert sorted(found) == [f"t{n}" for n in range(8)]
    assert len([call for call in transport.calls if call[0] == "Get"]) <= 9
