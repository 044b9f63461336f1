"""Exceptions bulk-upload raises. A failed or invalid row is never an exception to a caller:
it is a result written to the results file. Exceptions that leave run_upload stop a whole run:

    BulkUploadError            base of everything raised on purpose
    ├── ConfigError            options, credentials or a file of settings make no sense (exit 2)
    │   ├── MappingError       a mapping file is unusable (names its line and key)
    │   └── SchemaError        a connection schema file is unusable
    ├── AuthError              the service refused the credentials
    ├── ResultsFileError       the results file cannot be read or written
    └── ServiceUnreachable     the service could not be reached for longer than the outage patience

Raised before anything is sent they exit 2; once rows are being sent, AuthError,
ResultsFileError and ServiceUnreachable stop the run with its summary (exit 3).

Three more are raised and caught inside a run, one row at a time, and end as that row's
results line; they never reach a caller:

    RowInvalid                 a row cannot be sent (its `code` names the kind)
    CallFailure                a call the service or the network did not complete
    SettleConflict             a stored talk has the row's dedupe value but other fields (bulk_uploader.settle)

gRPC errors are translated to CallFailure in exactly one place, bulk_uploader.transport.status.classify().
"""

from __future__ import annotations

from bulk_uploader.records import Record, record

TRANSIENT_CODES = frozenset({"UNAVAILABLE", "RESOURCE_EXHAUSTED", "INTERNAL", "ABORTED", "DEADLINE_EXCEEDED"})
AUTH_CODES = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED"})
# Answers after which the request may nevertheless have been carried out: the call was
# lost, timed out or broke after the request left. RESOURCE_EXHAUSTED, ABORTED and every
# definite refusal say it was not.
UNKNOWN_OUTCOME_CODES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL", "UNKNOWN", "CANCELLED", "DATA_LOSS"})


class BulkUploadError(Exception):
    """Base class: raised when a run cannot go on."""


class ConfigError(BulkUploadError):
    """Raised when options, credentials or a settings file are unusable, before anything is sent."""


class MappingError(ConfigError):
    """Raised when a mapping file cannot be read or makes no sense (names the line and key)."""


class SchemaError(ConfigError):
    """Raised when a connection schema file cannot be read or makes no sense."""


class AuthError(BulkUploadError):
    """Raised when the service answers UNAUTHENTICATED or PERMISSION_DENIED: every row would fail."""


class ResultsFileError(BulkUploadError):
    """Raised when the results file cannot be read or appended to."""


class ServiceUnreachable(BulkUploadError):
    """Raised when the service stays unreachable for longer than the outage patience."""


class RowInvalid(ValueError):
    """Raised when a row cannot be sent; `code` is a short kind for the results file."""

    def __init__(self, message: str, code: str = "INVALID_ROW") -> None:
        super().__init__(message)
        self.code = code


@record(eq=False)
class CallFailure(Record, Exception):
    """Raised for a call the service (or the network) did not complete."""

    code: str  # gRPC status name
    message: str
    pushback: float | None = None  # seconds the server asked us to wait, if it said
    request_complete: bool = True  # the whole request had left (False: a stream cut short)
    auth_header: str = ""  # the credential the call carried (to refresh exactly that one)
    sent_at: float = 0.0  # monotonic time the call started (a pushback counts from about then)
    status_lost: bool = False  # the server ended an unfinished stream, and gRPC lost its answer
    not_sent: bool = False  # the call never reached the service (no connection, a refused stream)
    refused_stream: bool = False  # not sent because the server refused the stream (often: its connection was full)

    def __init__(self, code: str, message: str, pushback: float | None = None, request_complete: bool = True,
                 auth_header: str = "", sent_at: float = 0.0, status_lost: bool = False, not_sent: bool = False,
                 refused_stream: bool = False) -> None:  # made once a failed call (bulk_uploader.records)
        self.code = code
        self.message = message
        self.pushback = pushback
        self.request_complete = request_complete
        self.auth_header = auth_header
        self.sent_at = sent_at
        self.status_lost = status_lost
        self.not_sent = not_sent
        self.refused_stream = refused_stream

    @property
    def outcome_unknown(self) -> bool:
        """The service may have stored the talk although the call failed."""
        return self.request_complete and not self.not_sent and self.code in UNKNOWN_OUTCOME_CODES

    @property
    def transient(self) -> bool:
        """Worth trying again after a pause."""
        return self.code in TRANSIENT_CODES

    @property
    def auth(self) -> bool:
        """The credentials were refused: every other call would fail the same way."""
        return self.code in AUTH_CODES

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class SettleConflict(Exception):
    """Raised when the service holds a talk with the row's dedupe value but other fields."""

    def __init__(self, key: str, value: str, talk_id: str, keys: list[str]) -> None:
        super().__init__(
            f"a talk with {key}={value!r} is stored (talk {talk_id}) but its fields differ in {', '.join(keys)}: "
            "not taken as this row's, and not sent again; check that talk, then run again to send the row"
        )
        self.talk_id, self.keys = talk_id, keys
