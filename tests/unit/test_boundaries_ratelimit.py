"""The upload rate limit at its exact edges (found by mutation testing): a rate below one byte a
second is still a limit, a charge that leaves the bucket exactly or barely full waits for
nothing, a retune keeps the debt and the time elapsed, and a cancelled limiter charges nothing.
The clock is an explicit dependency: these tests never read wall-clock time."""

from __future__ import annotations

import pytest

from tiering.upload.ratelimit import MIN_BURST_BYTES, Cancelled, RateLimiter, TokenBucket, burst_for


def test_the_burst_is_a_fifth_of_a_second_of_the_rate_or_the_minimum():
    assert burst_for(10_000_000) == 2_000_000
    assert burst_for(1000) == MIN_BURST_BYTES


def test_a_rate_below_one_byte_a_second_still_limits():
    bucket, wait = TokenBucket.full(0.5, 0).charge(MIN_BURST_BYTES + 1, 0)
    assert wait == 2.0 and bucket.level == -1
    assert TokenBucket.full(0.5, 0).retuned(0.25, 0).rate == 0.25


def test_a_charge_that_leaves_tokens_waits_for_nothing():
    assert TokenBucket.full(1000, 0).charge(1, 0)[1] == 0.0
    # 0.1 byte left (a fractional burst): still no wait, and never a negative one
    bucket, wait = TokenBucket.full(2_000_000.5, 0).charge(400_000, 0)
    assert wait == 0.0 and bucket.level == pytest.approx(0.1)


def test_retuning_to_unlimited_and_back():
    assert TokenBucket(1000, -50, 3).retuned(0, 5) == TokenBucket(0, 0, 5)
    assert TokenBucket(0, 0, 0).retuned(100, 5) == TokenBucket.full(100, 5)


def test_a_retune_keeps_the_debt_and_the_refill_since_the_last_charge():
    assert TokenBucket(1000, -5000, 10).retuned(2000, 12) == TokenBucket(2000, -3000, 12)
    assert TokenBucket(0.5, -10, 0).retuned(100, 0) == TokenBucket(100, -10, 0)


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_cancelled_limiter_refuses_a_charge_but_not_an_empty_one():
    limiter = RateLimiter(1000, Clock())
    limiter.cancel()
    limiter.charge(0)                      # nothing to send: nothing to refuse
    with pytest.raises(Cancelled, match="^shutting down$"):
        limiter.charge(1)


def test_a_wait_is_reported_and_a_cancel_during_it_ends_it():
    waits = []
    limiter = RateLimiter(1_000_000, Clock(), on_wait=lambda s: (waits.append(s), limiter.cancel()))
    limiter.charge(MIN_BURST_BYTES)            # exactly the burst: no wait
    assert waits == []
    with pytest.raises(Cancelled, match="^shutting down$"):
        limiter.charge(500_000)             # 0.5 s of debt
    assert waits == [0.5]


def test_a_short_wait_ends_by_itself():
    waits = []
    limiter = RateLimiter(1_000_000, Clock(), on_wait=waits.append)
    limiter.charge(MIN_BURST_BYTES + 1000)   # 1 ms of debt: the sender waits it out, then goes on
    assert waits == [0.001]


def test_set_rate_retunes_the_shared_bucket_at_the_clock_now():
    clock, waits = Clock(), []
    limiter = RateLimiter(1_000_000, clock, on_wait=waits.append)
    limiter.charge(MIN_BURST_BYTES)                # empty now
    clock.now += 2
    limiter.set_rate(2_000_000)                    # 2 s at the old rate refilled it (to the old burst)
    assert limiter.rate == 2_000_000
    limiter.charge(MIN_BURST_BYTES + 1000)         # the old burst, then 1000 bytes at the new rate
    assert waits == [0.0005]
    limiter.set_rate(0)
    limiter.charge(10**9)                          # unlimited: no wait
    assert limiter.rate == 0 and waits == [0.0005]
