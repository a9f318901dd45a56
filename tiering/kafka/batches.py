"""RecordBatch v2 headers and the integrity walk over a whole segment.

The walk reads the file once, sequentially, through a fixed buffer (memory does not grow with
segment size), checks every batch's magic, length, offsets and CRC-32C, and computes the
CRC-32C of the whole file for the manifest on the way. CRCs come from the `crc32c` library
(hardware-accelerated); only the header layout is hand-written, because no maintained
library parses Kafka's on-disk segments.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

import crc32c

# baseOffset, batchLength, partitionLeaderEpoch, magic, crc, attributes, lastOffsetDelta,
# baseTimestamp, maxTimestamp, producerId, producerEpoch, baseSequence, recordCount
HEADER = struct.Struct(">qiibIhiqqqhii")
HEADER_SIZE = HEADER.size  # 61
LOG_OVERHEAD = 12          # baseOffset + batchLength precede what batchLength counts
CRC_START = 21             # the CRC covers attributes .. end of batch
CURRENT_MAGIC = 2
CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
ATTR_CODEC_MASK = 0x07
ATTR_TIMESTAMP_TYPE = 0x08
ATTR_TRANSACTIONAL = 0x10
ATTR_CONTROL = 0x20
_READ_BLOCK = 1024 * 1024


@dataclass(frozen=True)
class BatchHeader:
    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def size(self) -> int:
        return self.batch_length + LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def codec(self) -> str:
        code = self.attributes & ATTR_CODEC_MASK
        return CODECS[code] if code < len(CODECS) else f"unknown({code})"

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & ATTR_TRANSACTIONAL)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & ATTR_CONTROL)


def parse_header(data: bytes | memoryview, position: int = 0) -> BatchHeader:
    return BatchHeader(*HEADER.unpack_from(data, position))


class CorruptSegment(Exception):
    """The segment's bytes are not what Kafka writes; `position` is the file offset."""

    def __init__(self, position: int, reason: str):
        self.position = position
        self.reason = reason
        super().__init__(f"at byte {position}: {reason}")


@dataclass(frozen=True)
class SegmentSummary:
    size: int
    crc32c: int                 # of the whole file
    batch_count: int
    record_count: int
    first_offset: int | None    # base offset of the first batch
    last_offset: int | None     # last offset of the last batch
    max_timestamp: int          # largest batch maxTimestamp; -1 when empty
    # (epoch, first offset) each time partitionLeaderEpoch changes, in file order
    leader_epochs: tuple[tuple[int, int], ...]


def scan_segment(stream: BinaryIO, size: int, base_offset: int, next_offset: int | None) -> SegmentSummary:
    """Walk every batch of a segment file of `size` bytes; raises CorruptSegment.

    `next_offset` is the next segment's base offset (None for a segment whose end is not
    known): every batch must lie in [base_offset, next_offset).
    """
    buffer = bytearray(_READ_BLOCK)
    view = memoryview(buffer)
    file_crc = 0
    position = 0
    batches = records = 0
    first_offset = last_offset = None
    max_timestamp = -1
    epochs: list[tuple[int, int]] = []
    while position < size:
        if size - position < HEADER_SIZE:
            raise CorruptSegment(position, f"truncated batch header ({size - position} bytes left)")
        header_bytes = _read_exact(stream, view[:HEADER_SIZE], position)
        file_crc = crc32c.crc32c(header_bytes, file_crc)
        header = parse_header(header_bytes)
        if header.magic != CURRENT_MAGIC:
            raise CorruptSegment(position, f"magic {header.magic}, expected {CURRENT_MAGIC} "
                                           "(only the v2 message format can be tiered)")
        if header.size < HEADER_SIZE:
            raise CorruptSegment(position, f"batch length {header.batch_length} is below the minimum")
        if position + header.size > size:
            raise CorruptSegment(position, f"truncated batch: {header.size} bytes declared, "
                                           f"{size - position} left in the file")
        if header.base_offset < base_offset or (last_offset is not None and header.base_offset <= last_offset):
            raise CorruptSegment(position, f"batch offset {header.base_offset} out of order")
        if header.last_offset_delta < 0 or (next_offset is not None and header.last_offset >= next_offset):
            raise CorruptSegment(position, f"batch last offset {header.last_offset} outside the "
                                           f"segment [{base_offset}, {next_offset})")
        if epochs and header.partition_leader_epoch < epochs[-1][0]:
            # The CRC does not cover the leader epoch; epochs never go back along a log.
            raise CorruptSegment(position, f"leader epoch goes back from {epochs[-1][0]} to "
                                           f"{header.partition_leader_epoch}")
        batch_crc = crc32c.crc32c(header_bytes[CRC_START:])
        remaining = header.size - HEADER_SIZE
        offset = position + HEADER_SIZE
        while remaining:
            piece = _read_exact(stream, view[:min(remaining, _READ_BLOCK)], offset)
            file_crc = crc32c.crc32c(piece, file_crc)
            batch_crc = crc32c.crc32c(piece, batch_crc)
            offset += len(piece)
            remaining -= len(piece)
        if batch_crc != header.crc:
            raise CorruptSegment(position, f"CRC-32C mismatch in batch at offset {header.base_offset} "
                                           f"(stored {header.crc:08x}, computed {batch_crc:08x})")
        # A negative epoch (-1: none, from an old broker) starts no epoch, as in Kafka's
        # LogSegment.recover; it never goes into a leader-epoch checkpoint.
        if header.partition_leader_epoch >= 0 and (not epochs or epochs[-1][0] != header.partition_leader_epoch):
            epochs.append((header.partition_leader_epoch, header.base_offset))
        batches += 1
        records += header.record_count
        first_offset = header.base_offset if first_offset is None else first_offset
        last_offset = header.last_offset
        max_timestamp = max(max_timestamp, header.max_timestamp)
        position += header.size
    return SegmentSummary(size, file_crc, batches, records, first_offset, last_offset,
                          max_timestamp, tuple(epochs))


def _read_exact(stream: BinaryIO, target: memoryview, position: int) -> memoryview:
    filled = 0
    while filled < len(target):
        n = stream.readinto(target[filled:])
        if not n:
            raise CorruptSegment(position + filled, "file ended early (it shrank while being read)")
        filled += n
    return target
