"""The store's measured latency and bandwidth, shared by every read of a TieredReader.

A thin, thread-safe holder of a `StoreEstimate` (tiering.read.prefetch): the prefetch threads
time each ranged GET (to its first byte, and to its end) and the readers' prefetchers read the
estimate when they size their lead. One per reader and store, so a new read (a new consumer
fetch) starts from what the last ones measured instead of from nothing.
"""

from __future__ import annotations

import threading
from typing import Callable

from tiering.read.prefetch import StoreEstimate


class StoreMeter:
    def __init__(self, monotonic: Callable[[], float]):
        self.monotonic = monotonic
        self._lock = threading.Lock()
        self._estimate = StoreEstimate()

    @property
    def estimate(self) -> StoreEstimate:
        with self._lock:
            return self._estimate

    def observe(self, first_byte: float, total: float, nbytes: int) -> None:
        with self._lock:
            self._estimate = self._estimate.observe(first_byte, total, nbytes)
