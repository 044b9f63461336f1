"""The C allocator's settings for big messages, and bytes filled in place: the one home of ctypes.

glibc serves an allocation over its mmap threshold (128 KiB to start) with fresh pages
from the kernel and gives them back on free, and it trims free memory off the top of the
heap once more than twice that threshold sits there. A 1 MiB stream chunk passes through
several such buffers (protobuf's encoder, the bytes it returns, gRPC's copy), so every
message would fault its pages in again. Keeping those buffers in the heap for reuse
makes streaming faster and cheaper in CPU, at the cost of at most TRIM_THRESHOLD of free
memory the process keeps; the figures are in benchmarks/RESULTS.md (64 MiB streaming,
with and without this setting).

gRPC sends only `bytes`, which Python cannot read a file into. new_bytes() makes a bytes
object to fill through a writable view, so a request is read from disk straight after its
protobuf header: one buffer per request instead of the file's and the request's, which
also keeps the heap from filling with holes of two sizes that suit neither.
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


_new_bytes = ctypes.pythonapi.PyBytes_FromStringAndSize
_new_bytes.restype = ctypes.py_object
_new_bytes.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t)
_BYTES_HEADER = bytes.__basicsize__ - 1  # where a bytes object's data starts (its size counts the closing NUL)


def new_bytes(size: int) -> bytes:
    """A new bytes object of `size` bytes, not yet filled: fill it with writable() before anyone sees it."""
    return _new_bytes(None, size)  # type: ignore[no-any-return]


def writable(data: bytes) -> memoryview:
    """A writable view of the bytes of `data`, which must come from new_bytes() and be shared with no one
    (bytes are immutable to everyone else: nothing may have hashed or compared them meanwhile).
    The view keeps `data` alive."""
    if len(data) < 2:  # the empty and one-byte objects are shared singletons
        raise ValueError("writable() needs a new object of at least two bytes")
    window = (ctypes.c_char * len(data)).from_address(id(data) + _BYTES_HEADER)
    window._owner = data  # type: ignore[attr-defined]  # the view holds the window, the window holds the bytes
    return memoryview(window).cast("B")
