"""Deployments sharing one bucket (a real S3 server over HTTP, the real command line): one
whose prefix is nested under another's (`cluster-a/` and `cluster-a/team-b/`), one whose
prefix merely starts with the same characters (`cluster-a` and `cluster-a-b/`). The outer
deployment expires everything it owns, rebuilds its journal from the store, sweeps, reports
status and verifies; the others' objects and multipart uploads stay exactly as they were.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import BUCKET, PREFIX, bucket_snapshot, events, run_cli
from tests.integration.daemon_process import DaemonProcess, wait_for
from tiering.clock import SystemClock
from tiering.config import load_config
from tiering.demo import free_port
from tiering.journal import Journal
from tiering.reconcile import rebuild_journal
from tiering.simulate import SimulatedBroker
from tiering.store.keys import KeyLayout, PartitionPath
from tiering.wiring import open_store

pytestmark = pytest.mark.integration

NESTED = f"{PREFIX}team-b/"          # cluster-a/team-b/
SIBLING = PREFIX.rstrip("/") + "-b/"  # cluster-a-b/
TOTAL_EXPIRY = "[retention]\nretention_bytes = 1\n"
QUICK_SWEEP = '\n[daemon]\nstale_multipart_ms = "1s"\norphan_ms = "1s"\nsweep_interval_ms = "1s"\n'


def deployment(env, name: str, prefix: str, *, extra: str = "", store: str = "", tail: str = "") -> tuple[Path, Path]:
    """A config for one deployment with its own log dir and state dir; returns (config, log dir)."""
    text = env.write_config(extra).read_text()
    log_dir, state_dir = env.root / f"{name}-logs", env.root / f"{name}-state"
    text = (text.replace(f'prefix = "{PREFIX}"', f'prefix = "{prefix}"\n{store}')
            .replace(f'"{env.log_dir}"', f'"{log_dir}"').replace(f'"{env.state_dir}"', f'"{state_dir}"'))
    path = env.root / f"{name}.toml"
    path.write_text(text + tail)
    return path, log_dir


def produce(log_dir: Path, seed: int) -> SimulatedBroker:
    broker = SimulatedBroker(log_dir, segment_bytes=24 * 1024, seed=seed)
    broker.create_topic("orders", 2)            # the same topic names in every deployment
    broker.create_topic("team-b-7.events", 1)   # dashes and digits, as Kafka allows
    for partition in (0, 1):
        broker.produce("orders", partition, 300, value_size=150)
    broker.produce("team-b-7.events", 0, 300, value_size=150)
    return broker


def plant_leftovers(s3, broker: SimulatedBroker, prefix: str, hash_prefix: bool = False) -> tuple[str, str]:
    """An orphan (data object without a manifest) and a multipart upload nobody will finish,
    in the deployment's own layout; returns (orphan key, upload id)."""
    root = PartitionPath(prefix, "orders", broker.topic_ids["orders"], 0, hash_prefix).root
    orphan = f"{root}{0:020d}-{'b' * 16}.log"
    s3.put_object(Bucket=BUCKET, Key=orphan, Body=b"orphan")
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key=f"{root}{0:020d}-{'a' * 16}.log")["UploadId"]
    return orphan, upload


def uploads_under(s3, prefix: str) -> set[str]:
    return {u["UploadId"] for u in s3.list_multipart_uploads(Bucket=BUCKET, Prefix=prefix).get("Uploads", [])}


def test_nested_and_sibling_deployments_are_never_adopted_expired_swept_or_counted(env, s3):
    # The inner deployment (team-b) and the sibling upload everything they have.
    b_config, b_logs = deployment(env, "b", NESTED)
    c_config, c_logs = deployment(env, "c", SIBLING, store="hash_prefix = true")
    b_broker, c_broker = produce(b_logs, seed=21), produce(c_logs, seed=22)
    for config in (b_config, c_config):
        done = run_cli("run", "--config", str(config), "--once")
        assert done.returncode == 0, done.stderr
    b_orphan, b_upload = plant_leftovers(s3, b_broker, NESTED)
    c_orphan, c_upload = plant_leftovers(s3, c_broker, SIBLING, hash_prefix=True)
    b_before, c_before = bucket_snapshot(s3, NESTED), bucket_snapshot(s3, SIBLING)
    assert sum(k.endswith(".manifest.json") for k in b_before) >= 6 and b_orphan in b_before
    assert sum(k.endswith(".manifest.json") for k in c_before) >= 6 and c_orphan in c_before

    # The outer deployment (prefix written without its slash) keeps 1 byte in total: its
    # total retention expires everything it owns.
    a_config, a_logs = deployment(env, "a", PREFIX.rstrip("/"), extra=TOTAL_EXPIRY, tail=QUICK_SWEEP)
    a_broker = produce(a_logs, seed=23)
    a_ids = set(a_broker.topic_ids.values())

    def outer_untouched() -> None:
        assert bucket_snapshot(s3, NESTED) == b_before, "the nested deployment's objects changed"
        assert bucket_snapshot(s3, SIBLING) == c_before, "the sibling deployment's objects changed"
        assert b_upload in uploads_under(s3, NESTED) and c_upload in uploads_under(s3, SIBLING)

    # A fresh journal is rebuilt from the store: from A's keys only.
    first = run_cli("run", "--config", str(a_config), "--once")
    assert first.returncode == 0, first.stderr
    rebuilt = next(e for e in events(first.stdout) if e["event"] == "journal rebuilt from the store")
    assert rebuilt["manifests"] == 0 and rebuilt["problems"] == 0
    assert any(e["event"] == "segment deleted from the store" for e in events(first.stdout))
    outer_untouched()
    # An existing journal: uploads and expiry again, still only A's.
    a_broker.produce("orders", 0, 300, value_size=150)
    second = run_cli("run", "--config", str(a_config), "--once")
    assert second.returncode == 0, second.stderr
    assert any(e["event"] == "segment deleted from the store" for e in events(second.stdout))
    outer_untouched()
    own_keys = [k for k in bucket_snapshot(s3, PREFIX) if not k.startswith(NESTED)]
    assert not [k for k in own_keys if k.endswith(".manifest.json")], "A's total retention left a segment of A"

    # A journal an older version rebuilt from the nested deployment's manifests (as if they
    # were A's): retention leaves those rows alone and says so.
    store, journal = open_store(load_config(a_config)), Journal(env.root / "a-state")
    try:
        adopted, _ = rebuild_journal(journal, store, KeyLayout(NESTED), SystemClock())
    finally:
        journal.close()
        store.close()
    assert adopted >= 6
    third = run_cli("run", "--config", str(a_config), "--once")
    assert third.returncode == 0, third.stderr
    warned = [e for e in events(third.stdout) if e["event"].startswith("journal rows name store keys outside")]
    assert len(warned) == 1 and warned[0]["rows"] == adopted and warned[0]["example"].startswith(NESTED)
    outer_untouched()

    # Status and verify speak of A's partitions only.
    status = run_cli("status", "--config", str(a_config), "--json")
    assert status.returncode == 0, status.stderr
    listed = json.loads(status.stdout)["partitions"]
    assert listed and {p["topic_id"] for p in listed} <= a_ids
    assert all(p["remote_segments"] == 0 for p in listed)
    verify = run_cli("verify", "--config", str(a_config))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "verified 0 manifests, 0 objects" in verify.stdout and ", 0 orphaned object(s)" in verify.stdout
    assert "team-b" not in verify.stdout + verify.stderr

    # The daemon's sweep removes A's own stale upload and orphan, nobody else's.
    a_orphan, a_upload = plant_leftovers(s3, a_broker, PREFIX)
    time.sleep(1.1)   # older than the 1 s thresholds; S3 timestamps have one-second resolution
    port = free_port()
    a_config.write_text(a_config.read_text().replace('listen = ""', f'listen = "127.0.0.1:{port}"'))
    daemon = DaemonProcess(a_config, env.root, port)
    try:
        daemon.wait_ready()
        wait_for(lambda: daemon.metric("tiering_sweep_removed_total", 'kind="orphan_object"') >= 1
                 and daemon.metric("tiering_sweep_removed_total", 'kind="multipart_upload"') >= 1, 20,
                 "the sweep never removed A's own leftovers")
        time.sleep(2.5)   # two more sweeps
        assert daemon.metric("tiering_sweep_removed_total", 'kind="orphan_object"') == 1
        assert daemon.metric("tiering_sweep_removed_total", 'kind="multipart_upload"') == 1
    finally:
        assert daemon.stop()[0] == 0
    assert a_upload not in uploads_under(s3, PREFIX) and a_orphan not in bucket_snapshot(s3, PREFIX)
    outer_untouched()


def test_an_empty_prefix_is_refused_for_run_unless_the_whole_bucket_is_allowed(env, s3):
    config, log_dir = deployment(env, "whole", "")
    produce(log_dir, seed=24)
    for args in (("--once",), ()):   # one pass and the daemon alike, before anything is done
        refused = run_cli("run", "--config", str(config), *args)
        assert refused.returncode == 2
        lines = refused.stderr.splitlines()
        assert len(lines) == 1, refused.stderr
        assert lines[0].startswith(f"tiering: {config}: store.prefix is empty")
        assert f"bucket '{BUCKET}'" in lines[0] and "store.allow_whole_bucket = true" in lines[0]
        assert "Traceback" not in refused.stderr and refused.stdout == ""
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET)
    assert not (env.root / "whole-state").exists()
    # Read-only commands still work with an empty prefix.
    assert run_cli("status", "--config", str(config)).returncode == 0

    config.write_text(config.read_text().replace('prefix = ""', 'prefix = ""\nallow_whole_bucket = true'))
    allowed = run_cli("run", "--config", str(config), "--once")
    assert allowed.returncode == 0, allowed.stderr
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert keys and all(k.startswith("orders-") or k.startswith("team-b-7.events-") for k in keys)
