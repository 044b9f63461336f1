"""Credentials: a fixed API key or IAM token, or a command that prints fresh IAM tokens.

Secrets never leave this module except in the `authorization` header: repr() hides them
and no error message quotes them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import anyio

from bulk_uploader.errors import AuthError, ConfigError

# The vendor advises refreshing IAM tokens every hour; they live at most 12 hours.
DEFAULT_TOKEN_REFRESH = 3600.0


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


@dataclass(frozen=True, slots=True)
class Credentials:
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


class TokenCommand:
    """IAM tokens printed by a command (e.g. the vendor's CLI), re-run before expiry and on refusal."""

    kind = "IAM token"

    def __init__(self, command: str, *, refresh_every: float = DEFAULT_TOKEN_REFRESH, timeout: float = 60.0) -> None:
        if not command.strip():
            raise ConfigError("--iam-token-command is empty")
        if refresh_every <= 0:
            raise ConfigError("the token refresh interval must be positive")
        self.command = command
        self.refresh_every = refresh_every
        self.timeout = timeout
        self._token = ""
        self._fetched = 0.0
        self._lock = anyio.Lock()

    def __repr__(self) -> str:
        return f"TokenCommand({self.command!r}, refresh_every={self.refresh_every})"

    def header(self) -> str:
        return f"Bearer {self._token}"

    async def _fetch(self) -> None:
        try:
            with anyio.fail_after(self.timeout):
                done = await anyio.run_process(["/bin/sh", "-c", self.command], check=False)
        except TimeoutError:
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
        self._token, self._fetched = token, time.monotonic()

    async def start(self) -> None:
        await self._fetch()

    async def refresh(self, stale: str) -> bool:
        async with self._lock:
            if self.header() == stale:  # nobody refreshed since that call was made
                await self._fetch()
        return True

    async def keep_fresh(self) -> None:
        while True:
            await anyio.sleep(max(0.0, self._fetched + self.refresh_every - time.monotonic()))
            async with self._lock:
                if time.monotonic() - self._fetched >= self.refresh_every:
                    await self._fetch()
