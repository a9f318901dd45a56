"""serve.max_connections and serve.max_inflight_bytes."""

from __future__ import annotations

import socket

from kafka.protocol.consumer.fetch import FetchRequest
from prometheus_client import CollectorRegistry

from tests.serve.conftest import closed_by_peer, filled_source, roundtrip
from tiering.config import ServeConfig
from tiering.serve import codec
from tiering.serve.server import ServeEndpoint, ThreadedEndpoint


def _endpoint(**limits) -> ThreadedEndpoint:
    served = ThreadedEndpoint(ServeEndpoint(ServeConfig(listen="127.0.0.1:0", **limits), filled_source(),
                                            registry=CollectorRegistry()))
    served.start()
    return served


def _fetch(sock, max_bytes: int, partition_max_bytes: int):
    request = codec.build(FetchRequest[12], {
        "replica_id": -1, "max_wait_ms": 0, "min_bytes": 1, "max_bytes": max_bytes, "isolation_level": 0,
        "session_id": 0, "session_epoch": -1, "rack_id": "", "forgotten_topics_data": [],
        "topics": [{"topic": "events", "partitions": [
            {"partition": p, "fetch_offset": 0, "partition_max_bytes": partition_max_bytes} for p in (0, 1)]}]})
    return codec.decode_response(1, 12, roundtrip(sock, codec.encode_request(request, 12, 1)))


def test_connections_beyond_the_limit_are_closed_and_the_others_served():
    served = _endpoint(max_connections=1)
    try:
        first = socket.create_connection(served.endpoint.address, timeout=10)
        assert _fetch(first, 10_000, 10_000).responses      # the one allowed connection is served
        second = socket.create_connection(served.endpoint.address, timeout=10)
        assert closed_by_peer(second)
        assert _fetch(first, 10_000, 10_000).responses
        first.close()
        second.close()
        assert served.endpoint.metrics.connections_total.labels("refused")._value.get() == 1
    finally:
        served.stop()


def test_an_answer_never_exceeds_the_in_flight_limit_but_holds_one_batch():
    served = _endpoint(max_inflight_bytes=200)
    try:
        sock = socket.create_connection(served.endpoint.address, timeout=10)
        unlimited = _endpoint()
        try:
            whole = _fetch(socket.create_connection(unlimited.endpoint.address, timeout=10), 1 << 20, 1 << 20)
        finally:
            unlimited.stop()
        answer = _fetch(sock, 1 << 20, 1 << 20)          # the client asks for 1 MiB; the endpoint caps it
        sizes = [len(p.records or b"") for t in answer.responses for p in t.partitions]
        whole_sizes = [len(p.records or b"") for t in whole.responses for p in t.partitions]
        assert sum(whole_sizes) > 200 * 2
        first_records = whole.responses[0].partitions[0].records
        batch = int.from_bytes(first_records[8:12], "big") + 12   # the first batch's length field + 12
        assert 100 < batch < 200
        assert sizes[0] == batch and sizes[1] == 0        # one whole batch (KIP-74), then nothing more
        sock.close()
    finally:
        served.stop()
