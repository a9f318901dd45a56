"""Answers seen on the wire: read_committed bounds, cluster topology, the group relay."""

from __future__ import annotations

import socket
import struct

import pytest
from kafka.protocol.consumer.fetch import FetchRequest
from kafka.protocol.consumer.group import HeartbeatRequest
from kafka.protocol.consumer.offsets import ListOffsetsRequest
from kafka.protocol.metadata.find_coordinator import FindCoordinatorRequest
from kafka.protocol.metadata.metadata import MetadataRequest
from prometheus_client import CollectorRegistry

from tests.serve.conftest import filled_source, roundtrip
from tests.serve.memsource import AbortedTxn
from tiering.cluster.leadership import LeadershipView, PartitionLeadership
from tiering.config import ServeConfig
from tiering.serve import codec
from tiering.serve.server import ServeEndpoint, ThreadedEndpoint
from tiering.serve.topology import StaticTopology, cluster


class CannedRelay:
    """A GroupRelay-shaped object: records what it was given, answers a fixed Heartbeat."""

    def __init__(self):
        self.frames: list[tuple[int, bytes]] = []
        self.closed: list[int] = []

    async def forward(self, conn_id: int, frame: bytes) -> bytes | None:
        self.frames.append((conn_id, frame))
        correlation_id = struct.unpack_from(">i", frame, 4)[0]
        if struct.unpack_from(">h", frame, 0)[0] != 12:
            return None
        return struct.pack(">i", correlation_id) + struct.pack(">ih", 0, 27)   # v1+: throttle, REBALANCE_IN_PROGRESS

    def versions(self) -> dict[int, tuple[int, int]]:
        return {12: (0, 3), 13: (0, 3)}

    async def close_connection(self, conn_id: int) -> None:
        self.closed.append(conn_id)

    async def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def served():
    source = filled_source()
    source.aborted[("events", 0)] = (AbortedTxn(77, 5),)
    source.stable_lag[("events", 0)] = 10
    view = LeadershipView(1, {("events", 0): PartitionLeadership(1, 3, (1, 2), (1, 2)),
                              ("events", 1): PartitionLeadership(2, 3, (1, 2), (1, 2))}, 0, True)
    relay = CannedRelay()
    endpoint = ServeEndpoint(ServeConfig(listen="127.0.0.1:0"), source, None, relay, CollectorRegistry())
    threaded = ThreadedEndpoint(endpoint)
    host, port = threaded.start()
    endpoint.set_topology(StaticTopology(cluster(view, {1: "broker-1", 2: "broker-2"}, self_host="me", port=port,
                                                 peers={2: "peer-2:19093"})))
    threaded.relay = relay
    yield threaded
    threaded.stop()


def _ask(served, body, api_key: int, version: int):
    with socket.create_connection(served.endpoint.address, timeout=10) as sock:
        return codec.decode_response(api_key, version, roundtrip(sock, codec.encode_request(body, version, 11)))


def _fetch_body(version: int, isolation: int):
    return codec.build(FetchRequest[version], {
        "replica_id": -1, "max_wait_ms": 0, "min_bytes": 1, "max_bytes": 1 << 20, "isolation_level": isolation,
        "session_id": 0, "session_epoch": -1, "rack_id": "", "forgotten_topics_data": [],
        "topics": [{"topic": "events", "partitions": [
            {"partition": p, "fetch_offset": 0, "partition_max_bytes": 1 << 20} for p in (0, 1)]}]})


def test_read_committed_fetch_carries_aborted_transactions_and_the_stable_offset(served):
    committed = _fetch(served, isolation=1)
    assert (committed.high_watermark, committed.last_stable_offset, committed.log_start_offset) == (30, 20, 0)
    assert [(a.producer_id, a.first_offset) for a in committed.aborted_transactions] == [(77, 5)]
    uncommitted = _fetch(served, isolation=0)
    assert not uncommitted.aborted_transactions


def _fetch(served, isolation: int):
    answer = _ask(served, _fetch_body(12, isolation), 1, 12)
    return next(p for t in answer.responses for p in t.partitions if p.partition_index == 0)


def test_cluster_metadata_names_each_sidecar_and_the_leader_beside_kafkas(served):
    port = served.endpoint.address[1]
    answer = _ask(served, MetadataRequest[12](topics=None, allow_auto_topic_creation=False,
                                              include_topic_authorized_operations=False), 3, 12)
    assert sorted((b.node_id, b.host, b.port) for b in answer.brokers) == [(1, "me", port), (2, "peer-2", 19093)]
    events = next(t for t in answer.topics if t.name == "events")
    assert {p.partition_index: (p.leader_id, p.leader_epoch) for p in events.partitions} == {0: (1, -1), 1: (2, -1)}


def test_partitions_another_sidecar_leads_answer_not_leader(served):
    answer = _ask(served, _fetch_body(12, 0), 1, 12)
    errors = {p.partition_index: p.error_code for t in answer.responses for p in t.partitions}
    assert errors == {0: 0, 1: 6}
    asked = codec.build(ListOffsetsRequest[7], {"replica_id": -1, "isolation_level": 0, "topics": [
        {"name": "events", "partitions": [{"partition_index": p, "timestamp": -2} for p in (0, 1)]}]})
    offsets = _ask(served, asked, 2, 7)
    assert {p.partition_index: p.error_code for t in offsets.topics for p in t.partitions} == {0: 0, 1: 6}


def test_group_requests_go_to_the_relay_byte_for_byte(served):
    body = HeartbeatRequest[3](group_id="g", generation_id=4, member_id="m", group_instance_id=None)
    framed = codec.encode_request(body, 3, 11)
    with socket.create_connection(served.endpoint.address, timeout=10) as sock:
        answer = codec.decode_response(12, 3, roundtrip(sock, framed))
        assert answer.error_code == 27 and answer.header.correlation_id == 11
        assert served.relay.frames[-1][1] == framed[4:]
        # a group API the relay has no coordinator for: answered here, in the request's version
        leave = codec.build(codec.REQUESTS[13][3], {"group_id": "g", "members": [{"member_id": "m"}]})
        left = codec.decode_response(13, 3, roundtrip(sock, codec.encode_request(leave, 3, 12)))
        assert left.error_code == 15
        coordinator = codec.decode_response(10, 4, roundtrip(sock, codec.encode_request(
            FindCoordinatorRequest[4](key_type=0, coordinator_keys=["g"]), 4, 13)))
        assert [(c.node_id, c.host, c.error_code) for c in coordinator.coordinators] == [(1, "me", 0)]
    advertised = served.endpoint.versions
    assert advertised[12] == (0, 3) and 11 not in advertised      # the relay's table, not ours


def test_latest_is_the_last_stable_offset_under_read_committed(served):
    def latest(isolation: int) -> int:
        asked = codec.build(ListOffsetsRequest[7], {"replica_id": -1, "isolation_level": isolation, "topics": [
            {"name": "events", "partitions": [{"partition_index": 0, "timestamp": -1}]}]})
        return _ask(served, asked, 2, 7).topics[0].partitions[0].offset
    assert (latest(0), latest(1)) == (30, 20)


def test_a_fetch_with_an_error_is_answered_without_waiting(served):
    body = codec.build(FetchRequest[12], {
        "replica_id": -1, "max_wait_ms": 60_000, "min_bytes": 1, "max_bytes": 1 << 20, "isolation_level": 0,
        "session_id": 0, "session_epoch": -1, "rack_id": "", "forgotten_topics_data": [],
        "topics": [{"topic": "events", "partitions": [{"partition": 0, "fetch_offset": 30, "partition_max_bytes": 100},
                                                      {"partition": 1, "fetch_offset": 0, "partition_max_bytes": 100}]},
                   {"topic": "no-such-topic", "partitions": [{"partition": 0, "fetch_offset": 0,
                                                              "partition_max_bytes": 100}]}]})
    with socket.create_connection(served.endpoint.address, timeout=5) as sock:   # a 60 s wait would time out
        answer = codec.decode_response(1, 12, roundtrip(sock, codec.encode_request(body, 12, 21)))
    errors = {(t.topic, p.partition_index): p.error_code for t in answer.responses for p in t.partitions}
    assert errors == {("events", 0): 0, ("events", 1): 6, ("no-such-topic", 0): 3}
