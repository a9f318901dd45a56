"""The rollback's pure core: which segments a partition gets back, the leader-epoch merge, and
the checkpoint rewrite that leaves other partitions' lines alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tiering.kafka.checkpoints import (CheckpointError, EpochEntry, TopicPartition, parse_offset_checkpoint,
                                       rewrite_offset_checkpoint)
from tiering.kafka.logdir import LocalPartition, LocalSegment
from tiering.rollback.plan import merge_leader_epochs, plan_partition, restore_files
from tiering.store.keys import PartitionPath
from tiering.store.manifest import FORMAT_VERSION, ObjectEntry, SegmentManifest

TOPIC_ID = "AAAAAAAAAAAAAAAAAAAAAA"
ROOT = Path("/data/orders-0")


def manifest(base: int, end: int, *, epochs=((0, None),), uid: str = "0123456789abcdef", created: int = 1,
             kinds=("log", "index", "timeindex", "snapshot")) -> SegmentManifest:
    keys = PartitionPath("c/", "orders", TOPIC_ID, 0).segment(base, uid)
    objects = tuple(ObjectEntry(k, keys.object_key(k), 100, "00000000", "e") for k in kinds)
    return SegmentManifest(FORMAT_VERSION, "orders", TOPIC_ID, 0, base, end, end, 100, 1, end - base + 1, 0,
                           tuple((e, base if s is None else s) for e, s in epochs), objects, uid, 1, created, "t")


def local(*bases: int) -> LocalPartition:
    segments = tuple(LocalSegment(ROOT.parent, "orders", 0, b, bases[i + 1] if i + 1 < len(bases) else None, 10,
                                  ROOT / f"{b:020d}.log") for i, b in enumerate(bases))
    return LocalPartition(ROOT.parent, "orders", 0, ROOT, TOPIC_ID, None, segments)


def test_segments_below_the_local_ones_come_back_newest_first_with_their_files():
    remote = [manifest(0, 99), manifest(100, 199), manifest(200, 299), manifest(300, 399)]
    plan = plan_partition(local(300, 400), remote, [], log_start=300)
    assert [s.base_offset for s in plan.restore] == [200, 100, 0]
    assert [m.base_offset for m in plan.local_copies] == [300]
    assert plan.first_offset == 0 and plan.new_log_start == 0 and plan.refused is None and plan.left is None
    names = [f.name for f in plan.restore[0].files]
    # indexes before the .log; the producer snapshot is named for the next segment's base
    assert names == ["00000000000000000200.index", "00000000000000000200.timeindex", "00000000000000000300.snapshot",
                     "00000000000000000200.log"]


def test_a_gap_in_the_store_stops_the_chain_and_says_what_stays():
    remote = [manifest(0, 99), manifest(150, 199), manifest(200, 299)]
    plan = plan_partition(local(300), remote, [], log_start=300)
    assert [s.base_offset for s in plan.restore] == [200, 150]
    assert plan.left is not None and "offsets 100..149" in plan.left and "1 segment(s)" in plan.left


def test_an_overlap_with_the_local_log_or_an_invalid_manifest_refuses_the_partition():
    overlap = plan_partition(local(250, 400), [manifest(0, 99), manifest(100, 299)], [], log_start=250)
    assert overlap.refused is not None and "overlaps" in overlap.refused and overlap.restore == ()
    bad = plan_partition(local(300), [manifest(200, 299)], [("c/x.manifest.json", "object key is not this segment's")], 300)
    assert bad.refused is not None and "c/x.manifest.json" in bad.refused and bad.restore == ()
    assert bad.new_log_start is None          # a refused partition's checkpoint is left alone too


def test_the_newer_of_two_uploads_of_a_segment_wins_and_the_other_is_kept_for_deletion():
    older, newer = manifest(0, 99, uid="1" * 16, created=1), manifest(0, 99, uid="2" * 16, created=2)
    plan = plan_partition(local(100), [newer, older], [], log_start=None)
    assert [s.manifest.uid for s in plan.restore] == ["2" * 16]
    assert plan.duplicates == (older,)
    assert plan.new_log_start is None         # no checkpoint entry: the broker starts from the first segment


def test_nothing_to_do_when_everything_is_local():
    plan = plan_partition(local(0, 100), [manifest(0, 99)], [], log_start=0)
    assert plan.restore == () and not plan.has_work


def test_restore_file_names_come_from_offsets_never_from_keys():
    m = manifest(42, 99, kinds=("log", "txnindex", "leader_epoch"))
    assert [f.name for f in restore_files(m)] == ["00000000000000000042.txnindex", "00000000000000000042.log"]


def test_epochs_trimmed_by_the_broker_are_put_back():
    # The broker moved its log start to 1000: epoch 1 (from 500) now starts at 1000, epoch 0 is gone.
    current = (EpochEntry(1, 1000), EpochEntry(2, 1500))
    restored = [manifest(0, 499, epochs=((0, 0),)), manifest(500, 999, epochs=((1, 500),))]
    assert merge_leader_epochs(current, restored) == (EpochEntry(0, 0), EpochEntry(1, 500), EpochEntry(2, 1500))
    assert merge_leader_epochs(merge_leader_epochs(current, restored), restored) == \
        merge_leader_epochs(current, restored)                      # idempotent: a rerun changes nothing
    assert merge_leader_epochs((), restored) == (EpochEntry(0, 0), EpochEntry(1, 500))


def test_epochs_from_the_store_never_override_the_live_ones_above_the_log_start():
    current = (EpochEntry(3, 800), EpochEntry(4, 900))
    # A stale copy claims epoch 4 began at 850 and epoch 5 at 870: the file's entries win above 800.
    stale = [manifest(700, 899, epochs=((2, 700), (4, 850), (5, 870)))]
    assert merge_leader_epochs(current, stale) == (EpochEntry(2, 700), EpochEntry(3, 800), EpochEntry(4, 900))


@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 10_000)), max_size=30),
       st.lists(st.tuples(st.integers(0, 50), st.integers(0, 10_000)), max_size=5))
def test_merged_epochs_always_rise_in_both_columns(from_store, live):
    current = tuple(EpochEntry(e, s) for e, s in sorted(set(live)))
    merged = merge_leader_epochs(current, [manifest(0, 10_000, epochs=tuple(from_store))] if from_store else [])
    assert all(a.epoch < b.epoch and a.start_offset < b.start_offset for a, b in zip(merged, merged[1:]))


def test_the_checkpoint_rewrite_changes_only_the_named_lines():
    text = "0\n4\nzeta 3 10\norders 0 1460\nalpha 0 5\norders 1 1460\n"
    out = rewrite_offset_checkpoint(text, {TopicPartition("orders", 0): 0, TopicPartition("absent", 0): 7})
    assert out == "0\n4\nzeta 3 10\norders 0 0\nalpha 0 5\norders 1 1460\n"       # order and other lines kept
    assert parse_offset_checkpoint(out)[TopicPartition("orders", 0)] == 0
    with pytest.raises(CheckpointError):
        rewrite_offset_checkpoint("0\n2\norders 0 1\n", {})                          # never rewrite what does not parse


def test_progress_events_carry_bytes_rate_and_eta():
    import threading

    from tiering.rollback.progress import Progress, ProgressEvents

    now = [100.0]
    progress = Progress(1000, 4, lambda: now[0])
    logged: list[dict] = []
    seen = threading.Event()

    class Log:
        def info(self, event: str, **fields) -> None:
            logged.append({"event": event, **fields})
            seen.set()

    progress.add(250)
    progress.segment_done()
    now[0] = 105.0                      # 250 bytes in 5 s: 50 B/s, 750 left: 15 s
    events = ProgressEvents(progress, Log(), interval=0.01)
    assert seen.wait(5)
    events.close()
    assert logged[0] == {"event": "rollback progress", "bytes_done": 250, "bytes_total": 1000, "segments_done": 1,
                         "segments_total": 4, "rate_bytes_per_second": 50, "eta_seconds": 15.0}
