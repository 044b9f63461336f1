"""KeySet: a compact set of row keys (resume, duplicate ids, dedupe values, a manifest's builder)."""

from __future__ import annotations

import mmap


class KeySet:
    """Keys seen so far, in 8 bytes each: a million keys take 16 MiB, not the ~70 MiB of a set.

    An open-addressing table of the keys' 64-bit hashes (a collision between two different
    keys is negligible: about 1 in 10^7 for a million keys). Hashes are per process, which
    is all a run needs.
    """

    _EMPTY = 0

    def __init__(self) -> None:
        self._table = _zeroed(1024)
        self._mask = 1023
        self._count = 0

    @staticmethod
    def _hash(key: str) -> int:
        return (hash(key) & 0xFFFFFFFFFFFFFFFF) or 1  # 0 marks an empty slot

    def _slot(self, h: int) -> int:
        table, mask = self._table, self._mask
        i = h & mask
        while table[i] != h and table[i] != self._EMPTY:
            i = (i + 1) & mask
        return i

    def add(self, key: str) -> bool:
        """Add a key; False when it was there already."""
        h = (hash(key) & 0xFFFFFFFFFFFFFFFF) or 1  # _hash and _slot written out: one call a row, not three
        table, mask = self._table, self._mask
        i = h & mask
        while (found := table[i]) != h:
            if found == self._EMPTY:
                break
            i = (i + 1) & mask
        else:
            return False
        table[i] = h
        self._count += 1
        if 2 * self._count > self._mask:
            self._grow()
        return True

    def _grow(self) -> None:
        old = self._table
        table = _zeroed(2 * len(old))
        mask = len(table) - 1
        for h in old:  # each key moved once, into the first empty slot from its own (no key is there twice)
            if h != self._EMPTY:
                i = h & mask
                while table[i] != self._EMPTY:
                    i = (i + 1) & mask
                table[i] = h
        self._table, self._mask = table, mask

    def __contains__(self, key: str) -> bool:
        h = self._hash(key)
        return self._table[self._slot(h)] == h

    def __len__(self) -> int:
        return self._count


def _zeroed(slots: int) -> memoryview:
    """A table of `slots` zeroed 64-bit slots in an anonymous map of its own, given back to the
    system when the table grows: an upload keeps big blocks in the heap (bulk_uploader.allocator),
    where every smaller table would stay."""
    return memoryview(mmap.mmap(-1, 8 * slots)).cast("Q")
