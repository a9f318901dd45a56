"""RecordBatch v2 headers and the integrity walk over a whole segment file.

The walk (tiering.kafka.walk) reads the file once, sequentially, through a fixed buffer
(memory does not grow with segment size), checks every batch's magic, length, offsets and
CRC-32C, and computes the CRC-32C of the whole file for the manifest on the way. CRCs come from the `crc32c` library
(hardware-accelerated); only the header layout is hand-written, because no maintained
library parses Kafka's on-disk segments.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

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
    known): every batch must lie in [base_offset, next_offset). The file is read once,
    sequentially, through one fixed buffer, and fed to the walker (tiering.kafka.walk).
    """
    from tiering.kafka.walk import SegmentWalker  # it builds on this module's header layout

    walker = SegmentWalker(size, base_offset, next_offset)
    buffer = bytearray(min(_READ_BLOCK, max(size, 1)))
    view = memoryview(buffer)
    fed = 0
    while fed < size:
        n = stream.readinto(view[:min(len(view), size - fed)])
        if not n:
            break
        walker.feed(view[:n])
        fed += n
    return walker.finish()
