"""Whether the media extra (PyAV, which bundles FFmpeg) is installed, without loading it.

PyAV is optional (its wheels carry GPL encoders the uploader never uses): a plain upload and
a dry run do not need it; --transcode, the emulator and sample data do, and say so.
"""

from __future__ import annotations

import importlib.util

from bulk_uploader.errors import ConfigError

INSTALL = "pip install 'bulk-upload[media]'"


def available() -> bool:
    """Whether PyAV can be imported."""
    return importlib.util.find_spec("av") is not None


def require(what: str) -> None:
    """Raise ConfigError naming `what` and the install command when PyAV is not installed."""
    if not available():
        raise ConfigError(f"{what} needs FFmpeg, which the media extra brings: {INSTALL} "
                          "(PyAV; its licences are in README.md, \"Formats and conversion\")")
