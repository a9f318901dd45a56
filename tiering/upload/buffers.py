"""The upload's part buffers: `count` page-aligned slabs of `part_bytes`, reused for every part.

One anonymous mmap made once (pages count towards memory only once touched, so a pool sized
for 16 MiB parts costs what the parts really read), cut into slabs. A segment worker holds
one slab while it reads a part into it, walks it and sends it; with one slab per upload slot
the upload's memory is at most `concurrency x part size` (design.md invariant 6) whatever the
backlog or segment size.
"""

from __future__ import annotations

import mmap
import threading
from contextlib import contextmanager
from typing import Iterator


class PartBuffers:
    def __init__(self, count: int, part_bytes: int):
        self.part_bytes = part_bytes
        self._memory = mmap.mmap(-1, count * part_bytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self._view = memoryview(self._memory)
        self._free = list(range(count))
        self._available = threading.Condition()

    @contextmanager
    def slab(self) -> Iterator[memoryview]:
        """A free slab for the duration of the block (waits for one)."""
        with self._available:
            while not self._free:
                self._available.wait()
            index = self._free.pop()
        try:
            yield self._view[index * self.part_bytes:(index + 1) * self.part_bytes]
        finally:
            with self._available:
                self._free.append(index)
                self._available.notify()
