"""The retention planner's rules, checked on random partitions (hypothesis) and a few cases."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tiering.retention.plan import (LOCAL_SIZE, LOCAL_TIME, TOTAL_SIZE, TOTAL_TIME, Limits, LocalCopy,
                                    PartitionInput, RemoteCopy, plan_retention)

NOW = 10_000_000


@st.composite
def partitions(draw):
    """A partition's history: some segments only in the store (deleted locally before), then the
    local ones, the last of them active; each rolled local one uploaded or not."""
    count = draw(st.integers(1, 12))
    remote_only = draw(st.integers(0, 6))
    sizes = draw(st.lists(st.integers(1, 1000), min_size=remote_only + count, max_size=remote_only + count))
    # -1: a timestamp never resolved (a manifest that could not say): never expires by time.
    stamps = draw(st.lists(st.one_of(st.integers(0, NOW), st.just(-1)), min_size=remote_only + count,
                           max_size=remote_only + count))
    uploaded = draw(st.lists(st.booleans(), min_size=count, max_size=count))
    # The oldest local copies may be ones total retention already removed from the store.
    expired = draw(st.integers(0, count - 1))
    bases = [sum(sizes[:i]) for i in range(len(sizes) + 1)]   # offsets grow with size: any rule will do
    remote, local = [], []
    for i in range(remote_only + count):
        last = i == remote_only + count - 1
        gone = remote_only <= i < remote_only + expired
        in_store = i < remote_only or (not last and not gone and uploaded[i - remote_only])
        if in_store:
            remote.append(RemoteCopy(bases[i], bases[i + 1] - 1, sizes[i], stamps[i]))
        if i >= remote_only:
            local.append(LocalCopy(bases[i], None if last else bases[i + 1], sizes[i], in_store,
                                   stamps[i] if in_store else None, expired="total-size" if gone else None))
    limit = st.one_of(st.just(-1), st.integers(0, 12_000))
    total_ms, total_bytes = draw(limit), draw(limit)
    local_ms = draw(st.one_of(st.just(-2), st.just(-1), st.integers(0, 12_000_000)))
    local_bytes = draw(st.one_of(st.just(-2), st.just(-1), st.integers(0, 12_000)))
    # The configuration forbids a local limit above (or more lenient than) the total one.
    if total_ms >= 0 and (local_ms == -1 or local_ms > total_ms):
        local_ms = total_ms
    if total_bytes >= 0 and (local_bytes == -1 or local_bytes > total_bytes):
        local_bytes = total_bytes
    return PartitionInput(tuple(local), tuple(remote), Limits.of(local_ms, local_bytes, total_ms, total_bytes))


def _is_prefix(deleted, segments) -> bool:
    return [d.base_offset for d in deleted] == [s.base_offset for s in segments[:len(deleted)]]


@settings(max_examples=500)
@given(partitions())
def test_nothing_unuploaded_or_active_is_ever_deleted_locally(partition):
    plan = plan_retention(partition, NOW)
    by_base = {c.base_offset: c for c in partition.local}
    for deletion in plan.local:
        copy = by_base[deletion.base_offset]
        assert (copy.remote or copy.expired) and not copy.active


@settings(max_examples=500)
@given(partitions())
def test_deletions_are_the_oldest_segments_of_each_tier(partition):
    plan = plan_retention(partition, NOW)
    assert _is_prefix(plan.local, partition.local)
    assert _is_prefix(plan.remote, partition.remote)
    if plan.local:
        kept = partition.local[len(plan.local)]
        assert plan.local_keep_from == kept.base_offset


@settings(max_examples=500)
@given(partitions())
def test_every_deletion_has_its_reason_and_sizes_never_go_below_the_limit(partition):
    plan = plan_retention(partition, NOW)
    limits = partition.limits
    local_left = sum(c.size for c in partition.local)
    remote_by_base = {d.base_offset: d.reason for d in plan.remote}
    for deletion in plan.local:
        local_left -= deletion.size
        copy = next(c for c in partition.local if c.base_offset == deletion.base_offset)
        if deletion.reason == LOCAL_TIME:
            assert limits.local_ms >= 0 and copy.max_timestamp >= 0 and NOW - copy.max_timestamp > limits.local_ms
        elif deletion.reason == LOCAL_SIZE:
            assert limits.local_bytes >= 0 and local_left >= limits.local_bytes
        else:
            assert remote_by_base.get(deletion.base_offset, copy.expired) == deletion.reason
    highest = partition.remote[-1].end_offset if partition.remote else -1
    total_left = sum(r.size for r in partition.remote) + sum(c.size for c in partition.local if c.base_offset > highest)
    for deletion in plan.remote:
        total_left -= deletion.size
        segment = next(r for r in partition.remote if r.base_offset == deletion.base_offset)
        if deletion.reason == TOTAL_TIME:
            assert limits.total_ms >= 0 and 0 <= segment.max_timestamp <= NOW - limits.total_ms
        else:
            assert deletion.reason == TOTAL_SIZE
            assert limits.total_bytes >= 0 and total_left >= limits.total_bytes


@settings(max_examples=500)
@given(partitions())
def test_the_walk_stops_only_at_a_segment_that_must_stay(partition):
    """Maximal: the first segment kept is not expired (or may not go), with a reason given."""
    plan = plan_retention(partition, NOW)
    limits = partition.limits
    if len(plan.remote) < len(partition.remote):
        kept = partition.remote[len(plan.remote)]
        highest = partition.remote[-1].end_offset
        total_left = (sum(r.size for r in partition.remote[len(plan.remote):])
                      + sum(c.size for c in partition.local if c.base_offset > highest))
        assert not (limits.total_ms >= 0 and 0 <= kept.max_timestamp <= NOW - limits.total_ms)
        assert not (limits.total_bytes >= 0 and total_left - kept.size >= limits.total_bytes)
        assert plan.remote_waiting
    if len(plan.local) < len(partition.local):
        kept = partition.local[len(plan.local)]
        assert plan.local_waiting
        if kept.remote and not kept.active:
            local_left = sum(c.size for c in partition.local[len(plan.local):])
            assert not (limits.local_ms >= 0 and kept.max_timestamp >= 0 and NOW - kept.max_timestamp > limits.local_ms)
            assert not (limits.local_bytes >= 0 and local_left - kept.size >= limits.local_bytes)
            assert kept.base_offset not in {d.base_offset for d in plan.remote}


@settings(max_examples=300)
@given(partitions())
def test_minus_two_means_the_total_value_and_minus_one_unlimited(partition):
    total = partition.limits
    same = PartitionInput(partition.local, partition.remote,
                          Limits.of(-2, -2, total.total_ms, total.total_bytes))
    explicit = PartitionInput(partition.local, partition.remote,
                              Limits.of(total.total_ms, total.total_bytes, total.total_ms, total.total_bytes))
    assert plan_retention(same, NOW) == plan_retention(explicit, NOW)
    unlimited = PartitionInput(partition.local, partition.remote, Limits.of(-1, -1, -1, -1))
    plan = plan_retention(unlimited, NOW)
    assert plan.remote == ()
    assert [d.base_offset for d in plan.local] == [c.base_offset for c in partition.local if c.expired]


@settings(max_examples=300)
@given(partitions())
def test_local_copies_already_expired_from_the_store_go_first(partition):
    plan = plan_retention(partition, NOW)
    expired = [c.base_offset for c in partition.local if c.expired]
    assert [d.base_offset for d in plan.local[:len(expired)]] == expired
    assert all(d.reason == "total-size" for d in plan.local[:len(expired)])


@settings(max_examples=300)
@given(partitions(), st.text(min_size=1, max_size=20))
def test_a_held_partition_loses_nothing_locally(partition, reason):
    held = PartitionInput(partition.local, partition.remote, partition.limits, local_hold=reason)
    plan = plan_retention(held, NOW)
    assert plan.local == ()
    assert plan.local_waiting == reason
    assert plan.remote == plan_retention(partition, NOW).remote   # the store's retention still applies


def test_kafka_size_rule_keeps_the_partition_at_or_above_the_limit():
    local = (LocalCopy(0, 10, 100, True, NOW), LocalCopy(10, 20, 100, True, NOW), LocalCopy(20, 30, 100, True, NOW),
             LocalCopy(30, None, 50))
    remote = tuple(RemoteCopy(c.base_offset, c.next_offset - 1, c.size, NOW) for c in local[:3])
    plan = plan_retention(PartitionInput(local, remote, Limits.of(-1, 160, -1, -1)), NOW)
    # 350 bytes, limit 160: deleting 100 leaves 250, another 100 leaves 150 < 160, so one goes.
    assert [(d.base_offset, d.reason) for d in plan.local] == [(0, LOCAL_SIZE)]
    assert plan.local_keep_from == 10
    assert plan.remote == ()


def test_time_retention_uses_the_largest_timestamp_and_total_takes_the_local_copy_too():
    day = 86_400_000
    now = 30 * day
    local = (LocalCopy(0, 10, 100, True, now - 10 * day), LocalCopy(10, 20, 100, True, now - 2 * day),
             LocalCopy(20, 30, 100, True, now - 1000), LocalCopy(30, None, 50))
    remote = tuple(RemoteCopy(c.base_offset, c.next_offset - 1, c.size, c.max_timestamp) for c in local[:3])
    plan = plan_retention(PartitionInput(local, remote, Limits.of(3_600_000, -2, 7 * day, -1)), now)
    assert [(d.base_offset, d.reason) for d in plan.remote] == [(0, TOTAL_TIME)]
    assert [(d.base_offset, d.reason) for d in plan.local] == [(0, TOTAL_TIME), (10, LOCAL_TIME)]
    assert "expires by time in" in plan.local_waiting


def test_an_expired_segment_not_yet_in_the_store_stops_local_deletion_with_the_reason():
    local = (LocalCopy(0, 10, 500, False, None, "failed: corrupt segment"), LocalCopy(10, 20, 500, True, 0),
             LocalCopy(20, None, 10))
    remote = (RemoteCopy(10, 19, 500, 0),)
    plan = plan_retention(PartitionInput(local, remote, Limits.of(-1, 100, -1, -1)), NOW)
    assert plan.local == ()
    assert plan.local_waiting == "segment 0: failed: corrupt segment (local-size would delete it)"


def test_time_expiry_at_the_exact_millisecond_is_kafkas_in_each_tier():
    """Locally `now - largest > limit` (UnifiedLog), in the store `largest <= now - limit`
    (RemoteLogManager): at exactly `limit` old, the store's copy goes and the local one stays."""
    limit = 3_600_000
    def plan_at(age):
        stamp = NOW - age
        local = (LocalCopy(0, 10, 100, True, stamp), LocalCopy(10, None, 10))
        return plan_retention(PartitionInput(local, (RemoteCopy(0, 9, 100, stamp),), Limits.of(limit, -1, -1, -1)),
                              NOW), plan_retention(
            PartitionInput(local, (RemoteCopy(0, 9, 100, stamp),), Limits.of(-1, -1, limit, -1)), NOW)
    local_only, total = plan_at(limit - 1)
    assert local_only.local == () and total.remote == ()
    local_only, total = plan_at(limit)
    assert local_only.local == ()                                        # Kafka: > limit
    assert [(d.base_offset, d.reason) for d in total.remote] == [(0, TOTAL_TIME)]   # Kafka: <=
    local_only, total = plan_at(limit + 1)
    assert [(d.base_offset, d.reason) for d in local_only.local] == [(0, LOCAL_TIME)]


def test_a_segment_whose_timestamp_is_unknown_never_expires_by_time():
    local = (LocalCopy(0, 10, 100, True, -1), LocalCopy(10, None, 10))
    plan = plan_retention(PartitionInput(local, (RemoteCopy(0, 9, 100, -1),), Limits.of(0, -1, 0, -1)), NOW)
    assert plan.local == () and plan.remote == ()
