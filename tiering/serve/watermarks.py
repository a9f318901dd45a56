"""The live end of a partition, from the cluster: ListOffsets latest (cluster mode).

The broker writes `replication-offset-checkpoint` only every few seconds
(replica.high.watermark.checkpoint.interval.ms, 5 s by default), so a consumer tailing the
endpoint on the checkpoint alone would see new records that much later than on the broker.
ListOffsets latest, answered by the partition's leader, is the high watermark itself. Through
kafka-python's admin client (LazyAdmin: connected on first use, dropped after an error); a
failed ask is not repeated for `retry_after_s`, so an unreachable cluster costs one timeout
now and then, not one per fetch (the caller falls back to the checkpoint meanwhile).
"""

from __future__ import annotations

import threading
from typing import Callable, Protocol

from tiering.retention.admin import AdminError, LazyAdmin


class HighWatermarks(Protocol):
    def latest(self, topic: str, partition: int) -> int | None:
        """The partition's high watermark; None when it cannot be had now."""

    def close(self) -> None: ...


class KafkaHighWatermarks(LazyAdmin):
    def __init__(self, bootstrap_servers: str, monotonic: Callable[[], float], timeout_ms: int = 3_000,
                 bootstrap_timeout_ms: int = 3_000, retry_after_s: float = 5.0):
        super().__init__(bootstrap_servers, timeout_ms, bootstrap_timeout_ms)
        self._monotonic = monotonic
        self._retry_after_s = retry_after_s
        self._failed_at: float | None = None
        self.error: str | None = None      # why the last ask failed; None after a good one
        # kafka-python's admin client is not meant to be shared by threads: one ask at a time.
        self._lock = threading.Lock()

    def latest(self, topic: str, partition: int) -> int | None:
        from kafka import TopicPartition
        from kafka.admin import OffsetSpec
        from kafka.errors import BrokerResponseError, KafkaError

        from tiering.retention.admin import _describe
        with self._lock:
            now = self._monotonic()
            if self._failed_at is not None and now - self._failed_at < self._retry_after_s:
                return None
            tp = TopicPartition(topic, partition)
            try:
                answer = self._admin().list_partition_offsets({tp: OffsetSpec.LATEST}, timeout_ms=self.timeout_ms)
            except AdminError as exc:
                return self._failed(now, str(exc))
            except BrokerResponseError as exc:
                # This partition's answer (unknown here, no leader right now): the cluster is
                # reachable, and the other partitions are asked as usual.
                self.error = f"ListOffsets {topic}-{partition}: {_describe(exc)}"
                return None
            except KafkaError as exc:
                self.close()      # a fresh connection next time (the leader may have moved)
                return self._failed(now, f"ListOffsets on {self.bootstrap_servers}: {_describe(exc)}")
            self._failed_at, self.error = None, None
            found = answer.get(tp)
            return None if found is None or found.offset is None or found.offset < 0 else int(found.offset)

    def _failed(self, now: float, error: str) -> None:
        self._failed_at, self.error = now, error
        return None
