"""The cyclic garbage collector: paused while the command line starts, resumed when the
command's work begins, and for an upload, collecting its young generation less often.

Start-up creates a great many objects (modules, classes, functions) and frees almost none, so
each collection the allocations set off meanwhile walks them all again for nothing. When the
work begins, what start-up made is moved out of every later collection for good (gc.freeze),
and the collector runs again: a long run collects its own garbage.

An upload keeps hundreds of calls in flight: their objects survive each young collection
and are promoted, so the older generations grow and are scanned again and again. It
collects the young generation after YOUNG_COLLECTION_THRESHOLD allocations instead of
Python's 700 (collect_less); the figures are in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import gc

YOUNG_COLLECTION_THRESHOLD = 10_000
_paused = False


def pause() -> None:
    """Stop collecting until resume(); nothing to do when the collector is already off."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume() -> None:
    """Collect again, if pause() stopped it, leaving out what exists by now (start-up's objects)."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()


def collect_less() -> None:
    """Collect the young generation after YOUNG_COLLECTION_THRESHOLD allocations (process-wide)."""
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, middle, oldest)
