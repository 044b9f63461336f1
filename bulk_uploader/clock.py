"""Time as the flow control, the retry policy and the credentials see it.

Everything that waits or measures intervals asks a Clock, so tests can hand them a clock
they move by hand (tests/fakes.py) instead of sleeping.
"""

from __future__ import annotations

import time
from typing import Protocol

import anyio


class Clock(Protocol):
    """Monotonic seconds, and a way to wait for them to pass."""

    def monotonic(self) -> float:
        """Seconds since an arbitrary start; never goes back."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return once `seconds` have passed on this clock."""
        ...


class SystemClock:
    """The process's monotonic clock, and anyio's sleep."""

    monotonic = staticmethod(time.monotonic)

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


SYSTEM_CLOCK = SystemClock()
