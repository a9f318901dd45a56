"""The broker at work beside the daemon: its lock held (we unlink nothing), its retention
deleting segments before we uploaded them (rename to .deleted, then unlink), and a topic
deleted and re-created under the same name (a new topic id) while the daemon runs."""

from __future__ import annotations

import base64
import json
import shutil
import signal
import time

import pytest
from kafka.record import MemoryRecords

from tests.conftest import BUCKET, run_cli
from tests.faults.harness import Ledger, StoreView, config_text, sha256, whereabouts
from tests.integration.daemon_process import DaemonProcess, wait_for
from tests.integration.test_retention import hold_lock
from tiering.kafka.checkpoints import TopicPartition
from tiering.demo import free_port
from tiering.simulate import SimulatedBroker, new_topic_id

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def start(env, tmp_path, **kwargs) -> DaemonProcess:
    port = free_port()
    config = config_text(env, env.endpoint, metrics_port=port, **kwargs)
    daemon = DaemonProcess(config, tmp_path, port)
    daemon.wait_ready()
    return daemon


def produce_and_roll(broker, ledger, topic, partitions, rounds, count=300):
    for _ in range(rounds):
        for partition in range(partitions):
            broker.produce(topic, partition, count, value_size=200)
            ledger.roll(topic, partition)


def test_while_the_broker_holds_its_lock_nothing_is_unlinked_and_uploads_go_on(env, s3, tmp_path, fault_report):
    broker = SimulatedBroker(env.log_dir, segment_bytes=1 << 30, seed=31)
    broker.create_topic("orders", 2)
    ledger = Ledger(broker)
    produce_and_roll(broker, ledger, "orders", 2, 3)
    holder = hold_lock(env.log_dir / ".lock")
    view = StoreView(s3)
    daemon = start(env, tmp_path, retention="local_retention_ms = 0", daemon="retention_interval_ms = 200")
    try:
        produce_and_roll(broker, ledger, "orders", 2, 2)
        wait_for(lambda: set(whereabouts(ledger, env.log_dir, view).remote) == set(ledger.segments), 30,
                 "uploads stopped while the lock was held")
        wait_for(lambda: daemon.metric("tiering_retention_passes_total") >= 5, 30, "retention did not run")
        where = whereabouts(ledger, env.log_dir, view)
        assert set(where.local) == set(ledger.segments)            # every local copy is still there
        refusals = [e for e in daemon.events() if e["event"].startswith("local retention refused")]
        assert len(refusals) == 1 and f"pid {holder.pid}" in refusals[0]["detail"], refusals
        passes_held = int(daemon.metric("tiering_retention_passes_total"))
        holder.kill()
        holder.wait()
        # The broker stopped: its lock is free, and the local copies go.
        wait_for(lambda: not whereabouts(ledger, env.log_dir, view).local, 30, "local copies stayed after the lock was freed")
        assert daemon.stop(signal.SIGTERM)[0] == 0
    finally:
        holder.kill()
        daemon.kill()
    where = whereabouts(ledger, env.log_dir, view)
    assert not where.lost and not where.duplicates
    fault_report("broker lock held", retention_passes_while_held=passes_held, unlinked_while_held=0,
                 segments=len(ledger.segments), offloaded=len(where.remote), lost=len(where.lost),
                 duplicates_visible=len(where.duplicates))
    broker.close()


def test_segments_the_broker_deletes_before_upload_reach_the_store_whole(env, s3, tmp_path, fault_report):
    broker = SimulatedBroker(env.log_dir, segment_bytes=1 << 30, seed=32)
    broker.create_topic("orders", 1)
    ledger = Ledger(broker)
    produce_and_roll(broker, ledger, "orders", 1, 6, count=2000)     # ~400 KB segments
    view = StoreView(s3)
    # One upload at a time at 512 KiB/s: the broker's deletions come before most uploads.
    daemon = start(env, tmp_path, upload='rate_limit_bytes_per_second = "512KiB"', concurrency=1,
                   daemon='reconcile_interval_ms = "1s"')
    directory = broker.partition_dir("orders", 0)
    deleted_before_upload = 0
    try:
        for segment in sorted(ledger.segments):
            base = segment[2]

            def remote() -> bool:
                return segment in whereabouts(ledger, env.log_dir, view).remote

            def pinned() -> bool:
                return bool(list((env.state_dir / "pins").rglob(f"{base:020d}-*.log")))
            wait_for(lambda: pinned() or remote(), 20, f"segment {base} was never pinned")
            if remote():
                continue
            # Kafka's retention: rename every file of the segment to .deleted, unlink them later.
            for path in sorted(directory.glob(f"{base:020d}.*")):
                path.rename(path.with_name(path.name + ".deleted"))
            time.sleep(0.2)
            for path in directory.glob(f"{base:020d}.*.deleted"):
                path.unlink()
            deleted_before_upload += 1
        wait_for(lambda: set(whereabouts(ledger, env.log_dir, view).remote) == set(ledger.segments), 60,
                 "a segment the broker deleted never reached the store")
        rescued = int(daemon.metric("tiering_upload_rescued_segments_total"))
        wait_for(lambda: not list((env.state_dir / "pins").rglob("*.log")), 10, "pins outlived their uploads")
        assert daemon.stop(signal.SIGTERM)[0] == 0
    finally:
        daemon.kill()
    where = whereabouts(ledger, env.log_dir, view)
    assert deleted_before_upload >= 3 and rescued == deleted_before_upload
    assert not where.lost and not where.duplicates and not where.broken
    fault_report("broker deletes before upload", deleted_by_broker_before_upload=deleted_before_upload,
                 rescued_from_pins=rescued, segments=len(ledger.segments), offloaded=len(where.remote),
                 lost=len(where.lost), duplicates_visible=len(where.duplicates))
    broker.close()


def test_a_topic_deleted_and_recreated_under_its_name_never_mixes_with_its_predecessor(env, s3, tmp_path,
                                                                                        fault_report):
    broker = SimulatedBroker(env.log_dir, segment_bytes=1 << 30, seed=33)
    old_id = broker.create_topic("orders", 1)
    ledger = Ledger(broker)
    produce_and_roll(broker, ledger, "orders", 1, 4)
    old_segments = dict(ledger.segments)
    view = StoreView(s3)
    daemon = start(env, tmp_path, daemon='reconcile_interval_ms = "1s"')
    try:
        wait_for(lambda: set(whereabouts(ledger, env.log_dir, view).remote) == set(ledger.segments), 30,
                 "the first topic was not offloaded")
        # Kafka's topic deletion: the dir is renamed to <topic>-<p>.<uuid>-delete, then removed;
        # a new topic of the same name gets a new id and starts again at offset 0.
        broker.release("orders", 0)
        del broker.logs[TopicPartition("orders", 0)]
        doomed = env.log_dir / f"orders-0.{new_topic_id().encode().hex()[:32]}-delete"
        (env.log_dir / "orders-0").rename(doomed)
        broker.checkpoint()
        time.sleep(0.5)
        shutil.rmtree(doomed)
        new_id = broker.create_topic("orders", 1)
        assert new_id != old_id
        ledger.segments.clear()
        produce_and_roll(broker, ledger, "orders", 1, 3, count=150)
        new_segments = dict(ledger.segments)
        assert set(new_segments) & set(old_segments)       # the same (topic, partition, base offset)s
        wait_for(lambda: set(whereabouts(ledger, env.log_dir, view).remote) == set(ledger.segments), 30,
                 "the re-created topic was not offloaded")
        assert daemon.stop(signal.SIGTERM)[0] == 0
    finally:
        daemon.kill()
    manifests = view.manifests(view.listing())
    by_id: dict[str, dict[int, str]] = {}
    for key, doc in manifests.items():
        log = next(o for o in doc["objects"] if o["kind"] == "log")
        data = s3.get_object(Bucket=BUCKET, Key=log["key"])["Body"].read()
        assert f"orders-{doc['topic_id']}/" in key
        by_id.setdefault(doc["topic_id"], {})[doc["base_offset"]] = data
    assert {("orders", 0, b): sha256(d) for b, d in by_id[old_id].items()} == old_segments
    assert {("orders", 0, b): sha256(d) for b, d in by_id[new_id].items()} == new_segments
    # A reader of the new topic gets the new topic's records, every one, and nothing else.
    cat = run_cli("cat", "--config", str(env.root / "tiering.toml"), "orders", "0", "--from-offset", "0",
                  "--count", "100000", "--format", "json")
    assert cat.returncode == 0, cat.stderr
    got = [json.loads(line) for line in cat.stdout.splitlines()]
    expected = []
    for base in sorted(by_id[new_id]):
        records = MemoryRecords(by_id[new_id][base])
        while (batch := records.next_batch()) is not None:
            expected.extend((r.offset, r.value) for r in batch)
    assert [(r["offset"], base64.b64decode(r["value"])) for r in got] == expected
    fault_report("topic re-created", old_topic_segments=len(old_segments), new_topic_segments=len(new_segments),
                 colliding_offsets=len(set(old_segments) & set(new_segments)),
                 new_segments_with_old_data=0, records_read_back=len(got))
    broker.close()
