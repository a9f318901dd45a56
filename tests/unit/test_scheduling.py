"""The pure parts of the daemon's scheduling: token bucket, circuit breaker, backlog queue, sweep plan."""

from __future__ import annotations

import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from tiering.store.keys import KeyLayout
from tiering.store.protocol import MultipartUpload, ObjectInfo
from tiering.sweep import plan_sweep
from tiering.upload.breaker import Breaker, BreakerPolicy
from tiering.upload.queue import Pending, UploadQueue
from tiering.upload.ratelimit import Cancelled, RateLimiter, TokenBucket, burst_for


# -- token bucket --------------------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(rate=st.integers(1_000, 100_000_000),
       charges=st.lists(st.integers(1, 20_000_000), min_size=1, max_size=60))
def test_bucket_never_lets_more_than_rate_times_time_plus_burst(rate, charges):
    """Senders that wait as told never send more than burst + rate * elapsed: the limit holds
    whatever the charge sizes (a charge larger than the bucket is paid off by waiting)."""
    bucket = TokenBucket.full(rate, 0.0)
    now = 0.0
    sent = 0
    for nbytes in charges:
        bucket, wait = bucket.charge(nbytes, now)
        now += wait
        sent += nbytes
        assert sent <= burst_for(rate) + rate * now + 1e-6 * rate
    # and it is not stricter than needed: a sender always charging gets the rate, less one burst
    assert sent >= rate * now - 1


def test_bucket_rate_over_a_long_run_is_exact():
    rate = 8 * 1024 * 1024
    bucket, now, sent = TokenBucket.full(rate, 0.0), 0.0, 0
    while now < 10.0:
        bucket, wait = bucket.charge(65536, now)
        now += wait
        sent += 65536
    achieved = (sent - burst_for(rate)) / now
    assert abs(achieved - rate) / rate < 0.01


def test_unlimited_bucket_never_waits_and_retuning_keeps_debt():
    bucket = TokenBucket.full(0, 0.0)
    assert bucket.charge(10**12, 0.0)[1] == 0
    limited = TokenBucket.full(1000, 0.0)
    limited, wait = limited.charge(burst_for(1000) + 5000, 0.0)
    assert wait == 5.0
    faster = limited.retuned(10_000, 0.0)
    assert faster.charge(0, 0.0)[1] == 0.5    # the same 5000 bytes of debt, paid at the new rate
    assert faster.retuned(0, 0.0).charge(10**9, 0.0)[1] == 0


def test_limiter_cancel_wakes_a_waiting_sender():
    limiter = RateLimiter(1000, lambda: 0.0)   # a frozen clock: the wait would be forever long
    limiter.charge(burst_for(1000))
    raised = []

    def sender():
        try:
            limiter.charge(1_000_000)
        except Cancelled:
            raised.append(True)

    thread = threading.Thread(target=sender)
    thread.start()
    limiter.cancel()
    thread.join(timeout=5)
    assert raised == [True]


# -- circuit breaker -----------------------------------------------------------------------------

def test_breaker_opens_after_repeated_failures_probes_once_and_backs_off():
    policy = BreakerPolicy(failures_to_open=3, first_backoff_seconds=10, max_backoff_seconds=25)
    b = Breaker()
    for t in (0, 1):
        b = b.failed(t, policy)
        assert b.allows(t)
    b = b.failed(2, policy)
    assert not b.allows(5) and b.is_open(5)
    assert b.allows(12)                      # backoff over: one probe may go
    b = b.started(12)
    assert not b.allows(12)                  # ...and only one
    b = b.failed(13, policy)                 # the probe failed: muted twice as long
    assert not b.allows(32) and b.allows(33)
    b = b.started(33).failed(34, policy)
    assert b.open_until == 34 + 25           # capped
    assert b.started(60).succeeded().allows(60)


# -- backlog queue -------------------------------------------------------------------------------

def pending(partition, base, size=100, not_before=0.0):
    return Pending(partition, base, size, rolled_at=1000.0 + base, item=(partition, base), not_before=not_before)


def test_queue_is_round_robin_across_partitions_and_oldest_first_within():
    q = UploadQueue()
    q.set_partition("busy", [pending("busy", b) for b in (30, 10, 20, 40, 50)])
    q.set_partition("quiet", [pending("quiet", 7)])
    q.set_partition("other", [pending("other", 3), pending("other", 1)])
    order = []
    while (p := q.take(0.0)) is not None:
        order.append((p.partition, p.base_offset))
    assert order[:3] == [("busy", 10), ("quiet", 7), ("other", 1)]
    assert order[3:] == [("busy", 20), ("other", 3), ("busy", 30), ("busy", 40), ("busy", 50)]
    assert len(q) == 0 and q.backlog().segments == 0


def test_queue_respects_backoff_and_muted_partitions_and_keeps_retry_state():
    q = UploadQueue()
    q.set_partition("a", [pending("a", 1)])
    q.set_partition("b", [pending("b", 5)])
    assert q.take(0.0, allowed=lambda p: p != "a").partition == "b"
    first = q.take(0.0)
    q.push(Pending(first.partition, first.base_offset, first.size, first.rolled_at, first.item,
                   attempts=1, not_before=10.0))
    assert q.take(5.0) is None and q.next_ready_at() == 10.0
    q.set_partition("a", [pending("a", 1), pending("a", 2)])   # a rescan keeps the retry's backoff
    assert q.take(5.0).base_offset == 2
    retried = q.take(10.0)
    assert (retried.base_offset, retried.attempts) == (1, 1)


def test_queue_backlog_counts_bytes_and_oldest():
    q = UploadQueue()
    q.set_partition("a", [pending("a", 5, size=10), pending("a", 9, size=20)])
    q.set_partition("b", [pending("b", 2, size=30)])
    backlog = q.backlog()
    assert (backlog.segments, backlog.bytes, backlog.oldest_rolled_at) == (3, 60, 1002.0)
    q.set_partition("a", [])
    assert q.backlog().segments == 1 and ("a", 5) not in q


# -- sweep plan ----------------------------------------------------------------------------------

ROOT = "cluster-a/orders-AAAAAAAAAAAAAAAAAAAAAA/0/"


def key(base, uid, suffix):
    return f"{ROOT}{base:020d}-{uid}.{suffix}"


def test_sweep_plan_removes_only_old_unmanifested_objects_not_in_flight():
    now = 100_000.0
    objects = [
        ObjectInfo(key(0, "a" * 16, "log"), 1, "e", now - 90_000),            # complete segment
        ObjectInfo(key(0, "a" * 16, "manifest.json"), 1, "e", now - 90_000),
        ObjectInfo(key(10, "b" * 16, "log"), 1, "e", now - 90_000),           # orphan, old
        ObjectInfo(key(10, "b" * 16, "index"), 1, "e", now - 90_000),
        ObjectInfo(key(20, "c" * 16, "log"), 1, "e", now - 10),               # young: maybe in progress
        ObjectInfo(key(30, "d" * 16, "log"), 1, "e", now - 90_000),           # old but in flight
        ObjectInfo("cluster-a/notes/readme.txt", 1, "e", now - 90_000),       # not our layout
        ObjectInfo("cluster-a/team-b/" + key(60, "9" * 16, "log"), 1, "e", now - 90_000),   # nested deployment
    ]
    uploads = [
        MultipartUpload(key(40, "e" * 16, "log"), "u1", now - 7200),
        MultipartUpload(key(50, "f" * 16, "log"), "u2", now - 60),
        MultipartUpload(key(30, "d" * 16, "log"), "u3", now - 7200),
        MultipartUpload("cluster-a/team-b/" + key(70, "8" * 16, "log"), "u4", now - 7200),   # nested deployment
    ]
    busy = {f"{ROOT}{30:020d}-{'d' * 16}"}
    layout = KeyLayout("cluster-a/")
    owned = lambda items: [(layout.parse(i.key), i) for i in items if layout.parse(i.key) is not None]  # noqa: E731
    plan = plan_sweep(owned(uploads), owned(objects), busy, now, 3600, 86_400)
    assert sorted(plan.orphans) == sorted([key(10, "b" * 16, "log"), key(10, "b" * 16, "index")])
    assert [u.upload_id for u in plan.aborts] == ["u1"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["set", "push", "take", "drop"]), st.integers(0, 3),
                          st.lists(st.integers(0, 5), max_size=4), st.sampled_from([0.0, 5.0, 20.0])),
                max_size=40))
def test_queue_bookkeeping_matches_a_naive_model(ops):
    """The O(1) size and backoff index agree with the entries themselves after any sequence."""
    q = UploadQueue()
    model: dict[tuple[int, int], float] = {}
    now = 10.0
    for op, partition, bases, not_before in ops:
        if op == "set":
            kept = {b: model[(partition, b)] for b in bases if (partition, b) in model}
            for key in [k for k in model if k[0] == partition]:
                del model[key]
            for b in bases:
                model[(partition, b)] = kept.get(b, 0.0)
            q.set_partition(partition, [pending(partition, b) for b in bases])
        elif op == "push":
            base = bases[0] if bases else 0
            model[(partition, base)] = not_before
            q.push(pending(partition, base, not_before=not_before))
        elif op == "take":
            taken = q.take(now)
            ready = [k for k, t in model.items() if t <= now]
            assert (taken is None) == (not ready)
            if taken is not None:
                assert model.pop((taken.partition, taken.base_offset)) <= now
        else:
            for key in [k for k in model if k[0] == partition]:
                del model[key]
            q.drop_partition(partition)
        assert len(q) == len(model) == q.backlog().segments
        assert q.next_ready_at() == (min(model.values()) if model else None)
        assert all(key in q for key in model)
