"""Exceptions bulk-upload raises. A failed or invalid row is never an exception: it is a
result written to the results file. Exceptions stop a whole run:

    BulkUploadError            base of everything raised on purpose
    ├── ConfigError            options, credentials or a schema file make no sense (exit 2)
    │   └── MappingError       a mapping file is unusable (names its line and key)
    ├── AuthError              the service refused the credentials (exit 2, run stopped at once)
    └── ResultsFileError       the results file cannot be read or written (exit 2)

gRPC errors are translated to rows' outcomes in exactly one place,
bulk_uploader.transport.classify().
"""

from __future__ import annotations


class BulkUploadError(Exception):
    """Base class: raised when a run cannot go on."""


class ConfigError(BulkUploadError):
    """Raised when options, credentials or a schema file are unusable, before anything is sent."""


class AuthError(BulkUploadError):
    """Raised when the service answers UNAUTHENTICATED or PERMISSION_DENIED: every row would fail."""


class ResultsFileError(BulkUploadError):
    """Raised when the results file cannot be read or appended to."""
