"""A page-cache simulator for the page-cache benchmark: the kernel's two LRU lists, replayed
with the access trace a run recorded.

Used where the run could not put real memory pressure on the page cache (no memory cgroup
could be created), and beside the kernel's figures otherwise, as a cross-check. It models
what decides the benchmark's outcome in Linux's classic reclaim (mm/vmscan.c, mm/swap.c):

- a page read for the first time goes on the inactive list;
- a page read again while on the inactive list is promoted to the active list;
- reclaim, which runs only when the cache is full, first moves the active list's least
  recently used pages back to the inactive list while the active list is the larger (the
  kernel's inactive_ratio is 1 below 1 GiB of memory), then evicts from the inactive list's
  least recently used end.

It leaves out refault detection (a page evicted and read back soon is activated at once),
per-CPU batching and readahead. No maintained package simulates the kernel's lists, hence
this module.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Hashable, Iterable

# What a recorded access did to the page cache.
READ = "read"          # a plain read: the pages are cached and referenced
DROPPED = "dropped"    # a read whose newly cached pages were dropped again (posix_fadvise DONTNEED)
BYPASS = "bypass"      # O_DIRECT or a network read: the page cache is not touched
KINDS_BY_NUMBER = (READ, DROPPED, BYPASS)   # how a recorded trace numbers them


@dataclass(frozen=True)
class Access:
    time: float
    file: Hashable
    first_page: int
    pages: int
    kind: str = READ
    hot: bool = False          # a hot reader's access: its hit ratio is what is measured


@dataclass(frozen=True)
class HotOutcome:
    time: float
    resident: int              # pages of the access that were cached before it
    pages: int


class TwoListCache:
    def __init__(self, capacity_pages: int):
        if capacity_pages < 2:
            raise ValueError("the simulated page cache needs at least two pages")
        self.capacity = capacity_pages
        self.inactive: OrderedDict[Hashable, None] = OrderedDict()   # first = least recently used
        self.active: OrderedDict[Hashable, None] = OrderedDict()

    def __contains__(self, page: Hashable) -> bool:
        return page in self.active or page in self.inactive

    def __len__(self) -> int:
        return len(self.active) + len(self.inactive)

    def touch(self, page: Hashable) -> bool:
        """One read of `page`; True when it was cached."""
        if page in self.active:
            self.active.move_to_end(page)
            return True
        if page in self.inactive:
            del self.inactive[page]
            self.active[page] = None
            return True
        self.inactive[page] = None
        while len(self) > self.capacity:      # reclaim: the only time the lists are balanced
            while len(self.active) > len(self.inactive) or not self.inactive:
                self._demote()
            self.inactive.popitem(last=False)
        return False

    def pages_per_file(self) -> dict[Hashable, int]:
        counts: dict[Hashable, int] = {}
        for lru in (self.inactive, self.active):
            for file, _ in lru:
                counts[file] = counts.get(file, 0) + 1
        return counts

    def drop(self, page: Hashable) -> None:
        self.inactive.pop(page, None)
        self.active.pop(page, None)

    def _demote(self) -> None:
        page, _ = self.active.popitem(last=False)
        self.inactive[page] = None


def replay(accesses: Iterable[Access], capacity_pages: int,
           snapshot_time: float = float("inf")) -> tuple[list[HotOutcome], dict[Hashable, int]]:
    """Replay the accesses in time order; returns what each hot access found cached, and how
    many pages of each file the cache held at `snapshot_time` (at the end by default)."""
    cache = TwoListCache(capacity_pages)
    outcomes = []
    snapshot = None
    for access in sorted(accesses, key=lambda a: a.time):
        if snapshot is None and access.time > snapshot_time:
            snapshot = cache.pages_per_file()
        pages = [(access.file, access.first_page + i) for i in range(access.pages)]
        if access.kind == BYPASS:
            continue
        if access.kind == DROPPED:
            for page in pages:
                if not cache.touch(page):     # brought in by this read: dropped again at once
                    cache.drop(page)
            continue
        resident = sum(cache.touch(page) for page in pages)
        if access.hot:
            outcomes.append(HotOutcome(access.time, resident, access.pages))
    return outcomes, snapshot if snapshot is not None else cache.pages_per_file()
