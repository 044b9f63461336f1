"""Refusals that every row of a connection would meet: stop sending that connection's rows.

An unknown connection, a chat connection given audio, keys the connection does not define:
the service answers each row the same way, and sending the rest only spends time and
bandwidth. A connection whose rows are refused alike `threshold` times in a row, before any
of its rows went through, is blocked: its other rows are not sent and get no outcome line,
so the run after the fix takes them up.
"""

from __future__ import annotations

from bulk_uploader.errors import CallFailure

MAX_THRESHOLD = 5


class Refusals:
    """Per connection: the latest definite refusal and how many rows in a row met it."""

    def __init__(self, concurrency: int) -> None:
        # Low enough that at most about two rounds of calls are spent on a refused connection.
        self.threshold = min(MAX_THRESHOLD, max(2, concurrency))
        self.blocked: dict[str, str] = {}  # connection -> the refusal, as the service worded it
        self._streak: dict[str, tuple[str, int]] = {}
        self._through: set[str] = set()  # connections some row of which went through

    def succeeded(self, connection: str) -> None:
        """A row of `connection` went through: its refusals are the rows' own."""
        self._through.add(connection)
        self._streak.pop(connection, None)

    def refused(self, connection: str, failure: CallFailure) -> bool:
        """A row of `connection` was refused for good; True when that blocks the connection now."""
        if connection in self._through or connection in self.blocked:
            return False
        said = f"{failure.code}: {failure.message}"
        before = self._streak.get(connection)
        count = before[1] + 1 if before is not None and before[0] == said else 1
        self._streak[connection] = (said, count)
        if count < self.threshold:
            return False
        self.blocked[connection] = said
        return True
