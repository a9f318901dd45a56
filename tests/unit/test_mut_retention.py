"""The retention planner at its exact boundaries: one millisecond either side of each tier's
time limit (they differ by one, as Kafka's do), a timestamp of 0, a partition exactly its size
limit above, the local-only bytes total retention counts, -2's resolution, and the waiting
reasons `status` shows, word for word."""

from __future__ import annotations

import pytest

from tiering.retention.plan import (LOCAL_SIZE, LOCAL_TIME, TOTAL_SIZE, TOTAL_TIME, Deletion, Limits, LocalCopy,
                                    PartitionInput, RemoteCopy, _duration, plan_retention)

NOW = 1_000_000


def one_remote(ts, limits, size=100):
    return PartitionInput(local=(LocalCopy(200, None, 10),), remote=(RemoteCopy(0, 99, size, ts),), limits=limits)


def test_the_store_expires_a_segment_at_exactly_its_limit_and_not_a_millisecond_before():
    limits = Limits(total_ms=1000)
    assert plan_retention(one_remote(NOW - 1000, limits), NOW).remote == (Deletion(0, 100, TOTAL_TIME),)
    assert plan_retention(one_remote(NOW - 999, limits), NOW).remote == ()
    # a timestamp of 0 is a time (the epoch); -1 and None are "unknown", never expired
    assert plan_retention(one_remote(0, Limits(total_ms=NOW)), NOW).remote == (Deletion(0, 100, TOTAL_TIME),)
    for unknown in (-1, None):
        assert plan_retention(one_remote(unknown, Limits(total_ms=0)), NOW).remote == ()


def local_pair(ts, limits, remote=True):
    return PartitionInput(local=(LocalCopy(0, 100, 50, remote, ts), LocalCopy(100, None, 10)),
                          remote=(RemoteCopy(0, 99, 50, ts),) if remote else (), limits=limits)


def test_the_local_copy_expires_one_millisecond_after_the_limit():
    limits = Limits(local_ms=1000)
    assert plan_retention(local_pair(NOW - 1001, limits), NOW).local == (Deletion(0, 50, LOCAL_TIME),)
    assert plan_retention(local_pair(NOW - 1000, limits), NOW).local == ()
    assert plan_retention(local_pair(0, Limits(local_ms=NOW - 1)), NOW).local == (Deletion(0, 50, LOCAL_TIME),)
    assert plan_retention(local_pair(-1, Limits(local_ms=0)), NOW).local == ()
    assert plan_retention(local_pair(NOW - 5000, Limits(local_ms=-1)), NOW).local == ()


def test_a_size_limit_deletes_while_the_partition_stays_at_or_above_it():
    def sizes(limit):
        local = tuple(LocalCopy(i * 10, i * 10 + 10, 100, True, NOW) for i in range(3)) + (LocalCopy(30, None, 100),)
        remote = tuple(RemoteCopy(i * 10, i * 10 + 9, 100, NOW) for i in range(3))
        return plan_retention(PartitionInput(local, remote, Limits(local_bytes=limit, total_bytes=-1)), NOW)
    assert [d.base_offset for d in sizes(200).local] == [0, 10]       # 400 - 200: exactly two go
    assert [d.base_offset for d in sizes(201).local] == [0]
    assert sizes(201).local_waiting == "within local retention bytes (201)"
    assert sizes(200).local[0].reason == LOCAL_SIZE
    assert sizes(0).local_waiting == "segment 30 is the active segment (never deleted)"


def test_total_size_counts_the_local_segments_the_store_does_not_hold():
    remote = (RemoteCopy(0, 9, 100, NOW), RemoteCopy(10, 19, 100, NOW))
    local = (LocalCopy(10, 20, 100, True, NOW), LocalCopy(20, 30, 100), LocalCopy(30, None, 100))
    plan = plan_retention(PartitionInput(local, remote, Limits(total_bytes=300)), NOW)
    assert plan.remote == (Deletion(0, 100, TOTAL_SIZE),)          # 200 in the store + 200 only local
    plan = plan_retention(PartitionInput(local, remote, Limits(total_bytes=301)), NOW)
    assert plan.remote == () and plan.remote_waiting == "within total retention bytes (301)"
    # a local segment starting at the store's last offset is not "only local" (it is not past it)
    local = (LocalCopy(19, 30, 100), LocalCopy(30, None, 100))
    plan = plan_retention(PartitionInput(local, remote, Limits(total_bytes=300)), NOW)
    assert plan.remote == ()


def test_minus_two_takes_the_total_limit_and_other_values_stay():
    assert Limits.of(-2, -2, 5, 6) == Limits(5, 6, 5, 6)
    assert Limits.of(1, 2, 5, 6) == Limits(1, 2, 5, 6)
    assert Limits.of(-1, -1, 5, 6) == Limits(-1, -1, 5, 6)


def test_a_local_copy_of_an_expired_store_segment_goes_with_it_and_the_next_one_is_kept_from():
    remote = (RemoteCopy(0, 99, 50, 0),)
    local = (LocalCopy(0, 100, 50, True, 0), LocalCopy(100, 200, 50, False), LocalCopy(200, None, 5))
    plan = plan_retention(PartitionInput(local, remote, Limits(total_ms=10)), NOW)
    assert plan.local == (Deletion(0, 50, TOTAL_TIME),) and plan.local_keep_from == 100
    assert plan.local_waiting == "segment 100: not in the store yet"
    # nothing goes locally: no offset to move the log start to
    plan = plan_retention(PartitionInput(local, remote, Limits()), NOW)
    assert plan.local == () and plan.local_keep_from is None
    # all rolled ones go: the log starts at the active segment
    local = (LocalCopy(0, 100, 50, True, 0, expired=TOTAL_SIZE),)
    plan = plan_retention(PartitionInput(local, (), Limits()), NOW)
    assert plan.local == (Deletion(0, 50, TOTAL_SIZE),) and plan.local_keep_from == 100


def test_a_segment_expired_by_size_but_not_in_the_store_stays_and_says_why():
    local = (LocalCopy(0, 100, 500, False, not_remote_reason="upload failed"), LocalCopy(100, None, 5))
    plan = plan_retention(PartitionInput(local, (), Limits(local_bytes=0)), NOW)
    assert plan.local == () and plan.local_waiting == "segment 0: upload failed (local-size would delete it)"


@pytest.mark.parametrize("limits, ts, expected", [
    (Limits(), NOW, "total retention is unlimited"),
    (Limits(total_ms=86_400_000 + 5000), NOW - 5000, "expires by time in 1.0 d"),
    (Limits(total_ms=86_400_000), NOW - 1, "expires by time in 24.0 h"),
    (Limits(total_ms=3_600_000 + 10), NOW - 10, "expires by time in 1.0 h"),
    (Limits(total_ms=60_000 + 10), NOW - 10, "expires by time in 1.0 min"),
    (Limits(total_ms=59_000 + 10), NOW - 10, "expires by time in 59 s"),
    (Limits(total_ms=1500, total_bytes=50), NOW - 1000, "expires by time in 0 s; within total retention bytes (50)"),
    (Limits(total_ms=1000), -1, "within total retention"),
])
def test_the_store_waiting_reason_word_for_word(limits, ts, expected):
    plan = plan_retention(one_remote(ts, limits, size=1), NOW)
    assert plan.remote == () and plan.remote_waiting == expected


def test_durations_round_into_their_unit():
    assert [_duration(ms) for ms in (-5, 0, 1, 499, 500, 59_499, 60_000, 3_599_999, 3_600_000, 86_399_999,
                                     86_400_000, 172_800_000)] == [
        "0 s", "0 s", "0 s", "0 s", "0 s", "59 s", "1.0 min", "60.0 min", "1.0 h", "24.0 h", "1.0 d", "2.0 d"]


def test_a_local_segment_rewritten_under_an_expired_store_copys_base_offset_is_not_that_copy():
    # The broker truncated and rewrote [0, ...) after an unclean election: the local segment is
    # not the one in the store (remote=False), so the store copy's expiry must not delete it.
    remote = (RemoteCopy(0, 99, 50, 0),)
    local = (LocalCopy(0, 120, 60, False, not_remote_reason="not in the store yet"), LocalCopy(120, None, 5))
    plan = plan_retention(PartitionInput(local, remote, Limits(total_ms=10)), NOW)
    assert plan.remote == (Deletion(0, 50, TOTAL_TIME),)
    assert plan.local == () and plan.local_waiting == "segment 0: not in the store yet"
    # the same copy uploaded (remote=True) goes with the store's
    local = (LocalCopy(0, 100, 50, True, 0), LocalCopy(100, None, 5))
    assert plan_retention(PartitionInput(local, remote, Limits(total_ms=10)), NOW).local == \
        (Deletion(0, 50, TOTAL_TIME),)


def test_a_time_limit_of_zero_expires_everything_older_than_now_and_is_not_unlimited():
    assert plan_retention(local_pair(NOW - 1, Limits(local_ms=0)), NOW).local == (Deletion(0, 50, LOCAL_TIME),)
    assert plan_retention(local_pair(NOW, Limits(local_ms=0)), NOW).local == ()
    assert plan_retention(one_remote(NOW, Limits(total_ms=0)), NOW).remote == (Deletion(0, 100, TOTAL_TIME),)
    # a segment whose time is unknown waits under a zero limit: within it, not "unlimited"
    assert plan_retention(one_remote(-1, Limits(total_ms=0), size=1), NOW).remote_waiting == "within total retention"


def test_the_waiting_reason_counts_down_from_a_zero_limit_and_a_zero_timestamp():
    # a producer's clock ahead of ours: under a zero limit the segment waits until its own time
    assert plan_retention(one_remote(NOW + 5000, Limits(total_ms=0), size=1), NOW).remote_waiting == \
        "expires by time in 5 s"
    # a timestamp of 0 (the epoch) is a time to count from
    assert plan_retention(one_remote(0, Limits(total_ms=NOW + 2000), size=1), NOW).remote_waiting == \
        "expires by time in 2 s"
