"""The read buffer pool: a fixed number of page-aligned slabs, reused for every chunk read.

The memory is one anonymous mmap made at start-up (page-aligned, so a slab can take an
O_DIRECT read), cut into `chunk_bytes` slabs. A chunk of a remote object or a cold local file
is read straight into a free slab; nothing else is allocated per chunk. Readers hold a
reference while they copy out of a slab. When no slab is free, the pool evicts an unreferenced
chunk: first one a reader has consumed (a one-pass backfill never comes back to it), then
the least recently used. Readers of a chunk that is being loaded wait for that one load
(one GET for all of them). A reader that finds every slab referenced or loading waits: the
pool never grows.

Prefetches take a slab only when one is free or holds something expendable (consumed, or
used and released); they never evict another prefetch nobody has read yet.
"""

from __future__ import annotations

import ctypes
import mmap
import threading
from concurrent.futures import Executor
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Hashable

# Fills a slab (the memoryview) with the chunk and returns how many bytes it holds.
Loader = Callable[[memoryview], int]


class _State(Enum):
    LOADING = "loading"
    READY = "ready"


@dataclass
class _Entry:
    """Mutable, owned by the pool under its lock."""

    slab: int
    state: _State = _State.LOADING
    length: int = 0
    refs: int = 0
    consumed: bool = False
    prefetched_unread: bool = False
    last_used: int = 0


@dataclass(frozen=True)
class PoolStats:
    slabs: int
    chunk_bytes: int
    gets: int               # chunk requests by readers
    hits: int               # ... served from a chunk already in the pool
    joined: int             # ... that waited for a load already in flight (a shared GET)
    loads: int              # chunks read from their source (GETs or local reads)
    prefetched: int         # loads started ahead of a reader
    prefetch_used: int      # prefetched chunks a reader then used
    prefetch_wasted: int    # prefetched chunks evicted before anyone read them
    evicted_consumed: int
    evicted_lru: int
    waits: int              # times a reader waited for a slab
    peak_slabs_in_use: int

    @property
    def hit_ratio(self) -> float:
        return (self.hits + self.joined) / self.gets if self.gets else 0.0


class ChunkHandle:
    """A reference to a loaded chunk; `release()` it when done copying."""

    def __init__(self, pool: BufferPool, key: Hashable, entry: _Entry, was_prefetched: bool):
        self._pool = pool
        self.key = key
        self._entry = entry
        self.view = pool.slab_view(entry.slab)[:entry.length]
        self.was_prefetched = was_prefetched
        self._released = False

    def release(self, consumed: bool) -> None:
        """`consumed`: the reader is done with this chunk for good (it moved past it)."""
        if not self._released:
            self._released = True
            self.view.release()
            self._pool._release(self._entry, consumed)


class BufferPool:
    def __init__(self, pool_bytes: int, chunk_bytes: int):
        self.chunk_bytes = chunk_bytes
        self.slab_count = pool_bytes // chunk_bytes
        if self.slab_count < 2:
            raise ValueError(f"a pool of {pool_bytes} bytes holds fewer than two {chunk_bytes}-byte chunks")
        self._memory = mmap.mmap(-1, self.slab_count * chunk_bytes)
        self._view = memoryview(self._memory)
        self._free = list(range(self.slab_count - 1, -1, -1))
        self._entries: dict[Hashable, _Entry] = {}
        self._cond = threading.Condition()
        self._tick = 0
        self._counts = dict.fromkeys(("gets", "hits", "joined", "loads", "prefetched", "prefetch_used",
                                      "prefetch_wasted", "evicted_consumed", "evicted_lru", "waits"), 0)
        self._peak = 0

    @property
    def pool_bytes(self) -> int:
        return self.slab_count * self.chunk_bytes

    def slab_view(self, slab: int) -> memoryview:
        return self._view[slab * self.chunk_bytes:(slab + 1) * self.chunk_bytes]

    def slab_address(self, slab: int) -> int:
        """The slab's start in memory (tests check page alignment)."""
        return ctypes.addressof(ctypes.c_char.from_buffer(self._memory)) + slab * self.chunk_bytes

    # -- readers ----------------------------------------------------------------------------

    def get(self, key: Hashable, load: Loader) -> ChunkHandle:
        """The chunk under `key`, loaded with `load` unless it is already here or on its way;
        blocks while every slab is in use. The loader's exception propagates to this caller."""
        with self._cond:
            self._counts["gets"] += 1
            waited_for_load = False
            while True:
                entry = self._entries.get(key)
                if entry is not None:
                    if entry.state is _State.LOADING:
                        waited_for_load = True
                        self._cond.wait()
                        continue
                    self._counts["joined" if waited_for_load else "hits"] += 1
                    return self._reference(key, entry)
                slab = self._take_slab(for_prefetch=False)
                if slab is not None:
                    break
                self._counts["waits"] += 1
                self._cond.wait()
            entry = _Entry(slab, refs=1)
            self._entries[key] = entry
            self._counts["loads"] += 1
        self._fill(key, entry, load)
        return ChunkHandle(self, key, entry, was_prefetched=False)

    def prefetch(self, key: Hashable, load: Loader, executor: Executor) -> bool:
        """Start loading `key` in `executor` if it is not here and a slab can be spared
        without evicting anything a reader still needs; False when it was not started."""
        with self._cond:
            if key in self._entries:
                return False
            slab = self._take_slab(for_prefetch=True)
            if slab is None:
                return False
            entry = _Entry(slab, prefetched_unread=True)
            self._entries[key] = entry
            self._counts["loads"] += 1
            self._counts["prefetched"] += 1
        executor.submit(self._fill_quietly, key, entry, load)
        return True

    def spare_slabs(self) -> int:
        """Slabs free or holding chunks a reader has consumed: what prefetch may use."""
        with self._cond:
            return len(self._free) + sum(1 for e in self._entries.values()
                                         if e.refs == 0 and e.state is _State.READY and e.consumed)

    @property
    def prefetch_wasted(self) -> int:
        """Prefetched chunks evicted unread so far (what the prefetch window reacts to)."""
        with self._cond:
            return self._counts["prefetch_wasted"]

    def stats(self) -> PoolStats:
        with self._cond:
            return PoolStats(self.slab_count, self.chunk_bytes, peak_slabs_in_use=self._peak, **self._counts)

    def contains(self, key: Hashable) -> bool:
        with self._cond:
            return key in self._entries

    # -- inside -----------------------------------------------------------------------------

    def _reference(self, key: Hashable, entry: _Entry) -> ChunkHandle:
        was_prefetched = entry.prefetched_unread
        if was_prefetched:
            entry.prefetched_unread = False
            self._counts["prefetch_used"] += 1
        entry.refs += 1
        return ChunkHandle(self, key, entry, was_prefetched)

    def _take_slab(self, for_prefetch: bool) -> int | None:
        if self._free:
            slab = self._free.pop()
        else:
            victim = self._victim(for_prefetch)
            if victim is None:
                return None
            key, entry = victim
            del self._entries[key]
            if entry.prefetched_unread:
                self._counts["prefetch_wasted"] += 1
            self._counts["evicted_consumed" if entry.consumed else "evicted_lru"] += 1
            slab = entry.slab
        self._peak = max(self._peak, self.slab_count - len(self._free))
        return slab

    def _victim(self, for_prefetch: bool) -> tuple[Hashable, _Entry] | None:
        best = None
        for key, entry in self._entries.items():
            if entry.refs or entry.state is not _State.READY:
                continue
            if for_prefetch and entry.prefetched_unread:
                continue
            rank = (not entry.consumed, entry.last_used)
            if best is None or rank < best[0]:
                best = (rank, key, entry)
        return None if best is None else (best[1], best[2])

    def _fill(self, key: Hashable, entry: _Entry, load: Loader) -> None:
        try:
            length = load(self.slab_view(entry.slab))
        except BaseException:
            with self._cond:
                # The slab goes back and waiters retry the load themselves: a failed
                # prefetch must not fail the reader that would have used it.
                del self._entries[key]
                self._free.append(entry.slab)
                self._cond.notify_all()
            raise
        with self._cond:
            entry.state = _State.READY
            entry.length = length
            self._tick += 1
            entry.last_used = self._tick
            self._cond.notify_all()

    def _fill_quietly(self, key: Hashable, entry: _Entry, load: Loader) -> None:
        try:
            self._fill(key, entry, load)
        except Exception:  # a prefetch that failed is only a prefetch; the reader loads again
            pass

    def _release(self, entry: _Entry, consumed: bool) -> None:
        with self._cond:
            entry.refs -= 1
            entry.consumed = entry.consumed or consumed
            self._tick += 1
            entry.last_used = self._tick
            self._cond.notify_all()
