"""Issue 19 on a real 3-node KRaft cluster: one copy of each offset in the store across
replicas and leader changes.

Three sidecars (one per node's log dir, each its own state dir, one shared bucket and prefix,
`kafka.bootstrap_servers` set) beside three real brokers; topics RF=3, min.insync.replicas=2,
small segments. What the store holds is read independently of the sidecar (its manifests,
each stored `.log` decoded with kafka-python); what a reader returns is read through each
sidecar's `tiering cat`, compared with what the producers had acknowledged."""

from __future__ import annotations

import base64

import pytest

from tests.realkafka.clients import consume_kafka_python, produce_kafka_python
from tests.realkafka.offload import high_watermark, partition_dir, wait_for_high_watermark, wait_until
from tests.realkafka.replicated import Acked, ContinuousProducer, create_replicated_topic
from tests.realkafka.sidecars import StoredSegment, chain_facts, rolled_bases, rolled_log_bytes, stored_segments
from tiering.realkafka.ops import ClusterAdmin, PartitionState

pytestmark = [pytest.mark.realkafka, pytest.mark.integration]


def test_acks_all_records_survive_a_kill_of_the_leaders_node(cluster):
    """The cluster itself: a kill -9 of the leader's node moves leadership (a higher epoch),
    acks=all keeps working with two of three in sync, and the restarted node catches up."""
    states = create_replicated_topic(cluster, "csmoke")
    first = states[0]
    assert len(first.replicas) == 3 and set(first.isr) == {1, 2, 3}
    assert all(partition_dir(cluster.log_dir(n), "csmoke", 0).is_dir() for n in (1, 2, 3))

    sent = produce_kafka_python(cluster.bootstrap, "csmoke", 300)
    cluster.kill(first.leader)
    with ClusterAdmin(cluster.bootstrap) as admin:
        moved = admin.wait_leader("csmoke", 0, lambda p: p.leader not in (None, first.leader),
                                  "a leader on a live node")
        assert moved.leader_epoch > first.leader_epoch
        sent += produce_kafka_python(cluster.bootstrap, "csmoke", 300, start=300)
        cluster.restart(first.leader)
        admin.wait_healthy("csmoke", 1)

    got = consume_kafka_python(cluster.bootstrap, "csmoke")
    assert [r.offset for r in got] == list(range(600))
    assert [(r.key, r.value) for r in got] == [(k, v) for k, v, _, _ in sent]


def eligible_end(log_dir, topic: str, partition: int) -> int:
    """The last offset of this replica's rolled segments below its checkpointed high watermark."""
    bases = rolled_bases(log_dir, topic, partition)
    hw = high_watermark(log_dir, topic, partition) or 0
    ends = [nxt - 1 for b, nxt in zip(bases, bases[1:]) if nxt <= hw]
    assert ends, f"{topic}-{partition}: no rolled segment below the high watermark {hw} in {log_dir}"
    return max(ends)


def assert_one_gapless_copy(segments: list[StoredSegment], up_to: int, max_overlaps: int) -> None:
    facts = chain_facts(segments)
    where = [(s.base_offset, s.end_offset, s.broker_id, s.leader_epoch) for s in segments]
    assert facts.start == 0, where
    assert facts.gaps == (), f"gaps {facts.gaps} in {where}"
    assert facts.end >= up_to, f"the chain ends at {facts.end}, below {up_to}: {where}"
    assert facts.overlaps <= max_overlaps, f"{facts.overlaps} overlaps (at most {max_overlaps}): {where}"
    stored = {o for s in segments for o in s.offsets}
    missing = [o for o in range(up_to + 1) if o not in stored]
    assert not missing, f"offsets missing from the store: {missing[:20]}"


def test_steady_state_stores_one_copy_uploaded_by_each_partitions_leader(cluster, s3, sidecars_for):
    topic = "steady"
    states = create_replicated_topic(cluster, topic, partitions=2)
    for partition in states:
        produce_kafka_python(cluster.bootstrap, topic, 500, partition=partition, value_size=300)
    for node in cluster.nodes:
        for partition in states:
            wait_for_high_watermark(cluster.log_dir(node), topic, partition, 500)

    sidecars = sidecars_for([topic])
    for sidecar in sidecars.values():
        result = sidecar.run_once()
        assert result.returncode == 0, f"node {sidecar.node_id}: {result.stdout[-3000:]}{result.stderr[-3000:]}"

    for partition, state in states.items():
        segments = stored_segments(s3, topic, partition)
        leader_dir = cluster.log_dir(state.leader)
        end = eligible_end(leader_dir, topic, partition)
        # No follower's sidecar uploaded; the leader's manifests carry its epoch.
        assert {(s.broker_id, s.leader_epoch) for s in segments} == {(state.leader, state.leader_epoch)}, segments
        assert_one_gapless_copy(segments, end, max_overlaps=0)
        ratio = sum(s.log_size for s in segments) / rolled_log_bytes(leader_dir, topic, partition, end + 1)
        assert ratio <= 1.05, f"{topic}-{partition}: store bytes / one replica's rolled bytes = {ratio:.3f}"

    # status on every sidecar: its role, the chain and who uploaded it, why a follower does not upload.
    for node, sidecar in sidecars.items():
        rows = {r["partition"]: r for r in sidecar.status()["partitions"] if r["topic"] == topic}
        for partition, state in states.items():
            cluster_row = rows[partition]["cluster"]
            assert rows[partition]["mode"] == "cluster"
            assert cluster_row["role"] == ("leader" if node == state.leader else "follower"), cluster_row
            assert (cluster_row["not_uploading"] is None) == (node == state.leader), cluster_row
            assert cluster_row["chain"]["uploaders"] == [state.leader] and cluster_row["chain"]["gaps"] == []


def chain_reaches(s3, topic: str, end: int) -> bool:
    facts = chain_facts(stored_segments(s3, topic, 0))
    return facts.end is not None and facts.end >= end and not facts.gaps


def records_by_offset(acked: list[Acked], partition: int) -> dict[int, tuple[bytes, bytes]]:
    return {a.offset: (a.key, a.value) for a in acked if a.partition == partition}


def assert_reads_every_record_once(sidecar, topic: str, partition: int, acked: dict[int, tuple[bytes, bytes]],
                                   up_to: int) -> None:
    got = sidecar.cat(topic, partition)
    offsets = [r["offset"] for r in got]
    assert offsets == sorted(set(offsets)), f"node {sidecar.node_id}: offsets repeated or out of order"
    read = {r["offset"]: (base64.b64decode(r["key"]), base64.b64decode(r["value"])) for r in got}
    expected = {o: kv for o, kv in acked.items() if o <= up_to}
    assert {o: read.get(o) for o in expected} == expected, f"node {sidecar.node_id}: records differ or are missing"


def uploaded_at(s3, topic: str, partition: int, state: PartitionState) -> bool:
    """The new leader's sidecar has uploaded under its epoch."""
    return any(s.broker_id == state.leader and s.leader_epoch == state.leader_epoch
               for s in stored_segments(s3, topic, partition))


def test_leader_changes_leave_one_gapless_chain_read_once_through_every_sidecar(cluster, s3, sidecars_for):
    topic = "moves"
    first = create_replicated_topic(cluster, topic, segment_bytes=32 * 1024)[0]
    sidecars = sidecars_for([topic])
    for sidecar in sidecars.values():
        sidecar.start()
    for sidecar in sidecars.values():
        sidecar.daemon.wait_ready(90)
    producer = ContinuousProducer(cluster.bootstrap, topic, rate=60).start()
    admin = ClusterAdmin(cluster.bootstrap)
    changes = []
    try:
        wait_until(lambda: uploaded_at(s3, topic, 0, first), 90, "the first leader's upload", 1)
        old = first.leader

        # 1. kill -9 of the leader's node; its sidecar keeps running beside a dead broker.
        cluster.kill(old)
        state = admin.wait_leader(topic, 0, lambda p: p.leader not in (None, old), "a leader after the kill")
        changes.append(state)
        wait_until(lambda: uploaded_at(s3, topic, 0, state), 90, f"node {state.leader}'s upload after the kill", 1)
        cluster.restart(old)
        admin.wait_healthy(topic, 1)

        # 2. preferred leader election: leadership goes back to the restarted node.
        admin.elect_preferred(topic, [0])
        state = admin.wait_leader(topic, 0, lambda p: p.leader == old, "the preferred leader back")
        changes.append(state)
        wait_until(lambda: uploaded_at(s3, topic, 0, state), 90, f"node {old}'s upload after the election", 1)

        # 3. a reassignment that takes the partition off the leader's node.
        rest = [n for n in state.replicas if n != old]
        admin.reassign(topic, {0: rest})
        state = admin.wait_leader(topic, 0, lambda p: p.replicas == tuple(rest) and p.leader in rest,
                                  "the reassignment off the leader's node")
        changes.append(state)
        wait_until(lambda: uploaded_at(s3, topic, 0, state), 90, f"node {state.leader}'s upload after the reassignment", 1)
    finally:
        acked = producer.stop()
        admin.close()
    assert [c.leader_epoch for c in changes] == sorted({c.leader_epoch for c in changes})

    leader = changes[-1].leader
    wait_for_high_watermark(cluster.log_dir(leader), topic, 0, max(a.offset for a in acked) + 1)
    end = eligible_end(cluster.log_dir(leader), topic, 0)
    wait_until(lambda: chain_reaches(s3, topic, end), 90, f"the chain to reach offset {end} without a gap", 1)
    for sidecar in sidecars.values():
        assert sidecar.stop() == 0, sidecar.daemon.stderr()[-3000:]

    segments = stored_segments(s3, topic, 0)
    assert_one_gapless_copy(segments, end, max_overlaps=len(changes))
    # Each manifest names its uploader and the epoch it led in; the epochs in the store rise with the offsets.
    assert {s.leader_epoch for s in segments} <= {first.leader_epoch, *(c.leader_epoch for c in changes)}
    by_base = sorted(segments, key=lambda s: s.base_offset)
    assert [s.leader_epoch for s in by_base] == sorted(s.leader_epoch for s in by_base)
    wanted = records_by_offset(acked, 0)
    for sidecar in sidecars.values():
        assert_reads_every_record_once(sidecar, topic, 0, wanted, end)


def test_a_sidecar_killed_during_a_leader_change_leaves_no_gap_and_no_visible_duplicate(
        cluster, s3, sidecars_for):
    topic = "crashmove"
    first = create_replicated_topic(cluster, topic, segment_bytes=32 * 1024)[0]
    sidecars = sidecars_for([topic])
    for sidecar in sidecars.values():
        sidecar.start()
    for sidecar in sidecars.values():
        sidecar.daemon.wait_ready(90)
    producer = ContinuousProducer(cluster.bootstrap, topic, rate=60).start()
    admin = ClusterAdmin(cluster.bootstrap)
    old = first.leader
    try:
        wait_until(lambda: uploaded_at(s3, topic, 0, first), 90, "the first leader's upload", 1)
        # Reorder the replicas (no data moves) and elect: leadership moves to the second replica
        # while the old leader's sidecar is killed -9, uploads in flight.
        new_order = [*first.replicas[1:], first.replicas[0]]
        admin.reassign(topic, {0: new_order})
        admin.wait_leader(topic, 0, lambda p: list(p.replicas) == new_order, "the reordered replicas")
        admin.elect_preferred(topic, [0])
        sidecars[old].kill()
        state = admin.wait_leader(topic, 0, lambda p: p.leader == new_order[0], "the new preferred leader")
        wait_until(lambda: uploaded_at(s3, topic, 0, state), 90, f"node {state.leader}'s upload", 1)
        sidecars[old].start().wait_ready(90)

        # And back: the restarted sidecar extends the chain from where the other left it.
        admin.reassign(topic, {0: list(first.replicas)})
        admin.wait_leader(topic, 0, lambda p: p.replicas == first.replicas, "the original replica order")
        admin.elect_preferred(topic, [0])
        back = admin.wait_leader(topic, 0, lambda p: p.leader == old, "the old leader back")
        wait_until(lambda: uploaded_at(s3, topic, 0, back), 90, f"node {old}'s upload after its restart", 1)
    finally:
        acked = producer.stop()
        admin.close()

    wait_for_high_watermark(cluster.log_dir(old), topic, 0, max(a.offset for a in acked) + 1)
    end = eligible_end(cluster.log_dir(old), topic, 0)
    wait_until(lambda: chain_reaches(s3, topic, end), 90, f"the chain to reach offset {end} without a gap", 1)
    for sidecar in sidecars.values():
        assert sidecar.stop() == 0, sidecar.daemon.stderr()[-3000:]
    # Two changes: at most one overlap each; the killed sidecar's half-done upload is no manifest.
    assert_one_gapless_copy(stored_segments(s3, topic, 0), end, max_overlaps=2)
    wanted = records_by_offset(acked, 0)
    for sidecar in sidecars.values():
        assert_reads_every_record_once(sidecar, topic, 0, wanted, end)
