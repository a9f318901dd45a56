"""How far ahead of a sequential reader to fetch: the window policy, pure.

The window is counted in chunks. It starts at one chunk and doubles each time the reader uses
a chunk that was fetched ahead for it (the read is sequential and the prefetch is paying off),
up to `prefetch_bytes`. It halves when prefetched chunks were evicted before anyone read them
(the pool is too small for this reader's lead, or the reader stopped), and new requests never
take more than the pool can spare without evicting what readers still need: the slabs that are
free or hold chunks already consumed, less one kept for a reader's own miss.

Within that, the lead adapts to what was measured (`chunks_needed`): the store's latency (least
time to a GET's first byte) and bandwidth (most bytes per second of one GET after its first
byte) over its last GETs, and the reader's own pace (bytes per second of its time not spent
waiting for chunks). A chunk
asked for now arrives after latency + chunk / bandwidth; to never make the reader wait, the
chunks in flight must cover what it consumes meanwhile (Little's law), with headroom for the
spread of GET times. A near store thus keeps one or two chunks ahead, a far one many GETs in
parallel. `prefetch_bytes` stays the ceiling; the pool is the other bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

# Chunks in flight per chunk the reader consumes during one GET: GET times spread above the
# least (and the store's bandwidth is shared among the GETs in flight), so covering only the
# quickest GET would let the reader catch up with the slow ones.
HEADROOM = 1.5
# The store's estimate is over its last GETs: the least time to a first byte and the most
# bytes per second after it among them, i.e. one GET's time without queueing (as BBR estimates
# a path: least round trip, most bandwidth). Averages would include the queue the lead itself
# builds at a store slower than the reader (more GETs in flight, each slower, so a longer
# lead, ...): with them the lead ran to its bound even next to the store.
STORE_WINDOW = 16
# Weight of a new sample in the reader's pace (a moving average: a reader's pace has no queue
# of ours in it, its waits are left out).
EWMA_WEIGHT = 0.25


def _ewma(old: float | None, sample: float) -> float:
    return sample if old is None else old + EWMA_WEIGHT * (sample - old)


@dataclass(frozen=True)
class StoreEstimate:
    """What the store's last GETs have shown (None: nothing measured yet)."""

    # (seconds from asking to the first byte, bytes per second after it or None if no bytes)
    recent: tuple[tuple[float, float | None], ...] = ()
    gets: int = 0

    def observe(self, first_byte: float, total: float, nbytes: int) -> StoreEstimate:
        """One GET: `first_byte` and `total` seconds after it was sent, `nbytes` long."""
        first_byte = max(0.0, first_byte)
        transfer = total - first_byte
        if nbytes <= 0:
            bandwidth = None
        elif transfer <= 0:
            bandwidth = math.inf   # all of it came with the first byte: too fast to time
        else:
            bandwidth = nbytes / transfer
        return StoreEstimate((*self.recent, (first_byte, bandwidth))[-STORE_WINDOW:], self.gets + 1)

    @property
    def latency(self) -> float | None:
        """The least time to a first byte among the last GETs."""
        return min((f for f, _ in self.recent), default=None)

    @property
    def bandwidth(self) -> float | None:
        """The most bytes per second of one GET after its first byte among the last GETs."""
        return max((b for _, b in self.recent if b is not None), default=None)

    def get_seconds(self, nbytes: int) -> float | None:
        """How long a GET of `nbytes` takes without queueing, by the estimate."""
        latency, bandwidth = self.latency, self.bandwidth
        if latency is None or bandwidth is None:
            return None
        return latency + (nbytes / bandwidth if bandwidth > 0 else math.inf)


@dataclass(frozen=True)
class ReaderPace:
    """How fast one reader consumes when it does not wait for chunks (bytes per second)."""

    rate: float | None = None

    def observe(self, nbytes: int, busy_seconds: float) -> ReaderPace:
        """The reader went through `nbytes` in `busy_seconds` of its own time."""
        if nbytes <= 0:
            return self
        if busy_seconds <= 0:
            return ReaderPace(math.inf)   # faster than the clock can tell: as fast as can be
        return ReaderPace(_ewma(self.rate if self.rate != math.inf else None, nbytes / busy_seconds))


def chunks_needed(pace: ReaderPace, store: StoreEstimate, chunk_bytes: int, most: int) -> int:
    """Chunks to keep ahead of a reader (in the pool or on their way), 1..`most` (`most` >= 1):
    enough to cover what it consumes during one GET, with headroom; `most` before anything is
    measured (the growth by use then paces the start)."""
    seconds = store.get_seconds(chunk_bytes)
    if pace.rate is None or seconds is None:
        return most
    if math.isinf(pace.rate) or math.isinf(seconds):
        return most
    wanted = math.ceil(HEADROOM * pace.rate * seconds / chunk_bytes)
    return max(1, min(most, wanted))


def most_ahead(max_chunks: int, pool_slabs: int) -> int:
    """The largest lead the pool allows one reader: every slab but the one it reads from and
    the one kept for a miss, and never above the configured ceiling."""
    return max(1, min(max_chunks, pool_slabs - 2))


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

    def ahead(self, needed: int | None = None) -> int:
        """How many chunks beyond the current one should be in the pool or on their way: the
        window, or fewer when the measurements say fewer are `needed` (`chunks_needed`)."""
        if needed is None or not self.enabled:
            return self.chunks
        return min(self.chunks, max(1, needed))

    @staticmethod
    def new_requests(spare_slabs: int) -> int:
        """How many new prefetches the pool can take now: all its spare slabs (free, or
        holding consumed chunks) but one, which stays for a reader's own miss; none when the
        pool is that short (prefetch pauses until readers consume what they hold)."""
        return max(0, spare_slabs - 1)
