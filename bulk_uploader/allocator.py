"""The C allocator's settings for big messages: the one home of ctypes.

glibc serves an allocation over its mmap threshold (128 KiB to start) with fresh pages
from the kernel and gives them back on free, and it trims free memory off the top of the
heap once more than twice that threshold sits there. A 1 MiB stream chunk passes through
several such buffers (protobuf's encoder, the bytes it returns, gRPC's copy), so every
message faulted its pages in again: serializing one took about 1.6 ms instead of 40 us.
Keeping those buffers in the heap for reuse streamed 8 files of 64 MiB in 0.62 s instead
of 1.03 s with half the CPU (benchmarks/RESULTS.md); it costs at most TRIM_THRESHOLD of
free memory the process keeps (peak RSS in that run: 135 MB instead of 108 MB).
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
