"""Operator-facing behaviour of the CLI, and recovery of an upload a crash interrupted."""

from __future__ import annotations

import json
import random

import pytest

from tests.conftest import BOTH_STORES, BUCKET, PREFIX, events, run_cli
from tiering.clock import SystemClock
from tiering.config import load_config
from tiering.journal import Journal, SegmentId, SegmentState
from tiering.kafka.logdir import scan_log_dirs
from tiering.simulate import SimulatedBroker
from tiering.store.keys import PartitionPath
from tiering.upload.offload_pass import Offloader
from tiering.wiring import open_store

pytestmark = pytest.mark.integration


class ListLog:
    """A structlog-shaped logger that keeps events, for in-process runs."""

    def __init__(self):
        self.events = []

    def bind(self, **fields):
        return self

    def __getattr__(self, level):
        return lambda event, **fields: self.events.append((level, event, fields))


def small_cluster(log_dir):
    broker = SimulatedBroker(log_dir, segment_bytes=16 * 1024, seed=4)
    broker.create_topic("orders", 1)
    broker.produce("orders", 0, 500, codec="zstd", value_size=120)
    return broker


def test_configuration_errors_exit_2_with_one_line_each(env):
    config = env.root / "bad.toml"
    config.write_text('[kafka]\nlog_dirs = []\n[store]\nbucket = "b"\n[upload]\nconcurrency = 0\n')
    result = run_cli("run", "--once", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"tiering: {config}: kafka.log_dirs: must list at least one log directory",
        f"tiering: {config}: upload.concurrency: must be >= 1, got 0",
    ]
    missing = run_cli("status", "--config", str(env.root / "nope.toml"))
    assert missing.returncode == 2 and len(missing.stderr.splitlines()) == 1
    usage = run_cli("run", "--bogus")
    assert usage.returncode == 2 and len(usage.stderr.splitlines()) == 1 and "Traceback" not in usage.stderr


def test_missing_bucket_is_fatal_with_a_hint_and_the_secret_never_appears(env):
    small_cluster(env.log_dir)
    result = run_cli("run", "--once", "--config", str(env.write_config(bucket="no-such-bucket")))
    assert result.returncode == 1
    assert "NoSuchBucket" in result.stderr and "create the bucket or fix store.bucket" in result.stderr
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    for text in (result.stdout, result.stderr):
        assert "test-secret-key-never-logged" not in text
    state_files = b"".join(p.read_bytes() for p in env.state_dir.rglob("*") if p.is_file())
    assert b"test-secret-key-never-logged" not in state_files


def test_status_json_shape_and_verify_catches_a_replaced_object(env, s3):
    small_cluster(env.log_dir)
    config = str(env.write_config())
    assert run_cli("run", "--once", "--config", config).returncode == 0
    status = run_cli("status", "--json", "--config", config)
    assert status.returncode == 0
    (row,) = json.loads(status.stdout)["partitions"]
    assert {"topic", "partition", "local_segments", "local_bytes", "remote_segments", "remote_bytes",
            "pending_segments", "highest_remote_offset", "tiering_enabled", "last_error"} <= set(row)
    local = scan_log_dirs([env.log_dir]).partitions[0].segments
    assert row["remote_segments"] == len(local) - 1 and row["pending_segments"] == 0
    assert row["highest_remote_offset"] == local[-1].base_offset - 1
    assert row["not_tiered"] == [{"base_offset": local[-1].base_offset, "reason": "active segment (still being written)"}]
    table = run_cli("status", "--config", config)
    assert "orders-0" in table.stdout and "active segment" in table.stdout

    clean = run_cli("verify", "--config", config)
    assert clean.returncode == 0 and " 0 problem(s)" in clean.stdout
    victim = next(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX)["Contents"]
                  if o["Key"].endswith(".log"))
    body = bytearray(s3.get_object(Bucket=BUCKET, Key=victim)["Body"].read())
    body[100] ^= 0xFF
    s3.put_object(Bucket=BUCKET, Key=victim, Body=bytes(body))
    broken = run_cli("verify", "--config", config)
    assert broken.returncode == 1
    assert any(line.startswith(victim) and "object replaced?" in line for line in broken.stdout.splitlines())


@BOTH_STORES
def test_an_upload_interrupted_by_a_crash_is_cleaned_up_and_redone(env, s3):
    broker = small_cluster(env.log_dir)
    config = load_config(env.write_config())
    partition = scan_log_dirs([env.log_dir]).partitions[0]
    segment = partition.segments[0]
    # What a kill -9 mid-upload leaves: objects of an attempt, an open multipart upload, no
    # manifest, and the journal saying "uploading".
    crashed = PartitionPath(PREFIX, "orders", partition.topic_id, 0).segment(segment.base_offset, "dead0000dead0000")
    s3.put_object(Bucket=BUCKET, Key=crashed.object_key("index"), Body=b"partial")
    s3.create_multipart_upload(Bucket=BUCKET, Key=crashed.object_key("log"))
    journal = Journal(config.state.dir)
    journal.set_meta("store_synced", "1")
    sid = SegmentId("orders", partition.topic_id, 0, segment.base_offset)
    journal.mark_uploading(sid, "dead0000dead0000", segment.size, 1)
    store = open_store(config)
    log = ListLog()
    report = Offloader(config, store, journal, SystemClock(), log, rng=random.Random(0)).run_pass()
    assert report.ok and len(report.uploaded) == len(partition.segments) - 1
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX)["Contents"]]
    assert not [k for k in keys if "dead0000dead0000" in k]
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    record = journal.get(sid)
    assert record.state is SegmentState.UPLOADED and record.uid != "dead0000dead0000"
    assert ("info", "interrupted upload settled") in [(level, event) for level, event, _ in log.events]
    store.close()
    journal.close()
    broker.close()


def test_an_upload_whose_manifest_made_it_before_the_crash_is_kept(env, s3):
    small_cluster(env.log_dir)
    config_path = str(env.write_config())
    assert run_cli("run", "--once", "--config", config_path).returncode == 0
    config = load_config(config_path)
    journal = Journal(config.state.dir)
    record = journal.all()[0]
    journal.mark_uploading(record.id, record.uid, record.size_bytes, 2)  # the crash hit before "uploaded"
    journal.close()
    before = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX)["Contents"])
    result = run_cli("run", "--once", "--config", config_path)
    assert result.returncode == 0
    assert [e for e in events(result.stdout) if e["event"] == "segment uploaded"] == []
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX)["Contents"]) == before
