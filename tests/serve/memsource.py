"""A PartitionSource in memory, for the endpoint's tests: real v2 record batches (built with
the project's own batch builder), the interface of tiering/serve/source.py, nothing else."""

from __future__ import annotations

import threading
import uuid

from tiering.kafka.records import build_batch
# The source's own result types: the endpoint reads the same fields from both.
from tiering.serve.source import AbortedTxn, FetchResult, PartitionState, TopicInfo


class MemorySource:
    def __init__(self):
        self._lock = threading.Lock()
        self._topics: dict[str, TopicInfo] = {}
        self._batches: dict[tuple[str, int], list[tuple[int, int, int, bytes]]] = {}  # base, last, max ts, bytes
        self.aborted: dict[tuple[str, int], tuple[AbortedTxn, ...]] = {}
        self.stable_lag: dict[tuple[str, int], int] = {}   # last stable offset this far below the high watermark

    def add_topic(self, name: str, partitions: int, topic_id: uuid.UUID | None = None) -> None:
        with self._lock:
            self._topics[name] = TopicInfo(name, topic_id or uuid.uuid4(), tuple(range(partitions)))
            for p in range(partitions):
                self._batches.setdefault((name, p), [])

    def append(self, topic: str, partition: int, values: list[bytes], timestamp: int = 1_700_000_000_000) -> int:
        """One batch of `values`; returns its base offset."""
        with self._lock:
            log = self._batches[(topic, partition)]
            base = log[-1][1] + 1 if log else 0
            records = [(timestamp + i, b"k%d" % (base + i), v, ()) for i, v in enumerate(values)]
            log.append((base, base + len(values) - 1, timestamp + len(values) - 1, build_batch(base, records)))
            return base

    def topics(self) -> dict[str, TopicInfo]:
        with self._lock:
            return dict(self._topics)

    def _state(self, topic: str, partition: int) -> PartitionState | None:
        log = self._batches.get((topic, partition))
        if log is None:
            return None
        end = log[-1][1] + 1 if log else 0
        return PartitionState(0, end, end - self.stable_lag.get((topic, partition), 0))

    def state(self, topic: str, partition: int) -> PartitionState | None:
        with self._lock:
            return self._state(topic, partition)

    def fetch(self, topic: str, partition: int, offset: int, max_bytes: int, read_committed: bool) -> FetchResult:
        with self._lock:
            state = self._state(topic, partition)
            if state is None:
                return FetchResult(3, None, b"", (), "")
            if not state.log_start_offset <= offset <= state.high_watermark:
                return FetchResult(1, state, b"", (), "")
            out, size = [], 0
            for base, last, _, data in self._batches[(topic, partition)]:
                if last < offset:
                    continue
                if out and size + len(data) > max_bytes:
                    break
                out.append(data)
                size += len(data)
            aborted = self.aborted.get((topic, partition), ()) if read_committed else ()
            return FetchResult(0, state, b"".join(out), aborted, "store" if offset == 0 else "local")

    def offset_for_timestamp(self, topic: str, partition: int, timestamp_ms: int) -> tuple[int, int] | None:
        with self._lock:
            for base, _, max_ts, _ in self._batches.get((topic, partition), ()):
                if max_ts >= timestamp_ms:
                    return base, max_ts
            return None

    def close(self) -> None:
        pass
