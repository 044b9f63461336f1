"""Credentials: a fixed API key or IAM token, a command that prints fresh IAM tokens, or a
service account key exchanged for IAM tokens.

Secrets never leave this module except in the `authorization` header: repr() hides them
and no error message quotes them.
"""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import field
from typing import TYPE_CHECKING, Protocol

from bulk_uploader.clock import SYSTEM_CLOCK, Clock
from bulk_uploader.errors import AuthError, ConfigError
from bulk_uploader.records import FrozenRecord, record

if TYPE_CHECKING:  # cryptography loads only for runs that use --sa-key
    from bulk_uploader.sakey import ServiceAccountKey

# The vendor advises refreshing IAM tokens every hour; they live at most 12 hours.
DEFAULT_TOKEN_REFRESH = 3600.0
MAX_TOKEN_LIFETIME = 12 * 3600.0  # an IAM token lives at most this long
REFUSED_TRIES = 3  # tries of the token source after the service refused the token in hand


class AuthProvider(Protocol):
    """Where the `authorization` header comes from."""

    @property
    def kind(self) -> str:
        """Human name of the credential, for messages."""

    def header(self) -> str:
        """The current `authorization` header value."""

    async def start(self) -> None:
        """Obtain the first credential (raises ConfigError or AuthError when it cannot)."""

    async def refresh(self, stale: str) -> bool:
        """The service refused `stale`: get a new credential; False when there is nothing to refresh."""

    async def keep_fresh(self) -> None:
        """Run for the whole upload, refreshing ahead of expiry (returns at once if nothing expires)."""


@record(slots=True)
class Credentials(FrozenRecord):
    """An API key or an IAM token given once. repr() never shows the secret."""

    scheme: str  # "Api-Key" or "Bearer"
    secret: str = field(repr=False)

    def __post_init__(self) -> None:
        if self.scheme not in ("Api-Key", "Bearer"):
            raise ConfigError(f"unknown credential scheme {self.scheme!r}")
        if not self.secret or any(c.isspace() for c in self.secret):
            raise ConfigError(f"the {self.kind} is empty or contains white space")

    @property
    def kind(self) -> str:
        return "API key" if self.scheme == "Api-Key" else "IAM token"

    def header(self) -> str:
        return f"{self.scheme} {self.secret}"

    async def start(self) -> None:
        pass

    async def refresh(self, stale: str) -> bool:
        return False

    async def keep_fresh(self) -> None:
        pass


class _RefreshingToken:
    """An IAM token obtained on start, re-obtained before it expires and when the service refuses it."""

    kind = "IAM token"

    def __init__(self, refresh_every: float, clock: Clock = SYSTEM_CLOCK) -> None:
        if refresh_every <= 0:
            raise ConfigError("the token refresh interval must be positive")
        self.refresh_every = refresh_every
        self.clock = clock
        self._token = ""
        self._fetched = 0.0
        self._lifetime: float | None = None  # seconds the current token lives, when told
        self._took = 0.0  # seconds the current token took to get
        self._failures = 0  # renewals failed in a row since the last token came
        self._retry_at = 0.0
        import anyio  # here, not at the top: commands that hold no refreshing credential never load it

        self._lock = anyio.Lock()

    def header(self) -> str:
        return f"Bearer {self._token}"

    async def _obtain(self) -> tuple[str, float | None]:
        """A fresh token and how many seconds it lives (None: not told); raises AuthError."""
        raise NotImplementedError

    async def _fetch(self) -> None:
        asked = self.clock.monotonic()
        token, lifetime = await self._obtain()
        self._token, self._lifetime, self._fetched = token, lifetime, self.clock.monotonic()
        self._took = self._fetched - asked
        self._failures = 0

    def _refresh_due(self) -> float:
        """Monotonic time of the next refresh: the interval, or sooner for a short-lived token: with
        a fifth of its life left, or twice what getting it took, so the next comes before it expires."""
        interval = self.refresh_every
        if self._lifetime is not None:
            interval = min(interval, max(0.05, self._lifetime - max(0.2 * self._lifetime, 2 * self._took)))
        return self._fetched + interval

    def _valid_until(self) -> float:
        """Until when the current token can still be used (a token command's: the longest an IAM token lives)."""
        return self._fetched + (self._lifetime if self._lifetime is not None else MAX_TOKEN_LIFETIME)

    async def start(self) -> None:
        await self._fetch()

    async def refresh(self, stale: str) -> bool:
        """The service refused `stale`: get another, trying a failing source REFUSED_TRIES times."""
        async with self._lock:
            if self.header() != stale:  # somebody refreshed since that call was made
                return True
            for attempt in range(REFUSED_TRIES):
                try:
                    await self._fetch()
                    return True
                except AuthError:
                    if attempt == REFUSED_TRIES - 1:
                        raise
                    await self.clock.sleep(2.0**attempt)
        return True

    async def keep_fresh(self) -> None:
        """Renew ahead of expiry; a failing source is tried again with backoff while the token
        in hand is still valid, and its error raised only once it is not."""
        while True:
            due = self._refresh_due() if not self._failures else self._retry_at
            await self.clock.sleep(max(0.0, due - self.clock.monotonic()))
            async with self._lock:
                now = self.clock.monotonic()
                if now < (self._refresh_due() if not self._failures else self._retry_at):
                    continue
                try:
                    await self._fetch()
                except AuthError:
                    self._failures += 1
                    if now >= self._valid_until():
                        raise
                    self._retry_at = min(now + min(60.0, 2.0**self._failures), self._valid_until())


class TokenCommand(_RefreshingToken):
    """IAM tokens printed by a command (e.g. the vendor's CLI), re-run before expiry and on refusal."""

    def __init__(self, command: str, *, refresh_every: float = DEFAULT_TOKEN_REFRESH, timeout: float = 60.0,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        if not command.strip():
            raise ConfigError("--iam-token-command is empty")
        super().__init__(refresh_every, clock)
        self.command = command
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"TokenCommand({self.command!r}, refresh_every={self.refresh_every})"

    async def _obtain(self) -> tuple[str, float | None]:
        # subprocess.run in a thread, not the event loop's own process spawning: uvloop
        # forks, and a fork while gRPC's threads are busy runs gRPC's fork handlers in the
        # child, which can crash it; subprocess starts the child without them (vfork/posix_spawn).
        run = functools.partial(subprocess.run, ["/bin/sh", "-c", self.command], capture_output=True,
                                stdin=subprocess.DEVNULL, timeout=self.timeout, check=False)
        try:
            import anyio.to_thread

            done = await anyio.to_thread.run_sync(run, abandon_on_cancel=True)
        except subprocess.TimeoutExpired:
            raise AuthError(f"--iam-token-command did not finish within {self.timeout:g} s") from None
        except OSError as exc:
            raise AuthError(f"--iam-token-command could not run: {exc.strerror}") from None
        token = done.stdout.decode("utf-8", "replace").strip()
        if done.returncode != 0:
            # stderr is the command's own complaint; it never holds the token we did not get.
            reason = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
            raise AuthError(f"--iam-token-command exited with status {done.returncode}: {reason[0][:200]}")
        if not token or any(c.isspace() for c in token):
            raise AuthError("--iam-token-command printed no token (expected one line on standard output)")
        return token, None


# Exchanges a signed JWT for (IAM token, seconds it lives or None); bulk_uploader.transport.IamTokenExchange.
JwtExchange = Callable[[str], Awaitable[tuple[str, float | None]]]


class ServiceAccountAuth(_RefreshingToken):
    """IAM tokens for a service account key (--sa-key): a signed JWT exchanged at the IAM token service."""

    def __init__(self, key: ServiceAccountKey, exchange: JwtExchange, *,
                 refresh_every: float = DEFAULT_TOKEN_REFRESH, clock: Clock = SYSTEM_CLOCK) -> None:
        super().__init__(refresh_every, clock)
        self.key = key
        self._exchange = exchange

    def __repr__(self) -> str:
        return f"ServiceAccountAuth(key_id={self.key.key_id!r})"

    async def _obtain(self) -> tuple[str, float | None]:
        return await self._exchange(self.key.jwt())
