"""How far ahead of a sequential reader to fetch: the window policy, pure.

The window is counted in chunks. It starts at one chunk and doubles each time the reader uses
a chunk that was fetched ahead for it (the read is sequential and the prefetch is paying off),
up to `prefetch_bytes`. It halves when prefetched chunks were evicted before anyone read them
(the pool is too small for this reader's lead, or the reader stopped), and new requests never
take more than the pool can spare without evicting what readers still need: the slabs that are
free or hold chunks already consumed, less one kept for a reader's own miss.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class PrefetchWindow:
    chunks: int           # current window; 0 when prefetch is disabled
    max_chunks: int

    @classmethod
    def for_config(cls, prefetch_bytes: int, chunk_bytes: int) -> PrefetchWindow:
        most = prefetch_bytes // chunk_bytes
        if prefetch_bytes and not most:
            most = 1  # a prefetch budget below one chunk still means "one chunk ahead"
        return cls(min(1, most), most)

    @property
    def enabled(self) -> bool:
        return self.max_chunks > 0

    def used(self) -> PrefetchWindow:
        """The reader consumed a chunk that was fetched ahead of it."""
        return replace(self, chunks=min(self.max_chunks, max(1, self.chunks * 2)))

    def wasted(self, evicted_unread: int) -> PrefetchWindow:
        """`evicted_unread` prefetched chunks were evicted before being read."""
        chunks = self.chunks
        for _ in range(min(evicted_unread, 8)):
            chunks //= 2
        return replace(self, chunks=max(1 if self.enabled else 0, chunks))

    def ahead(self) -> int:
        """How many chunks beyond the current one should be in the pool or on their way."""
        return self.chunks

    @staticmethod
    def new_requests(spare_slabs: int) -> int:
        """How many new prefetches the pool can take now: all its spare slabs (free, or
        holding consumed chunks) but one, which stays for a reader's own miss; none when the
        pool is that short (prefetch pauses until readers consume what they hold)."""
        return max(0, spare_slabs - 1)
