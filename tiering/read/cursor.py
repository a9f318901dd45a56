"""Sequential byte access to a segment through the pool, with prefetch ahead of the reader.

A cursor holds at most one slab at a time and lets go of it before asking for the next, so
readers can never deadlock on each other however small the pool. The bytes a caller asks for
are copied out (a batch is decoded from its own copy, and the slab is free for reuse sooner).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import Executor
from typing import Callable, Sequence

from tiering.read.meter import StoreMeter
from tiering.read.pool import BufferPool, ChunkHandle
from tiering.read.prefetch import PrefetchWindow, ReaderPace, chunks_needed, most_ahead
from tiering.files import open_regular
from tiering.read.sources import ChunkSource, ShortRead


class Prefetcher:
    """One reader's prefetch: its window, its pace, and the requests it makes ahead of the
    chunk it is on. With a `meter` (the store's measured latency and bandwidth) the lead is
    what covers a GET's time at the reader's pace (tiering.read.prefetch.chunks_needed)."""

    def __init__(self, pool: BufferPool, executor: Executor | None, window: PrefetchWindow,
                 meter: StoreMeter | None = None, monotonic: Callable[[], float] = time.monotonic):
        self.pool = pool
        self.executor = executor
        self.window = window
        self.meter = meter
        self.monotonic = monotonic
        self.pace = ReaderPace()
        self.lead = 0            # the last lead asked for (tests and benchmarks look)
        self._wasted_seen = pool.prefetch_wasted
        self._last: float | None = None

    def advance(self, sources: Sequence[ChunkSource], index: int, was_prefetched: bool,
                waited: float = 0.0) -> None:
        """The reader is now on chunk `index` of `sources[0]`; `sources[1:]` come after it.
        `waited`: seconds it just spent waiting for that chunk (not its own pace)."""
        if self.executor is None or not self.window.enabled:
            return
        now = self.monotonic()
        if self._last is not None:
            # From the last chunk to this one, less the wait: the time the reader spent on one
            # chunk's bytes (the last chunk of an object is shorter: a pace a little high,
            # which errs towards a longer lead).
            self.pace = self.pace.observe(self.pool.chunk_bytes, now - self._last - waited)
        self._last = now
        wasted = self.pool.prefetch_wasted
        if wasted > self._wasted_seen:
            self.window = self.window.wasted(wasted - self._wasted_seen)
            self._wasted_seen = wasted
        if was_prefetched:
            self.window = self.window.used()
        most = most_ahead(self.window.max_chunks, self.pool.slab_count)
        needed = (chunks_needed(self.pace, self.meter.estimate, self.pool.chunk_bytes, most)
                  if self.meter is not None else most)
        lead = self.lead = self.window.ahead(needed)
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
        prefetcher = self._prefetcher
        asked = prefetcher.monotonic() if prefetcher is not None else 0.0
        handle = self._pool.get(self.source.chunk_key(index), self.source.loader(index, chunk))
        self._handle, self._index = handle, index
        if prefetcher is not None:
            prefetcher.advance([self.source, *self._following()], index, handle.was_prefetched,
                               prefetcher.monotonic() - asked)
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
