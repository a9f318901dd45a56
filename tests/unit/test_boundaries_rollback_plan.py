"""The rollback planner at its exact edges, each refusal and what-stays line in full (found by
mutation testing: these lines are what an operator acts on, and the comparisons decide what is
written into a broker's log dir)."""

from __future__ import annotations

from dataclasses import replace

from tests.unit.test_rollback_plan import local, manifest
from tiering.kafka.checkpoints import EpochEntry
from tiering.rollback.plan import merge_leader_epochs, plan_partition


def test_a_store_segment_ending_exactly_at_the_local_start_overlaps_and_one_before_it_joins():
    overlap = plan_partition(local(300), [manifest(200, 300)], [], log_start=300)
    assert overlap.refused == (
        "the store's segment 200..300 overlaps the local segment at 300 (the broker rewrote its log since the "
        "upload); restoring it would duplicate offsets, so nothing is restored")
    assert overlap.restore == () and [m.base_offset for m in overlap.local_copies] == []
    joined = plan_partition(local(300), [manifest(200, 299)], [], log_start=300)
    assert [s.base_offset for s in joined.restore] == [200] and joined.refused is None and joined.left is None


def test_the_gap_line_counts_the_segments_left_in_the_store():
    plan = plan_partition(local(300), [manifest(0, 49), manifest(50, 99), manifest(150, 299)], [], log_start=300)
    assert [s.base_offset for s in plan.restore] == [150]
    assert plan.left == ("offsets 100..149 are in neither tier; the 2 segment(s) below offset 100 stay in the store "
                         "(a restored log must not have a gap)")


def test_a_gap_right_below_the_local_start_restores_nothing():
    plan = plan_partition(local(300), [manifest(0, 298)], [], log_start=300)
    assert plan.restore == () and plan.left is not None and plan.left.startswith("offsets 299..299 are in neither tier; the 1 ")


def test_every_refusal_in_full():
    missing_id = replace(local(300), topic_id=None, topic_id_problem="partition.metadata is missing")
    assert plan_partition(missing_id, [], [], 300).refused == \
        "partition.metadata is missing; the store's keys for it cannot be found"
    one = plan_partition(local(300), [], [("k1", "bad size")], 300)
    assert one.refused == ("manifest k1 is not usable: bad size; nothing is restored from a store that holds it: "
                           "check it with 'tiering verify', move it aside, then rerun")
    three = plan_partition(local(300), [], [("k1", "bad size"), ("k2", "x"), ("k3", "y")], 300)
    assert three.refused.startswith("manifest k1 is not usable: bad size (and 2 more); nothing")
    empty = plan_partition(replace(local(300), segments=()), [manifest(0, 99)], [], None)
    assert empty.refused == ("the partition directory holds no segment (not even the active one); start the broker "
                             "once so it creates it, stop it, then rerun")
    assert empty.local_first is None and empty.restore == ()
    for plan in (one, three, empty):
        assert plan.has_work and plan.new_log_start is None


def test_of_two_uploads_made_at_the_same_moment_the_first_listed_is_kept():
    a, b = manifest(0, 99, uid="1" * 16, created=5), manifest(0, 99, uid="2" * 16, created=5)
    plan = plan_partition(local(100), [a, b], [], log_start=100)
    assert [s.manifest.uid for s in plan.restore] == ["1" * 16] and plan.duplicates == (b,)


def test_the_new_log_start_only_when_the_checkpoint_says_more():
    plan = plan_partition(local(100), [manifest(0, 99)], [], log_start=0)
    assert plan.first_offset == 0 and plan.new_log_start is None and plan.has_work
    assert plan_partition(local(100), [manifest(0, 99)], [], log_start=1).new_log_start == 0
    assert plan.bytes == 400                     # four objects of 100 bytes


def test_an_epoch_starting_at_the_checkpoints_first_offset_is_not_put_back():
    current = (EpochEntry(3, 100), EpochEntry(4, 200))
    store = [manifest(0, 99, epochs=((1, 0), (2, 50))), manifest(100, 199, epochs=((3, 100),))]
    assert merge_leader_epochs(current, store) == (EpochEntry(1, 0), EpochEntry(2, 50), EpochEntry(3, 100),
                                                   EpochEntry(4, 200))
    # the store's own start for the first live epoch wins only when it is lower
    assert merge_leader_epochs((EpochEntry(2, 70), EpochEntry(4, 200)), store)[:2] == (EpochEntry(1, 0), EpochEntry(2, 50))
    assert merge_leader_epochs((), store) == (EpochEntry(1, 0), EpochEntry(2, 50), EpochEntry(3, 100))


def test_a_plan_names_its_partition_and_where_it_lives():
    part = local(300)
    plan = plan_partition(part, [manifest(200, 299)], [], log_start=300)
    assert (plan.topic, plan.partition, plan.topic_id, plan.log_dir, plan.path, plan.local_first) == \
        (part.topic, part.partition, part.topic_id, part.log_dir, part.path, 300)


def test_two_unusable_manifests_say_one_more():
    plan = plan_partition(local(300), [], [("k1", "bad"), ("k2", "bad")], 300)
    assert plan.refused.startswith("manifest k1 is not usable: bad (and 1 more); ")


def test_the_older_upload_listed_first_is_the_duplicate():
    older, newer = manifest(0, 99, uid="1" * 16, created=1), manifest(0, 99, uid="2" * 16, created=2)
    assert plan_partition(local(100), [older, newer], [], log_start=None).duplicates == (older,)


def test_a_refused_overlap_still_lists_the_store_copies_of_local_segments():
    copy = manifest(300, 399)
    plan = plan_partition(local(300, 400), [manifest(200, 300), copy], [], log_start=300)
    assert plan.refused is not None and plan.local_copies == (copy,)


def test_the_epoch_merge_takes_the_lowest_start_and_skips_only_what_does_not_rise():
    store = [manifest(0, 99, epochs=((1, 0),)), manifest(100, 199, epochs=((1, 50),))]
    assert merge_leader_epochs((), store) == (EpochEntry(1, 0),)
    assert merge_leader_epochs((), list(reversed(store))) == (EpochEntry(1, 0),)
    # epoch 3 starts after epoch 4 (not rising): it is dropped, epoch 2 below it is kept
    odd = [manifest(0, 299, epochs=((2, 50), (3, 250), (4, 200)))]
    assert merge_leader_epochs((), odd) == (EpochEntry(2, 50), EpochEntry(4, 200))
    # a store epoch above the checkpoint's first one is never put back, whatever its start
    assert merge_leader_epochs((EpochEntry(3, 100), EpochEntry(4, 200)), [manifest(0, 99, epochs=((5, 50),))]) == \
        (EpochEntry(3, 100), EpochEntry(4, 200))
