import json
import random

import pytest

from tiering.kafka.indexes import OFFSET_ENTRY, TIME_ENTRY, CorruptIndex, check_index
from tiering.store.keys import PartitionPath, parse_key
from tiering.store.manifest import (MAX_MANIFEST_BYTES, MAX_TIMESTAMP_MS, ManifestError, ObjectEntry, SegmentManifest,
                                    parse_manifest)
from tiering.upload.retry import RetryPolicy

TOPIC_ID = "4A8VWD3ZTJa4i2ZbnSPb8A"


def keys(prefix="cluster-a/", hash_prefix=False, uid="0123456789abcdef"):
    return PartitionPath(prefix, "orders.v2", TOPIC_ID, 3, hash_prefix).segment(1234, uid)


def manifest(k=None) -> SegmentManifest:
    k = k or keys()
    return SegmentManifest(
        format_version=1, topic="orders.v2", topic_id=TOPIC_ID, partition=3, base_offset=1234, end_offset=2000,
        last_batch_offset=1999, size_bytes=100, batch_count=2, record_count=20, max_timestamp=5,
        leader_epochs=((0, 1234), (2, 1500)),
        objects=(ObjectEntry("log", k.object_key("log"), 100, "0badf00d", "etag1"),
                 ObjectEntry("index", k.object_key("index"), 16, "00000001", "etag2")),
        uid=k.uid, broker_id=1, created_at_ms=7, tool_version="0.1.0")


def test_key_layout_carries_topic_id_partition_padded_offset_and_uid():
    k = keys()
    assert k.manifest_key == f"cluster-a/orders.v2-{TOPIC_ID}/3/00000000000000001234-0123456789abcdef.manifest.json"
    assert k.object_key("leader_epoch").endswith("-0123456789abcdef.leader-epoch-checkpoint")
    parsed = parse_key(k.object_key("log"))
    assert (parsed.topic, parsed.topic_id, parsed.partition, parsed.base_offset, parsed.uid, parsed.suffix) == (
        "orders.v2", TOPIC_ID, 3, 1234, "0123456789abcdef", "log")
    hashed = keys(hash_prefix=True)
    assert hashed.root != k.root and hashed.root.startswith("cluster-a/") and hashed.root.endswith(f"{TOPIC_ID}/3/")
    assert parse_key(hashed.manifest_key).topic == "orders.v2"
    assert parse_key("cluster-a/random/file.txt") is None


def test_manifest_round_trip():
    m = manifest()
    assert parse_manifest(m.to_json(), keys().manifest_key) == m
    assert m.total_bytes == 116


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d["objects"][0].update(key="cluster-a/orders.v2-" + TOPIC_ID + "/3/../../../etc/passwd"), "not this segment's"),
    (lambda d: d["objects"][1].update(key=keys(uid="ffffffffffffffff").object_key("index")), "not this segment's"),
    (lambda d: d.update(topic="payments"), "do not match its key"),
    (lambda d: d.update(partition=4), "do not match its key"),
    (lambda d: d["objects"][0].update(size=-1), "size"),
    (lambda d: d.update(size_bytes=99), "differs from size_bytes"),
    (lambda d: d["objects"][0].update(crc32c="XYZ"), "crc32c"),
    (lambda d: d.update(format_version=2), "format_version"),
    (lambda d: d.update(objects=[d["objects"][1]]), "no log object"),
    (lambda d: d.update(last_batch_offset=5000), "outside the segment"),
    (lambda d: d.update(topic="../x"), "illegal topic"),
])
def test_manifest_that_escapes_or_lies_is_rejected(mutate, message):
    doc = json.loads(manifest().to_json())
    mutate(doc)
    with pytest.raises(ManifestError, match=message):
        parse_manifest(json.dumps(doc).encode(), keys().manifest_key)


def test_deeply_nested_json_is_a_manifest_error_not_a_recursion_error():
    data = b'{"format_version": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(ManifestError, match="nested too deeply"):
        parse_manifest(data, keys().manifest_key)


def test_a_manifest_over_the_size_limit_is_refused_unparsed():
    doc = json.loads(manifest().to_json())
    doc["padding"] = "x" * MAX_MANIFEST_BYTES
    with pytest.raises(ManifestError, match="over the"):
        parse_manifest(json.dumps(doc).encode(), keys().manifest_key)


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d.update(max_timestamp=10**30), "max_timestamp"),                   # overflows os.utime
    (lambda d: d.update(max_timestamp=-2), "max_timestamp"),
    (lambda d: d.update(created_at_ms=-1), "created_at_ms"),
    (lambda d: d.update(leader_epochs=[[2**40, 1234], [-3, 1500]]), "leader epoch"),
    (lambda d: d.update(leader_epochs=[[0, 1234], [-3, 1500]]), "leader epoch"),
    (lambda d: d.update(leader_epochs=[[0, 1000]]), "leader epoch"),              # starts before the segment
    (lambda d: d.update(leader_epochs=[[0, 2001]]), "leader epoch"),              # starts after it
    (lambda d: d.update(leader_epochs=[[2, 1234], [1, 1500]]), "must rise"),
    (lambda d: d.update(leader_epochs=[[1, 1500], [2, 1500]]), "must rise"),
    (lambda d: d.update(end_offset=1000, last_batch_offset=None), "end_offset"),   # ends before it begins
    (lambda d: d.update(end_offset=2**63), "end_offset"),
    (lambda d: d.update(size_bytes=2**40), "size_bytes"),
    (lambda d: d["objects"][1].update(size=2**40), "size"),
    (lambda d: d.update(batch_count=-1), "batch_count"),
    (lambda d: d.update(record_count=2**64), "record_count"),
    (lambda d: d.update(broker_id=2**40), "broker_id"),
])
def test_numbers_out_of_range_are_rejected(mutate, message):
    doc = json.loads(manifest().to_json())
    mutate(doc)
    with pytest.raises(ManifestError, match=message):
        parse_manifest(json.dumps(doc).encode(), keys().manifest_key)


def test_the_edges_of_each_range_are_accepted():
    doc = json.loads(manifest().to_json())
    doc.update(max_timestamp=MAX_TIMESTAMP_MS, leader_epochs=[[0, 1234], [2**31 - 1, 2000]], broker_id=None,
               created_at_ms=0)
    parsed = parse_manifest(json.dumps(doc).encode(), keys().manifest_key)
    assert parsed.max_timestamp == MAX_TIMESTAMP_MS and parsed.leader_epochs[-1] == (2**31 - 1, 2000)
    doc.update(max_timestamp=-1, leader_epochs=[])
    assert parse_manifest(json.dumps(doc).encode(), keys().manifest_key).max_timestamp == -1


def test_manifest_must_match_the_key_it_was_read_from():
    with pytest.raises(ManifestError):
        parse_manifest(manifest().to_json(), keys(uid="ffffffffffffffff").manifest_key)


def test_index_checks():
    index = b"".join(OFFSET_ENTRY.pack(r, p) for r, p in ((3, 0), (10, 4100), (20, 8200)))
    check_index("index", index, 9000, 100, 130)
    with pytest.raises(CorruptIndex, match="points outside"):
        check_index("index", index, 8000, 100, 130)
    with pytest.raises(CorruptIndex, match="untrimmed"):
        check_index("index", index + b"\x00" * 16, 9000, 100, 130)
    with pytest.raises(CorruptIndex, match="multiple"):
        check_index("index", index[:-3], 9000, 100, 130)
    times = b"".join(TIME_ENTRY.pack(t, r) for t, r in ((5, 3), (9, 20)))
    check_index("timeindex", times, 9000, 100, 130)
    with pytest.raises(CorruptIndex):
        check_index("timeindex", times + b"\x00" * 12, 9000, 100, 130)


def test_retry_policy_is_capped_exponential_with_jitter():
    policy = RetryPolicy(attempts=4, base_seconds=1, cap_seconds=5)
    rng = random.Random(1)
    for failures, ceiling in ((1, 1), (2, 2), (3, 4), (4, 5), (9, 5)):
        delays = [policy.delay(failures, rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays) and max(delays) > ceiling * 0.8
    assert policy.should_retry(3) and not policy.should_retry(4)

