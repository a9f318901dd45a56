"""Real clients (none written by us) against the endpoint over the in-memory source, and
hostile connections that must close alone."""

from __future__ import annotations

import struct
import time

import confluent_kafka
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import TopicAuthorizationFailedError
from kafka.protocol.metadata.api_versions import ApiVersionsRequest
from kafka.protocol.metadata.metadata import MetadataRequest

from tests.serve.conftest import closed_by_peer, expected_events, raw_connection, roundtrip
from tiering.serve import codec


def test_kafka_python_reads_every_record_once(endpoint):
    consumer = KafkaConsumer(bootstrap_servers=endpoint.bootstrap, enable_auto_commit=False,
                             consumer_timeout_ms=1000, fetch_max_bytes=300, max_partition_fetch_bytes=200)
    try:
        partitions = [TopicPartition("events", 0), TopicPartition("events", 1)]
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        got = [(m.partition, m.offset, m.value) for m in consumer]
        assert sorted(v for _, _, v in got) == expected_events()
        for p in (0, 1):   # offsets in order, none twice
            offsets = [o for q, o, _ in got if q == p]
            assert offsets == list(range(len(offsets)))
        assert consumer.end_offsets(partitions) == {partitions[0]: 30, partitions[1]: 30}
        found = consumer.offsets_for_times({partitions[1]: 1_700_000_000_000 + 3000})
        assert found[partitions[1]].offset == 5   # partition 1's second batch (i = 3)
    finally:
        consumer.close()


def test_confluent_kafka_reads_every_record_once(endpoint):
    consumer = confluent_kafka.Consumer({"bootstrap.servers": endpoint.bootstrap, "group.id": "serve-test",
                                         "enable.auto.commit": False, "fetch.max.bytes": 1000, "message.max.bytes": 1000,
                                         "max.partition.fetch.bytes": 200})
    try:
        consumer.assign([confluent_kafka.TopicPartition("events", p, confluent_kafka.OFFSET_BEGINNING)
                         for p in (0, 1)])
        got = []
        deadline = time.monotonic() + 30
        while len(got) < len(expected_events()) and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None:
                assert message.error() is None, message.error()
                got.append(message.value())
        assert consumer.poll(0.3) is None         # nothing more: exactly once
        assert sorted(got) == expected_events()
    finally:
        consumer.close()


def test_produce_fails_cleanly_and_connection_stays_usable(endpoint):
    producer = KafkaProducer(bootstrap_servers=endpoint.bootstrap, retries=0, max_block_ms=5000)
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            producer.send("events", b"nope").get(timeout=10)
        # the same client keeps working on the same endpoint
        assert producer.partitions_for("events") == {0, 1}
    finally:
        producer.close(timeout=5)
    assert endpoint.source.state("events", 0).high_watermark == 30


def _api_versions(sock) -> object:
    request = ApiVersionsRequest[3](client_software_name="t", client_software_version="1")
    return codec.decode_response(18, 3, roundtrip(sock, codec.encode_request(request, 3, 1)))


@pytest.mark.parametrize("hostile", [
    b"\x00\x00\x00\x10" + b"\xde\xad\xbe\xef" * 4,                 # garbage after a plausible size
    b"\x00\x00\x00\x40" + b"\x00\x01\x00\x0c\x00\x00",             # truncated: the rest never comes
    struct.pack(">i", 2_000_000_000),                              # huge declared size
    struct.pack(">i", 12) + struct.pack(">hhi", 9999, 0, 7) + b"\x00\x00\x00\x00",  # unknown API key
    b"\x00\x00",                                                   # truncated size
], ids=["garbage", "truncated-frame", "huge-size", "unknown-api-key", "truncated-size"])
def test_hostile_connection_closes_alone(endpoint, hostile):
    bystander = raw_connection(endpoint)
    try:
        assert _api_versions(bystander).error_code == 0
        bad = raw_connection(endpoint)
        bad.sendall(hostile)
        bad.shutdown(1) if hostile in (b"\x00\x00", b"\x00\x00\x00\x40\x00\x01\x00\x0c\x00\x00") else None
        assert closed_by_peer(bad)
        bad.close()
        # the other connection is untouched: it still gets answers
        metadata = codec.decode_response(3, 12, roundtrip(bystander, codec.encode_request(
            MetadataRequest[12](topics=None, allow_auto_topic_creation=False,
                                include_topic_authorized_operations=False), 12, 2)))
        assert sorted(t.name for t in metadata.topics) == ["events", "secret"]
    finally:
        bystander.close()


def test_unsupported_api_versions_version_is_answered_in_v0(endpoint):
    sock = raw_connection(endpoint)
    try:
        frame = struct.pack(">hhi", 18, 99, 5) + b"\x00\x00"
        answer = codec.decode_response(18, 0, roundtrip(sock, struct.pack(">i", len(frame)) + frame))
        assert answer.error_code == 35 and {k.api_key for k in answer.api_keys} >= {1, 2, 3, 18}
        assert _api_versions(sock).error_code == 0    # and the connection is still usable
    finally:
        sock.close()


def test_fetch_waits_at_the_log_end_until_data_arrives(endpoint):
    consumer = KafkaConsumer(bootstrap_servers=endpoint.bootstrap, enable_auto_commit=False,
                             fetch_max_wait_ms=5000, consumer_timeout_ms=10000)
    try:
        tp = TopicPartition("secret", 0)
        consumer.assign([tp])
        consumer.seek(tp, 1)                   # the log end: a long poll
        first = consumer.poll(timeout_ms=200)
        assert first == {}
        endpoint.source.append("secret", 0, [b"late"])
        got = []
        deadline = time.monotonic() + 15
        while not got and time.monotonic() < deadline:
            got = [m.value for records in consumer.poll(timeout_ms=500).values() for m in records]
        assert got == [b"late"]
    finally:
        consumer.close()


def test_metrics_count_requests_and_bytes(endpoint):
    value = endpoint.registry.get_sample_value
    assert value("tiering_serve_requests_total", {"api": "Fetch", "error": "0"}) > 0
    assert value("tiering_serve_bytes_total", {"tier": "store"}) > 0
    assert value("tiering_serve_connections_total", {"result": "accepted"}) > 0
    assert value("tiering_serve_fetch_seconds_count") > 0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=0, max_size=40), st.integers(0, 80))
def test_fuzzed_connections_never_disturb_another(endpoint, junk, declared):
    bystander = raw_connection(endpoint)
    try:
        bad = raw_connection(endpoint)
        bad.sendall(struct.pack(">i", declared) + junk)
        bad.shutdown(1)        # whatever it made of it, the endpoint now sees the end of the stream
        bad.settimeout(10)
        try:
            while bad.recv(4096):
                pass             # an answer, if the junk happened to be a request; then the close
        except ConnectionResetError:
            pass
        bad.close()
        assert _api_versions(bystander).error_code == 0
    finally:
        bystander.close()
