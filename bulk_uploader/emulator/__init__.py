"""The local SpeechSense emulator: server, TalkService and IAM servicers, request checks, reads and their quota, talk store, faults."""

from bulk_uploader.emulator.faults import FaultOptions
from bulk_uploader.emulator.reading import DOCUMENTED_READ_QUOTA, Processing
from bulk_uploader.emulator.server import DEFAULT_CONNECTIONS, Emulator, EmulatorOptions, mint_token
from bulk_uploader.emulator.store import StoredTalk, TalkStore, messages_digest

__all__ = [
    "DEFAULT_CONNECTIONS",
    "DOCUMENTED_READ_QUOTA",
    "Emulator",
    "EmulatorOptions",
    "FaultOptions",
    "Processing",
    "StoredTalk",
    "TalkStore",
    "messages_digest",
    "mint_token",
]
