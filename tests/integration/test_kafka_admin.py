"""The kafka-admin actuator at its boundary, through the real command line: a real S3 server,
real segments, and the real Kafka client talking over TCP to a stand-in broker that decodes
each DeleteRecords request off the wire (tests/kafka_wire.py). What it cannot show without a
Kafka broker: the broker actually deleting the files afterwards."""

from __future__ import annotations

import socket

import pytest

from tests.conftest import events, run_cli
from tests.integration.test_retention import DAY, Clock, local_files, produce_segments
from tests.kafka_wire import FakeKafka
from tiering.kafka.checkpoints import TopicPartition
from tiering.kafka.logdir import scan_log_dirs
from tiering.simulate import SimulatedBroker

pytestmark = pytest.mark.integration

POLICY_VIOLATION = 44     # Kafka's error code for PolicyViolationError


def admin_config(env, bootstrap: str):
    return env.write_config(f'bootstrap_servers = "{bootstrap}"\n\n[retention]\nlocal_delete = "kafka-admin"\n'
                            'local_retention_ms = "1h"\n')


def build(env) -> tuple[SimulatedBroker, dict[str, list[int]]]:
    clock = Clock()
    broker = SimulatedBroker(env.log_dir, segment_bytes=1 << 30, clock_ms=clock, seed=2)
    for topic, ages in (("orders", [3 * DAY, 2 * DAY, 60_000]), ("clicks", [5 * DAY, 1000]), ("audit", [1000])):
        broker.create_topic(topic, 1)
        produce_segments(broker, clock, topic, ages)
    broker.checkpoint()
    bases = {p.topic: [s.base_offset for s in p.segments] for p in scan_log_dirs([env.log_dir]).partitions}
    return broker, bases


def test_delete_records_moves_each_log_start_to_the_first_segment_kept_and_unlinks_nothing(env, s3):
    broker, bases = build(env)
    kafka = FakeKafka({"orders": 1, "clicks": 1, "audit": 1})
    try:
        files = local_files(env.log_dir)
        result = run_cli("run", "--config", str(admin_config(env, kafka.bootstrap)), "--once")
        assert result.returncode == 0, result.stderr
        # orders: two segments past 1 h, so its log start goes to the third; clicks: one; audit: none.
        assert sorted(kafka.deletes, key=str) == sorted([{("clicks", 0): bases["clicks"][1]},
                                                         {("orders", 0): bases["orders"][2]}], key=str)
        assert local_files(env.log_dir) == files                   # the broker deletes, never us
        asked = sorted((e["topic"], e["base_offset"], e["reason"], e["log_start_offset"]) for e in events(result.stdout)
                       if e["event"] == "broker asked to delete segment (DeleteRecords)")
        assert asked == [("clicks", bases["clicks"][0], "local-time", bases["clicks"][1]),
                         ("orders", bases["orders"][0], "local-time", bases["orders"][2]),
                         ("orders", bases["orders"][1], "local-time", bases["orders"][2])]

        # Once the broker's log start offset has moved (its checkpoint says so), nobody is asked again.
        for topic in ("orders", "clicks"):
            broker.logs[TopicPartition(topic, 0)].log_start_offset = (bases[topic][2] if topic == "orders"
                                                                      else bases[topic][1])
        broker.checkpoint()
        kafka.deletes.clear()
        again = run_cli("run", "--config", str(admin_config(env, kafka.bootstrap)), "--once")
        assert again.returncode == 0, again.stderr
        assert kafka.deletes == []
    finally:
        kafka.close()
        broker.close()


def test_a_broker_error_is_reported_for_its_partition_only(env, s3):
    broker, bases = build(env)
    kafka = FakeKafka({"orders": 1, "clicks": 1, "audit": 1}, errors={("orders", 0): POLICY_VIOLATION})
    try:
        result = run_cli("run", "--config", str(admin_config(env, kafka.bootstrap)), "--once")
        assert result.returncode == 1
        assert result.stderr.strip() == ("tiering: 1 retention step(s) failed; see the log events above or "
                                         "'tiering status'")
        [failure] = [e["detail"] for e in events(result.stdout) if e["event"] == "retention step failed"]
        assert failure.startswith(f"orders-0: DeleteRecords to offset {bases['orders'][2]} failed: ")
        assert "PolicyViolationError" in failure
        asked = {e["topic"] for e in events(result.stdout) if e["event"].startswith("broker asked")}
        assert asked == {"clicks"}
    finally:
        kafka.close()
        broker.close()


def test_an_unreachable_broker_is_one_line_and_nothing_is_deleted(env, s3):
    broker, _ = build(env)
    with socket.socket() as probe:            # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    files = local_files(env.log_dir)
    result = run_cli("run", "--config", str(admin_config(env, f"127.0.0.1:{port}")), "--once")
    assert result.returncode == 1
    # The topic configs cannot be read first (issue 22): never seen, every topic is held.
    [failure] = [e["error"] for e in events(result.stdout) if e["event"] == "topic configs not read from Kafka; "
                 "the last ones seen stay in force"]
    assert failure.startswith(f"kafka.bootstrap_servers 127.0.0.1:{port}: ")
    assert "Unable to bootstrap" in failure and "check the broker is up" in failure
    assert "topic configs could not be read from Kafka" in result.stderr
    assert not [e for e in events(result.stdout) if e["event"].startswith("broker asked")]
    assert local_files(env.log_dir) == files
    assert len(result.stderr.strip().splitlines()) == 1
    broker.close()


def test_retention_set_in_kafka_wins_over_the_toml_default_and_status_says_where_each_limit_came_from(env, s3):
    """Issue 22: retention.ms=-1 set on the topic in Kafka keeps its data in the store past the
    TOML's 7 d default; a compacted topic (cleanup.policy from Kafka, never cleaned so not in
    cleaner-offset-checkpoint) is not tiered at all; a topic Kafka does not describe is held."""
    clock = Clock()
    broker = SimulatedBroker(env.log_dir, segment_bytes=1 << 30, clock_ms=clock, seed=2)
    for topic in ("forever", "connect-configs", "plain", "unknown"):
        broker.create_topic(topic, 1)
        produce_segments(broker, clock, topic, [10 * DAY, 9 * DAY])
    broker.checkpoint()
    kafka = FakeKafka({"forever": 1, "connect-configs": 1, "plain": 1},
                      topic_configs={"forever": {"retention.ms": "-1"},
                                     "connect-configs": {"cleanup.policy": "compact"}})
    try:
        config = env.write_config(f'bootstrap_servers = "{kafka.bootstrap}"\n\n[retention]\nretention_ms = "7d"\n')
        result = run_cli("run", "--config", str(config), "--once")
        assert result.returncode == 0, result.stderr
        from tests.integration.test_offload import remote_manifests
        stored = sorted({t for t, _, _ in remote_manifests(s3)})
        assert stored == ["forever"]            # plain: uploaded, then expired (10 and 9 d > 7 d)
        deleted = {(e["topic"], e["reason"]) for e in events(result.stdout) if e["event"].startswith("segment deleted")}
        assert deleted == {("plain", "total-time")}
        assert {p.topic: len(p.segments) for p in scan_log_dirs([env.log_dir]).partitions} == {
            "forever": 3, "connect-configs": 3, "plain": 1, "unknown": 3}

        status = run_cli("status", "--config", str(config), "--json")
        import json
        document = json.loads(status.stdout)
        rows = {r["topic"]: r for r in document["partitions"]}
        assert rows["forever"]["retention_config"]["retention_ms"] == {"value": -1, "source": "kafka:DYNAMIC_TOPIC_CONFIG"}
        assert rows["plain"]["retention_config"]["retention_ms"] == {"value": 7 * DAY, "source": "default"}
        assert not rows["connect-configs"]["tiering_enabled"]
        assert "cleanup.policy=compact" in rows["connect-configs"]["not_tiered"][0]["reason"]
        assert "not read from Kafka" in rows["unknown"]["not_tiered"][0]["reason"]
        assert document["topic_configs"]["from_kafka"] and document["topic_configs"]["error"] is None
        text = run_cli("status", "--config", str(config))
        assert "retention_ms=-1 (kafka:DYNAMIC_TOPIC_CONFIG)" in text.stdout
    finally:
        kafka.close()
        broker.close()


def test_the_daemon_reads_the_configs_before_retention_and_tiers_what_kafka_says_it_may(env, s3, tmp_path):
    """The daemon: nothing of a topic is tiered before Kafka describes it; once described
    (before the first retention pass), a delete topic is offloaded and a compacted one not;
    the configs are kept in the journal for a restart without the cluster."""
    from tests.integration.daemon_process import DaemonProcess, wait_for
    from tests.integration.test_offload import remote_manifests
    from tiering.demo import free_port
    from tiering.journal import Journal
    from tiering.retention.configs import JOURNAL_KEY

    clock = Clock()
    broker = SimulatedBroker(env.log_dir, segment_bytes=1 << 30, clock_ms=clock, seed=2)
    for topic in ("plain", "compacted"):
        broker.create_topic(topic, 1)
        produce_segments(broker, clock, topic, [60_000, 1000])
    broker.checkpoint()
    kafka = FakeKafka({"plain": 1, "compacted": 1}, topic_configs={"compacted": {"cleanup.policy": "compact"}})
    port = free_port()
    config = env.write_config(f'bootstrap_servers = "{kafka.bootstrap}"\n\n[retention]\nlocal_delete = "off"\n')
    config.write_text(config.read_text().replace('listen = ""', f'listen = "127.0.0.1:{port}"')
                      + '\n[daemon]\nreconcile_interval_ms = "300ms"\nretention_interval_ms = "500ms"\n')
    daemon = DaemonProcess(config, tmp_path, port)
    try:
        daemon.wait_ready()
        wait_for(lambda: len([k for k in remote_manifests(s3) if k[0] == "plain"]) == 2, 30,
                 "the daemon did not offload the delete topic")
        assert not [k for k in remote_manifests(s3) if k[0] == "compacted"]
    finally:
        daemon.stop()
        kafka.close()
    journal = Journal(env.state_dir)
    try:
        kept = journal.get_meta(JOURNAL_KEY)
    finally:
        journal.close()
    assert '"compact"' in kept and '"plain"' in kept
    broker.close()
