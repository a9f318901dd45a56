"""A circuit breaker per partition (the idea of Kafka's KIP-693, applied to uploads).

A partition whose uploads keep failing (a failing disk returning read errors, say) would
otherwise take a worker slot on every attempt and starve the healthy partitions. After
`failures_to_open` consecutive failures it is muted; when the backoff has passed one probe
upload is let through: success closes the breaker, failure mutes it again for twice as long.
Pure: time is passed in (monotonic seconds).
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class BreakerPolicy:
    failures_to_open: int = 3
    first_backoff_seconds: float = 30.0
    max_backoff_seconds: float = 600.0

    def backoff(self, times_opened: int) -> float:
        return min(self.max_backoff_seconds, self.first_backoff_seconds * 2 ** times_opened)


@dataclass(frozen=True)
class Breaker:
    consecutive_failures: int = 0
    times_opened: int = 0
    open_until: float | None = None     # None: closed
    probing: bool = False               # a half-open probe is in flight

    def allows(self, now: float) -> bool:
        if self.open_until is None:
            return True
        return now >= self.open_until and not self.probing

    def is_open(self, now: float) -> bool:
        return self.open_until is not None and (now < self.open_until or self.probing)

    def started(self, now: float) -> Breaker:
        """An upload of this partition began; past the backoff it is the probe."""
        if self.open_until is not None and now >= self.open_until:
            return replace(self, probing=True)
        return self

    def succeeded(self) -> Breaker:
        return Breaker()

    def failed(self, now: float, policy: BreakerPolicy) -> Breaker:
        failures = self.consecutive_failures + 1
        if self.probing or failures >= policy.failures_to_open:
            return Breaker(failures, self.times_opened + 1, now + policy.backoff(self.times_opened), False)
        return replace(self, consecutive_failures=failures)
