"""The Metadata adapter of cluster mode against the real broker (tiering.cluster.leadership)."""

from tests.realkafka.clients import create_topic
from tiering.cluster.identity import broker_identity
from tiering.cluster.leadership import ClusterUnreachable, KafkaLeadership
from tiering.realkafka.broker import free_port


def test_leadership_and_identity_from_the_real_broker(kafka_broker):
    create_topic(kafka_broker.bootstrap, "leadership-probe", partitions=2)
    source = KafkaLeadership(kafka_broker.bootstrap)
    try:
        found = source.describe(["leadership-probe", "no-such-topic-here"])
    finally:
        source.close()
    assert set(found) == {("leadership-probe", 0), ("leadership-probe", 1)}    # unknown topic left out
    for leadership in found.values():
        assert leadership.leader == 1 and leadership.leader_epoch >= 0
        assert leadership.replicas == (1,) and leadership.isr == (1,)
    assert broker_identity([kafka_broker.log_dir]).broker_id == 1

    nowhere = KafkaLeadership(f"127.0.0.1:{free_port()}", timeout_ms=1_000, bootstrap_timeout_ms=1_000)
    try:
        nowhere.describe(["leadership-probe"])
    except ClusterUnreachable as exc:
        assert "127.0.0.1" in str(exc)
    else:
        raise AssertionError("a closed port answered Metadata")
    finally:
        nowhere.close()
