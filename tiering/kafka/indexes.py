"""Checks on a rolled segment's index files before they are offloaded.

A rolled segment's `.index` and `.timeindex` are trimmed to their entries; one that is not
(a broker that crashed before trimming leaves the preallocated zero tail) or whose entries
point past the end of the log would mislead every reader of the remote copy, so it stops the
segment as bad input instead.
"""

from __future__ import annotations

import struct

OFFSET_ENTRY = struct.Struct(">ii")
TIME_ENTRY = struct.Struct(">qi")
# version, producerId, firstOffset, lastOffset, lastStableOffset (one per aborted transaction)
TXN_ENTRY = struct.Struct(">hqqqq")
ENTRY_SIZES = {"index": OFFSET_ENTRY.size, "timeindex": TIME_ENTRY.size, "txnindex": TXN_ENTRY.size}


class CorruptIndex(ValueError):
    pass


def check_index(kind: str, data: bytes, log_size: int, base_offset: int, next_offset: int) -> None:
    """Raise CorruptIndex when `data` is not a well-formed, trimmed index of this segment."""
    entry_size = ENTRY_SIZES[kind]
    if len(data) % entry_size:
        raise CorruptIndex(f".{kind} is {len(data)} bytes, not a multiple of its {entry_size}-byte entries")
    span = next_offset - base_offset
    if kind == "index":
        previous = (-1, -1)
        for relative, position in OFFSET_ENTRY.iter_unpack(data):
            if previous[0] >= 0 and (relative <= previous[0] or position <= previous[1]):
                raise CorruptIndex(f".index entry ({relative}, {position}) is not above the previous "
                                   "one (untrimmed or damaged index)")
            if not 0 <= relative < span or not 0 <= position < log_size:
                raise CorruptIndex(f".index entry ({relative}, {position}) points outside the segment "
                                   f"({span} offsets, {log_size} bytes)")
            previous = (relative, position)
    elif kind == "timeindex":
        previous_ts = None
        for timestamp, relative in TIME_ENTRY.iter_unpack(data):
            if not 0 <= relative < span:
                raise CorruptIndex(f".timeindex entry ({timestamp}, {relative}) points outside the segment")
            if previous_ts is not None and timestamp <= previous_ts:
                raise CorruptIndex(f".timeindex timestamps do not rise at {timestamp} (untrimmed or damaged index)")
            previous_ts = timestamp
