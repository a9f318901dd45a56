"""Offload beside a live broker: the daemon runs while a real Kafka broker takes records from
real clients (kafka-python and confluent-kafka, every codec, an idempotent and a transactional
producer) and rolls segments; every rolled segment below the high watermark reaches the store
byte-identical with the broker's own index files, producer snapshot and leader-epoch entries.
Internal topics, a deleted topic's `-delete` dir and a compacted (cleaned) topic stay local."""

from __future__ import annotations

import time

import pytest

from tests.conftest import run_cli
from tests.integration.daemon_process import DaemonProcess
from tests.realkafka.clients import (consume_kafka_python, create_topic, delete_topic, produce_confluent,
                                     produce_kafka_python, produce_transactions)
from tests.realkafka.offload import (checkpoint, get, partition_dir, remote_keys, remote_manifests, rolled_segments,
                                     topic_id, wait_for_high_watermark, wait_until)
from tiering.demo import free_port

pytestmark = [pytest.mark.realkafka, pytest.mark.integration]

CODECS = ("none", "gzip", "snappy", "lz4", "zstd")


def epochs_file(text: str) -> list[tuple[int, int]]:
    lines = text.splitlines()
    return [tuple(int(x) for x in line.split()) for line in lines[2:]]


def assert_segment_in_store(s3, log_dir, topic: str, partition: int, base: int, doc: dict) -> None:
    pdir = partition_dir(log_dir, topic, partition)
    objects = {o["kind"]: o for o in doc["objects"]}
    name = f"{base:020d}"
    for kind in ("log", "index", "timeindex", "txnindex"):
        local = pdir / f"{name}.{kind}"
        if kind == "txnindex" and not local.exists():
            assert kind not in objects
            continue
        assert get(s3, objects[kind]["key"]) == local.read_bytes(), f"{topic}-{partition}@{base}: .{kind} differs"
    bases = sorted(int(p.stem) for p in pdir.glob("*.log"))
    next_base = bases[bases.index(base) + 1]
    snapshot = pdir / f"{next_base:020d}.snapshot"
    if snapshot.exists():
        # Kafka writes it just after creating the next segment: the sidecar waits for it.
        assert "snapshot" in objects, f"{topic}-{partition}@{base} uploaded without {snapshot.name}"
        assert get(s3, objects["snapshot"]["key"]) == snapshot.read_bytes(), f"{topic}-{partition}@{base}: snapshot"
    local_epochs = epochs_file((pdir / "leader-epoch-checkpoint").read_text())
    stored = epochs_file(get(s3, objects["leader_epoch"]["key"]).decode())
    assert stored == [(e, o) for e, o in local_epochs if o <= doc["end_offset"]]
    assert doc["end_offset"] == next_base - 1
    assert doc["size_bytes"] == (pdir / f"{name}.log").stat().st_size


def test_the_daemon_offloads_every_rolled_segment_of_real_producers_byte_identical(kafka_broker, kenv, s3, tmp_path):
    bootstrap, log_dir = kafka_broker.bootstrap, kafka_broker.log_dir

    # A compacted topic the cleaner has cleaned (in cleaner-offset-checkpoint) before the daemon
    # starts. An uncleaned one is issue 22's (test_an_uncleaned_compacted_topic_is_never_tiered).
    create_topic(bootstrap, "compacted", segment_bytes=8 * 1024, cleanup_policy="compact",
                 min_cleanable_dirty_ratio="0.01", segment_ms="100")
    for _ in range(3):
        produce_kafka_python(bootstrap, "compacted", 150, value_size=200)
    wait_until(lambda: ("compacted", 0) in checkpoint(log_dir / "cleaner-offset-checkpoint"), 60,
               "the log cleaner to clean the compacted topic")

    # A topic deleted before the daemon starts: the broker renames its dir `-delete` and
    # removes it a minute later; the sidecar must not take it for a partition.
    create_topic(bootstrap, "doomed")
    produce_kafka_python(bootstrap, "doomed", 300)
    wait_for_high_watermark(log_dir, "doomed", 0, 300)
    doomed_id = topic_id(log_dir, "doomed")
    delete_topic(bootstrap, "doomed")
    wait_until(lambda: list(log_dir.glob("doomed-0.*-delete")), 30, "the broker to rename doomed-0 to -delete")

    port = free_port()
    # This test's topics and the internal ones (which must stay local); not the other tests'.
    config = kenv.write_config('include = ["kp", "ck", "idem", "txn", "compacted", "doomed", "__*"]\n')
    config.write_text(config.read_text().replace('listen = ""', f'listen = "127.0.0.1:{port}"')
                      + '\n[daemon]\nreconcile_interval_ms = "2s"\n')
    daemon = DaemonProcess(config, tmp_path, port)
    try:
        daemon.wait_ready(60)
        create_topic(bootstrap, "kp", partitions=len(CODECS))
        create_topic(bootstrap, "ck", partitions=len(CODECS))
        create_topic(bootstrap, "idem")
        create_topic(bootstrap, "txn")
        counts = {}
        for partition, codec in enumerate(CODECS):
            counts[("kp", partition)] = len(produce_kafka_python(bootstrap, "kp", 300, codec=codec, partition=partition))
            counts[("ck", partition)] = len(produce_confluent(bootstrap, "ck", 300, codec=codec, partition=partition))
        counts[("idem", 0)] = len(produce_confluent(bootstrap, "idem", 400, codec="lz4", idempotent=True))
        produce_kafka_python(bootstrap, "idem", 200, codec="snappy", idempotent=True, start=400)
        counts[("idem", 0)] += 200
        committed, every = produce_transactions(bootstrap, "txn", [True, False, True, True, False] * 4, 25)
        # __consumer_offsets gets a committed offset
        from kafka import KafkaConsumer, TopicPartition
        group = KafkaConsumer(bootstrap_servers=bootstrap, group_id="g1", enable_auto_commit=False)
        group.assign([TopicPartition("kp", 0)])
        group.poll(1000)
        group.commit({TopicPartition("kp", 0): __import__("kafka").OffsetAndMetadata(5, "", -1)})
        group.close()
        assert list(log_dir.glob("doomed-0.*-delete"))    # still there while the daemon ran

        # Everything the broker has made eligible reaches the store.
        txn_end = 20 * 25 + 20     # records plus one control batch (marker) per transaction
        wait_for_high_watermark(log_dir, "txn", 0, txn_end)
        for (topic, partition), n in counts.items():
            wait_for_high_watermark(log_dir, topic, partition, n)
        time.sleep(1.5)   # one more HW checkpoint interval: every roll above is now below the checkpoint
        expected = {(t, p, b) for t, p in [*counts, ("txn", 0)] for b in rolled_segments(log_dir, t, p)}
        assert len(expected) > 30
        assert {t for t, _, _ in expected} == {"kp", "ck", "idem", "txn"}

        def offloaded():
            found = {}
            for topic in ("kp", "ck", "idem", "txn"):
                found.update(remote_manifests(s3, topic))
            return expected <= set(found) and found
        manifests = wait_until(offloaded, 120, "every rolled segment below the high watermark in the store", 1)
    finally:
        code, _ = daemon.stop(timeout=60)
    assert code == 0, daemon.stderr()

    for (topic, partition, base), doc in manifests.items():
        assert_segment_in_store(s3, log_dir, topic, partition, base, doc)
    # the transactional segments carry their aborted transactions' index
    assert any(any(o["kind"] == "txnindex" for o in doc["objects"]) for (t, _, _), doc in manifests.items()
               if t == "txn")
    # nothing else went: no internal topic, no compacted topic, nothing of the deleted topic
    topics = {key.split("/")[1][:-23] for key in remote_keys(s3)}    # "{topic}-{22-char topic id}"
    assert topics == {"kp", "ck", "idem", "txn"}
    assert not any(doomed_id in key for key in remote_keys(s3))
    events = daemon.events()
    bad = [e for e in events if e.get("level") in ("warning", "error")]
    assert bad == [], bad
    verify = run_cli("verify", "--config", str(config))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # what the broker serves is unchanged by the sidecar
    assert len(consume_kafka_python(bootstrap, "txn", isolation="read_committed")) == len(committed)
