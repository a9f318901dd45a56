"""The upload backlog: eligible segments waiting for a worker, oldest first within each
partition and round-robin across partitions, so one busy partition cannot starve the rest.

Pure and single-threaded (the coordinator owns it). It holds small records, never segment
data, so a backlog of thousands of segments costs kilobytes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Hashable, Iterable


@dataclass(frozen=True)
class Pending:
    partition: Hashable          # any key naming the partition (the coordinator uses the dir)
    base_offset: int
    size: int
    rolled_at: float             # wall-clock seconds (the segment's last change, i.e. its roll)
    item: object                 # what the coordinator needs to start the upload
    attempts: int = 0
    not_before: float = 0.0      # monotonic seconds; a retry waits for its backoff


@dataclass(frozen=True)
class Backlog:
    segments: int
    bytes: int
    oldest_rolled_at: float | None


class UploadQueue:
    """Every operation the coordinator does per upload is O(1) in the number of partitions:
    the ring drops emptied partitions lazily (deque.remove would scan all of them each time
    a partition empties), and the entries waiting for a retry backoff are indexed apart, so
    the loop's "when is the next entry ready" does not walk the whole backlog."""

    def __init__(self) -> None:
        self._partitions: dict[Hashable, dict[int, Pending]] = {}
        self._ring: deque[Hashable] = deque()      # each partition at most once; may hold emptied ones
        self._in_ring: set[Hashable] = set()
        self._size = 0
        self._delayed: dict[tuple[Hashable, int], float] = {}   # entries with a backoff

    def __len__(self) -> int:
        return self._size

    def __contains__(self, key: tuple[Hashable, int]) -> bool:
        partition, base = key
        return base in self._partitions.get(partition, {})

    def set_partition(self, partition: Hashable, pending: Iterable[Pending]) -> None:
        """Make the partition's queue exactly `pending` (a fresh scan of it). Entries already
        queued keep their attempt count and backoff."""
        old = self._partitions.pop(partition, {})
        new = {p.base_offset: old.get(p.base_offset, p) for p in pending}
        for entry in old.values():
            self._forget(entry)
        for entry in new.values():
            self._add(entry)

    def drop_partition(self, partition: Hashable) -> None:
        for entry in self._partitions.pop(partition, {}).values():
            self._forget(entry)

    def push(self, pending: Pending) -> None:
        """Put back one entry (a retry, with its backoff in `not_before`)."""
        replaced = self._partitions.get(pending.partition, {}).get(pending.base_offset)
        if replaced is not None:
            self._remove(replaced)
        self._add(pending)

    def take(self, now: float, allowed: Callable[[Hashable], bool] = lambda partition: True) -> Pending | None:
        """The oldest ready entry of the next partition in turn that has one, or None."""
        for _ in range(len(self._ring)):
            partition = self._ring.popleft()
            entries = self._partitions.get(partition)
            if entries is None:
                self._in_ring.discard(partition)   # emptied since its last turn
                continue
            self._ring.append(partition)
            if not allowed(partition):
                continue
            ready = [p for p in entries.values() if p.not_before <= now]
            if not ready:
                continue
            chosen = min(ready, key=lambda p: p.base_offset)
            self._remove(chosen)
            return chosen
        return None

    def next_ready_at(self) -> float | None:
        """The earliest `not_before` in the queue (None when empty)."""
        if not self._size:
            return None
        if self._size > len(self._delayed):
            return 0.0          # an entry without backoff is ready now
        return min(self._delayed.values())

    def _add(self, entry: Pending) -> None:
        entries = self._partitions.setdefault(entry.partition, {})
        entries[entry.base_offset] = entry
        self._size += 1
        if entry.not_before > 0:
            self._delayed[(entry.partition, entry.base_offset)] = entry.not_before
        if entry.partition not in self._in_ring:
            self._in_ring.add(entry.partition)
            self._ring.append(entry.partition)

    def _remove(self, entry: Pending) -> None:
        entries = self._partitions[entry.partition]
        del entries[entry.base_offset]
        if not entries:
            del self._partitions[entry.partition]
        self._forget(entry)

    def _forget(self, entry: Pending) -> None:
        """Bookkeeping for an entry no longer in `_partitions`."""
        self._size -= 1
        self._delayed.pop((entry.partition, entry.base_offset), None)

    def backlog(self) -> Backlog:
        entries = [p for e in self._partitions.values() for p in e.values()]
        return Backlog(len(entries), sum(p.size for p in entries),
                       min((p.rolled_at for p in entries), default=None))
