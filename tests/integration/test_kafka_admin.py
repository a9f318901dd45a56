"""The kafka-admin actuator at its boundary: with a real S3 server and real segments, which
DeleteRecords requests a pass makes (partitions, offsets), that it never unlinks anything
itself, and how the broker's errors and an unreachable broker are reported. There is no Kafka
broker on this machine; the client is checked against a port where nothing listens."""

from __future__ import annotations

import socket
from typing import Mapping

import pytest
import structlog

from tests.integration.test_retention import DAY, Clock, local_files, produce_segments
from tiering.clock import SystemClock
from tiering.config import load_config
from tiering.journal import Journal
from tiering.kafka.checkpoints import TopicPartition
from tiering.retention.admin import AdminError, KafkaAdminDeleter
from tiering.simulate import SimulatedBroker
from tiering.upload.offload_pass import Offloader
from tiering.wiring import open_store

pytestmark = pytest.mark.integration

ADMIN = """
bootstrap_servers = "127.0.0.1:9"

[retention]
local_delete = "kafka-admin"
local_retention_ms = "1h"
"""


class RecordingDeleter:
    """Stands in for the broker: records each DeleteRecords it is asked for."""

    def __init__(self, errors: Mapping[tuple[str, int], str] | None = None, unreachable: bool = False):
        self.requests: list[dict[tuple[str, int], int]] = []
        self.errors = dict(errors or {})
        self.unreachable = unreachable

    def delete_records(self, offsets):
        if self.unreachable:
            raise AdminError("kafka.bootstrap_servers 127.0.0.1:9: no broker answered")
        self.requests.append(dict(offsets))
        return {key: self.errors.get(key) for key in offsets}

    def close(self) -> None:
        pass


def run_pass(env, deleter: RecordingDeleter):
    config = load_config(env.write_config(ADMIN))
    store = open_store(config)
    journal = Journal(config.state.dir)
    try:
        offloader = Offloader(config, store, journal, SystemClock(), structlog.get_logger(),
                              deleter_factory=lambda servers: deleter)
        return offloader.run_pass()
    finally:
        journal.close()
        store.close()


def build(env) -> tuple[SimulatedBroker, dict[str, list[int]]]:
    clock = Clock()
    broker = SimulatedBroker(env.log_dir, segment_bytes=1 << 30, clock_ms=clock, seed=2)
    bases = {}
    for topic, ages in (("orders", [3 * DAY, 2 * DAY, 60_000]), ("clicks", [5 * DAY, 1000]), ("audit", [1000])):
        broker.create_topic(topic, 1)
        produce_segments(broker, clock, topic, ages)
        bases[topic] = sorted(s.base_offset for s in _segments(broker, topic))
    broker.checkpoint()
    return broker, bases


def _segments(broker, topic):
    from tiering.kafka.logdir import scan_log_dirs
    return next(p for p in scan_log_dirs([broker.log_dir]).partitions if p.topic == topic).segments


def test_delete_records_moves_each_log_start_to_the_first_segment_kept_and_unlinks_nothing(env, s3):
    broker, bases = build(env)
    files = local_files(env.log_dir)
    deleter = RecordingDeleter()
    report = run_pass(env, deleter)
    assert report.ok, report
    # orders: two segments past 1 h, so the log start goes to the third; clicks: one.
    assert deleter.requests == [{("clicks", 0): bases["clicks"][1], ("orders", 0): bases["orders"][2]}]
    assert local_files(env.log_dir) == files                    # the broker deletes, never us
    deleted = sorted((d.segment.topic, d.segment.base_offset, d.reason) for d in report.retention.deleted)
    assert deleted == [("clicks", bases["clicks"][0], "local-time"),
                       ("orders", bases["orders"][0], "local-time"), ("orders", bases["orders"][1], "local-time")]

    # Once the broker's log start offset has moved, nothing is asked again.
    for topic in ("orders", "clicks"):
        broker.logs[TopicPartition(topic, 0)].log_start_offset = deleter.requests[0][(topic, 0)]
    broker.checkpoint()
    again = RecordingDeleter()
    assert run_pass(env, again).ok
    assert again.requests == []
    broker.close()


def test_broker_errors_are_reported_per_partition_and_nothing_is_counted_deleted(env, s3):
    broker, bases = build(env)
    deleter = RecordingDeleter(errors={("orders", 0): "PolicyViolationError: deletes are disabled"})
    report = run_pass(env, deleter)
    assert not report.ok
    assert report.retention.failures == (
        f"orders-0: DeleteRecords to offset {bases['orders'][2]} failed: PolicyViolationError: deletes are disabled",)
    assert {d.segment.topic for d in report.retention.deleted} == {"clicks"}

    unreachable = run_pass(env, RecordingDeleter(unreachable=True))
    assert unreachable.retention.failures == (
        "local_delete = kafka-admin: kafka.bootstrap_servers 127.0.0.1:9: no broker answered",)
    assert unreachable.retention.deleted == ()
    broker.close()


def test_the_kafka_client_reports_an_unreachable_broker_in_one_line():
    with socket.socket() as probe:            # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    deleter = KafkaAdminDeleter(f"127.0.0.1:{port}", timeout_ms=2000, bootstrap_timeout_ms=1000)
    with pytest.raises(AdminError) as raised:
        deleter.delete_records({("orders", 0): 10})
    message = str(raised.value)
    assert message.startswith(f"kafka.bootstrap_servers 127.0.0.1:{port}: ")
    assert "Unable to bootstrap" in message and "check the broker is up" in message
    assert "\n" not in message
    deleter.close()
