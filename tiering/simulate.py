"""A simulated broker that writes real Kafka log dirs, for the demo, the tests and the benchmarks.

It lays out files the way Kafka 3.x does (kafka-log-format.md): v2 batches with CRC-32C in
every codec, transactional batches with commit/abort markers and a `.txnindex` entry per
aborted transaction, an offset-index and time-index entry every `index_interval_bytes`,
index files preallocated (10 MiB, zero-filled) while the segment is active and trimmed, with a
final time-index entry, when it rolls, a producer snapshot at each roll, the leader-epoch
checkpoint, `partition.metadata`, the offset checkpoints, `meta.properties` and `.lock`.
"""

from __future__ import annotations

import base64
import os
import random
import struct
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import crc32c

from tiering.kafka.checkpoints import (EpochEntry, TopicPartition, format_leader_epoch_checkpoint,
                                       format_offset_checkpoint)
from tiering.kafka.indexes import OFFSET_ENTRY, TIME_ENTRY, TXN_ENTRY
from tiering.kafka.names import segment_file_name
from tiering.kafka.records import CONTROL_ABORT, CONTROL_COMMIT, build_batch, control_record

PREALLOCATED_INDEX_BYTES = 10 * 1024 * 1024
_SNAPSHOT_ENTRY = struct.Struct(">qhiqiqiq")


def new_topic_id(rng: random.Random | None = None) -> str:
    """A topic id as partition.metadata stores it: URL-safe base64 of a UUID, unpadded."""
    raw = (rng or random.Random()).randbytes(16) if rng else uuid.uuid4().bytes
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass
class _Producer:
    producer_id: int
    epoch: int = 0
    last_sequence: int = -1
    last_offset: int = -1
    timestamp: int = -1
    coordinator_epoch: int = 0


@dataclass
class _ActiveSegment:
    base_offset: int
    log: object  # open binary file
    index_fd: int
    time_fd: int
    size: int = 0
    index_entries: int = 0
    time_entries: int = 0
    last_time_entry: int = -1
    bytes_since_index: int = 0
    max_timestamp: int = -1
    offset_of_max_timestamp: int = -1
    txn_entries: list[bytes] = field(default_factory=list)


class _PartitionLog:
    def __init__(self, directory: Path, topic_id: str, segment_bytes: int, index_interval_bytes: int):
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.index_interval_bytes = index_interval_bytes
        self.next_offset = 0
        self.log_start_offset = 0
        self.leader_epoch = 0
        self.epochs: list[EpochEntry] = []
        self.producers: dict[int, _Producer] = {}
        self.high_watermark_hold: int | None = None
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "partition.metadata").write_text(f"version: 0\ntopic_id: {topic_id}\n")
        self.active = self._open_segment(0)

    # -- segments -------------------------------------------------------------------------

    def _open_segment(self, base: int) -> _ActiveSegment:
        # unbuffered: like the broker's FileChannel writes, appends reach the file (page cache) at once
        log = open(self.directory / segment_file_name(base, "log"), "ab", buffering=0)
        fds = []
        for ext in ("index", "timeindex"):
            fd = os.open(self.directory / segment_file_name(base, ext), os.O_RDWR | os.O_CREAT, 0o644)
            os.ftruncate(fd, PREALLOCATED_INDEX_BYTES)  # zero-filled, as the broker preallocates
            fds.append(fd)
        return _ActiveSegment(base, log, fds[0], fds[1])

    def roll(self) -> None:
        seg = self.active
        if seg.size == 0:
            return
        if seg.max_timestamp > seg.last_time_entry:  # Kafka's final maybeAppend on roll
            self._append_time_entry(seg)
        os.fsync(seg.log.fileno())
        seg.log.close()
        os.ftruncate(seg.index_fd, seg.index_entries * OFFSET_ENTRY.size)
        os.ftruncate(seg.time_fd, seg.time_entries * TIME_ENTRY.size)
        os.close(seg.index_fd)
        os.close(seg.time_fd)
        self._write_snapshot(self.next_offset)
        self.active = self._open_segment(self.next_offset)

    def close(self) -> None:
        self.active.log.close()
        os.close(self.active.index_fd)
        os.close(self.active.time_fd)

    def _append_time_entry(self, seg: _ActiveSegment) -> None:
        os.pwrite(seg.time_fd, TIME_ENTRY.pack(seg.max_timestamp, seg.offset_of_max_timestamp - seg.base_offset),
                  seg.time_entries * TIME_ENTRY.size)
        seg.time_entries += 1
        seg.last_time_entry = seg.max_timestamp

    def _write_snapshot(self, offset: int) -> None:
        entries = b"".join(_SNAPSHOT_ENTRY.pack(p.producer_id, p.epoch, p.last_sequence, p.last_offset,
                                                0, p.timestamp, p.coordinator_epoch, -1)
                           for p in self.producers.values())
        body = struct.pack(">i", len(self.producers)) + entries
        data = struct.pack(">hI", 1, crc32c.crc32c(body)) + body
        (self.directory / segment_file_name(offset, "snapshot")).write_bytes(data)

    # -- appends --------------------------------------------------------------------------

    def append(self, batch: bytes, record_count: int, max_timestamp: int) -> int:
        """Append one batch at the log end; returns its base offset."""
        seg = self.active
        if seg.size and seg.size + len(batch) > self.segment_bytes:
            self.roll()
            seg = self.active
        if not self.epochs or self.epochs[-1].epoch != self.leader_epoch:
            self.epochs.append(EpochEntry(self.leader_epoch, self.next_offset))
            (self.directory / "leader-epoch-checkpoint").write_text(format_leader_epoch_checkpoint(self.epochs))
        base = self.next_offset
        last = base + record_count - 1
        position = seg.size
        seg.log.write(batch)
        seg.size += len(batch)
        if max_timestamp > seg.max_timestamp:
            seg.max_timestamp, seg.offset_of_max_timestamp = max_timestamp, last
        # LogSegment.append: an index entry once more than index.interval.bytes were appended
        if seg.bytes_since_index > self.index_interval_bytes:
            os.pwrite(seg.index_fd, OFFSET_ENTRY.pack(last - seg.base_offset, position),
                      seg.index_entries * OFFSET_ENTRY.size)
            seg.index_entries += 1
            if seg.max_timestamp > seg.last_time_entry:
                self._append_time_entry(seg)
            seg.bytes_since_index = 0
        seg.bytes_since_index += len(batch)
        self.next_offset = last + 1
        return base

    def add_aborted_transaction(self, producer_id: int, first_offset: int, marker_offset: int) -> None:
        entry = TXN_ENTRY.pack(0, producer_id, first_offset, marker_offset, marker_offset + 1)
        path = self.directory / segment_file_name(self.active.base_offset, "txnindex")
        with open(path, "ab") as f:  # created lazily, like the broker's TransactionIndex
            f.write(entry)


class SimulatedBroker:
    """Writes one Kafka log dir. Not thread-safe; one instance per log dir."""

    def __init__(self, log_dir: str | Path, *, broker_id: int = 1, segment_bytes: int = 1024 * 1024,
                 index_interval_bytes: int = 4096, clock_ms: Callable[[], int] | None = None, seed: int = 0,
                 auto_checkpoint: bool = True):
        self.log_dir = Path(log_dir)
        self.segment_bytes = segment_bytes
        self.index_interval_bytes = index_interval_bytes
        self.clock_ms = clock_ms or (lambda: int(time.time() * 1000))
        self.rng = random.Random(seed)
        self.logs: dict[TopicPartition, _PartitionLog] = {}
        self.topic_ids: dict[str, str] = {}
        self.compacted: set[str] = set()
        self._next_producer_id = 1000
        # False: checkpoints are written only when checkpoint() is called (a cluster of
        # thousands of partitions would otherwise rewrite them on every append).
        self.auto_checkpoint = auto_checkpoint
        self.log_dir.mkdir(parents=True, exist_ok=True)
        (self.log_dir / ".lock").touch()
        (self.log_dir / "meta.properties").write_text(
            f"#\n#{time.ctime()}\nnode.id={broker_id}\nversion=1\ncluster.id=tiering-simulated\n")
        self.checkpoint()

    # -- topics ---------------------------------------------------------------------------

    def create_topic(self, name: str, partitions: int = 1, *, compacted: bool = False,
                     topic_id: str | None = None, segment_bytes: int | None = None) -> str:
        topic_id = topic_id or new_topic_id(self.rng)
        self.topic_ids[name] = topic_id
        if compacted:
            self.compacted.add(name)
        for p in range(partitions):
            self.logs[TopicPartition(name, p)] = _PartitionLog(
                self.log_dir / f"{name}-{p}", topic_id, segment_bytes or self.segment_bytes, self.index_interval_bytes)
        self._maybe_checkpoint()
        return topic_id

    def partition_dir(self, topic: str, partition: int) -> Path:
        return self.log_dir / f"{topic}-{partition}"

    def next_offset(self, topic: str, partition: int) -> int:
        return self.logs[TopicPartition(topic, partition)].next_offset

    # -- producing ------------------------------------------------------------------------

    def produce(self, topic: str, partition: int, count: int, *, codec: str = "none", value_size: int = 100,
                batch_records: int = 10, headers: bool = False, null_keys: bool = False) -> range:
        """Append `count` records in batches of `batch_records`; returns their offsets."""
        log = self.logs[TopicPartition(topic, partition)]
        first = log.next_offset
        remaining = count
        while remaining:
            n = min(batch_records, remaining)
            records = [self._record(log.next_offset + i, value_size, headers, null_keys) for i in range(n)]
            batch = build_batch(log.next_offset, records, codec=codec, leader_epoch=log.leader_epoch)
            log.append(batch, n, max(r[0] for r in records))
            remaining -= n
        self._maybe_checkpoint()
        return range(first, log.next_offset)

    def produce_transaction(self, topic: str, partition: int, count: int, *, commit: bool,
                            codec: str = "none", value_size: int = 100) -> range:
        """One transactional batch and its commit or abort marker; returns the data offsets."""
        log = self.logs[TopicPartition(topic, partition)]
        producer = _Producer(self._next_producer_id)
        self._next_producer_id += 1
        log.producers[producer.producer_id] = producer
        records = [self._record(log.next_offset + i, value_size, False, False) for i in range(count)]
        batch = build_batch(log.next_offset, records, codec=codec, leader_epoch=log.leader_epoch,
                            producer_id=producer.producer_id, producer_epoch=producer.epoch,
                            base_sequence=0, transactional=True)
        first = log.append(batch, count, records[-1][0])
        key, value = control_record(CONTROL_COMMIT if commit else CONTROL_ABORT)
        marker_ts = self.clock_ms()
        marker = build_batch(log.next_offset, [(marker_ts, key, value, ())], leader_epoch=log.leader_epoch,
                             producer_id=producer.producer_id, producer_epoch=producer.epoch,
                             transactional=True, control=True)
        marker_offset = log.append(marker, 1, marker_ts)
        if not commit:
            log.add_aborted_transaction(producer.producer_id, first, marker_offset)
        producer.last_sequence, producer.last_offset, producer.timestamp = count - 1, marker_offset, marker_ts
        self._maybe_checkpoint()
        return range(first, first + count)

    def _record(self, offset: int, value_size: int, headers: bool, null_keys: bool) -> tuple:
        value = self.rng.randbytes((value_size + 1) // 2).hex()[:value_size].encode()
        key = None if null_keys else f"key-{offset}".encode()
        extra = (("trace", f"t-{offset}".encode()), ("empty", None)) if headers else ()
        return (self.clock_ms(), key, value, extra)

    # -- broker events --------------------------------------------------------------------

    def roll(self, topic: str, partition: int) -> None:
        self.logs[TopicPartition(topic, partition)].roll()
        self._maybe_checkpoint()

    def bump_leader_epoch(self, topic: str, partition: int) -> int:
        log = self.logs[TopicPartition(topic, partition)]
        log.leader_epoch += 1
        return log.leader_epoch

    def hold_high_watermark(self, topic: str, partition: int, offset: int | None) -> None:
        """Keep the HW at `offset` (as when followers lag); None: HW follows the log end."""
        self.logs[TopicPartition(topic, partition)].high_watermark_hold = offset
        self._maybe_checkpoint()

    def _maybe_checkpoint(self) -> None:
        if self.auto_checkpoint:
            self.checkpoint()

    def release(self, topic: str, partition: int) -> None:
        """Close the partition's open files (for simulated clusters with more partitions than
        file descriptors); it cannot be written afterwards."""
        self.logs[TopicPartition(topic, partition)].close()

    def restart(self) -> None:
        """What a broker start does after segments were deleted from its stopped log dir: each
        log start moves up to the first segment's base offset, and the leader-epoch checkpoint
        is trimmed from the start (Kafka's truncateFromStart: earlier epochs dropped, the first
        kept one moved up to the new log start)."""
        for log in self.logs.values():
            bases = sorted(int(p.name[:20]) for p in log.directory.glob("*.log"))
            if not bases or bases[0] <= log.log_start_offset:
                continue
            log.log_start_offset = bases[0]
            kept = [e for e in log.epochs if e.start_offset >= log.log_start_offset]
            below = [e for e in log.epochs if e.start_offset < log.log_start_offset]
            if below and (not kept or kept[0].start_offset > log.log_start_offset):
                kept.insert(0, EpochEntry(below[-1].epoch, log.log_start_offset))
            log.epochs = kept
            (log.directory / "leader-epoch-checkpoint").write_text(format_leader_epoch_checkpoint(log.epochs))
        self.checkpoint()

    def checkpoint(self) -> None:
        """Write the log-dir checkpoint files (the broker does this every few seconds)."""
        hw, recovery, start, cleaner = {}, {}, {}, {}
        for tp, log in self.logs.items():
            hw[tp] = log.next_offset if log.high_watermark_hold is None else log.high_watermark_hold
            recovery[tp] = log.next_offset
            start[tp] = log.log_start_offset
            if tp.topic in self.compacted:
                cleaner[tp] = log.next_offset
        for name, entries in (("replication-offset-checkpoint", hw), ("recovery-point-offset-checkpoint", recovery),
                              ("log-start-offset-checkpoint", start), ("cleaner-offset-checkpoint", cleaner)):
            tmp = self.log_dir / f"{name}.tmp"
            # A real broker creates cleaner-offset-checkpoint empty (0 bytes) at start-up and
            # writes it only once the cleaner has cleaned a log.
            empty = name == "cleaner-offset-checkpoint" and not entries
            tmp.write_text("" if empty else format_offset_checkpoint(entries))
            os.replace(tmp, self.log_dir / name)

    def close(self) -> None:
        for log in self.logs.values():
            log.close()
