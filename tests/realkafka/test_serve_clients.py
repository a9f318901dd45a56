"""Unchanged Kafka clients read both tiers through `tiering serve` (issue 20).

One real broker holds a topic whose first segments are only in the store (the broker deleted
them after the sidecar offloaded them), whose middle is in rolled local segments and whose end
is in the active segment, still being written. kafka-python, confluent-kafka (librdkafka) and
Kafka's own Java console consumer, pointed at the endpoint instead of the broker, read every
record from offset 0 to the live end exactly once; a `subscribe()` group commits through the
relay to Kafka's coordinator; read_committed hides aborted transactions; offsetsForTimes finds
the right offsets; a produce to the endpoint fails cleanly."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time

import urllib.request

import boto3
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from tests.conftest import BUCKET, Env, run_cli
from tests.realkafka.clients import (Rec, consume_confluent, consume_kafka_python, create_topic, list_offsets,
                                     produce_kafka_python, produce_transactions)
from tests.realkafka.offload import wait_for_high_watermark
from tiering.realkafka.broker import free_port

pytestmark = [pytest.mark.realkafka, pytest.mark.integration]

TOPIC, TXN = "served", "servedtx"
FIRST, MORE, LIVE = 600, 150, 40


def _records(sent: list[tuple], start: int = 0) -> list[Rec]:
    return [Rec(start + i, k, v, h, ts) for i, (k, v, h, ts) in enumerate(sent)]


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"tiering serve exited {proc.returncode}: {proc.stderr.read()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"tiering serve did not listen on {port} in {timeout}s")


@pytest.fixture(scope="module")
def served(kafka_broker, tmp_path_factory, moto_endpoint):
    """The three-tier topic and a running endpoint: (endpoint bootstrap, produced, txn (committed, every),
    the broker's bootstrap). Module-scoped: one moto reset here, and no test below resets it."""
    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST")).read()
    s3 = boto3.session.Session().client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    bootstrap, log_dir = kafka_broker.bootstrap, kafka_broker.log_dir
    create_topic(bootstrap, TOPIC)
    create_topic(bootstrap, TXN)
    sent = produce_kafka_python(bootstrap, TOPIC, FIRST, codec="snappy")
    committed, every = produce_transactions(bootstrap, TXN, [True, False, True, True, False, True] * 3, 25,
                                            txn_id="served-tx")
    wait_for_high_watermark(log_dir, TOPIC, 0, FIRST)
    wait_for_high_watermark(log_dir, TXN, 0, len(every) + 18)
    time.sleep(1.5)                      # one more HW checkpoint: the last roll is below it too
    port = free_port()
    root = tmp_path_factory.mktemp("served")
    env = Env(root, moto_endpoint, log_dir, root / "state")
    config = env.write_config(f'include = ["{TOPIC}", "{TXN}"]\nbootstrap_servers = "{bootstrap}"\n\n'
                              '[retention]\nlocal_delete = "kafka-admin"\nlocal_retention_bytes = 1\n\n'
                              f'[serve]\nlisten = "127.0.0.1:{port}"\n')
    once = run_cli("run", "--once", "--config", str(config))
    assert once.returncode == 0, once.stdout + once.stderr
    # The first segments are now only in the store: the broker's log starts later.
    assert list_offsets(bootstrap, TOPIC)[0] > 0
    assert list_offsets(bootstrap, TXN)[0] > 0
    # The middle stays in rolled local segments, the end in the active one.
    sent += produce_kafka_python(bootstrap, TOPIC, MORE, codec="lz4", start=FIRST)
    proc = subprocess.Popen([sys.executable, "-m", "tiering", "serve", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_port(port, proc)
        yield f"127.0.0.1:{port}", sent, (committed, every), bootstrap
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_kafka_python_reads_every_record_from_zero_to_the_live_end(served):
    endpoint, sent, _, bootstrap = served
    got = consume_kafka_python(endpoint, TOPIC)
    assert got == _records(sent)
    # Records produced after the endpoint started are served too (the active segment's end).
    live = produce_kafka_python(bootstrap, TOPIC, LIVE, start=len(sent))
    sent += live
    # A tailing consumer sees them once the endpoint's high watermark has caught up (it asks
    # the cluster at most every 0.5 s).
    tp = TopicPartition(TOPIC, 0)
    consumer = KafkaConsumer(bootstrap_servers=endpoint, enable_auto_commit=False)
    try:
        consumer.assign([tp])
        consumer.seek(tp, len(sent) - LIVE)
        tail = []
        deadline = time.monotonic() + 60
        while len(tail) < LIVE and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                tail += [Rec(r.offset, r.key, r.value, tuple((k, bytes(v)) for k, v in r.headers), r.timestamp)
                         for r in records]
    finally:
        consumer.close()
    assert tail == _records(live, start=len(sent) - LIVE)


def test_confluent_kafka_reads_every_record_exactly_once(served):
    endpoint, sent, _, _ = served
    got = consume_confluent(endpoint, TOPIC)
    assert got[:len(sent)] == _records(sent)[:len(got)]
    assert [r.offset for r in got] == list(range(len(got))) and len(got) >= FIRST + MORE


def test_read_committed_hides_aborted_transactions_in_both_clients(served):
    endpoint, _, (committed, every), _ = served
    for consume in (consume_kafka_python, consume_confluent):
        seen = consume(endpoint, TXN, isolation="read_committed")
        assert [(r.key, r.value) for r in seen] == [(k, v) for k, v, _, _ in committed], consume.__name__
        everything = consume(endpoint, TXN)
        assert [(r.key, r.value) for r in everything] == [(k, v) for k, v, _, _ in every], consume.__name__


def test_java_console_consumer_reads_from_earliest(served, kafka_libs):
    endpoint, sent, _, _ = served
    if shutil.which("java") is None:
        pytest.fail("java is needed for Kafka's console consumer")
    count = FIRST + MORE
    cmd = ["java", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-cp", f"{kafka_libs}/*",
           "org.apache.kafka.tools.consumer.ConsoleConsumer", "--bootstrap-server", endpoint, "--topic", TOPIC,
           "--partition", "0", "--offset", "earliest", "--max-messages", str(count), "--timeout-ms", "60000",
           "--property", "print.offset=true", "--property", "print.key=true", "--property", "print.value=false"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("Offset:")]
    got = [(int(line.split()[0].split(":")[1]), line.split()[1]) for line in lines]
    assert got == [(i, sent[i][0].decode()) for i in range(count)]


def test_a_subscribed_group_reads_and_commits_through_kafkas_coordinator(served):
    endpoint, sent, _, bootstrap = served
    group = "served-readers"
    consumer = KafkaConsumer(TOPIC, bootstrap_servers=endpoint, group_id=group, auto_offset_reset="earliest",
                             enable_auto_commit=False)
    try:
        seen = []
        deadline = time.monotonic() + 90
        while len(seen) < FIRST + MORE and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                seen += [(r.offset, r.key) for r in records]
        assert seen[:FIRST + MORE] == [(i, sent[i][0]) for i in range(FIRST + MORE)]
        consumer.commit()
    finally:
        consumer.close()
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets(group)[group]
    finally:
        admin.close()
    assert offsets[TopicPartition(TOPIC, 0)].offset >= FIRST + MORE


def test_offsets_for_times_finds_records_in_the_store_and_on_disk(served):
    endpoint, sent, _, _ = served
    consumer = KafkaConsumer(bootstrap_servers=endpoint, enable_auto_commit=False)
    tp = TopicPartition(TOPIC, 0)
    try:
        for i in (0, 1, FIRST // 3, FIRST - 1, FIRST + 7):
            found = consumer.offsets_for_times({tp: sent[i][3]})[tp]
            assert found is not None and found.offset == i, i
        assert consumer.beginning_offsets([tp])[tp] == 0
    finally:
        consumer.close()


def test_a_produce_to_the_endpoint_fails_cleanly(served):
    endpoint, _, _, _ = served
    producer = KafkaProducer(bootstrap_servers=endpoint, retries=0, max_block_ms=10_000, request_timeout_ms=10_000)
    try:
        with pytest.raises(Exception) as failure:
            producer.send(TOPIC, b"never stored").get(timeout=30)
        assert "Timeout" not in type(failure.value).__name__, failure.value
    finally:
        producer.close(5)
    # The endpoint still serves after refusing it.
    assert consume_kafka_python(endpoint, TOPIC, from_offset=FIRST)[0].offset == FIRST
