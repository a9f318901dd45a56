"""The real broker crashing (kill -9) while the daemon uploads and has it delete records, and a
topic deleted and re-created under the same name."""

from __future__ import annotations

import time

import pytest

from tests.conftest import run_cli
from tests.integration.daemon_process import DaemonProcess
from tests.realkafka.clients import (consume_kafka_python, create_topic, delete_topic, list_offsets,
                                     produce_confluent, produce_kafka_python)
from tests.realkafka.offload import (partition_dir, remote_keys, remote_manifests, rolled_segments, segment_bases,
                                     topic_id, wait_for_high_watermark, wait_until)
from tests.realkafka.test_admin_retention import cat
from tiering.demo import free_port

pytestmark = [pytest.mark.realkafka, pytest.mark.integration]


def test_a_broker_killed_while_the_daemon_uploads_and_deletes_converges_with_nothing_lost_or_doubled(
        kafka_broker, kenv, s3, tmp_path):
    bootstrap, log_dir = kafka_broker.bootstrap, kafka_broker.log_dir
    create_topic(bootstrap, "crash")
    sent = produce_confluent(bootstrap, "crash", 800, codec="lz4", idempotent=True)
    wait_for_high_watermark(log_dir, "crash", 0, 800)

    port = free_port()
    config = kenv.write_config(f'include = ["crash"]\nbootstrap_servers = "{bootstrap}"\n\n'
                               '[retention]\nlocal_delete = "kafka-admin"\nlocal_retention_bytes = 1\n')
    config.write_text(config.read_text().replace('listen = ""', f'listen = "127.0.0.1:{port}"')
                      + '\n[daemon]\nreconcile_interval_ms = "2s"\nretention_interval_ms = "2s"\n')
    daemon = DaemonProcess(config, tmp_path, port)
    try:
        daemon.wait_ready(60)
        # kill -9 as soon as the first segment is in the store: the pass is mid-way
        wait_until(lambda: remote_manifests(s3, "crash"), 60, "the first upload", interval=0.05)
        kafka_broker.kill()
        time.sleep(3)                    # the daemon meets a dead broker (DeleteRecords fails, retried)
        kafka_broker.start()
        sent += produce_kafka_python(bootstrap, "crash", 400, codec="zstd", start=800)
        wait_for_high_watermark(log_dir, "crash", 0, 1200)

        def converged():
            earliest = list_offsets(bootstrap, "crash")[0]
            local = segment_bases(log_dir, "crash", 0)
            stored = {b: m for (_, _, b), m in remote_manifests(s3, "crash").items()}
            # all rolled segments below the HW are stored, and every one of them has left the disk
            return (set(rolled_segments(log_dir, "crash", 0)) <= set(stored) and len(local) == 1
                    and local[0] == earliest and earliest == max(m["end_offset"] for m in stored.values()) + 1)
        wait_until(converged, 120, "the daemon to converge after the broker's crash", interval=1)
    finally:
        code, _ = daemon.stop(timeout=60)
    assert code == 0, daemon.stderr()
    verify = run_cli("verify", "--config", str(config))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    expected = [(i, k, v, h, ts) for i, (k, v, h, ts) in enumerate(sent)]
    assert cat(config, "crash", "read_uncommitted") == expected     # both tiers: nothing lost, nothing twice
    stored = sorted((m["base_offset"], m["end_offset"]) for m in remote_manifests(s3, "crash").values())
    assert all(a[1] + 1 == b[0] for a, b in zip(stored, stored[1:])) and stored[0][0] == 0


def test_a_topic_deleted_and_recreated_is_kept_apart_by_its_new_topic_id(kafka_broker, kenv, s3):
    bootstrap, log_dir = kafka_broker.bootstrap, kafka_broker.log_dir
    config = kenv.write_config('include = ["re"]\n')
    create_topic(bootstrap, "re")
    produce_kafka_python(bootstrap, "re", 400, codec="gzip")
    wait_for_high_watermark(log_dir, "re", 0, 400)
    time.sleep(1.5)
    old_id = topic_id(log_dir, "re")
    old_segments = rolled_segments(log_dir, "re", 0)
    first = run_cli("run", "--once", "--config", str(config))
    assert first.returncode == 0, first.stdout + first.stderr

    delete_topic(bootstrap, "re")
    wait_until(lambda: not partition_dir(log_dir, "re", 0).exists(), 30, "the broker to rename re-0")
    # Re-created under the same name (the `-delete` dir of the old one may still be there)
    create_topic(bootstrap, "re")
    new = produce_kafka_python(bootstrap, "re", 300, codec="snappy", start=10_000)
    wait_for_high_watermark(log_dir, "re", 0, 300)
    time.sleep(1.5)
    new_id = topic_id(log_dir, "re")
    assert new_id != old_id
    second = run_cli("run", "--once", "--config", str(config))
    assert second.returncode == 0, second.stdout + second.stderr

    by_id: dict[str, set[int]] = {}
    for key in remote_keys(s3):
        if key.endswith(".manifest.json"):
            tid = key.split("/")[1][len("re-"):]
            by_id.setdefault(tid, set()).add(int(key.rsplit("/", 1)[1][:20]))
    assert by_id == {old_id: set(old_segments), new_id: set(rolled_segments(log_dir, "re", 0))}
    # What is read under the name is the new topic only.
    assert [r[1:] for r in cat(config, "re", "read_uncommitted")] == new
    assert [r.value for r in consume_kafka_python(bootstrap, "re")] == [v for _, v, _, _ in new]
