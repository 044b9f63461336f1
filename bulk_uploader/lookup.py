"""Lookup: Search and Get on the service, within the read budget, for settling and for verify.

Every call first takes its turn at the ReadGate. A refusal for the quota
(RESOURCE_EXHAUSTED) is not a failure: the gate holds every read for the pushback and
the call goes again, as often as it takes, unless the service has refused it for
`patience` seconds on end (as for uploads: 10 minutes of nothing but refusals). Any
other failure goes through the run's RetryPolicy (credential refresh, backoff, a limited
number of retries). A failure is raised to the caller, which then leaves its rows
unsettled rather than failing them.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from bulk_uploader.errors import CallFailure
from bulk_uploader.model import TalkRecord
from bulk_uploader.options import SearchScope
from bulk_uploader.reads import ReadGate
from bulk_uploader.retry import RetryPolicy
from bulk_uploader.stats import ReadStats

if TYPE_CHECKING:
    from bulk_uploader.transport import Transport  # gRPC: loaded by whoever opens the transport

T = TypeVar("T")
GET_BATCH = 100  # talks per Get: the documentation recommends up to 100 (more may exceed the message size)
SEARCH_VALUES = 100  # values per AnyMatchFilter: a Search's answer then fits one page, duplicates and all


class Lookup:
    """Search and Get within a budget; `stats` counts the calls made and the refusals."""

    def __init__(self, transport: Transport, scope: SearchScope, gate: ReadGate, policy: RetryPolicy,
                 timeout: float, stats: ReadStats, patience: float = 600.0) -> None:
        self.transport = transport
        self.scope = scope
        self.gate = gate
        self.policy = policy
        self.timeout = timeout
        self.stats = stats
        self.patience = patience  # seconds of nothing but refusals before a read gives up

    async def _read(self, rpc: str, call: Callable[[], Awaitable[T]]) -> T:
        """One read, made as often as it takes: every call counted, refused and failed ones too."""
        attempts = self.policy.attempts()
        refused_since: float | None = None
        while True:
            await self.gate.take()
            if rpc == "Search":
                self.stats.searches += 1
            else:
                self.stats.gets += 1
            try:
                answer = await call()
            except CallFailure as failure:
                if failure.code == "RESOURCE_EXHAUSTED":
                    self.stats.refused += 1
                    now = self.gate.clock.monotonic()
                    refused_since = now if refused_since is None else refused_since
                    if now - refused_since > self.patience:
                        raise
                    self.gate.refused(failure.pushback)
                    continue
                await attempts.after(failure)  # raises when the policy gives up
            else:
                self.gate.answered()
                return answer

    async def search(self, connection_id: str, key: str, values: Sequence[str]) -> list[str]:
        """Ids of the talks in the connection whose `key` is any of `values`, every page of them."""
        ids: list[str] = []
        token = ""
        while True:
            page, token = await self._read("Search", functools.partial(
                self.transport.search, self.scope, connection_id, key, values, self.timeout, token))
            ids += page
            if not token or not page:
                return ids

    async def get(self, talk_ids: Sequence[str], connection_id: str = "") -> dict[str, TalkRecord]:
        """The talks the service holds among `talk_ids`, by id, GET_BATCH a call.

        An id it does not hold is left out of the answer. Should the service instead refuse
        a whole call with NOT_FOUND, the call is split in halves until the missing ids are
        alone (a few more reads per missing talk)."""
        found: dict[str, TalkRecord] = {}
        ids = list(dict.fromkeys(talk_ids))
        for start in range(0, len(ids), GET_BATCH):
            await self._get(ids[start:start + GET_BATCH], connection_id, found)
        return found

    async def _get(self, ids: list[str], connection_id: str, found: dict[str, TalkRecord]) -> None:
        try:
            talks = await self._read("Get", functools.partial(self.transport.get, self.scope, connection_id, ids,
                                                              self.timeout))
        except CallFailure as failure:
            if failure.code != "NOT_FOUND":
                raise
            if len(ids) > 1:
                half = len(ids) // 2
                await self._get(ids[:half], connection_id, found)
                await self._get(ids[half:], connection_id, found)
            return
        wanted = set(ids)
        found.update((talk.id, talk) for talk in talks if talk.id in wanted)
