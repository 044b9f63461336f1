"""RunControl: how a caller (the CLI's signal handler, a library user) ends a run early.

The control only records what was asked; the orchestrator watches it from a task of its
own and cancels what it owns, so no caller ever starts work inside the run's task group.
"""

from __future__ import annotations

import anyio

from bulk_uploader.errors import BulkUploadError


class RunControl:
    """stop() finishes the rows in flight (within the grace), abort() does not wait; a second stop() aborts."""

    def __init__(self) -> None:
        self.stopping = False
        self.aborted = False
        self.failure: BulkUploadError | None = None  # why the run stopped by itself (refused credentials, ledger)
        self._stop_event: anyio.Event | None = None
        self._abort_event: anyio.Event | None = None

    def stop(self) -> None:
        """Take no new rows; let uploads in flight finish within the grace period. Twice: abort."""
        if self.stopping:
            self.abort()
            return
        self.stopping = True
        if self._stop_event is not None:
            self._stop_event.set()

    def abort(self) -> None:
        """End the run now; rows in flight stay unrecorded and are retried by the next run."""
        self.stopping = self.aborted = True
        for event in (self._stop_event, self._abort_event):
            if event is not None:
                event.set()

    def fail(self, error: BulkUploadError) -> None:
        """Abort for a reason every other row shares; run_upload raises the first such error."""
        if self.failure is None:
            self.failure = error
        self.abort()

    async def wait_stopping(self) -> None:
        """Return once stop() or abort() has been called."""
        if self._stop_event is None:
            self._stop_event = anyio.Event()
        if not self.stopping:
            await self._stop_event.wait()

    async def wait_aborted(self) -> None:
        """Return once abort() has been called."""
        if self._abort_event is None:
            self._abort_event = anyio.Event()
        if not self.aborted:
            await self._abort_event.wait()
