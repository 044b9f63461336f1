"""Faults the emulator injects on demand, to rehearse what a real migration meets.

Applied to every rpc, in this order: the in-flight cap and the requests-per-second cap
(both answered RESOURCE_EXHAUSTED at once, with a `grpc-retry-pushback-ms` trailer), then a
random error drawn from `error_rates` (before anything is stored); after the talk is
stored, with probability `lose_answer_rate` the caller gets UNAVAILABLE anyway ("stored,
answer lost"). With `lose_every` N, every Nth talk accepted is answered with its id and
never stored (a talk the service lost, for `bulk-upload verify` to find). Every answer
but the caps' comes `latency_ms` (+ jitter) after the call arrived; the IAM token service's
too, though no other fault touches it.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import grpc

TRANSIENT_FAULT_CODES = ("UNAVAILABLE", "RESOURCE_EXHAUSTED", "INTERNAL", "DEADLINE_EXCEEDED")


@dataclass(frozen=True, kw_only=True)
class FaultOptions:
    """What to inject. All rates are probabilities per call in [0, 1]; zero means off."""

    latency_ms: float = 0.0  # response time of every call (handling included)
    jitter_ms: float = 0.0  # plus a uniform random delay in [0, jitter_ms]
    error_rates: Mapping[str, float] = field(default_factory=dict)  # status name -> probability
    rps: float = 0.0  # requests per second admitted; the excess gets RESOURCE_EXHAUSTED
    rps_burst: float = 0.0  # token bucket size, in requests (0: one second's worth, rps)
    max_in_flight: int = 0  # calls processed at once; the excess gets RESOURCE_EXHAUSTED
    lose_answer_rate: float = 0.0  # store the talk, then answer UNAVAILABLE
    lose_every: int = 0  # answer every Nth new talk with its id but never store it (0: none)
    seed: int | None = None

    def __post_init__(self) -> None:
        for name, rate in self.error_rates.items():
            if name not in TRANSIENT_FAULT_CODES and not hasattr(grpc.StatusCode, name):
                raise ValueError(f"unknown status code {name!r}")
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"error rate for {name} must be in [0, 1]")
        if sum(self.error_rates.values()) > 1.0:
            raise ValueError("error rates add up to more than 1")
        for name in ("latency_ms", "jitter_ms", "rps", "rps_burst", "max_in_flight", "lose_answer_rate", "lose_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.lose_answer_rate > 1:
            raise ValueError("lose_answer_rate must be in [0, 1]")

    @classmethod
    def parse_rates(cls, specs: list[str]) -> dict[str, float]:
        """Read `CODE=RATE` strings (e.g. `UNAVAILABLE=0.2`) as given on the command line."""
        rates = {}
        for spec in specs:
            name, sep, rate = spec.partition("=")
            if not sep:
                raise ValueError(f"expected CODE=RATE, got {spec!r}")
            rates[name.strip().upper()] = float(rate)
        return rates


class FaultInjector:
    """Decides, per call, which fault (if any) to inject; the clock is monotonic seconds."""

    def __init__(self, options: FaultOptions) -> None:
        self.options = options
        self._random = random.Random(options.seed)
        self._in_flight = 0
        self._burst = max(1.0, options.rps_burst or options.rps)
        self._tokens = self._burst
        self._refilled = time.monotonic()
        self._new_talks = 0

    def enter(self) -> str | None:
        """Admit a call: None, or why it is refused (caller answers RESOURCE_EXHAUSTED)."""
        opts = self.options
        if opts.max_in_flight and self._in_flight >= opts.max_in_flight:
            return f"too many calls in flight (limit {opts.max_in_flight})"
        if opts.rps:
            now = time.monotonic()
            # Token bucket: rate R admits R calls per second after a burst of at most _burst.
            self._tokens = min(self._burst, self._tokens + (now - self._refilled) * opts.rps)
            self._refilled = now
            if self._tokens < 1.0:
                return f"request rate limit exceeded ({opts.rps:g}/s)"
            self._tokens -= 1.0
        self._in_flight += 1
        return None

    @property
    def in_flight(self) -> int:
        """Calls admitted and not yet finished."""
        return self._in_flight

    def leave(self) -> None:
        """A call admitted by enter() has finished."""
        self._in_flight -= 1

    def pushback_ms(self) -> int:
        """How long a refused caller should wait before trying again."""
        if self.options.rps:
            return max(1, math.ceil(1000 * max(0.0, 1.0 - self._tokens) / self.options.rps))
        return 50

    def delay(self) -> float:
        """Seconds to sleep before answering."""
        opts = self.options
        jitter = self._random.uniform(0.0, opts.jitter_ms) if opts.jitter_ms else 0.0
        return (opts.latency_ms + jitter) / 1000.0

    def error(self) -> grpc.StatusCode | None:
        """A status code to fail this call with, or None."""
        roll = self._random.random()
        for name, rate in self.options.error_rates.items():
            if roll < rate:
                return grpc.StatusCode[name]
            roll -= rate
        return None

    def lose_answer(self) -> bool:
        """Whether to answer UNAVAILABLE after storing the talk."""
        return self.options.lose_answer_rate > 0 and self._random.random() < self.options.lose_answer_rate

    def lose_talk(self) -> bool:
        """Whether to lose the new talk being stored (every `lose_every`th)."""
        self._new_talks += 1
        return self.options.lose_every > 0 and self._new_talks % self.options.lose_every == 0
