"""Cluster mode against a real broker: the endpoint's Metadata names the sidecar beside Kafka's
leader (from Kafka's own metadata), and a consumer fetches from it."""

from __future__ import annotations

import socket
from dataclasses import replace

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.protocol.metadata.metadata import MetadataRequest
from prometheus_client import CollectorRegistry

from tests.realkafka.clients import create_topic
from tests.serve.conftest import filled_source, roundtrip
from tiering.cluster.identity import broker_identity
from tiering.config import load_config
from tiering.realkafka.broker import free_port
from tiering.serve import codec
from tiering.serve.wiring import open_endpoint

pytestmark = [pytest.mark.realkafka, pytest.mark.integration]


def test_metadata_names_the_sidecar_beside_the_kafka_leader(kenv, kafka_broker):
    create_topic(kafka_broker.bootstrap, "events", 2, exist_ok=True)
    config = load_config(kenv.write_config(f'bootstrap_servers = "{kafka_broker.bootstrap}"'))
    port = free_port()
    config = replace(config, serve=replace(config.serve, listen=f"127.0.0.1:{port}", advertised_host="127.0.0.1"))
    source = filled_source()
    endpoint, watch = open_endpoint(config, source, CollectorRegistry(), log=_Quiet())
    broker_id = broker_identity(config.kafka.log_dirs).broker_id
    assert watch is not None and broker_id is not None
    endpoint.start()
    watch.start()
    try:
        asked = MetadataRequest[12](topics=None, allow_auto_topic_creation=False,
                                    include_topic_authorized_operations=False)
        with socket.create_connection(endpoint.endpoint.address, timeout=10) as sock:
            answer = codec.decode_response(3, 12, roundtrip(sock, codec.encode_request(asked, 12, 1)))
        assert [(b.node_id, b.host, b.port) for b in answer.brokers] == [(broker_id, "127.0.0.1", port)]
        events = next(t for t in answer.topics if t.name == "events")
        assert {p.leader_id for p in events.partitions} == {broker_id}
        assert watch.hosts()[broker_id] in ("127.0.0.1", "localhost", socket.getfqdn())
        consumer = KafkaConsumer(bootstrap_servers=f"127.0.0.1:{port}", enable_auto_commit=False,
                                 consumer_timeout_ms=1000)
        try:
            tp = TopicPartition("events", 1)
            consumer.assign([tp])
            consumer.seek_to_beginning()
            assert len([m for m in consumer]) == 30      # fetched from the leader Metadata named
        finally:
            consumer.close()
    finally:
        watch.close()
        endpoint.stop()


class _Quiet:
    def __getattr__(self, name):
        return lambda *args, **kwargs: None
