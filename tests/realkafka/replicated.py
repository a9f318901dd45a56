"""Helpers for tests on the 3-node cluster: replicated topics, a producer that keeps writing
(acks=all, idempotent) while leadership moves, and what each node's disk holds."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from tiering.realkafka.cluster import Cluster
from tiering.realkafka.demo import topic_segment_config
from tiering.realkafka.ops import ClusterAdmin, PartitionState
from tests.realkafka.clients import value_for
from tests.realkafka.offload import partition_dir, wait_until


def create_replicated_topic(cluster: Cluster, topic: str, partitions: int = 1, segment_bytes: int = 16 * 1024,
                            **configs: str) -> dict[int, PartitionState]:
    """RF=3, min.insync.replicas=2, small segments; returns once every partition is led with a
    full ISR and each replica's dir exists (a new topic's ISR is full in the metadata before the
    nodes have made their dirs)."""
    topic_configs = {**topic_segment_config(segment_bytes), "min.insync.replicas": "2",
                     **{k.replace("_", "."): v for k, v in configs.items()}}
    with ClusterAdmin(cluster.bootstrap) as admin:
        admin.create_topic(topic, partitions, 3, topic_configs)
        states = admin.wait_healthy(topic, partitions)
    wait_until(lambda: all(partition_dir(cluster.log_dir(n), topic, p).is_dir()
                           for p, state in states.items() for n in state.replicas),
               60, f"every replica's dir of {topic}")
    return states


@dataclass
class Acked:
    partition: int
    offset: int
    key: bytes
    value: bytes


@dataclass
class ContinuousProducer:
    """A confluent-kafka (librdkafka) producer writing to `partitions` of `topic` in a thread until
    stopped: acks=all, idempotent (a retry after a leader change never writes a record twice),
    at most `rate` records a second. Keeps every acknowledged record with its offset."""
    bootstrap: str
    topic: str
    partitions: int = 1
    value_size: int = 300
    rate: float = 400
    acked: list[Acked] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._sent = 0
        self._lock = threading.Lock()

    def start(self) -> "ContinuousProducer":
        self._thread.start()
        return self

    def _run(self) -> None:
        from confluent_kafka import Producer
        producer = Producer({"bootstrap.servers": self.bootstrap, "acks": "all", "enable.idempotence": True,
                             "linger.ms": 10, "batch.size": 8192, "message.timeout.ms": 120_000})

        def delivered(err, msg):
            if err is not None:
                self.errors.append(str(err))
                return
            with self._lock:
                self.acked.append(Acked(msg.partition(), msg.offset(), msg.key(), msg.value()))

        began = time.monotonic()
        while not self._stop.is_set():
            if self._sent > (time.monotonic() - began) * self.rate:
                producer.poll(0.01)
                continue
            i = self._sent
            try:
                producer.produce(self.topic, key=f"k{i}".encode(), value=value_for(i, self.value_size),
                                 partition=i % self.partitions, on_delivery=delivered)
                self._sent += 1
            except BufferError:
                pass
            producer.poll(0)
        remaining = producer.flush(120)
        if remaining:
            self.errors.append(f"{remaining} records not delivered at stop")

    def count(self) -> int:
        with self._lock:
            return len(self.acked)

    def wait_for(self, at_least: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.count() < at_least:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {self.count()} records acknowledged in {timeout}s "
                                     f"(errors: {self.errors[:3]})")
            time.sleep(0.1)

    def stop(self) -> list[Acked]:
        self._stop.set()
        self._thread.join(180)
        assert not self.errors, self.errors[:5]
        return sorted(self.acked, key=lambda a: (a.partition, a.offset))
