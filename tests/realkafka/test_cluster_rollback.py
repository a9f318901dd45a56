"""Issue 22 on a real 3-node KRaft cluster: a rollback that survives replication.

Rolling back one broker of an RF=3 topic is undone by Kafka (the restarted follower takes the
leader's log start and deletes what was restored): nothing is lost, `rollback --delete-remote`
reports it undone and keeps the store's copies. The README's procedure for a replicated topic
(stop every replica's broker, roll back each, start them) ends with consumers reading from
offset 0, after which `--delete-remote` removes the store's copies."""

from __future__ import annotations

import pytest

from tests.conftest import bucket_snapshot, events, run_cli
from tests.realkafka.clients import consume_kafka_python, list_offsets, produce_kafka_python
from tests.realkafka.offload import segment_bases, wait_for_high_watermark, wait_until
from tests.realkafka.replicated import create_replicated_topic
from tests.realkafka.sidecars import stored_segments
from tiering.realkafka.ops import ClusterAdmin

pytestmark = [pytest.mark.realkafka, pytest.mark.integration]

ADMIN_RETENTION = '\n[retention]\nlocal_delete = "kafka-admin"\nlocal_retention_bytes = 1\n'
UNDONE = "rollback undone by Kafka; store copies kept"


def offloaded_topic(cluster, sidecars_for, s3, topic: str) -> tuple[dict, list[tuple], int]:
    """A topic of 600 records whose rolled segments are in the store and gone from every
    replica's disk (the leader's DeleteRecords). Returns the sidecars, what was sent and the
    cluster's log start."""
    state = create_replicated_topic(cluster, topic)[0]
    sent = produce_kafka_python(cluster.bootstrap, topic, 600, value_size=300)
    for node in cluster.nodes:
        wait_for_high_watermark(cluster.log_dir(node), topic, 0, 600)
    sidecars = sidecars_for([topic])
    for sidecar in sidecars.values():
        sidecar.config.write_text(sidecar.config.read_text() + ADMIN_RETENTION)
    for node in [*(n for n in cluster.nodes if n != state.leader), state.leader]:
        result = sidecars[node].run_once()
        assert result.returncode == 0, f"node {node}: {result.stdout[-3000:]}{result.stderr[-3000:]}"
    start = list_offsets(cluster.bootstrap, topic)[0]
    assert start > 0 and stored_segments(s3, topic, 0)
    for node in cluster.nodes:
        wait_until(lambda: segment_bases(cluster.log_dir(node), topic, 0)[0] > 0, 60,
                   f"node {node} to delete its segments below {start}")
    return sidecars, sent, start


def rollback(sidecar, topic: str, *flags: str):
    return run_cli("rollback", "--config", str(sidecar.config), "--topic", topic, "--confirm", *flags, timeout=300)


def test_rolling_back_one_replica_is_undone_by_kafka_reported_and_nothing_is_lost(cluster, s3, sidecars_for):
    topic = "rbone"
    sidecars, sent, start = offloaded_topic(cluster, sidecars_for, s3, topic)
    with ClusterAdmin(cluster.bootstrap) as admin:
        state = admin.state(topic, 0)
    follower = next(n for n in state.replicas if n != state.leader)
    log_dir = cluster.log_dir(follower)

    cluster.kill(follower)
    restored = rollback(sidecars[follower], topic, "--delete-remote")
    assert restored.returncode == 0, restored.stdout[-3000:] + restored.stderr[-3000:]
    assert segment_bases(log_dir, topic, 0)[0] == 0
    kept = bucket_snapshot(s3)

    # Started again as a follower, it takes the leader's log start and deletes what was restored.
    cluster.restart(follower)
    wait_until(lambda: segment_bases(log_dir, topic, 0)[0] > 0, 90,
               f"node {follower} to give up the restored segments (the leader's log start {start})")
    # The dry run says it (README: "The dry run says the same").
    plan = run_cli("rollback", "--config", str(sidecars[follower].config), "--topic", topic, "--delete-remote")
    assert plan.returncode == 1 and "undone" in plan.stderr, plan.stdout[-3000:] + plan.stderr[-3000:]
    assert bucket_snapshot(s3) == kept, "store copies deleted after an undone rollback"
    # Nothing lost: every record once through each sidecar (the store and the replicas' disks).
    for sidecar in sidecars.values():
        got = sidecar.cat(topic, 0)
        assert [r["offset"] for r in got] == list(range(len(sent)))
    # The README's step 5: the same command with --confirm, the broker up, reports the replica
    # where the rollback was undone and keeps the store's copies.
    again = rollback(sidecars[follower], topic, "--delete-remote")
    assert again.returncode == 1, again.stdout[-3000:] + again.stderr[-3000:]
    assert any(e["event"] == UNDONE for e in events(again.stdout)), again.stdout[-3000:]
    assert bucket_snapshot(s3) == kept, "store copies deleted after an undone rollback"


def test_rolling_back_every_replica_as_the_readme_says_lets_consumers_read_from_offset_0(cluster, s3, sidecars_for):
    topic = "rball"
    sidecars, sent, start = offloaded_topic(cluster, sidecars_for, s3, topic)
    # 2. stop every broker holding a replica; 3. roll back each; 4. start them.
    cluster.kill_all()
    for node, sidecar in sidecars.items():
        result = rollback(sidecar, topic, "--delete-remote")
        assert result.returncode == 0, f"node {node}: {result.stdout[-3000:]}{result.stderr[-3000:]}"
        assert segment_bases(cluster.log_dir(node), topic, 0)[0] == 0
    cluster.start()
    with ClusterAdmin(cluster.bootstrap) as admin:
        admin.wait_healthy(topic, 1)
    # 5. a consumer reads the topic from offset 0.
    assert list_offsets(cluster.bootstrap, topic)[0] == 0
    got = consume_kafka_python(cluster.bootstrap, topic)
    assert [(r.offset, r.key, r.value) for r in got] == [(i, k, v) for i, (k, v, _, _) in enumerate(sent)]
    # Then --delete-remote on each broker: the cluster confirms, the store's copies go.
    for node, sidecar in sidecars.items():
        result = rollback(sidecar, topic, "--delete-remote")
        assert result.returncode == 0, f"node {node}: {result.stdout[-3000:]}{result.stderr[-3000:]}"
    assert stored_segments(s3, topic, 0) == []
    for node in cluster.nodes:
        assert segment_bases(cluster.log_dir(node), topic, 0)[0] == 0
    assert len(consume_kafka_python(cluster.bootstrap, topic)) == len(sent)
