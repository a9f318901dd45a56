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
    def __init__(self) -> None:
        self._partitions: dict[Hashable, dict[int, Pending]] = {}
        self._ring: deque[Hashable] = deque()

    def __len__(self) -> int:
        return sum(len(p) for p in self._partitions.values())

    def __contains__(self, key: tuple[Hashable, int]) -> bool:
        partition, base = key
        return base in self._partitions.get(partition, {})

    def set_partition(self, partition: Hashable, pending: Iterable[Pending]) -> None:
        """Make the partition's queue exactly `pending` (a fresh scan of it). Entries already
        queued keep their attempt count and backoff."""
        old = self._partitions.get(partition, {})
        new = {p.base_offset: old.get(p.base_offset, p) for p in pending}
        if not new:
            self.drop_partition(partition)
            return
        if partition not in self._partitions:
            self._ring.append(partition)
        self._partitions[partition] = new

    def drop_partition(self, partition: Hashable) -> None:
        if self._partitions.pop(partition, None) is not None:
            self._ring.remove(partition)

    def partitions(self) -> list[Hashable]:
        return list(self._partitions)

    def push(self, pending: Pending) -> None:
        """Put back one entry (a retry, with its backoff in `not_before`)."""
        if pending.partition not in self._partitions:
            self._partitions[pending.partition] = {}
            self._ring.append(pending.partition)
        self._partitions[pending.partition][pending.base_offset] = pending

    def take(self, now: float, allowed: Callable[[Hashable], bool] = lambda partition: True) -> Pending | None:
        """The oldest ready entry of the next partition in turn that has one, or None."""
        for _ in range(len(self._ring)):
            partition = self._ring[0]
            self._ring.rotate(-1)
            if not allowed(partition):
                continue
            entries = self._partitions[partition]
            ready = [p for p in entries.values() if p.not_before <= now]
            if not ready:
                continue
            chosen = min(ready, key=lambda p: p.base_offset)
            del entries[chosen.base_offset]
            if not entries:
                self.drop_partition(partition)
            return chosen
        return None

    def next_ready_at(self) -> float | None:
        """The earliest `not_before` in the queue (None when empty)."""
        times = [p.not_before for entries in self._partitions.values() for p in entries.values()]
        return min(times) if times else None

    def backlog(self) -> Backlog:
        entries = [p for e in self._partitions.values() for p in e.values()]
        return Backlog(len(entries), sum(p.size for p in entries),
                       min((p.rolled_at for p in entries), default=None))
