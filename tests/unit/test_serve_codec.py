"""The endpoint's pure parts: request decoding, answers in every advertised version, topology,
the [serve] config section and the certificate allowlist."""

from __future__ import annotations

import struct
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka.protocol.consumer.fetch import FetchRequest
from kafka.protocol.metadata.api_versions import ApiVersionsRequest

from tiering.cluster.leadership import LeadershipView, PartitionLeadership
from tiering.config import ServeConfig, parse_config
from tiering.errors import ConfigError
from tiering.serve import apis, codec, tls, topology

SUPPORTED = apis.supported_versions(None)

# One request per API, naming every field any version has (build() leaves out the ones a
# version lacks), so an answer is encoded through every nested structure.
TOPIC_ID = uuid.UUID(int=7)
REQUEST_VALUES = {
    0: {"acks": -1, "timeout_ms": 100, "topic_data": [
        {"name": "t", "topic_id": TOPIC_ID, "partition_data": [{"index": 0, "records": b"x"}]}]},
    22: {"transactional_id": None, "transaction_timeout_ms": 1, "producer_id": -1, "producer_epoch": -1},
    19: {"topics": [{"name": "t", "num_partitions": 1, "replication_factor": 1, "assignments": [],
                     "configs": []}], "timeout_ms": 1},
    20: {"topics": [{"name": "t", "topic_id": TOPIC_ID}], "topic_names": ["t"], "timeout_ms": 1},
    21: {"topics": [{"name": "t", "partitions": [{"partition_index": 0, "offset": 1}]}], "timeout_ms": 1},
    8: {"group_id": "g", "topics": [{"name": "t", "partitions": [{"partition_index": 0, "committed_offset": 1}]}]},
    9: {"group_id": "g", "topics": [{"name": "t", "partition_indexes": [0]}], "groups": [{"group_id": "g", "topics": None}]},
    11: {"group_id": "g", "session_timeout_ms": 1, "member_id": "", "protocol_type": "consumer", "protocols": []},
    12: {"group_id": "g", "generation_id": 1, "member_id": "m"},
    13: {"group_id": "g", "member_id": "m", "members": []},
    14: {"group_id": "g", "generation_id": 1, "member_id": "m", "assignments": []},
    15: {"groups": ["g"]},
}


def request(api_key: int, version: int):
    """A request object as the server sees it: encoded by kafka-python, decoded by ours."""
    body = codec.build(codec.REQUESTS[api_key][version], REQUEST_VALUES[api_key])
    return codec.decode_request(codec.encode_request(body, version, 3)[4:], SUPPORTED).body


@pytest.mark.parametrize("api_key", sorted(apis.REFUSED_VERSIONS))
def test_refusals_encode_in_every_advertised_version(api_key):
    lo, hi = SUPPORTED[api_key]
    for version in range(lo, hi + 1):
        framed = codec.encode_response(api_key, version, 3, apis.refused(api_key, request(api_key, version), version))
        answer = codec.decode_response(api_key, version, framed[4:])
        assert answer.header.correlation_id == 3
        assert apis.TOPIC_AUTHORIZATION_FAILED in _codes(answer) or apis.CLUSTER_AUTHORIZATION_FAILED in _codes(answer)


@pytest.mark.parametrize("api_key", sorted(apis.GROUP_VERSIONS))
def test_group_fallbacks_encode_in_every_advertised_version(api_key):
    lo, hi = SUPPORTED[api_key]
    for version in range(lo, hi + 1):
        framed = codec.encode_response(api_key, version, 4,
                                       apis.no_coordinator(api_key, request(api_key, version), version))
        assert apis.COORDINATOR_NOT_AVAILABLE in _codes(codec.decode_response(api_key, version, framed[4:]))


def _codes(obj) -> set[int]:
    """Every error_code anywhere in a decoded answer."""
    found = set()
    for name in obj._struct.fields:
        value = getattr(obj, name)
        if name == "error_code":
            found.add(value)
        for item in value if isinstance(value, list) else [value]:
            if hasattr(item, "_struct"):
                found |= _codes(item)
    return found


def test_advertised_versions_cover_the_clients_and_stay_inside_the_schemas():
    assert SUPPORTED[1] == (4, 17) and SUPPORTED[3] == (0, 13) and SUPPORTED[2] == (1, 10)
    assert SUPPORTED[18] == (0, 4) and SUPPORTED[10] == (0, 6)
    assert 23 not in SUPPORTED      # leader epochs are -1: clients never ask OffsetForLeaderEpoch
    for key, (lo, hi) in SUPPORTED.items():
        s_lo, s_hi = codec.schema_versions(key)
        assert s_lo <= lo <= hi <= s_hi


def test_decode_refuses_trailing_bytes_and_unsupported_versions():
    body = ApiVersionsRequest[3](client_software_name="t", client_software_version="1")
    frame = codec.encode_request(body, 3, 9)[4:]
    assert codec.decode_request(frame, SUPPORTED).correlation_id == 9
    with pytest.raises(codec.MalformedRequest):
        codec.decode_request(frame + b"\x00", SUPPORTED)
    with pytest.raises(codec.MalformedRequest):
        codec.decode_request(frame[:-3], SUPPORTED)
    with pytest.raises(codec.UnsupportedRequest):
        codec.decode_request(struct.pack(">hhi", 1, 3, 1) + frame[8:], SUPPORTED)   # Fetch v3
    with pytest.raises(codec.UnsupportedRequest):
        codec.decode_request(struct.pack(">hhi", 23, 4, 1) + frame[8:], SUPPORTED)  # not advertised


def _valid_frames():
    fetch = st.builds(lambda v, off, topic: (1, v, codec.build(FetchRequest[v], {
        "replica_id": -1, "max_wait_ms": 10, "min_bytes": 1, "max_bytes": 1000, "isolation_level": 1,
        "session_id": 0, "session_epoch": -1, "rack_id": "", "forgotten_topics_data": [],
        "topics": [{"topic": topic, "topic_id": TOPIC_ID,
                    "partitions": [{"partition": 0, "fetch_offset": off, "partition_max_bytes": 100}]}]})),
        st.integers(4, 17), st.integers(0, 2**40), st.text(min_size=1, max_size=8))
    versions = st.builds(lambda v: (18, v, ApiVersionsRequest[v](client_software_name="c", client_software_version="1")),
                         st.integers(0, 4))
    return st.one_of(fetch, versions).map(lambda kvb: codec.encode_request(kvb[2], kvb[1], 5)[4:])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_valid_frames(), st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=4),
       st.integers(0, 3), st.binary(max_size=6))
def test_fuzzed_frames_decode_to_exactly_themselves_or_are_refused(frame, flips, cut, tail):
    mutated = bytearray(frame)
    for position, value in flips:
        if mutated:
            mutated[position % len(mutated)] = value
    mutated = bytes(mutated[:len(mutated) - cut]) + tail
    try:
        req = codec.decode_request(mutated, SUPPORTED)
    except (codec.MalformedRequest, codec.UnsupportedRequest):
        return
    # accepted: it means one request, whose encoding is exactly what was received
    assert bytes(req.body.encode(version=req.api_version, header=True)) == mutated
    assert (req.api_key, req.api_version, req.correlation_id) == struct.unpack_from(">hhi", mutated)


@given(st.binary(max_size=64))
@settings(max_examples=300, deadline=None)
def test_random_bytes_never_raise_anything_but_refusals(data):
    try:
        codec.decode_request(data, SUPPORTED)
    except (codec.MalformedRequest, codec.UnsupportedRequest):
        pass


def test_single_topology_leads_everything():
    topo = topology.single("h", 9093)
    assert topo.nodes == (topology.Node(0, "h", 9093),) and topo.leads("any", 7) and topo.leader("any", 7) == 0


def test_cluster_topology_names_the_sidecar_beside_the_kafka_leader():
    view = LeadershipView(1, {("t", 0): PartitionLeadership(2, 5, (1, 2), (1, 2)),
                              ("t", 1): PartitionLeadership(1, 5, (1, 2), (1, 2)),
                              ("t", 2): PartitionLeadership(9, 5, (9,), (9,))}, 0, True)
    topo = topology.cluster(view, {1: "b1", 2: "b2", 3: "b3"}, self_host="me", port=9093, peers={3: "x:9999"})
    assert topo.nodes == (topology.Node(1, "me", 9093), topology.Node(2, "b2", 9093), topology.Node(3, "x", 9999))
    assert topo.leader("t", 0) == 2 and not topo.leads("t", 0)
    assert topo.leads("t", 1)
    assert topo.leader("t", 2) is None       # broker 9's host is unknown: no leader named, served here
    assert topo.leads("t", 2)


BASE = {"kafka": {"log_dirs": ["/tmp/x"]}, "store": {"bucket": "b"}}


def _serve(**keys):
    return parse_config({**BASE, "serve": keys}).serve


def test_serve_config_defaults_off_and_parses():
    assert parse_config(BASE).serve == ServeConfig()
    cfg = _serve(listen="127.0.0.1:9093", peers={"2": "h:9094"}, max_request_bytes="2MiB")
    assert cfg.host_port == ("127.0.0.1", 9093) and cfg.peers == {2: "h:9094"} and cfg.max_request_bytes == 2 << 20


@pytest.mark.parametrize("keys, message", [
    ({"listen": "0.0.0.0:9093"}, "not a loopback address and no TLS"),
    ({"listen": "10.1.2.3:9093"}, "not a loopback address and no TLS"),
    ({"listen": "nohost"}, "serve.listen"),
    ({"listen": "127.0.0.1:9093", "tls_cert_file": "c.pem"}, "set both"),
    ({"listen": "127.0.0.1:9093", "tls_ca_file": "ca.pem"}, "client certificates need TLS"),
    ({"listen": "127.0.0.1:9093", "topic_allowlist": {"CN=a": ["t"]}}, "needs client certificates"),
    ({"listen": "127.0.0.1:9093", "peers": {"x": "h:1"}}, "serve.peers.x"),
    ({"listen": "127.0.0.1:9093", "bogus": 1}, "serve.bogus: unknown key"),
])
def test_serve_config_problems_are_one_line_each(keys, message):
    with pytest.raises(ConfigError) as caught:
        _serve(**keys)
    assert message in str(caught.value)


def test_plaintext_on_a_public_address_is_allowed_only_when_said():
    assert _serve(listen="0.0.0.0:9093", allow_plaintext=True).listen == "0.0.0.0:9093"
    assert _serve(listen="localhost:9093").listen == "localhost:9093"
    assert _serve(listen="0.0.0.0:9093", tls_cert_file="c", tls_key_file="k").tls


def test_allowlist_by_subject_or_common_name_and_deny_by_default():
    cfg = ServeConfig(topic_allowlist={"CN=reports": ("events*",), "O=Acme,CN=ops": ("*",)})
    assert tls.allowed_topics(ServeConfig(), None) is None
    assert tls.allowed_topics(cfg, "O=Acme,CN=reports") == ("events*",)
    assert tls.allowed_topics(cfg, "O=Acme,CN=ops") == ("*",)
    assert tls.allowed_topics(cfg, "CN=stranger") == ()
    assert tls.allowed_topics(cfg, None) == ()
    assert tls.peer_subject({"subject": ((("organizationName", "Acme"),), (("commonName", "ops"),))}) == "O=Acme,CN=ops"
    access = apis.Access(("events*",))
    assert access.allows("events-1") and not access.allows("secret")


def test_broker_hosts_from_describe_cluster():
    from tiering.serve.wiring import broker_hosts
    described = {"cluster_id": "c", "controller_id": 1, "brokers": [
        {"broker_id": 1, "host": "k1", "port": 9092, "rack": None, "is_fenced": False},
        {"broker_id": 2, "host": "k2", "port": 9092, "rack": None, "is_fenced": True},
        {"node_id": 3, "host": "k3", "port": 9092, "rack": None}]}
    assert broker_hosts(described) == {1: "k1", 3: "k3"}
