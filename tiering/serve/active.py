"""The active segment's log end and open transactions, kept up to date incrementally.

A read_committed consumer needs the last stable offset (the first offset of the earliest
transaction still open below the high watermark), and a partition without a high-watermark
checkpoint needs its log end. Both come from the active segment's batch headers
(tiering.read.offsets.last_stable_offset rebuilds them from the producer snapshot and every
header, as the broker does). A tailing consumer asks again every few hundred milliseconds, so
the headers are walked once and then only from where the last walk stopped: a 1 GiB active
segment is not walked again for every fetch. The walk starts over when the segment is not
the one walked (a roll), shrank, or no longer holds the batch the walk stopped after (the
broker truncated it after a leader change).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from tiering.files import open_regular
from tiering.kafka.batches import CURRENT_MAGIC, HEADER_SIZE, LOG_OVERHEAD, BatchHeader, parse_header
from tiering.kafka.names import segment_file_name
from tiering.read import offsets

# Headers read per pread: a walk of many small batches costs one system call per few of them.
_READ_AHEAD = 64 * 1024


@dataclass
class ActiveScan:
    """Owned by one partition's refresh (callers serialise); not thread-safe on its own."""

    log_path: Path
    base_offset: int
    identity: tuple[int, int] = (0, 0)          # (st_dev, st_ino) of the file walked
    position: int = 0                           # the walk's next batch position
    log_end: int = 0                            # one past the last complete batch's last offset
    last_batch: tuple[int, int, int] | None = None   # (position, base offset, crc) of it
    open_first: dict[int, int] = field(default_factory=dict)   # producer -> first offset open
    applied_until: int = 0                      # headers below this offset are in open_first
    pending: list[BatchHeader] = field(default_factory=list)   # walked, at or above the bound

    @classmethod
    def start(cls, log_path: Path, base_offset: int) -> ActiveScan:
        scan = cls(log_path, base_offset)
        scan._reset(None)
        return scan

    def refresh(self, high_watermark: int | None) -> None:
        """Walk what was appended since the last refresh."""
        fd = open_regular(self.log_path)    # never through a link, never a FIFO
        try:
            stat = os.fstat(fd)
            if ((stat.st_dev, stat.st_ino) != self.identity or stat.st_size < self.position
                    or not self._same_last(fd)
                    # the bound went below what was applied (a truncation the checks missed)
                    or (high_watermark is not None and high_watermark < self.applied_until)):
                self._reset(stat)
            self._walk(fd, stat.st_size)
        finally:
            os.close(fd)

    def last_stable_offset(self, high_watermark: int) -> int:
        """As offsets.last_stable_offset over the producer snapshot and every header below
        the high watermark."""
        self._apply(high_watermark)
        return min([high_watermark, *self.open_first.values()])

    # -- inside -------------------------------------------------------------------------------

    def _reset(self, stat: os.stat_result | None) -> None:
        self.identity = (stat.st_dev, stat.st_ino) if stat is not None else (0, 0)
        self.position = 0
        self.log_end = self.base_offset
        self.last_batch = None
        snapshot = self.log_path.with_name(segment_file_name(self.base_offset, "snapshot"))
        try:
            data = snapshot.read_bytes() if not snapshot.is_symlink() else b""
        except OSError:
            data = b""
        self.open_first = offsets.open_transactions(data)
        self.applied_until = self.base_offset
        self.pending = []

    def _same_last(self, fd: int) -> bool:
        if self.last_batch is None:
            return True
        position, base, crc = self.last_batch
        data = os.pread(fd, HEADER_SIZE, position)
        if len(data) < HEADER_SIZE:
            return False
        header = parse_header(data)
        return header.base_offset == base and header.crc == crc

    def _walk(self, fd: int, size: int) -> None:
        buffer, buffer_at = b"", 0
        while self.position + HEADER_SIZE <= size:
            within = self.position - buffer_at
            if within < 0 or within + HEADER_SIZE > len(buffer):
                buffer, buffer_at = os.pread(fd, _READ_AHEAD, self.position), self.position
                within = 0
                if len(buffer) < HEADER_SIZE:
                    return
            header = parse_header(buffer[within:within + HEADER_SIZE])
            if header.magic != CURRENT_MAGIC or header.batch_length < HEADER_SIZE - LOG_OVERHEAD:
                return      # not a batch (yet): the broker is writing here
            if self.position + header.size > size:
                return      # the broker is still writing this batch
            self.pending.append(header)
            self.last_batch = (self.position, header.base_offset, header.crc)
            self.log_end = header.last_offset + 1
            self.position += header.size

    def _apply(self, bound: int) -> None:
        applied = 0
        for header in self.pending:
            if header.base_offset >= bound:
                break
            applied += 1
            if header.is_transactional:
                if header.is_control:
                    self.open_first.pop(header.producer_id, None)
                else:
                    self.open_first.setdefault(header.producer_id, header.base_offset)
            self.applied_until = header.last_offset + 1
        del self.pending[:applied]
