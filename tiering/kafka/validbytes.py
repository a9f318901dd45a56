"""How many bytes of the active segment Kafka counts: its whole batches, not its file size.

With `log.preallocate=true` the broker creates each segment file `segment.bytes` long and
fills it from the front; Kafka's LogSegment.size (what its size-based retention sums) is the
position of the end of the last batch written, and the rest is zeros until the roll trims
the file. Counting `st_size` would make both tiers' size rules delete up to a segment early.

The end is found by walking batch headers (offset, length) from a known batch boundary. The
offset index gives one close to the end: its last entry's position is where the broker
appended a chunk at most `index.interval.bytes` (4 KiB by default) before the latest entry,
so the walk reads a handful of headers instead of the whole segment; an index that is
missing or does not point at a batch of this segment makes the walk start at byte 0, which
is always right, only slower. Rolled segments are already trimmed, so only the active one
needs this. Hand-written because no maintained library reads Kafka's files.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from tiering.kafka.logdir import LocalSegment

_OFFSET_ENTRY = struct.Struct(">ii")   # relative offset, position
LOG_OVERHEAD = 12                      # baseOffset + length, not counted by the length
MAGIC_POSITION = 16                    # v0/v1: offset, size, crc(4) -> magic; v2: offset, length, epoch(4) -> magic
# The smallest length a batch (v2) or message (v0/v1) can declare: anything smaller is the
# preallocated zeros (length 0) or garbage.
MIN_LENGTH = {0: 14, 1: 22, 2: 49}


def valid_bytes(segment: LocalSegment) -> int:
    """The bytes of whole batches at the front of the segment's file (its st_size when it
    cannot be read: counting more keeps more, never less)."""
    try:
        with open(segment.log_path, "rb", buffering=0) as stream:
            fd = stream.fileno()
            size = os.fstat(fd).st_size
            start = _index_hint(segment, fd, size)
            return _walk(fd, size, start, segment.base_offset)
    except OSError:
        return segment.size


def _walk(fd: int, size: int, position: int, base_offset: int) -> int:
    while position + MAGIC_POSITION + 1 <= size:
        head = os.pread(fd, MAGIC_POSITION + 1, position)
        if len(head) < MAGIC_POSITION + 1:
            break
        offset, length = struct.unpack_from(">qi", head)
        magic = head[MAGIC_POSITION]
        if magic not in MIN_LENGTH or length < MIN_LENGTH[magic] or offset < base_offset \
                or position + LOG_OVERHEAD + length > size:
            break
        position += LOG_OVERHEAD + length
    return position


def _index_hint(segment: LocalSegment, log_fd: int, log_size: int) -> int:
    """A batch boundary near the end from the offset index, or 0."""
    index = dict(segment.index_paths).get("index")
    if index is None:
        return 0
    try:
        position = _last_index_position(Path(index))
    except OSError:
        return 0
    if not 0 < position < log_size:
        return 0
    head = os.pread(log_fd, MAGIC_POSITION + 1, position)
    if len(head) < MAGIC_POSITION + 1:
        return 0
    offset, length = struct.unpack_from(">qi", head)
    magic = head[MAGIC_POSITION]
    if magic not in MIN_LENGTH or length < MIN_LENGTH[magic] or offset < segment.base_offset:
        return 0   # stale or damaged: start from the front
    return position


def _last_index_position(path: Path) -> int:
    """The position of the last entry of a (possibly preallocated, zero-tailed) offset index:
    entries rise in position and the tail is zeros, so a binary search finds it."""
    with open(path, "rb", buffering=0) as stream:
        fd = stream.fileno()
        count = os.fstat(fd).st_size // _OFFSET_ENTRY.size
        low, high, found = 0, count - 1, 0
        while low <= high:
            middle = (low + high) // 2
            data = os.pread(fd, _OFFSET_ENTRY.size, middle * _OFFSET_ENTRY.size)
            if len(data) < _OFFSET_ENTRY.size:
                break
            _, position = _OFFSET_ENTRY.unpack(data)
            if position > 0:
                found, low = position, middle + 1
            else:
                high = middle - 1
        return found
