"""The delivery rate: what the calls that went through carried, per second of calls in flight,
the rate the pool's allowances (deadlines, the stall allowance, the start window) follow once
it is known, as the link and the service actually deliver it."""

from __future__ import annotations

from collections import deque

RATE_WINDOW = 30.0  # seconds of calls in flight the delivery rate is measured over
# ... and the longer span whose average bounds it: a call's payload crossed the link over the
# whole call, so calls longer than RATE_WINDOW that end together would make it look faster.
RATE_HORIZON = 600.0
RATE_MIN_BYTES = 64 * 1024  # payload delivered before the measure counts
# Seconds of calls in flight between two marks of the window: at thousands of calls a second a
# mark for each would hold RATE_WINDOW's worth of them, and a window longer by this is no worse.
MARK_SPACING = 0.01


class DeliveryRate:
    """The payload that calls which went through carried, per second of calls in flight, over
    about the last RATE_WINDOW such seconds: what the link (and the service) actually deliver."""

    def __init__(self) -> None:
        self.in_flight = 0
        self._busy = 0.0  # seconds with calls in flight, up to _since
        self._since = 0.0  # when the calls now in flight began (with in_flight > 0)
        self._delivered = 0
        self._marks: deque[tuple[float, int]] = deque([(0.0, 0)])  # (busy seconds, bytes delivered)
        self._horizon: deque[tuple[float, int]] = deque([(0.0, 0)])  # the same, a mark a second at most

    def busy(self, now: float) -> float:
        return self._busy + (now - self._since if self.in_flight else 0.0)

    def began(self, now: float) -> None:
        if not self.in_flight:
            self._since = now
        self.in_flight += 1

    def ended(self, now: float, delivered: int) -> None:
        """A call ended; `delivered` is its payload if it went through, else 0."""
        busy = self.busy(now)
        self.in_flight -= 1
        if not self.in_flight:
            self._busy = busy
        if delivered:
            self._delivered += delivered
            marks = self._marks
            if busy - marks[-1][0] >= MARK_SPACING:
                marks.append((busy, self._delivered))
                while len(marks) > 2 and marks[1][0] <= busy - RATE_WINDOW:
                    marks.popleft()  # the oldest mark still RATE_WINDOW back stays as the base
            horizon = self._horizon
            if busy - horizon[-1][0] >= 1.0:
                horizon.append((busy, self._delivered))
                while len(horizon) > 2 and horizon[1][0] <= busy - RATE_HORIZON:
                    horizon.popleft()

    @property
    def measured(self) -> bool:
        """Whether RATE_MIN_BYTES have gone through: rate() says what the link carries."""
        return self._delivered >= RATE_MIN_BYTES

    def rate(self, now: float) -> float | None:
        """Bytes per second of calls in flight over the last RATE_WINDOW of them, or over the last
        RATE_HORIZON where that is slower; None until RATE_MIN_BYTES have gone through."""
        busy_now = self.busy(now)
        busy, delivered = self._marks[0]
        seconds, carried = busy_now - busy, self._delivered - delivered
        if carried < RATE_MIN_BYTES or seconds <= 0:
            return None
        since, before = self._horizon[0]
        return min(carried / seconds, (self._delivered - before) / (busy_now - since))
