"""The upload rate limit: one token bucket for the whole process, and its thread-safe adapter.

s3transfer has a bandwidth limiter of its own, but it is private to one TransferManager,
cannot be changed while running, and does not see our small PUTs (index files, manifests);
design.md wants a single process-wide bucket on a monotonic clock that a SIGHUP can retune,
so the arithmetic is here, pure, and the adapter below charges it as bytes leave.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

# Burst allowance, in seconds of the target rate. Small against the 10 s windows the rate is
# judged over (0.2 s is 2% of a window), large enough that a 64 KiB socket write never waits
# for a bucket that cannot hold it.
BURST_SECONDS = 0.2
MIN_BURST_BYTES = 256 * 1024


@dataclass(frozen=True)
class TokenBucket:
    """Tokens are bytes. `level` may go negative: a charge larger than the bucket is allowed
    and then paid off by waiting, so the long-run rate is exact whatever the charge sizes."""

    rate: float                # bytes per second; 0 = unlimited
    level: float               # bytes available now (negative: debt)
    updated: float             # monotonic seconds of `level`

    @classmethod
    def full(cls, rate: float, now: float) -> TokenBucket:
        return cls(rate, burst_for(rate), now)

    def charge(self, nbytes: int, now: float) -> tuple[TokenBucket, float]:
        """Take `nbytes`; returns the new bucket and how long the caller must wait first."""
        if self.rate <= 0:
            return self, 0.0
        level = min(burst_for(self.rate), self.level + (now - self.updated) * self.rate) - nbytes
        wait = 0.0 if level >= 0 else -level / self.rate
        return TokenBucket(self.rate, level, now), wait

    def retuned(self, rate: float, now: float) -> TokenBucket:
        """The same bucket at a new rate; debt already incurred carries over."""
        if rate <= 0:
            return TokenBucket(0, 0, now)
        if self.rate <= 0:
            return TokenBucket.full(rate, now)
        level = min(burst_for(self.rate), self.level + (now - self.updated) * self.rate)
        return TokenBucket(rate, min(level, burst_for(rate)), now)


def burst_for(rate: float) -> float:
    return max(MIN_BURST_BYTES, rate * BURST_SECONDS)


class Cancelled(Exception):
    """Raised in a thread waiting on the limiter when the process is shutting down."""


class RateLimiter:
    """A TokenBucket shared by threads. `charge` blocks the calling (sending) thread."""

    def __init__(self, rate: float, monotonic: Callable[[], float],
                 on_wait: Callable[[float], None] = lambda seconds: None):
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._bucket = TokenBucket.full(rate, monotonic())
        self._cancelled = threading.Event()
        self._on_wait = on_wait

    @property
    def rate(self) -> float:
        return self._bucket.rate

    def set_rate(self, rate: float) -> None:
        with self._lock:
            self._bucket = self._bucket.retuned(rate, self._monotonic())

    def charge(self, nbytes: int) -> None:
        if nbytes <= 0:
            return
        if self._cancelled.is_set():
            raise Cancelled("shutting down")
        with self._lock:
            self._bucket, wait = self._bucket.charge(nbytes, self._monotonic())
        if wait > 0:
            self._on_wait(wait)
            # Event.wait, not sleep: a shutdown wakes every waiting sender at once.
            if self._cancelled.wait(wait):
                raise Cancelled("shutting down")

    def cancel(self) -> None:
        self._cancelled.set()
