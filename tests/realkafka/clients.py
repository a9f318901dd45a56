"""Real Kafka clients against the test broker: kafka-python and confluent-kafka (librdkafka),
for producing (codecs, idempotent, transactional) and for reading back what the broker serves."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from tiering.realkafka.demo import topic_segment_config


@dataclass(frozen=True)
class Rec:
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp: int


def segment_config(segment_bytes: int) -> dict[str, str]:
    return topic_segment_config(segment_bytes)


def create_topic(bootstrap: str, topic: str, partitions: int = 1, segment_bytes: int = 16 * 1024,
                 exist_ok: bool = False, **configs: str) -> None:
    """`exist_ok`: for a topic several test modules name on the shared broker (Kafka's own
    metadata only: its records are not read)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    try:
        topic_configs = {**segment_config(segment_bytes), **{k.replace("_", "."): v for k, v in configs.items()}}
        try:
            admin.create_topics([NewTopic(topic, partitions, 1, topic_configs=topic_configs)], timeout_ms=30_000)
        except TopicAlreadyExistsError:
            if not exist_ok:
                raise
    finally:
        admin.close()
    wait_for_leader(bootstrap, topic, partitions)


def delete_topic(bootstrap: str, topic: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    try:
        admin.delete_topics([topic], timeout_ms=30_000)
    finally:
        admin.close()


def wait_for_leader(bootstrap: str, topic: str, partitions: int, timeout: float = 30) -> None:
    from confluent_kafka.admin import AdminClient
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        md = admin.list_topics(topic, timeout=5).topics.get(topic)
        if md is not None and md.error is None and len(md.partitions) == partitions and all(
                p.leader >= 0 for p in md.partitions.values()):
            return
        time.sleep(0.2)
    raise AssertionError(f"topic {topic} has no leader after {timeout}s")


def value_for(i: int, size: int) -> bytes:
    # Half compressible text, half hash bytes: every codec still leaves segments that roll.
    head = f"record-{i:08d}-".encode()
    noise = b"".join(hashlib.sha256(f"{i}/{n}".encode()).digest() for n in range(size // 64 + 1))
    return ((head * (size // len(head) + 1))[:size // 2] + noise)[:size]


def produce_kafka_python(bootstrap: str, topic: str, count: int, *, codec: str = "none", partition: int = 0,
                         value_size: int = 200, start: int = 0, idempotent: bool = False) -> list[tuple]:
    """Returns (key, value, headers, timestamp) of every record sent, in order."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, compression_type=None if codec == "none" else codec,
                             linger_ms=5, batch_size=4096, acks="all", enable_idempotence=idempotent,
                             max_in_flight_requests_per_connection=1 if not idempotent else 5)
    sent = []
    base_ts = int(time.time() * 1000) - 1_000_000   # never in the future: the broker warns about those
    for i in range(start, start + count):
        key, value = f"k{i}".encode(), value_for(i, value_size)
        headers = [("h", f"{i}".encode())]
        ts = base_ts + i
        producer.send(topic, key=key, value=value, headers=headers, partition=partition, timestamp_ms=ts)
        sent.append((key, value, tuple(headers), ts))
    producer.flush(60)
    producer.close(10)
    return sent


def confluent_producer(bootstrap: str, **conf):
    from confluent_kafka import Producer
    return Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all", "batch.size": 4096, **conf})


def produce_confluent(bootstrap: str, topic: str, count: int, *, codec: str = "none", partition: int = 0,
                      value_size: int = 200, start: int = 0, idempotent: bool = False) -> list[tuple]:
    producer = confluent_producer(bootstrap, **{"compression.type": codec, "enable.idempotence": idempotent})
    sent = []
    errors = []
    base_ts = int(time.time() * 1000) - 1_000_000   # never in the future: the broker warns about those
    for i in range(start, start + count):
        key, value = f"k{i}".encode(), value_for(i, value_size)
        headers = [("h", f"{i}".encode())]
        ts = base_ts + i
        while True:
            try:
                producer.produce(topic, key=key, value=value, headers=headers, partition=partition, timestamp=ts,
                                 on_delivery=lambda err, msg: err and errors.append(err))
                break
            except BufferError:
                producer.poll(0.1)
        sent.append((key, value, tuple(headers), ts))
        producer.poll(0)
    assert producer.flush(60) == 0
    assert not errors, errors
    return sent


def produce_transactions(bootstrap: str, topic: str, transactions: list[bool], per_txn: int, *,
                         codec: str = "zstd", value_size: int = 200, txn_id: str = "txn-1", start: int = 0
                         ) -> tuple[list[tuple], list[tuple]]:
    """confluent-kafka transactional producer: one transaction per flag (True commits, False
    aborts). Returns (committed records, all records) in send order."""
    producer = confluent_producer(bootstrap, **{"transactional.id": txn_id, "compression.type": codec})
    producer.init_transactions(30)
    committed, every = [], []
    n = start
    base_ts = int(time.time() * 1000) - 1_000_000   # never in the future: the broker warns about those
    for commit in transactions:
        producer.begin_transaction()
        batch = []
        for _ in range(per_txn):
            key, value = f"t{n}".encode(), value_for(n, value_size)
            headers = [("txn", b"c" if commit else b"a")]
            producer.produce(topic, key=key, value=value, headers=headers, partition=0, timestamp=base_ts + n)
            batch.append((key, value, tuple(headers), base_ts + n))
            n += 1
        producer.flush(30)
        if commit:
            producer.commit_transaction(30)
            committed.extend(batch)
        else:
            producer.abort_transaction(30)
        every.extend(batch)
    return committed, every


def consume_kafka_python(bootstrap: str, topic: str, partition: int = 0, *, isolation: str = "read_uncommitted",
                         from_offset: int = 0, timeout: float = 60) -> list[Rec]:
    """Every record from `from_offset` to the partition's end, read with kafka-python."""
    tp = TopicPartition(topic, partition)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level=isolation,
                             auto_offset_reset="earliest", fetch_max_bytes=4 << 20)
    try:
        consumer.assign([tp])
        end = consumer.end_offsets([tp])[tp]
        consumer.seek(tp, from_offset)
        out = []
        deadline = time.monotonic() + timeout
        while consumer.position(tp) < end and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    out.append(Rec(r.offset, r.key, r.value, tuple((k, bytes(v)) for k, v in r.headers), r.timestamp))
        assert consumer.position(tp) >= end, f"kafka-python stopped at {consumer.position(tp)} of {end}"
        return out
    finally:
        consumer.close()


def consume_confluent(bootstrap: str, topic: str, partition: int = 0, *, isolation: str = "read_uncommitted",
                      from_offset: int = 0, timeout: float = 60) -> list[Rec]:
    from confluent_kafka import Consumer, TopicPartition as CTP
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{time.monotonic_ns()}",
                         "enable.auto.commit": False, "isolation.level": isolation,
                         "auto.offset.reset": "error", "enable.partition.eof": True})
    try:
        low, high = consumer.get_watermark_offsets(CTP(topic, partition), timeout=10)
        consumer.assign([CTP(topic, partition, from_offset)])
        out = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == -191:      # _PARTITION_EOF
                    break
                raise AssertionError(f"confluent-kafka: {msg.error()}")
            out.append(Rec(msg.offset(), msg.key(), msg.value(), tuple(msg.headers() or ()), msg.timestamp()[1]))
        else:
            raise AssertionError(f"confluent-kafka did not reach the end ({high}) in {timeout}s")
        return out
    finally:
        consumer.close()


def list_offsets(bootstrap: str, topic: str, partition: int = 0) -> tuple[int, int]:
    """(earliest, latest) as the broker answers ListOffsets."""
    from confluent_kafka import Consumer, TopicPartition as CTP
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "offsets"})
    try:
        return consumer.get_watermark_offsets(CTP(topic, partition), timeout=10, cached=False)
    finally:
        consumer.close()
