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

A daemon asks again for every active segment at each retention pass, and on a broker of
10,000 idle partitions those walks (two opens and a binary search of a preallocated index
each) were most of the pass. `ValidBytes` keeps each answer with the file's identity, size
and modification time, taken before the walk, and walks again only when one of them moved.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from tiering.files import open_regular_file
from tiering.kafka.logdir import LocalSegment

_OFFSET_ENTRY = struct.Struct(">ii")   # relative offset, position
LOG_OVERHEAD = 12                      # baseOffset + length, not counted by the length
MAGIC_POSITION = 16                    # v0/v1: offset, size, crc(4) -> magic; v2: offset, length, epoch(4) -> magic
# The smallest length a batch (v2) or message (v0/v1) can declare: anything smaller is the
# preallocated zeros (length 0) or garbage.
MIN_LENGTH = {0: 14, 1: 22, 2: 49}


def valid_bytes(segment: LocalSegment) -> int:
    """The bytes of whole batches at the front of the segment's file; 0 when it cannot be
    read (deleted or rolled away since the scan). Counting less keeps more: the size rules
    delete while the sum is over the limit, so a file's listed size (a whole preallocated
    segment.bytes) could delete a segment early, and 0 never can."""
    return _measure(segment)[0]


_Stamp = tuple[int, int, int, int]      # st_dev, st_ino, st_size, st_mtime_ns


def _measure(segment: LocalSegment) -> tuple[int, _Stamp | None]:
    """The valid bytes and the file's stamp as it was before the walk (None: not read)."""
    try:
        with open_regular_file(segment.log_path) as stream:   # never a link or a FIFO
            fd = stream.fileno()
            stat = os.fstat(fd)
            start = _index_hint(segment, fd, stat.st_size)
            return _walk(fd, stat.st_size, start, segment.base_offset), _stamp(stat)
    except OSError:
        return 0, None


def _stamp(stat: os.stat_result) -> _Stamp:
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


class ValidBytes:
    """valid_bytes, remembered per file until it changes. The broker's every append moves the
    file's mtime (a truncation does too, and a new file has another inode), so a file whose
    stamp is the one taken before the last walk holds nothing that walk did not see. An
    append in the same clock tick as that stamp leaves it unchanged: the answer then lacks
    that append until the next one, which counts less, and so deletes later, never sooner.

    Each call to `forget_unused` drops the files not asked about since the previous one (the
    retention runner calls it after each pass), so rolled and deleted segments do not pile up.
    Not thread-safe: one retention pass at a time uses it."""

    def __init__(self) -> None:
        self._known: dict[Path, tuple[_Stamp, int]] = {}
        self._used: set[Path] = set()

    def __call__(self, segment: LocalSegment) -> int:
        path = segment.log_path
        self._used.add(path)
        known = self._known.get(path)
        if known is not None:
            try:
                if _stamp(os.stat(path)) == known[0]:
                    return known[1]
            except OSError:
                pass
        size, stamp = _measure(segment)
        if stamp is None:
            self._known.pop(path, None)
        else:
            self._known[path] = (stamp, size)
        return size

    def forget_unused(self) -> None:
        for path in self._known.keys() - self._used:
            del self._known[path]
        self._used = set()


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
    with open_regular_file(path) as stream:
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
