"""The cyclic garbage collector while the command line starts: paused, then resumed when the
command's work begins.

Start-up creates a great many objects (modules, classes, functions) and frees almost none, so
each collection the allocations set off meanwhile walks them all again for nothing. When the
work begins, what start-up made is moved out of every later collection for good (gc.freeze),
and the collector runs as usual: a long run collects its own garbage.
"""

from __future__ import annotations

import gc

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
