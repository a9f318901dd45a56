"""The 3-node cluster itself: a replicated topic keeps every acknowledged record through a
kill -9 of its leader's node and that node's restart, read back with a real client."""

from __future__ import annotations

import pytest

from tests.realkafka.clients import consume_kafka_python, produce_kafka_python
from tests.realkafka.offload import partition_dir
from tests.realkafka.replicated import create_replicated_topic
from tiering.realkafka.ops import ClusterAdmin

pytestmark = [pytest.mark.realkafka, pytest.mark.integration]


def test_acks_all_records_survive_a_kill_of_the_leaders_node(kafka_cluster):
    states = create_replicated_topic(kafka_cluster, "csmoke")
    first = states[0]
    assert len(first.replicas) == 3 and set(first.isr) == {1, 2, 3}
    assert all(partition_dir(kafka_cluster.log_dir(n), "csmoke", 0).is_dir() for n in (1, 2, 3))

    sent = produce_kafka_python(kafka_cluster.bootstrap, "csmoke", 300)
    kafka_cluster.kill(first.leader)
    with ClusterAdmin(kafka_cluster.bootstrap) as admin:
        moved = admin.wait_leader("csmoke", 0, lambda p: p.leader not in (None, first.leader),
                                  "a leader on a live node")
        assert moved.leader_epoch > first.leader_epoch
        # min.insync.replicas=2 with two nodes left: acks=all still succeeds.
        sent += produce_kafka_python(kafka_cluster.bootstrap, "csmoke", 300, start=300)
        kafka_cluster.restart(first.leader)
        admin.wait_healthy("csmoke", 1)

    got = consume_kafka_python(kafka_cluster.bootstrap, "csmoke")
    assert [r.offset for r in got] == list(range(600))
    assert [(r.key, r.value) for r in got] == [(k, v) for k, v, _, _ in sent]
