"""`tiering run --once` against a real S3 server over HTTP, through the real command line."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import pytest
from kafka.record import MemoryRecords

from tests.conftest import BOTH_STORES, BUCKET, PREFIX, bucket_snapshot, events, run_cli
from tiering.kafka.logdir import scan_log_dirs
from tiering.simulate import SimulatedBroker

pytestmark = pytest.mark.integration


def build_cluster(log_dir) -> SimulatedBroker:
    broker = SimulatedBroker(log_dir, segment_bytes=32 * 1024, seed=11)
    broker.create_topic("orders", 2)
    broker.create_topic("clicks.v2", 1)
    broker.create_topic("payments", 1)
    broker.create_topic("users", 1, compacted=True)
    broker.create_topic("__consumer_offsets", 1)
    for partition, codec in enumerate(("gzip", "snappy")):
        broker.produce("orders", partition, 900, codec=codec, value_size=150, headers=True)
    broker.produce("clicks.v2", 0, 600, codec="lz4", value_size=150)
    broker.produce("clicks.v2", 0, 600, codec="none", value_size=150)
    broker.hold_high_watermark("clicks.v2", 0, broker.next_offset("clicks.v2", 0) - 500)
    for i in range(30):
        broker.produce_transaction("payments", 0, 20, commit=i % 3 != 0, codec="zstd", value_size=150)
    broker.produce("users", 0, 500, value_size=150)
    broker.produce("__consumer_offsets", 0, 500, value_size=150)
    (log_dir / f"gone-0.{'a' * 32}-delete").mkdir()
    shutil.copytree(broker.partition_dir("orders", 0), log_dir / f"orders-0.{'b' * 32}-future")
    return broker


def expected_eligible(log_dir) -> dict[tuple[str, int, int], object]:
    """The eligibility rules restated independently: rolled, end below HW, not internal or compacted."""
    scan = scan_log_dirs([log_dir])
    state = scan.log_dirs[0]
    result = {}
    for p in scan.partitions:
        if p.topic.startswith("__") or p.tp in state.compacted:
            continue
        for s in p.segments:
            if s.next_offset is not None and s.next_offset <= state.high_watermarks[p.tp]:
                result[(p.topic, p.partition, s.base_offset)] = s
    return result


def remote_manifests(s3) -> dict[tuple[str, int, int], dict]:
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX):
        for item in page.get("Contents", []):
            if item["Key"].endswith(".manifest.json"):
                doc = json.loads(s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read())
                key = (doc["topic"], doc["partition"], doc["base_offset"])
                assert key not in found, f"two manifests for {key}"
                found[key] = doc
    return found


def get(s3, key) -> bytes:
    return s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()


@BOTH_STORES
def test_exactly_the_eligible_segments_are_offloaded_byte_identical(env, s3):
    broker = build_cluster(env.log_dir)
    config = env.write_config()
    result = run_cli("run", "--once", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    expected = expected_eligible(env.log_dir)
    manifests = remote_manifests(s3)
    assert set(manifests) == set(expected)
    assert {t for t, _, _ in expected} == {"orders", "clicks.v2", "payments"}
    assert any(t == "clicks.v2" and s.next_offset is not None for (t, _, _), s in expected.items())

    for key, doc in manifests.items():
        segment = expected[key]
        objects = {o["kind"]: o for o in doc["objects"]}
        assert get(s3, objects["log"]["key"]) == segment.log_path.read_bytes()
        for kind, path in segment.index_paths:
            assert get(s3, objects[kind]["key"]) == path.read_bytes(), kind
        assert get(s3, objects["snapshot"]["key"]) == segment.snapshot_path.read_bytes()
        assert doc["end_offset"] == segment.next_offset - 1
        assert doc["size_bytes"] == segment.size
        assert doc["topic_id"] == broker.topic_ids[key[0]]
        assert set(objects) >= {"log", "index", "timeindex", "snapshot", "leader_epoch"}
    payments_with_aborts = [d for k, d in manifests.items() if k[0] == "payments" and
                            any(o["kind"] == "txnindex" for o in d["objects"])]
    assert payments_with_aborts, "aborted transactions' .txnindex files are offloaded"

    uploaded = [e for e in events(result.stdout) if e["event"] == "segment uploaded"]
    assert len(uploaded) == len(expected)
    assert {"topic", "partition", "base_offset"} <= set(uploaded[0])
    summary = [e for e in events(result.stdout) if e["event"] == "offload pass finished"][0]
    assert summary["uploaded_segments"] == len(expected) and summary["failed_segments"] == 0


def test_remote_segments_read_back_with_kafka_python(env, s3):
    build_cluster(env.log_dir)
    assert run_cli("run", "--once", "--config", str(env.write_config())).returncode == 0
    manifests = remote_manifests(s3)
    doc = manifests[min(k for k in manifests if k[0] == "orders" and k[1] == 1)]
    data = get(s3, next(o["key"] for o in doc["objects"] if o["kind"] == "log"))
    batches, offsets = MemoryRecords(data), []
    while (batch := batches.next_batch()) is not None:
        assert batch.validate_crc()
        offsets += [r.offset for r in batch]
    assert offsets == list(range(doc["base_offset"], doc["last_batch_offset"] + 1))
    assert doc["record_count"] == len(offsets)


@BOTH_STORES
def test_second_pass_changes_nothing_and_lost_journal_is_rebuilt_from_the_store(env, s3):
    build_cluster(env.log_dir)
    config = str(env.write_config())
    assert run_cli("run", "--once", "--config", config).returncode == 0
    before = bucket_snapshot(s3)
    again = run_cli("run", "--once", "--config", config)
    assert again.returncode == 0
    assert [e for e in events(again.stdout) if e["event"] == "segment uploaded"] == []
    assert bucket_snapshot(s3) == before

    shutil.rmtree(env.state_dir)
    rebuilt = run_cli("run", "--once", "--config", config)
    assert rebuilt.returncode == 0, rebuilt.stderr
    rebuild_event = [e for e in events(rebuilt.stdout) if e["event"] == "journal rebuilt from the store"][0]
    assert rebuild_event["manifests"] == len(remote_manifests(s3))
    assert [e for e in events(rebuilt.stdout) if e["event"] == "segment uploaded"] == []
    assert bucket_snapshot(s3) == before


def test_new_segments_go_on_the_next_pass(env, s3):
    broker = build_cluster(env.log_dir)
    config = str(env.write_config())
    assert run_cli("run", "--once", "--config", config).returncode == 0
    count = len(remote_manifests(s3))
    broker.hold_high_watermark("clicks.v2", 0, None)
    broker.roll("clicks.v2", 0)
    result = run_cli("run", "--once", "--config", config)
    assert result.returncode == 0
    assert len(remote_manifests(s3)) == len(expected_eligible(env.log_dir)) > count


def test_corrupt_and_truncated_segments_are_skipped_reported_and_kept(env, s3):
    build_cluster(env.log_dir)
    segments = scan_log_dirs([env.log_dir]).partitions
    orders0 = next(p for p in segments if p.topic == "orders" and p.partition == 0).segments
    flipped, truncated = orders0[0].log_path, orders0[1].log_path
    data = bytearray(flipped.read_bytes())
    data[len(data) - 10] ^= 0x01  # inside the last batch's records, which its CRC covers
    flipped.write_bytes(bytes(data))
    with open(truncated, "r+b") as f:
        f.truncate(truncated.stat().st_size - 100)
    originals = {p: p.read_bytes() for p in (flipped, truncated)}

    config = str(env.write_config())
    result = run_cli("run", "--once", "--config", config)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "2 segment(s) could not be offloaded" in result.stderr
    skipped = {e["base_offset"]: e["reason"] for e in events(result.stdout) if e["event"] == "segment skipped"}
    assert set(skipped) == {orders0[0].base_offset, orders0[1].base_offset}
    assert "CRC-32C mismatch" in skipped[orders0[0].base_offset]
    assert "truncated" in skipped[orders0[1].base_offset]
    manifests = remote_manifests(s3)
    assert ("orders", 0, orders0[0].base_offset) not in manifests
    assert ("orders", 0, orders0[1].base_offset) not in manifests
    assert set(manifests) == set(expected_eligible(env.log_dir)) - {
        ("orders", 0, orders0[0].base_offset), ("orders", 0, orders0[1].base_offset)}
    assert all(p.read_bytes() == data for p, data in originals.items())
    listing = s3.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX)["Contents"]
    assert not [o for o in listing if f"/0/{orders0[0].base_offset:020d}-" in o["Key"] and "orders-" in o["Key"]]

    status = run_cli("status", "--json", "--config", config)
    row = next(p for p in json.loads(status.stdout)["partitions"] if p["topic"] == "orders" and p["partition"] == 0)
    assert "corrupt segment" in row["last_error"]
    assert row["pending_segments"] == 2


def test_odd_inputs_are_reported_in_one_line_each_and_everything_else_goes(env, s3, tmp_path):
    build_cluster(env.log_dir)
    (env.log_dir / "orders-1" / "readme.txt").write_text("not a segment")
    (env.log_dir / "orders-1" / "00000000000000000001.log.bak").write_text("x")
    (env.log_dir / "Not A Partition").mkdir()
    outside = tmp_path / "outside" / "stolen-0"
    outside.mkdir(parents=True)
    shutil.copy(env.log_dir / "orders-1" / "00000000000000000000.log", outside / "00000000000000000000.log")
    os.symlink(outside, env.log_dir / "stolen-0")
    result = run_cli("run", "--once", "--config", str(env.write_config()))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    assert "4 log-dir entries were skipped" in result.stderr
    warnings = [e for e in events(result.stdout) if e["event"] == "log dir entry skipped"]
    assert {os.path.basename(w["path"]) for w in warnings} == {
        "readme.txt", "00000000000000000001.log.bak", "Not A Partition", "stolen-0"}
    manifests = remote_manifests(s3)
    assert set(manifests) == set(expected_eligible(env.log_dir))
    assert not any(t == "stolen" for t, _, _ in manifests)


@BOTH_STORES
def test_multipart_upload_of_a_segment_larger_than_a_part(env, s3, s3_server):
    broker = SimulatedBroker(env.log_dir, segment_bytes=12 * 1024 * 1024, seed=5)
    broker.create_topic("big", 1)
    broker.produce("big", 0, 11_500, value_size=1000, batch_records=50)
    broker.roll("big", 0)
    result = run_cli("run", "--once", "--config", str(env.write_config()))
    assert result.returncode == 0, result.stderr
    (doc,) = remote_manifests(s3).values()
    log_object = next(o for o in doc["objects"] if o["kind"] == "log")
    assert log_object["size"] > 10 * 1024 * 1024
    segment = scan_log_dirs([env.log_dir]).partitions[0].segments[0]
    if s3_server == "rclone":
        # rclone's ETag of a completed multipart object is the MD5 of its bytes (it streams the
        # parts into one file); S3 and moto give the MD5 of the parts' MD5s and "-<parts>".
        assert log_object["etag"] == hashlib.md5(segment.log_path.read_bytes()).hexdigest()
    else:
        assert "-" in log_object["etag"], "a multipart upload's ETag ends in -<parts>"
    assert get(s3, log_object["key"]) == segment.log_path.read_bytes()
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_recreated_topic_never_mixes_with_its_predecessor(env, s3):
    broker = SimulatedBroker(env.log_dir, segment_bytes=16 * 1024, seed=9)
    old_id = broker.create_topic("orders", 1)
    broker.produce("orders", 0, 400)
    config = str(env.write_config())
    assert run_cli("run", "--once", "--config", config).returncode == 0
    broker.close()
    shutil.rmtree(broker.partition_dir("orders", 0))
    broker = SimulatedBroker(env.log_dir, segment_bytes=16 * 1024, seed=10)
    new_id = broker.create_topic("orders", 1)
    broker.produce("orders", 0, 400)
    assert run_cli("run", "--once", "--config", config).returncode == 0
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX)["Contents"]]
    old = [k for k in keys if f"orders-{old_id}/" in k]
    new = [k for k in keys if f"orders-{new_id}/" in k]
    assert old and new and len(old) + len(new) == len(keys)
    status = json.loads(run_cli("status", "--json", "--config", config).stdout)
    rows = {(r["topic_id"], r["tiering_enabled"]) for r in status["partitions"] if r["topic"] == "orders"}
    assert rows == {(new_id, True), (old_id, False)}
