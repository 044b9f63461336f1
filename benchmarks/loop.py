"""The event loop the benchmark's own processes run on: uvloop where it is installed, as
bulk-upload runs, else asyncio's. One home for the ideal and floor clients and the lean server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run `main()` to its end on uvloop where it is installed, else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
