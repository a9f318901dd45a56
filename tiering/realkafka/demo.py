"""`tiering demo --real-kafka`: the demo's story on a real Apache Kafka broker.

A single-node KRaft broker (jars fetched with Maven the first time, into the user's cache)
and an embedded S3 server on loopback; kafka-python produces (codecs, a transactional
producer with aborted transactions); the real command line offloads, has the broker delete
the offloaded records (DeleteRecords), verifies, reads from offset 0 across both tiers,
and rolls a topic back, after which the broker serves it from offset 0 again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

import boto3

from tiering.errors import UsageError
from tiering.realkafka.broker import Broker, BrokerError
from tiering.realkafka.fetch import FetchError, fetch, is_fetched, kafka_version

BUCKET = "kafka-tier"
SEGMENT_BYTES = 64 * 1024


def topic_segment_config(segment_bytes: int, version: str | None = None) -> dict[str, str]:
    """Small segments for one topic: Kafka 4 keeps segment.bytes >= 1 MiB and offers
    internal.segment.bytes below that (its own tests use it); 3.9.x takes segment.bytes."""
    key = "internal.segment.bytes" if int((version or kafka_version()).split(".")[0]) >= 4 else "segment.bytes"
    return {key: str(segment_bytes)}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tiering", *args], capture_output=True, text=True, timeout=300)


def _events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def _config(workdir: Path, endpoint: str, log_dir: Path, bootstrap: str) -> Path:
    path = workdir / "tiering.toml"
    path.write_text(f"""\
[kafka]
log_dirs = ["{log_dir}"]
include = ["orders", "payments"]
bootstrap_servers = "{bootstrap}"

[store]
bucket = "{BUCKET}"
prefix = "demo-cluster/"
endpoint_url = "{endpoint}"
region = "us-east-1"
addressing_style = "path"

[retention]
local_delete = "kafka-admin"       # the broker deletes its own files (DeleteRecords)

[topics."orders"]                  # local disk keeps ~128 KiB per partition; the rest is remote only
local_retention_bytes = "128KiB"

[state]
dir = "{workdir / 'state'}"

[metrics]
listen = ""
""")
    return path


def run_real_kafka_demo(out: TextIO, keep: bool = False) -> int:
    from tiering.demo import start_s3_server

    if shutil.which("java") is None:
        raise UsageError("--real-kafka needs Java 17+ (apt-get install openjdk-17-jre-headless maven); "
                         "'tiering demo' without it runs on the simulated broker")
    say = lambda text="": print(text, file=out, flush=True)  # noqa: E731
    version = kafka_version()
    if not is_fetched(version):
        say(f"== fetching Apache Kafka {version} with Maven (first time only; TIERING_KAFKA_VERSION picks another)")
    try:
        libs = fetch(version, quiet=True)
    except FetchError as e:
        raise UsageError(str(e).splitlines()[0]) from None
    server, endpoint = start_s3_server()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "demo")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "demo-secret")
    workdir = Path(tempfile.mkdtemp(prefix="tiering-demo-kafka-"))
    broker = Broker(workdir / "broker", libs)
    try:
        say(f"== S3-compatible server (moto) on {endpoint}, bucket '{BUCKET}'")
        boto3.session.Session().client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
        say(f"== Apache Kafka {version}: single-node KRaft broker on {broker.bootstrap}, log dir {broker.log_dir}")
        broker.start()
        produced = _produce(broker.bootstrap, say)
        config = _config(workdir, endpoint, broker.log_dir, broker.bootstrap)
        say(f"== configuration ({config}):\n{config.read_text()}")
        time.sleep(2)      # the broker checkpoints its high watermarks every second

        say("== tiering run --once")
        first = _cli("run", "--once", "--config", str(config))
        evs = _events(first.stdout)
        uploaded = [e for e in evs if e["event"] == "segment uploaded"]
        asked = [e for e in evs if e["event"].startswith("broker asked")]
        say(f"   exit {first.returncode}: {len(uploaded)} segments uploaded, the broker asked to delete "
            f"{len(asked)} of orders' (DeleteRecords)")
        earliest = _wait_earliest(broker.bootstrap, "orders")
        say(f"   the broker moved orders-0's log start to {earliest} and deletes the files itself")

        say("== tiering verify")
        verify = _cli("verify", "--config", str(config))
        say(f"   exit {verify.returncode}")

        say("== tiering cat orders 0 --from-offset 0 (the oldest records are in the store only now)")
        cat = _cli("cat", "--config", str(config), "orders", "0", "--from-offset", "0")
        offsets = [json.loads(line)["offset"] for line in cat.stdout.splitlines()]
        cat_ok = cat.returncode == 0 and offsets == list(range(produced["orders"]))
        say(f"   {len(offsets)} records, offsets 0..{offsets[-1] if offsets else '-'} with none missing: {cat_ok}")
        committed = _cli("cat", "--config", str(config), "payments", "0", "--from-offset", "0",
                         "--isolation", "read_committed").stdout.count("\n")
        say(f"   payments-0: {committed} records read_committed of {produced['payments']} produced "
            f"({produced['payments_committed']} in committed transactions)")

        say("== the broker stops; tiering rollback --topic orders --confirm; the broker starts")
        broker.stop()
        rollback = _cli("rollback", "--config", str(config), "--topic", "orders", "--confirm")
        say(f"   rollback exit {rollback.returncode}")
        broker.start()
        earliest_after = _earliest(broker.bootstrap, "orders")
        consumed = _consume(broker.bootstrap, "orders")
        served = earliest_after == 0 and consumed == produced["orders"]
        say(f"   the broker serves orders-0 from offset {earliest_after}: {consumed} records read by a "
            f"kafka-python consumer: {served}")
        ok = (first.returncode == 0 and asked and earliest > 0 and verify.returncode == 0 and cat_ok
              and committed == produced["payments_committed"] and rollback.returncode == 0 and served)
        say("\n== demo " + ("finished on a real Kafka broker: offloaded, deleted by the broker, verified, read "
                            "back from both tiers, rolled back and served from offset 0" if ok else "FAILED"))
        if not ok:
            say(f"   broker log: {broker.broker_log}")
        return 0 if ok else 1
    except BrokerError as e:
        say(f"== the broker failed: {e}")
        return 1
    finally:
        broker.stop()
        server.stop()
        if keep:
            print(f"== kept {workdir}", file=out)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _produce(bootstrap: str, say) -> dict[str, int]:
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(t, n, 1, topic_configs=topic_segment_config(SEGMENT_BYTES))
                             for t, n in (("orders", 2), ("payments", 1))], timeout_ms=30_000)
    finally:
        admin.close()
    say("== topics orders (2 partitions) and payments, 64 KiB segments; kafka-python produces")
    counts = {}
    for partition, codec in ((0, "gzip"), (1, "snappy")):
        producer = KafkaProducer(bootstrap_servers=bootstrap, compression_type=codec, batch_size=8192,
                                 linger_ms=5, acks="all")
        for i in range(3000):
            producer.send("orders", key=f"k{i}".encode(), value=os.urandom(100) + b"x" * 100, partition=partition)
        producer.flush(60)
        producer.close()
    counts["orders"] = 3000
    producer = KafkaProducer(bootstrap_servers=bootstrap, transactional_id="demo-payments", compression_type="zstd",
                             batch_size=8192, acks="all")
    producer.init_transactions()
    committed = 0
    for txn in range(12):
        producer.begin_transaction()
        for i in range(50):
            producer.send("payments", value=os.urandom(80), partition=0)
        if txn % 4 == 3:
            producer.abort_transaction()
        else:
            producer.commit_transaction()
            committed += 50
    producer.close()
    counts["payments"], counts["payments_committed"] = 600, committed
    say("   orders: 3000 records per partition (gzip, snappy); payments: 12 transactions of 50 (every 4th aborted)")
    return counts


def _earliest(bootstrap: str, topic: str) -> int:
    from kafka import KafkaConsumer, TopicPartition
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        tp = TopicPartition(topic, 0)
        return consumer.beginning_offsets([tp])[tp]
    finally:
        consumer.close()


def _wait_earliest(bootstrap: str, topic: str, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        earliest = _earliest(bootstrap, topic)
        if earliest > 0:
            return earliest
        time.sleep(0.5)
    return 0


def _consume(bootstrap: str, topic: str) -> int:
    from kafka import KafkaConsumer, TopicPartition
    tp = TopicPartition(topic, 0)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        consumer.assign([tp])
        end = consumer.end_offsets([tp])[tp]
        consumer.seek(tp, 0)
        n, deadline = 0, time.monotonic() + 60
        while consumer.position(tp) < end and time.monotonic() < deadline:
            n += sum(len(records) for records in consumer.poll(timeout_ms=500).values())
        return n
    finally:
        consumer.close()
