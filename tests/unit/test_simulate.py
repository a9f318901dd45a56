"""The simulated broker writes what Kafka writes; kafka-python's reader is the independent judge."""

import struct

import crc32c
import pytest
from kafka.record import MemoryRecords

from tiering.kafka.batches import parse_header
from tiering.kafka.indexes import OFFSET_ENTRY, TIME_ENTRY, check_index
from tiering.kafka.logdir import scan_log_dirs
from tiering.simulate import PREALLOCATED_INDEX_BYTES, SimulatedBroker


@pytest.fixture
def broker(tmp_path):
    b = SimulatedBroker(tmp_path / "logs", segment_bytes=64 * 1024, seed=3,
                        clock_ms=iter(range(1_700_000_000_000, 1_800_000_000_000, 7)).__next__)
    yield b
    b.close()


def read_with_kafka_python(data: bytes) -> list[tuple]:
    records, batches = [], MemoryRecords(data)
    while (batch := batches.next_batch()) is not None:
        assert batch.validate_crc()
        for record in batch:
            records.append((record.offset, record.timestamp, record.key, record.value,
                            tuple((k, v) for k, v in record.headers)))
    return records


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_kafka_python_reads_every_codec_the_simulator_writes(broker, codec):
    broker.create_topic("t", 1, segment_bytes=16 * 1024)
    offsets = broker.produce("t", 0, 700, codec=codec, value_size=120, headers=True)
    partition = scan_log_dirs([broker.log_dir]).partitions[0]
    assert len(partition.segments) > 1
    seen = []
    for segment in partition.segments:
        seen += read_with_kafka_python(segment.log_path.read_bytes())
    assert [r[0] for r in seen] == list(offsets)
    assert all(r[2] == f"key-{r[0]}".encode() and len(r[3]) == 120 for r in seen)
    assert seen[5][4] == (("trace", b"t-5"), ("empty", None))


def test_transactions_write_markers_and_a_txnindex_entry_per_abort(broker):
    broker.create_topic("pay", 1)
    committed = broker.produce_transaction("pay", 0, 4, commit=True)
    aborted = broker.produce_transaction("pay", 0, 3, commit=False)
    data = (broker.partition_dir("pay", 0) / "00000000000000000000.log").read_bytes()
    batches = MemoryRecords(data)
    kinds = []
    while (batch := batches.next_batch()) is not None:
        kinds.append((batch.is_transactional, batch.is_control_batch))
    assert kinds == [(True, False), (True, True), (True, False), (True, True)]
    entry = (broker.partition_dir("pay", 0) / "00000000000000000000.txnindex").read_bytes()
    version, pid, first, last, lso = struct.unpack(">hqqqq", entry)
    assert (version, first, last) == (0, aborted.start, aborted.stop) and lso == last + 1
    assert committed.stop < aborted.start


def test_index_entries_every_4096_bytes_point_at_batch_starts(broker):
    broker.create_topic("t", 1)
    broker.produce("t", 0, 2000, value_size=100)
    partition = scan_log_dirs([broker.log_dir]).partitions[0]
    rolled, active = partition.segments[0], partition.segments[-1]
    log = rolled.log_path.read_bytes()
    index = dict(rolled.index_paths)["index"].read_bytes()
    timeindex = dict(rolled.index_paths)["timeindex"].read_bytes()
    entries = list(OFFSET_ENTRY.iter_unpack(index))
    assert len(entries) >= len(log) // 4096 - 2
    for relative, position in entries:
        header = parse_header(log, position)
        assert header.last_offset == rolled.base_offset + relative
    for kind, data in (("index", index), ("timeindex", timeindex)):
        check_index(kind, data, len(log), rolled.base_offset, rolled.next_offset)
    last_ts, _ = list(TIME_ENTRY.iter_unpack(timeindex))[-1]
    assert last_ts == max(parse_header(log, p).max_timestamp for _, p in entries)  # final entry on roll
    for _, path in active.index_paths:
        assert path.stat().st_size == PREALLOCATED_INDEX_BYTES


def test_snapshot_has_a_valid_crc(broker):
    broker.create_topic("t", 1)
    broker.produce_transaction("t", 0, 5, commit=True)
    broker.roll("t", 0)
    snapshot = scan_log_dirs([broker.log_dir]).partitions[0].segments[0].snapshot_path.read_bytes()
    version, crc = struct.unpack_from(">hI", snapshot)
    assert version == 1 and crc == crc32c.crc32c(snapshot[6:])
