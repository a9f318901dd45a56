"""Sequential byte access to a segment through the pool, with prefetch ahead of the reader.

A cursor holds at most one slab at a time and lets go of it before asking for the next, so
readers can never deadlock on each other however small the pool. The bytes a caller asks for
are copied out (a batch is decoded from its own copy, and the slab is free for reuse sooner).
"""

from __future__ import annotations

import os
from concurrent.futures import Executor
from typing import Callable, Sequence

from tiering.read.pool import BufferPool, ChunkHandle
from tiering.read.prefetch import PrefetchWindow
from tiering.files import open_regular
from tiering.read.sources import ChunkSource, ShortRead


class Prefetcher:
    """One reader's prefetch: its window, and the requests it makes ahead of the chunk it is on."""

    def __init__(self, pool: BufferPool, executor: Executor | None, window: PrefetchWindow):
        self.pool = pool
        self.executor = executor
        self.window = window
        self._wasted_seen = pool.prefetch_wasted

    def advance(self, sources: Sequence[ChunkSource], index: int, was_prefetched: bool) -> None:
        """The reader is now on chunk `index` of `sources[0]`; `sources[1:]` come after it."""
        if self.executor is None or not self.window.enabled:
            return
        wasted = self.pool.prefetch_wasted
        if wasted > self._wasted_seen:
            self.window = self.window.wasted(wasted - self._wasted_seen)
            self._wasted_seen = wasted
        if was_prefetched:
            self.window = self.window.used()
        lead = self.window.ahead()
        allowed = self.window.new_requests(self.pool.spare_slabs())
        chunk = self.pool.chunk_bytes
        for source, i in _following_chunks(sources, index, chunk):
            if lead <= 0:
                break
            lead -= 1
            key = source.chunk_key(i)
            if self.pool.contains(key):
                continue
            if allowed <= 0 or not self.pool.prefetch(key, source.loader(i, chunk), self.executor):
                break  # no slab to spare: pause until the reader frees some
            allowed -= 1


def _following_chunks(sources: Sequence[ChunkSource], index: int, chunk: int):
    first = True
    for source in sources:
        count = -(-source.size // chunk)
        for i in range(index + 1 if first else 0, count):
            yield source, i
        first = False


class PooledCursor:
    def __init__(self, source: ChunkSource, pool: BufferPool, prefetcher: Prefetcher | None = None,
                 following: Callable[[], Sequence[ChunkSource]] = lambda: ()):
        self.source = source
        self.size = source.size
        self._pool = pool
        self._prefetcher = prefetcher
        self._following = following
        self._handle: ChunkHandle | None = None
        self._index = -1

    def read(self, position: int, length: int) -> bytes:
        if position + length > self.size:
            raise ShortRead(f"read of {length} bytes at {position} runs past the segment's {self.size} bytes")
        out = bytearray(length)
        filled = 0
        chunk = self._pool.chunk_bytes
        while filled < length:
            at = position + filled
            handle = self._chunk(at // chunk)
            within = at % chunk
            take = min(length - filled, len(handle.view) - within)
            if take <= 0:
                raise ShortRead(f"chunk {at // chunk} holds {len(handle.view)} bytes, needed byte {within}")
            out[filled:filled + take] = handle.view[within:within + take]
            filled += take
        return bytes(out)

    def _chunk(self, index: int) -> ChunkHandle:
        if self._handle is not None and self._index == index:
            return self._handle
        if self._handle is not None:
            self._handle.release(consumed=index > self._index)
            self._handle = None
        chunk = self._pool.chunk_bytes
        handle = self._pool.get(self.source.chunk_key(index), self.source.loader(index, chunk))
        self._handle, self._index = handle, index
        if self._prefetcher is not None:
            self._prefetcher.advance([self.source, *self._following()], index, handle.was_prefetched)
        return handle

    def close(self, finished: bool = True) -> None:
        if self._handle is not None:
            self._handle.release(consumed=finished)
            self._handle = None


class HotFile:
    """The active segment: the broker's hot tail, read plainly (it is in the page cache)."""

    def __init__(self, path: os.PathLike | str):
        self._fd = open_regular(path)   # never through a link, never a FIFO
        self.size = os.fstat(self._fd).st_size

    def read(self, position: int, length: int) -> bytes:
        data = os.pread(self._fd, length, position)
        if len(data) != length:
            raise ShortRead(f"{len(data)} bytes at {position}, expected {length}")
        return data

    def close(self, finished: bool = True) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
