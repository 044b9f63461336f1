"""The sender: carries one row to its outcome, one attempt at a time, under the run's RetryPolicy.

Each attempt waits for a slot of the limiter (and the --rps pacer) and goes out through the
transport, which journals it (the recorder's `sending` line) once a connection has room for
it, just before it leaves: a call still waiting for room is not written down as sent. After a failure the
policy decides: wait and try again, or give up. A row with a dedupe key whose outcome is
unknown (an attempt of this run or of an earlier one) is settled before it is sent again:
it is handed to the Settler, which asks about it in a batch of reads, and while it waits
it is parked: the worker that carried it is replaced, so the waiting holds up no other row.
A row the reads found stored is done; one they found not stored is sent again; one they
could not settle stays ambiguous.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, aclosing, nullcontext
from typing import TYPE_CHECKING

from bulk_uploader import reader, transcode
from bulk_uploader.audio import AudioInfo
from bulk_uploader.clock import Clock
from bulk_uploader.errors import AuthError, CallFailure, RowInvalid, ServiceUnreachable, SettleConflict
from bulk_uploader.flow import AdaptiveLimiter, Pacer
from bulk_uploader.model import Job, RowResult
from bulk_uploader.options import UploadOptions
from bulk_uploader.pipeline.control import RunControl
from bulk_uploader.pipeline.recorder import Recorder
from bulk_uploader.pipeline.refusals import Refusals
from bulk_uploader.records import Record, record
from bulk_uploader.retry import Attempts, RetryPolicy
from bulk_uploader.stats import RunStats
from bulk_uploader.transcode import Plan
from bulk_uploader.transport.messages import chunk_prefix, chunk_request, place_upload, upload_room
from bulk_uploader.validation import Validator

if TYPE_CHECKING:
    from bulk_uploader.chat import ChatMessage
    from bulk_uploader.settle import Settler
    from bulk_uploader.transport import Transport


@record(slots=True)
class _Payload(Record):
    """What an attempt sends: a whole file's request, a streamed file's format, or a chat's messages."""

    rpc: str
    size: int  # bytes of audio (or of the chat)
    request: bytes | None = None  # Upload of a whole file, in wire form; None between attempts (read again)
    info: AudioInfo | None = None
    messages: tuple[ChatMessage, ...] = ()
    plan: Plan | None = None  # a converted file: made as it is sent
    cautious: bool = False  # a stream whose last answer gRPC lost: give the server time to answer early

    def __init__(self, rpc: str, size: int, request: bytes | None = None, info: AudioInfo | None = None,
                 messages: tuple[ChatMessage, ...] = (), plan: Plan | None = None,
                 cautious: bool = False) -> None:  # made once a row (bulk_uploader.records)
        self.rpc = rpc
        self.size = size
        self.request = request
        self.info = info
        self.messages = messages
        self.plan = plan
        self.cautious = cautious


async def _whole(job: Job, transcode: bool) -> tuple[bytes | None, Plan]:
    """A file sent whole: its Upload request (None when it is converted, so streamed) and its plan.

    The file is read straight into the request's bytes: while the call is in flight they are
    held twice, the request and gRPC's copy (bulk_uploader.budget)."""
    buffer, plan = await reader.read_whole(job, transcode, upload_room)
    if plan.converted:
        return None, plan
    return place_upload(job, plan.info, buffer), plan


async def _paced(chunks: AsyncGenerator[tuple[bytes, int], None], pacer: Pacer | None
                 ) -> AsyncGenerator[tuple[bytes, int], None]:
    """Chunks (each a request and its audio bytes) at no more than --max-mbps."""
    async with aclosing(chunks):  # closed with this one: a stream given up lets go of its file at once
        async for chunk in chunks:
            if pacer is not None:
                await pacer.take(chunk[1])
            yield chunk
            del chunk  # not held while the next one is read


async def _payload(job: Job, result: RowResult, options: UploadOptions, validator: Validator, stats: RunStats
                   ) -> _Payload:
    """What the row's attempts send (a chat's messages read and checked; a small file read whole)."""
    if job.kind == "update":
        return _Payload("Upload(update)", job.size)
    if job.kind == "chat":
        from bulk_uploader.chat import encoded_size  # only chat rows load it

        messages = job.messages or await reader.read_chat(job, validator)
        result.bytes = encoded_size(messages)
        return _Payload("UploadText", result.bytes, messages=messages)
    if job.size <= options.stream_threshold and not (job.swap_channels or job.right_path):
        request, plan = await _whole(job, options.transcode)
    else:
        request, plan = None, await reader.inspect(job, options.transcode)
    result.source_format, result.sent_format = plan.source, plan.info.describe()
    if plan.converted:
        stats.converted[plan.probes[0].name] += 1
        return _Payload("UploadAsStream", plan.estimate, info=plan.info, plan=plan)
    if request is not None:
        result.bytes = job.size
        return _Payload("Upload", job.size, request=request, info=plan.info)
    return _Payload("UploadAsStream", job.size, info=plan.info)


class Sender:
    """Sends rows; everything it shares with other senders (limiter, pacers, policy) is passed in."""

    def __init__(self, options: UploadOptions, transport: Transport, validator: Validator, recorder: Recorder,
                 stats: RunStats, policy: RetryPolicy, limiter: AdaptiveLimiter, control: RunControl,
                 clock: Clock) -> None:
        self.options = options
        self.transport = transport
        self.validator = validator
        self.recorder = recorder
        self.stats = stats
        self.policy = policy
        self.limiter = limiter
        self.control = control
        self.clock = clock
        self.refusals = Refusals(options.concurrency)
        self.request_pacer = Pacer(options.rps, clock) if options.rps else None
        self.byte_pacer = Pacer(options.max_mbps * 1e6 / 8, clock) if options.max_mbps else None
        self.settler: Settler | None = None  # with --dedupe-key: settles rows whose outcome is unknown
        # While a row waits (to be settled, or before its next try after an unknown outcome)
        # it is parked: the run lets another worker take rows meanwhile.
        self.parking: Callable[[], AbstractAsyncContextManager[object]] = nullcontext
        self.started = clock.monotonic()  # an unknown outcome of an earlier run happened before this

    async def process(self, job: Job, unknown_before: int) -> RowResult | None:
        """The row's outcome; None when the run is stopping for a reason all rows share (told to control)."""
        if job.connection_id in self.refusals.blocked:
            self.stats.not_sent += 1  # its connection refuses every row alike: left for the run after the fix
            return None
        started = self.clock.monotonic()
        result = RowResult(job.key, "failed", line=job.line, audio_path=job.audio_path,
                           unknown_outcomes=unknown_before)
        try:
            result.talk_id = await self.deliver(job, result)
            result.status = "uploaded"
            self.refusals.succeeded(job.connection_id)
        except RowInvalid as exc:
            result.status, result.code, result.error = "invalid", exc.code, str(exc)
        except SettleConflict as exc:
            result.status, result.code, result.error = "failed", "DEDUPE_CONFLICT", str(exc)
        except CallFailure as failure:
            if failure.auth:
                self.control.fail(AuthError(
                    f"the service refused the credentials ({failure.code}: {failure.message}); "
                    "stopped without trying further rows"
                ))
                return None
            result.code, result.error = failure.code, failure.message
            if not failure.transient and self.refusals.refused(job.connection_id, failure):
                self.stats.blocked[job.connection_id] = self.refusals.blocked[job.connection_id]
                self.recorder.reporter.message(
                    f"connection {job.connection_id}: the service refused {self.refusals.threshold} rows alike "
                    f"({failure}); not sending its other rows")
            if result.unknown_outcomes:
                # It may be stored: never call that "failed". The next run reconciles or re-sends it.
                result.status = "ambiguous"
                result.error = f"outcome unknown after {result.unknown_outcomes} attempt(s); last: {failure}"
        except (AuthError, ServiceUnreachable) as exc:
            self.control.fail(exc)
            return None
        result.seconds = self.clock.monotonic() - started
        return result

    async def deliver(self, job: Job, result: RowResult) -> str:
        """Bring one row to the service; returns the talk id or raises CallFailure / RowInvalid / SettleConflict."""
        payload = await _payload(job, result, self.options, self.validator, self.stats)
        result.rpc = payload.rpc
        attempts: Attempts | None = None  # made at the first failure: most rows never need one
        unknown_at = self.started  # when the last attempt whose outcome is unknown ended
        while True:
            if result.unknown_outcomes and self._settles(job):
                found = await self._settled(job, result, payload, unknown_at)
                if found is not None:
                    return found
            result.attempts += 1
            try:
                if payload.rpc == "Upload" and payload.request is None:
                    # A row waiting for its next try held none.
                    payload.request, plan = await _whole(job, self.options.transcode)
                    payload.info = plan.info
                return await self.attempt(job, result, payload)
            except CallFailure as failure:
                # Until the next try the row holds no bytes: neither the request nor, through the
                # failure's frames, the call that sent it.
                payload.request = None
                failure.__traceback__ = failure.__context__ = None
                if failure.outcome_unknown:
                    result.unknown_outcomes += 1
                    unknown_at = self.clock.monotonic()
                payload.cautious = payload.cautious or failure.status_lost
                settles = bool(result.unknown_outcomes) and self._settles(job)
                attempts = attempts or self.policy.attempts()
                try:
                    await self._after(attempts, failure, parked=settles)
                except CallFailure as final:
                    if not settles or final.auth:
                        raise
                    # Out of retries: the reads still tell "stored" from "failed".
                    if (found := await self._settled(job, result, payload, unknown_at)) is None:
                        raise
                    return found

    def _settles(self, job: Job) -> bool:
        return self.settler is not None and job.dedupe is not None

    async def _after(self, attempts: Attempts, failure: CallFailure, *, parked: bool) -> None:
        """Wait before the next try as the policy says (parked, when the row is to be settled first)."""
        async with self.parking() if parked else nullcontext():
            await attempts.after(failure)

    async def _settled(self, job: Job, result: RowResult, payload: _Payload, since: float) -> str | None:
        """The row's stored talk id (recorded as found), or None once the reads said it is not stored."""
        assert self.settler is not None
        async with self.parking():
            found = await self.settler.settle(job, since)
        if found is not None:
            result.reconciled, result.rpc = True, "Search"
            return found
        result.unknown_outcomes = 0  # every earlier attempt is known not to have stored a talk
        return None

    async def attempt(self, job: Job, result: RowResult, payload: _Payload) -> str:
        """One call, within the in-flight limit and the rate caps, journaled just before it leaves."""
        outage = self.policy.outage
        if outage is not None and outage.since is not None:
            await outage.wait()  # no new call while the service cannot be reached
        limiter = self.limiter
        if not limiter.try_acquire():  # the usual case: a free slot, taken without a coroutine
            await limiter.acquire()
        try:
            if self.request_pacer is not None:
                await self.request_pacer.take()
            sent_at = self.clock.monotonic()
            self.stats.calls += 1
            try:
                talk_id = await self._call(job, payload, result)
            except CallFailure as failure:
                failure.sent_at = sent_at
                raise
            finally:
                self.stats.calls -= 1
            self.policy.succeeded(sent_at)
            if payload.plan is not None:
                result.bytes = payload.size  # what the conversion made
            return talk_id
        finally:
            limiter.release()

    async def _call(self, job: Job, payload: _Payload, result: RowResult) -> str:
        transport, options = self.transport, self.options

        def journal() -> Awaitable[None]:  # once a connection is taken for the call, just before it leaves
            return self.recorder.journal(job, result)

        if job.kind == "update":
            return await transport.update(job, options.timeout, journal)
        timeout = options.attempt_timeout(payload.size)
        if job.kind == "chat":
            return await transport.upload_text(job, payload.messages, timeout, journal)
        assert payload.info is not None
        if payload.request is not None:
            if self.byte_pacer is not None:
                await self.byte_pacer.take(payload.size)
            talk_id = await transport.upload(job, payload.request, timeout, journal)
            self.stats.bytes_sent += payload.size
            return talk_id
        result.bytes = 0  # what this attempt puts on the wire: all of it, unless it stops short

        def source() -> AsyncGenerator[tuple[bytes, int], None]:  # again after a full connection refused the stream
            self.stats.bytes_sent -= result.bytes  # what the refused try wrote never arrived
            result.bytes = 0
            if payload.plan is not None:
                return _paced(transcode.stream(payload.plan, options.chunk_size, chunk_request), self.byte_pacer)
            return _paced(reader.read_chunks(job, options.chunk_size, chunk_prefix), self.byte_pacer)

        def sent(n: int) -> None:
            result.bytes += n
            self.stats.bytes_sent += n

        talk_id = await transport.upload_stream(job, payload.info, source, timeout, sent, size=payload.size,
                                                cautious=payload.cautious, ready=journal)
        payload.size = result.bytes
        return talk_id

