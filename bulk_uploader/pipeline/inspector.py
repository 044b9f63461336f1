"""The dry run's stand-in for the sender: it reads and checks what a send would read, and sends nothing.

Kept apart from the sender so that a dry run loads neither gRPC nor protobuf.
"""

from __future__ import annotations

from bulk_uploader import reader
from bulk_uploader.errors import RowInvalid
from bulk_uploader.model import Job, RowResult
from bulk_uploader.stats import RunStats
from bulk_uploader.validation import Validator


class Inspector:
    """A dry run's sender: reads and checks what a send would read, sends nothing."""

    def __init__(self, validator: Validator, stats: RunStats, transcode: bool = False) -> None:
        self.validator = validator
        self.stats = stats
        self.transcode = transcode

    async def process(self, job: Job, unknown_before: int) -> RowResult | None:
        """None for a row that would be sent (counted by format), else its `invalid` result."""
        try:
            if job.kind == "audio":
                plan = job.plan if job.plan is not None else await reader.inspect(job, self.transcode)
                if isinstance(plan, Exception):
                    raise plan  # met when its head was read ahead
                kind = plan.info.format._value_  # the member's text, without the `value` property's call
                if plan.converted:
                    self.stats.converted[plan.probes[0].name] += 1
                    kind += " (converted)"
            elif job.chat_path is not None:
                await reader.read_chat(job, self.validator)
                kind = "chat"
            else:
                kind = job.kind  # chat with inline messages, or a metadata update
        except RowInvalid as exc:
            return RowResult(job.key, "invalid", error=str(exc), code=exc.code, line=job.line,
                             audio_path=job.audio_path, bytes=job.size, unknown_outcomes=unknown_before)
        self.stats.valid += 1
        self.stats.valid_bytes += job.size
        self.stats.formats[kind] += 1
        return None
