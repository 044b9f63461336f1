"""The C allocator's settings for big messages: the one home of ctypes.

glibc serves an allocation over its mmap threshold (128 KiB to start) with fresh pages
from the kernel and gives them back on free, and it trims free memory off the top of the
heap once more than twice that threshold sits there. A 1 MiB stream chunk passes through
several such buffers (protobuf's encoder, the bytes it returns, gRPC's copy), so every
message would fault its pages in again. Keeping those buffers in the heap for reuse
makes streaming faster and cheaper in CPU, at the cost of at most TRIM_THRESHOLD of free
memory the process keeps; the figures are in benchmarks/RESULTS.md (64 MiB streaming,
with and without this setting).
"""

from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # allocations below this come from the heap (glibc's own ceiling)
TRIM_THRESHOLD = 32 * 1024 * 1024  # free memory kept at the top of the heap (16 MiB was too little to help)


def keep_big_buffers() -> bool:
    """Tune glibc's allocator for this process; False where the C library is not glibc."""
    try:
        if not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"):
            return False
        libc = ctypes.CDLL(None)  # the process's own symbols, glibc's among them (find_library would run ldconfig)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    except (OSError, ValueError, AttributeError):  # no confstr name (not glibc), no mallopt
        return False
