"""The integrity walk as it was before the one-pass walker (tiering/kafka/walk.py): one batch
at a time, two reads per batch. Kept as the oracle the new walker is compared with."""

from __future__ import annotations

from typing import BinaryIO

import crc32c

from tiering.kafka.batches import (CRC_START, CURRENT_MAGIC, HEADER_SIZE, CorruptSegment, SegmentSummary,
                                   parse_header)

_READ_BLOCK = 1024 * 1024


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
