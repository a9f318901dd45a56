"""A rollback and replication: the replica sets a plan shows (from the cluster, or as
recorded while it answered), what must happen on each broker, the one-line warning; and the
confirmation step's verdicts and how they are recorded (issue 22)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tiering.journal import Journal, SegmentId
from tiering.rollback import confirm
from tiering.rollback.deletion import DeletionOutcome, RemoteCopies, record, replica_log_start
from tiering.rollback.plan import PartitionPlan
from tiering.rollback.replicas import (InMemoryReplicaSource, ReplicaSet, known_replicas, procedure_lines,
                                       replicated, warning_line)

THREE = {("orders", 0): ReplicaSet(2, (1, 2, 3)), ("orders", 1): ReplicaSet(1, (3, 1, 2)),
         ("clicks", 0): ReplicaSet(1, (1,))}


@pytest.fixture
def journal(tmp_path):
    j = Journal(tmp_path / "state")
    yield j
    j.close()


def test_the_plan_lists_every_replica_and_what_must_happen_on_each_broker(journal):
    known = known_replicas(InMemoryReplicaSource(THREE), journal, ["orders"], 1_000)
    lines = procedure_lines([("orders", 0), ("orders", 1)], known, 1, "tiering rollback --topic orders --confirm")
    assert lines == [
        "replicas (from the cluster's Metadata now):",
        "  orders-0: brokers 1 (this broker), 2 (leader), 3",
        "  orders-1: brokers 3, 1 (this broker, leader), 2",
        'what must happen on each broker (README "A replicated topic"), all of them stopped at once:',
        "  this broker: stop it; tiering rollback --topic orders --confirm (orders-0, orders-1)",
        "  broker 2: stop it; tiering rollback --topic orders --confirm with that broker's own sidecar config "
        "(orders-0, orders-1)",
        "  broker 3: stop it; tiering rollback --topic orders --confirm with that broker's own sidecar config "
        "(orders-0, orders-1)",
        "  then start them all; once consumers read from the restored offsets, --delete-remote on each broker "
        "removes the store's copies",
    ]


def test_a_single_replica_needs_nothing_more_and_gets_no_warning(journal):
    known = known_replicas(InMemoryReplicaSource(THREE), journal, ["clicks"], 1_000)
    assert procedure_lines([("clicks", 0)], known, 1, "c")[-1] == \
        "  every partition has its only replica here: this rollback is all it takes"
    assert replicated([("clicks", 0)], known) == [] and warning_line([]) is None


def test_the_warning_is_one_line_naming_the_replicated_partitions(journal):
    known = known_replicas(InMemoryReplicaSource(THREE), journal, ["orders", "clicks"], 1_000)
    names = replicated([("orders", 0), ("orders", 1), ("clicks", 0)], known)
    assert names == ["orders-0", "orders-1"]
    line = warning_line(names)
    assert "\n" not in line and line.startswith("warning: orders-0, orders-1 have replicas on other brokers")
    assert "undone by replication" in line and 'README "A replicated topic"' in line
    assert warning_line([f"t-{i}" for i in range(7)]).startswith("warning: t-0, t-1, t-2, t-3, t-4 and 2 more have")


def test_with_the_cluster_down_the_replica_sets_recorded_while_it_answered_are_shown_with_their_age(journal):
    up = InMemoryReplicaSource(THREE)
    known_replicas(up, journal, ["orders"], 1_700_000_000_000)
    down = InMemoryReplicaSource(down="NoBrokersAvailable")
    known = known_replicas(down, journal, ["orders"], 1_700_000_100_000)
    assert down.asked == [["orders"]]
    assert dict(known.replicas) == {k: v for k, v in THREE.items() if k[0] == "orders"}
    assert known.describe_source() == ("as recorded in the journal at 2023-11-14 22:13:20 UTC (the cluster did not "
                                       "answer: NoBrokersAvailable)")
    assert replicated([("orders", 0)], known) == ["orders-0"]
    # A topic never recorded: nothing to show but why.
    nothing = known_replicas(down, journal, ["clicks"], 1)
    assert dict(nothing.replicas) == {} and "NoBrokersAvailable" in nothing.error
    assert procedure_lines([("clicks", 0)], nothing, 1, "c")[1] == "  clicks-0: the cluster does not list its replicas"
    # No bootstrap servers and nothing recorded: no replica section at all.
    assert known_replicas(None, journal, ["clicks"], 1) is None
    # A newer answer replaces the recorded one.
    known_replicas(InMemoryReplicaSource({("orders", 0): ReplicaSet(3, (3,))}), journal, ["orders"], 5)
    again = known_replicas(down, journal, ["orders"], 6)
    assert again.replicas[("orders", 0)] == ReplicaSet(3, (3,)) and again.replicas[("orders", 1)] == THREE[("orders", 1)]


def test_garbage_in_the_journal_reads_as_nothing_recorded(journal):
    journal.set_meta("rollback_replicas", "{not json")
    assert known_replicas(InMemoryReplicaSource(down="x"), journal, ["orders"], 1).replicas == {}


# -- confirmation: this broker's replica and the recorded verdicts ------------------------------

def plan(local_first: int | None, log_start: int | None, topic_id: str = "id") -> PartitionPlan:
    return PartitionPlan("orders", 0, topic_id, Path("/x"), Path("/x/orders-0"), local_first, (), (), log_start)


@pytest.mark.parametrize("local_first,log_start,expected", [
    (0, None, 0),        # Kafka writes no checkpoint entry while the log start is the first segment's base
    (0, 120, 120),       # the checkpoint says more: that is where the log starts
    (221, None, 221),    # a follower deleted the restored segments below its leader's log start
    (221, 100, 221),     # Kafka never loads a log start below its first segment
    (None, None, None),
])
def test_this_brokers_log_start_is_the_checkpoint_never_below_the_first_segment(local_first, log_start, expected):
    assert replica_log_start(plan(local_first, log_start)) == expected


def test_the_restored_segments_deleted_by_a_follower_read_as_undone_even_without_a_checkpoint_entry():
    pending = {"orders-0": confirm.PendingDeletion("orders", "id", 0, 0, 5)}
    copies = RemoteCopies(None, None, prefix="p", hash_prefix=False, now_ms=lambda: 9)   # the store is never touched
    outcome = copies.settle([plan(221, None)], pending, lambda asked: {("orders", 0): 0})
    checked = outcome.checked["orders-0"]
    assert (checked.state, checked.checked_at_ms) == (confirm.UNDONE, 9)
    assert checked.detail.startswith("rollback undone: this broker's log start is 221")


def test_a_confirmed_partition_whose_topic_was_resumed_meanwhile_keeps_its_copies():
    pending = {"orders-0": confirm.PendingDeletion("orders", "id", 0, 0, 5)}
    copies = RemoteCopies(None, None, prefix="p", hash_prefix=False, now_ms=lambda: 9)
    outcome = copies.settle([plan(0, None)], pending, lambda asked: {("orders", 0): 0}, still_off=lambda t: False)
    assert outcome.checked["orders-0"].state == confirm.WAITING and "tiering resume" in outcome.checked["orders-0"].detail
    assert outcome.removed == {}


def test_a_recreated_topic_is_not_confirmed_by_the_new_incarnations_log_start():
    pending = {"orders-0": confirm.PendingDeletion("orders", "old", 0, 0, 5)}
    copies = RemoteCopies(None, None, prefix="p", hash_prefix=False, now_ms=lambda: 9)
    outcome = copies.settle([plan(0, None, topic_id="new")], pending, lambda asked: {("orders", 0): 0})
    assert outcome.checked["orders-0"].state == confirm.WAITING and "re-created" in outcome.checked["orders-0"].detail


def test_recording_an_outcome_keeps_a_newer_rollbacks_record_and_forgets_the_removed_copies(journal):
    older = confirm.PendingDeletion("orders", "id", 0, 0, 5)
    other = confirm.PendingDeletion("orders", "id", 1, 0, 5)
    gone = SegmentId("orders", "id", 1, 0)
    journal.mark_uploaded(gone, "u", 9, 10, 10, "k", 1)
    journal.set_meta(confirm.JOURNAL_KEY, confirm.dump({"orders-0": older, "orders-1": other}))
    outcome = DeletionOutcome(removed={"orders-1": 1}, forgotten=[gone], checked={
        "orders-0": confirm.PendingDeletion("orders", "id", 0, 0, 5, confirm.UNDONE, "undone", 7),
        "orders-1": confirm.PendingDeletion("orders", "id", 1, 0, 5, confirm.CONFIRMED, "ok", 7)})
    # Meanwhile a new rollback of orders-0 restored further down.
    newer = confirm.PendingDeletion("orders", "id", 0, 0, 6)
    journal.set_meta(confirm.JOURNAL_KEY, confirm.dump({"orders-0": newer, "orders-1": other}))
    assert record(journal, outcome) == {"orders-0": newer}
    assert journal.get(gone) is None
    # Without the newer rollback the verdict is kept on the record.
    journal.set_meta(confirm.JOURNAL_KEY, confirm.dump({"orders-0": older}))
    assert record(journal, outcome)["orders-0"].state == confirm.UNDONE


def test_a_record_from_before_the_verdicts_reads_as_never_checked():
    old = '{"orders-0": {"first_offset": 0, "partition": 0, "requested_at_ms": 5, "topic": "orders", "topic_id": "id"}}'
    loaded = confirm.load(old)["orders-0"]
    assert (loaded.state, loaded.detail, loaded.checked_at_ms) == (confirm.RESTORED, "", None)


def test_the_daemon_leaves_a_replicated_partition_to_the_command_and_a_silent_cluster_deletes_nothing(tmp_path):
    import tomllib

    from tiering.config import parse_config
    from tiering.rollback.deletion import settle_pending
    (tmp_path / "logs").mkdir()
    config = parse_config(tomllib.loads(f'[kafka]\nlog_dirs = ["{tmp_path / "logs"}"]\nbootstrap_servers = "k:9092"\n'
                                        '[store]\nbucket = "b"\n'), base_dir=tmp_path)
    pending = {"orders-0": confirm.PendingDeletion("orders", "id", 0, 0, 5),
               "orders-1": confirm.PendingDeletion("orders", "id", 1, 0, 5)}
    asked: list = []

    def earliest(partitions):
        asked.append(partitions)
        return {p: 0 for p in partitions}
    # The store is never touched: nothing here may be deleted.
    outcome = settle_pending(config, None, None, pending, lambda: frozenset({"orders"}), earliest, lambda: 9,
                             InMemoryReplicaSource(THREE))
    assert outcome.removed == {} and asked == []
    held = outcome.checked["orders-0"]
    assert held.state == confirm.WAITING and held.detail.startswith("replicas on brokers 1, 2, 3: the daemon never "
                                                                     "removes the store's copies of a replicated")
    assert "tiering rollback --topic orders --confirm --delete-remote" in held.detail
    down = settle_pending(config, None, None, pending, lambda: frozenset({"orders"}), earliest, lambda: 9,
                          InMemoryReplicaSource(down="NoBrokersAvailable"))
    assert down.removed == {} and all("NoBrokersAvailable" in p.detail for p in down.checked.values())
