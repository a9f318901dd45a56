"""The integrity walk, fed a segment file piece by piece (the upload's parts, in order).

Every batch's magic, length, offsets, leader epoch and CRC-32C are checked and the segment is
summarised, as `scan_segment` promises; a batch may straddle two or more pieces. Each byte is
summed twice in all: once for its batch's CRC and once for its piece's (the part checksum the
store verifies); the file's CRC is combined from the pieces'.

Cheap per batch: the only Python loop over whole batches finds where each one starts (its
length) and calls the CRC library on a view of it; every header check then runs over all the
batches of a piece at once (numpy, over a byte-strided record view of the piece: nothing is
copied but the headers). When any check fails, the piece's batches are walked again one by
one with the checks in the original order, so the error (position and reason) is the one the
batch-at-a-time walk reports.
"""

from __future__ import annotations

import struct

import crc32c
import numpy as np

from tiering.checksums import crc32c_combine
from tiering.kafka.batches import (CRC_START, CURRENT_MAGIC, HEADER_SIZE, LOG_OVERHEAD, BatchHeader,
                                   CorruptSegment, SegmentSummary, parse_header)

_LENGTH = struct.Struct(">i")
_MIN_LENGTH = HEADER_SIZE - LOG_OVERHEAD
# The v2 batch header as a packed numpy record (61 bytes, big-endian fields).
_RECORD = np.dtype([("base", ">i8"), ("length", ">i4"), ("epoch", ">i4"), ("magic", "i1"), ("crc", ">u4"),
                    ("attributes", ">i2"), ("last_delta", ">i4"), ("base_ts", ">i8"), ("max_ts", ">i8"),
                    ("producer_id", ">i8"), ("producer_epoch", ">i2"), ("base_sequence", ">i4"),
                    ("records", ">i4")])
assert _RECORD.itemsize == HEADER_SIZE
# The same 61 bytes as one opaque item: numpy gathers these with one copy each, where gathering
# the record dtype goes field by field (4-7x slower at 1 KiB batches, `python -m bench walk`).
_OPAQUE = np.dtype((np.void, HEADER_SIZE))
# Offsets this far from int64's ends take the one-by-one path (numpy's sums would wrap).
_SAFE = 1 << 61


def _clamp(offset: int) -> int:
    """An offset bound numpy can compare with (the offsets walked here are within +-_SAFE)."""
    return max(-2 * _SAFE, min(offset, 2 * _SAFE))


class SegmentWalker:
    """Feed it the whole file in order (`feed`), then `finish()`; raises CorruptSegment."""

    def __init__(self, size: int, base_offset: int, next_offset: int | None):
        self.size = size
        self.base_offset = base_offset
        self.next_offset = next_offset
        self._fed = 0
        self._file_crc = 0
        self._position = 0                   # file offset of the next batch to complete
        self._carry = bytearray()            # the start of a header cut by the end of a piece
        self._open: list | None = None       # [header, crc so far, bytes left] of a cut batch
        self._batches = 0
        self._records = 0
        self._first: int | None = None
        self._last: int | None = None
        self._max_timestamp = -1
        self._epochs: list[tuple[int, int]] = []

    def feed(self, piece: memoryview | bytes | bytearray) -> int:
        """Walk the next piece of the file; returns the piece's own CRC-32C."""
        view = memoryview(piece).cast("B") if not isinstance(piece, memoryview) else piece
        length = len(view)
        if self._fed + length > self.size:
            raise ValueError(f"fed {self._fed + length} bytes of a {self.size}-byte segment")
        piece_crc = crc32c.crc32c(view)
        self._file_crc = crc32c_combine(self._file_crc, piece_crc, length)
        start = self._fed
        self._fed += length
        i = self._continue(view, start)
        i = self._whole_batches(view, i, start)
        if i < length:
            self._begin_cut(view, i, start)
        return piece_crc

    def finish(self) -> SegmentSummary:
        if self._fed < self.size:
            raise CorruptSegment(self._fed, "file ended early (it shrank while being read)")
        assert self._open is None and not self._carry and self._position == self.size
        return SegmentSummary(self.size, self._file_crc, self._batches, self._records, self._first, self._last,
                              self._max_timestamp, tuple(self._epochs))

    # -- batches cut by a piece's end -------------------------------------------------------------

    def _begin_cut(self, view: memoryview, i: int, start: int) -> None:
        position = start + i
        self._position = position
        self._truncated_header(position)
        if len(view) - i < HEADER_SIZE:
            self._carry = bytearray(view[i:])
            return
        header = parse_header(view, i)
        self._check_header(header, position)
        self._open = [header, crc32c.crc32c(view[i + CRC_START:]), header.size - (len(view) - i)]

    def _continue(self, view: memoryview, start: int) -> int:
        i = 0
        if self._carry:
            need = HEADER_SIZE - len(self._carry)
            self._carry += view[:need]
            i = min(need, len(view))
            if len(self._carry) < HEADER_SIZE:
                return i
            header = parse_header(self._carry)
            self._check_header(header, self._position)
            self._open = [header, crc32c.crc32c(self._carry[CRC_START:]), header.size - HEADER_SIZE]
            self._carry = bytearray()
        if self._open is not None:
            header, crc, left = self._open
            take = min(left, len(view) - i)
            crc = crc32c.crc32c(view[i:i + take], crc)
            i += take
            if take < left:
                self._open = [header, crc, left - take]
                return i
            self._open = None
            self._check_crc(header, crc, self._position)
            self._accept(header)
            self._position += header.size
        return i

    # -- the fast path ----------------------------------------------------------------------------

    def _whole_batches(self, view: memoryview, i: int, start: int) -> int:
        """Walk the batches that lie wholly in the piece from index i; returns where the first
        one that does not (or a bad length) starts (`_begin_cut` goes on from there)."""
        end = len(view)
        unpack = _LENGTH.unpack_from
        crc = crc32c.crc32c
        starts: list[int] = []
        crcs: list[int] = []
        add_start, add_crc = starts.append, crcs.append
        while i + HEADER_SIZE <= end:
            (batch_length,) = unpack(view, i + 8)
            stop = i + batch_length + LOG_OVERHEAD
            if batch_length < _MIN_LENGTH or stop > end:
                break
            add_start(i)
            add_crc(crc(view[i + CRC_START:stop]))
            i = stop
        if starts:
            if not self._accept_all(view, starts, crcs):
                self._one_by_one(view, starts, crcs, start)
            self._position = start + i
        return i

    def _accept_all(self, view: memoryview, starts: list[int], crcs: list[int]) -> bool:
        """All the batches at `starts` checked at once; False (nothing accepted) when any fails."""
        headers = np.ndarray((len(view) - HEADER_SIZE + 1,), _OPAQUE, view, 0, (1,))[np.array(starts)]
        records = headers.view(_RECORD)
        base = records["base"].astype(np.int64)
        delta = records["last_delta"].astype(np.int64)
        if base.min() < -_SAFE or base.max() > _SAFE:
            return False
        last = base + delta
        previous_last = np.empty_like(last)
        previous_last[0] = -_SAFE * 2 if self._last is None else _clamp(self._last)
        previous_last[1:] = last[:-1]
        epoch = records["epoch"].astype(np.int64)
        seen = np.where(epoch >= 0, epoch, -1)
        before = np.maximum.accumulate(np.concatenate(([self._epochs[-1][0] if self._epochs else -1], seen)))[:-1]
        bad = ((records["magic"] != CURRENT_MAGIC)
               | (base < _clamp(self.base_offset)) | (base <= previous_last)
               | (delta < 0)
               | ((before >= 0) & (epoch < before))
               | (records["crc"].astype(np.int64) != np.array(crcs, dtype=np.int64)))
        if self.next_offset is not None:
            bad |= last >= _clamp(self.next_offset)
        if bad.any():
            return False
        new_epoch = (epoch >= 0) & (epoch != before)
        self._epochs.extend(zip(epoch[new_epoch].tolist(), base[new_epoch].tolist()))
        self._batches += len(starts)
        self._records += int(records["records"].astype(np.int64).sum())
        if self._first is None:
            self._first = int(base[0])
        self._last = int(last[-1])
        self._max_timestamp = max(self._max_timestamp, int(records["max_ts"].max()))
        return True

    def _one_by_one(self, view: memoryview, starts: list[int], crcs: list[int], start: int) -> None:
        for i, batch_crc in zip(starts, crcs):
            header = parse_header(view, i)
            self._check_header(header, start + i)
            self._check_crc(header, batch_crc, start + i)
            self._accept(header)

    # -- the checks, one batch at a time, in the order the errors are reported -------------------

    def _truncated_header(self, position: int) -> None:
        if self.size - position < HEADER_SIZE:
            raise CorruptSegment(position, f"truncated batch header ({self.size - position} bytes left)")

    def _check_header(self, header: BatchHeader, position: int) -> None:
        if header.magic != CURRENT_MAGIC:
            raise CorruptSegment(position, f"magic {header.magic}, expected {CURRENT_MAGIC} "
                                           "(only the v2 message format can be tiered)")
        if header.size < HEADER_SIZE:
            raise CorruptSegment(position, f"batch length {header.batch_length} is below the minimum")
        if position + header.size > self.size:
            raise CorruptSegment(position, f"truncated batch: {header.size} bytes declared, "
                                           f"{self.size - position} left in the file")
        if header.base_offset < self.base_offset or (self._last is not None and header.base_offset <= self._last):
            raise CorruptSegment(position, f"batch offset {header.base_offset} out of order")
        if header.last_offset_delta < 0 or (self.next_offset is not None and header.last_offset >= self.next_offset):
            raise CorruptSegment(position, f"batch last offset {header.last_offset} outside the "
                                           f"segment [{self.base_offset}, {self.next_offset})")
        if self._epochs and header.partition_leader_epoch < self._epochs[-1][0]:
            # The CRC does not cover the leader epoch; epochs never go back along a log.
            raise CorruptSegment(position, f"leader epoch goes back from {self._epochs[-1][0]} to "
                                           f"{header.partition_leader_epoch}")

    def _check_crc(self, header: BatchHeader, batch_crc: int, position: int) -> None:
        if batch_crc != header.crc:
            raise CorruptSegment(position, f"CRC-32C mismatch in batch at offset {header.base_offset} "
                                           f"(stored {header.crc:08x}, computed {batch_crc:08x})")

    def _accept(self, header: BatchHeader) -> None:
        # A negative epoch (-1: none, from an old broker) starts no epoch, as in Kafka's
        # LogSegment.recover; it never goes into a leader-epoch checkpoint.
        epoch = header.partition_leader_epoch
        if epoch >= 0 and (not self._epochs or self._epochs[-1][0] != epoch):
            self._epochs.append((epoch, header.base_offset))
        self._batches += 1
        self._records += header.record_count
        if self._first is None:
            self._first = header.base_offset
        self._last = header.last_offset
        self._max_timestamp = max(self._max_timestamp, header.max_timestamp)
