"""bulk-upload: move call recordings and chats into Yandex SpeechSense over gRPC, fast and exactly once.

The library surface: build UploadOptions, pick a Reporter, await run_upload().
"""

from bulk_uploader.auth import Credentials, TokenCommand
from bulk_uploader.errors import AuthError, BulkUploadError, ConfigError, ResultsFileError
from bulk_uploader.model import RowResult
from bulk_uploader.options import UploadOptions
from bulk_uploader.pipeline import RunControl, RunSummary, run_upload
from bulk_uploader.progress import PlainReporter, QuietReporter, Reporter, RichReporter, make_reporter

__version__ = "0.1.0"

__all__ = [
    "AuthError",
    "BulkUploadError",
    "ConfigError",
    "Credentials",
    "TokenCommand",
    "PlainReporter",
    "QuietReporter",
    "Reporter",
    "ResultsFileError",
    "RichReporter",
    "RowResult",
    "RunControl",
    "RunSummary",
    "UploadOptions",
    "make_reporter",
    "run_upload",
]
