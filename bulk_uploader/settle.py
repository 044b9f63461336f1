"""Settling unknown outcomes: is the talk of a row whose answer never came stored or not?

A row whose attempt ended with its outcome unknown (an answer lost, a deadline passed, a
process killed during the call) is never sent again until a read has said its talk is not
there. Rows with a dedupe key are settled here, in batches rather than one by one:

- a row waits until `delay` seconds have passed since its last unknown attempt (since the
  run began, for an attempt of an earlier run): how soon Search sees a new talk is not
  documented, and a Search that runs ahead of the index would send the row twice;
- rows are asked about in rounds, at most one every half the delay (and a second): the
  rows ready by a round go together, so the reads grow with how long unknown outcomes
  keep coming rather than with how many there are;
- in a round, one Search asks about up to SEARCH_VALUES rows of a connection at once (an
  AnyMatchFilter ORs their values), and one Get per 100 ids it returns says which row
  each talk belongs to (Search answers ids only);
- a talk is taken as the row's only when every metadata field of the row matches; a talk
  with the row's dedupe value and other fields is a conflict (neither accepted nor sent
  over); a row whose value no talk has is "not there", and only then is it sent again.

Reads go through a Lookup, so they keep to the read budget. If the reads cannot answer
(the service fails them past the retries), or the run stops first, the rows stay unsettled
(`ambiguous`) and the next run asks again.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

from bulk_uploader.clock import Clock
from bulk_uploader.errors import CallFailure, SettleConflict
from bulk_uploader.lookup import SEARCH_VALUES, Lookup
from bulk_uploader.model import Job, TalkRecord, differing_fields
from bulk_uploader.records import Record, record
from bulk_uploader.stats import RunStats

UNSETTLED = "UNSETTLED"  # the code of a row left ambiguous because no read could settle it
SPACING, MIN_SPACING = 0.5, 1.0  # rounds of reads: half the delay apart, and at least a second


@record(slots=True, eq=False)
class _Ask(Record):
    """A row waiting to be settled."""

    job: Job
    ready_at: float  # monotonic time its batch may ask about it
    answer: asyncio.Future[str | None]

    def __init__(self, job: Job, ready_at: float, answer: asyncio.Future[str | None]) -> None:  # once a row
        self.job = job
        self.ready_at = ready_at
        self.answer = answer


class Settler:
    """Settles rows in batches; `run()` is its task, `settle()` what a sender awaits."""

    def __init__(self, lookup: Lookup, field: str, delay: float, clock: Clock, stats: RunStats) -> None:
        self.lookup = lookup
        self.field = field  # the dedupe key, as Get names it among a talk's fields
        self.delay = delay
        self.clock = clock
        self.stats = stats
        # Rounds are at least this far apart: rows that become ready meanwhile go together, so
        # the reads grow with how long unknown outcomes keep coming, not with how many there are.
        self.spacing = max(MIN_SPACING, delay * SPACING)
        self._asks: list[_Ask] = []
        self._arrived = asyncio.Event()
        self._stopped = False

    async def settle(self, job: Job, since: float) -> str | None:
        """The id of the row's stored talk, or None when it is not stored, asked no sooner than
        `delay` after `since` (monotonic). Raises SettleConflict, or CallFailure (UNSETTLED or
        the reads' own code) when it could not be told."""
        if self._stopped:
            raise CallFailure(UNSETTLED, "not settled: the run stopped first")
        ask = _Ask(job, since + self.delay, asyncio.get_running_loop().create_future())
        self._asks.append(ask)
        self._arrived.set()
        self.stats.settling += 1
        try:
            return await ask.answer
        finally:
            self.stats.settling -= 1
            if ask in self._asks:
                self._asks.remove(ask)

    def stop(self) -> None:
        """The run is stopping: rows still waiting stay unsettled (ambiguous), for the next run."""
        self._stopped = True
        asks, self._asks = self._asks, []
        for ask in asks:
            _answer(ask, CallFailure(UNSETTLED, "not settled: the run stopped first"))

    async def run(self) -> None:
        """Settle rows in rounds as they become ready, until cancelled."""
        next_round = float("-inf")
        while True:
            if not self._asks:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            wait = max(min(ask.ready_at for ask in self._asks), next_round) - self.clock.monotonic()
            if wait > 0:
                await self.clock.sleep(wait)
                continue
            await self.lookup.gate.ready()  # rows that become ready meanwhile join this round
            next_round = self.clock.monotonic() + self.spacing
            for batch in self._round():
                await self._settle(batch)

    def _round(self) -> list[list[_Ask]]:
        """The rows ready now, in batches of up to SEARCH_VALUES rows of one connection."""
        now = self.clock.monotonic()
        ready = sorted((ask for ask in self._asks if ask.ready_at <= now), key=lambda ask: ask.ready_at)
        self._asks = [ask for ask in self._asks if ask.ready_at > now]
        by_connection: dict[str, list[_Ask]] = defaultdict(list)
        for ask in ready:
            by_connection[ask.job.connection_id].append(ask)
        return [asks[start:start + SEARCH_VALUES] for asks in by_connection.values()
                for start in range(0, len(asks), SEARCH_VALUES)]

    async def _settle(self, batch: list[_Ask]) -> None:
        assert batch[0].job.dedupe is not None
        key = batch[0].job.dedupe[0]
        connection = batch[0].job.connection_id
        values = [ask.job.dedupe[1] for ask in batch if ask.job.dedupe is not None]
        try:
            ids = await self.lookup.search(connection, key, values)
            talks = await self.lookup.get(ids, connection) if ids else {}
        except CallFailure as failure:
            for ask in batch:
                _answer(ask, CallFailure(failure.code, f"not settled: Search/Get failed: {failure.message}",
                                         auth_header=failure.auth_header))
            return
        by_value: dict[str, list[TalkRecord]] = defaultdict(list)
        for talk in talks.values():
            by_value[talk.fields.get(self.field, "")].append(talk)
        self.stats.settled += len(batch)
        for ask, value in zip(batch, values, strict=True):
            candidates = by_value.get(value, [])
            match = next((talk for talk in candidates if not differing_fields(ask.job.fields, talk.fields)), None)
            if match is not None:
                _answer(ask, match.id)
            elif candidates:
                keys = differing_fields(ask.job.fields, candidates[0].fields)
                _answer(ask, SettleConflict(self.field, value, candidates[0].id, keys))
            else:
                self.stats.not_stored += 1
                _answer(ask, None)


def _answer(ask: _Ask, outcome: str | None | BaseException) -> None:
    if ask.answer.done():  # its sender was cancelled
        return
    if isinstance(outcome, BaseException):
        ask.answer.set_exception(outcome)
    else:
        ask.answer.set_result(outcome)
