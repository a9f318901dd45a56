"""Segment-level retry policy: capped exponential backoff with full jitter.

botocore already retries each request; this governs whole-segment attempts (each with a new
unique id) after a request gave up, so one bad minute of the store does not fail a pass.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    base_seconds: float = 1.0
    cap_seconds: float = 30.0

    def delay(self, failed_attempts: int, rng: random.Random) -> float:
        """Seconds to wait after `failed_attempts` (>= 1) failures: uniform in [0, min(cap, base*2^(n-1))]."""
        ceiling = min(self.cap_seconds, self.base_seconds * 2 ** (failed_attempts - 1))
        return rng.uniform(0, ceiling)

    def should_retry(self, failed_attempts: int) -> bool:
        return failed_attempts < self.attempts
