"""bulk-upload: move call recordings and chats into Yandex SpeechSense over gRPC, fast and exactly once.

The library surface: build UploadOptions, pick a Reporter, await run_upload().

Each name is imported when it is first used, so that a command imports only what it needs
(`bulk-upload --version` or `report` load neither the pipeline nor gRPC).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bulk_uploader.auth import Credentials, TokenCommand
    from bulk_uploader.errors import AuthError, BulkUploadError, ConfigError, ResultsFileError
    from bulk_uploader.model import RowResult
    from bulk_uploader.options import UploadOptions
    from bulk_uploader.pipeline import RunControl, RunSummary, run_upload
    from bulk_uploader.progress import PlainReporter, QuietReporter, Reporter, RichReporter, make_reporter

__version__ = "0.1.0"

_HOMES = {
    "AuthError": "errors",
    "BulkUploadError": "errors",
    "ConfigError": "errors",
    "ResultsFileError": "errors",
    "Credentials": "auth",
    "TokenCommand": "auth",
    "RowResult": "model",
    "UploadOptions": "options",
    "RunControl": "pipeline",
    "RunSummary": "pipeline",
    "run_upload": "pipeline",
    "PlainReporter": "progress",
    "QuietReporter": "progress",
    "Reporter": "progress",
    "RichReporter": "progress",
    "make_reporter": "progress",
}

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


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'bulk_uploader' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"bulk_uploader.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
