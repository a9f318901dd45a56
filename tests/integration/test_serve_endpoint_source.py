"""The endpoint over the real PartitionSource: a topic whose first segments are only in the
store, then rolled local segments, then the active one (the simulated broker and moto), read
by kafka-python and confluent-kafka through the Kafka protocol."""

from __future__ import annotations

from dataclasses import replace

import confluent_kafka
import pytest
from kafka import KafkaConsumer, TopicPartition
from prometheus_client import CollectorRegistry


from tests.integration.test_serve_source import (TOPIC, TXN, committed_view,
                                                 expected_from, kafka_python_records, tiered)  # noqa: F401
from tiering.config import load_config
from tiering.serve.server import ServeEndpoint, ThreadedEndpoint
from tiering.serve.source import PartitionSource

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def served(tiered):  # noqa: F811
    config = load_config(tiered.config_path)
    config = replace(config, serve=replace(config.serve, listen="127.0.0.1:0"))
    source = PartitionSource.from_config(config)
    registry = CollectorRegistry()
    endpoint = ThreadedEndpoint(ServeEndpoint(config.serve, source, registry=registry))
    host, port = endpoint.start()
    endpoint.bootstrap, endpoint.registry = f"{host}:{port}", registry
    yield endpoint
    endpoint.stop()
    source.close()


def test_kafka_python_reads_from_the_store_to_the_live_end_each_record_once(tiered, served):  # noqa: F811
    consumer = KafkaConsumer(bootstrap_servers=served.bootstrap, enable_auto_commit=False, consumer_timeout_ms=2000,
                             max_partition_fetch_bytes=8192)
    try:
        tp = TopicPartition(TOPIC, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning()
        got = [(m.offset, m.timestamp, m.key, m.value) for m in consumer]
        start = tiered.log_start[TOPIC]
        assert consumer.beginning_offsets([tp])[tp] == start
        assert consumer.end_offsets([tp])[tp] == tiered.broker.next_offset(TOPIC, 0)
    finally:
        consumer.close()
    expected = [r[:4] for r in kafka_python_records(expected_from(tiered, TOPIC, start))]
    assert got == expected                      # byte-identical records, in order, once each
    tiers = {s.labels["tier"] for m in served.registry.collect() for s in m.samples
             if m.name == "tiering_serve_bytes" and s.name.endswith("_total") and s.value}
    assert tiers == {"store", "local", "active"}


def test_confluent_read_committed_hides_aborted_transactions(tiered, served):  # noqa: F811
    consumer = confluent_kafka.Consumer({"bootstrap.servers": served.bootstrap, "group.id": "serve-committed",
                                         "enable.auto.commit": False, "isolation.level": "read_committed"})
    try:
        consumer.assign([confluent_kafka.TopicPartition(TXN, 0, confluent_kafka.OFFSET_BEGINNING)])
        got = []
        for _ in range(40):
            message = consumer.poll(0.1)
            if message is not None:
                assert message.error() is None, message.error()
                got.append((message.offset(), message.key(), message.value()))
    finally:
        consumer.close()
    lso = 20        # the fixture's TXN partition: an aborted transaction at 10-14, one left open at 20
    everything = kafka_python_records(expected_from(tiered, TXN, 0, lso))
    assert got == [(o, k, v) for o, _, k, v, _, _, control in everything if not control and not 10 <= o < 14]
