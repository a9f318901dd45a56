"""The daemon confirms a `rollback --delete-remote` on a real broker (issue 22): once the
broker runs on the restored log, its pass asks the cluster (ListOffsets earliest) and reads
this broker's replica, then removes the store's copies; a rollback Kafka undid (the log
start moved up again, as a follower's does when it adopts the leader's) keeps them, and is
said loudly: an error event, a gauge, `status`."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli
from tests.integration.daemon_process import DaemonProcess
from tests.realkafka.clients import consume_kafka_python, create_topic, produce_kafka_python, wait_for_leader
from tests.realkafka.offload import remote_manifests, segment_bases, wait_for_high_watermark, wait_until
from tiering.demo import free_port

pytestmark = [pytest.mark.realkafka, pytest.mark.integration]


def stored(s3, topic: str, partition: int) -> dict:
    return {k: v for k, v in remote_manifests(s3, topic).items() if k[1] == partition}


def gone(s3, topic: str, partition: int) -> bool:
    """No manifest left; a manifest deleted between the listing and its GET (the daemon at
    work) is a listing to take again."""
    try:
        return not stored(s3, topic, partition)
    except s3.exceptions.NoSuchKey:
        return False


def test_the_daemon_confirms_a_rollback_after_the_restart_and_keeps_the_copies_of_one_kafka_undid(
        kafka_broker, kenv, s3, tmp_path):
    bootstrap, log_dir = kafka_broker.bootstrap, kafka_broker.log_dir
    # Old timestamps (the helper's) and local.retention.ms=1000: every rolled segment leaves the
    # broker (DeleteRecords) once it is in the store.
    create_topic(bootstrap, "dconf", partitions=2, segment_bytes=8 * 1024, local_retention_ms="1000")
    for partition in (0, 1):
        produce_kafka_python(bootstrap, "dconf", 300, partition=partition, value_size=200)
        wait_for_high_watermark(log_dir, "dconf", partition, 300)
    bases = {p: segment_bases(log_dir, "dconf", p) for p in (0, 1)}
    port = free_port()
    config = kenv.write_config(f'include = ["dconf"]\nbootstrap_servers = "{bootstrap}"\n\n'
                               '[retention]\nlocal_delete = "kafka-admin"\n')
    config.write_text(config.read_text().replace('listen = ""', f'listen = "127.0.0.1:{port}"')
                      + '\n[daemon]\nreconcile_interval_ms = "1s"\nretention_interval_ms = "1s"\n')

    def offloaded() -> bool:
        run_cli("run", "--once", "--config", str(config))
        return all(segment_bases(log_dir, "dconf", p)[0] > 0 for p in (0, 1))
    wait_until(offloaded, 60, "every rolled segment offloaded and deleted by the broker", 1)
    before = {p: stored(s3, "dconf", p) for p in (0, 1)}
    assert all(len(before[p]) >= 3 for p in (0, 1))

    kafka_broker.stop()
    restore = run_cli("rollback", "--config", str(config), "--topic", "dconf", "--confirm", "--delete-remote")
    assert restore.returncode == 0, restore.stdout + restore.stderr
    assert {p: segment_bases(log_dir, "dconf", p) for p in (0, 1)} == bases
    kafka_broker.start()
    wait_for_leader(bootstrap, "dconf", 2)
    # dconf-1's log start moves up again, as a follower's does when it adopts its leader's.
    from kafka import KafkaAdminClient, TopicPartition
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    admin.delete_records({TopicPartition("dconf", 1): bases[1][1]}, timeout_ms=30_000)
    admin.close()
    assert {p: stored(s3, "dconf", p) for p in (0, 1)} == before     # nothing deleted before the daemon's check

    daemon = DaemonProcess(config, tmp_path, port)
    try:
        daemon.wait_ready(60)
        wait_until(lambda: gone(s3, "dconf", 0), 60, "the daemon to remove dconf-0's confirmed store copies")
        undone = wait_until(lambda: [e for e in daemon.events() if e["event"] == "rollback undone by Kafka; store "
                                     "copies kept"], 30, "the daemon to report dconf-1's rollback as undone")
        assert daemon.metric("tiering_rollback_undone_partitions") == 1
        assert daemon.metric("tiering_rollback_pending_partitions") == 1
    finally:
        code, _ = daemon.stop(timeout=60)
    assert code == 0, daemon.stderr()
    assert [(e["level"], e["partition"], e["log_start"]) for e in undone] == [("error", 1, 0)]
    assert "the cluster's log start is" in undone[0]["detail"] or "this broker's log start is" in undone[0]["detail"]
    assert stored(s3, "dconf", 1) == before[1]                          # kept, every copy
    removed = [e for e in daemon.events() if e["event"] == "store copies removed"]
    assert [(e["partition"], e["segments"]) for e in removed] == [(0, len(before[0]))]

    status = json.loads(run_cli("status", "--config", str(config), "--json").stdout)
    assert [(r["partition"], r["state"]) for r in status["rollbacks"]] == [("dconf-1", "undone")]
    text = run_cli("status", "--config", str(config)).stdout
    assert "dconf-1: UNDONE: rollback undone" in text
    got = consume_kafka_python(bootstrap, "dconf")
    assert [r.offset for r in got] == list(range(300))                 # dconf-0 from offset 0, as restored
