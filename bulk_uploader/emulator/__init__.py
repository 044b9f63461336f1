"""The local SpeechSense emulator: server, TalkService and IAM servicers, request checks, talk store, faults."""

from bulk_uploader.emulator.faults import FaultOptions
from bulk_uploader.emulator.server import DEFAULT_CONNECTIONS, Emulator, EmulatorOptions, mint_token
from bulk_uploader.emulator.store import StoredTalk, TalkStore, messages_digest

__all__ = [
    "DEFAULT_CONNECTIONS",
    "Emulator",
    "EmulatorOptions",
    "FaultOptions",
    "StoredTalk",
    "TalkStore",
    "messages_digest",
    "mint_token",
]
