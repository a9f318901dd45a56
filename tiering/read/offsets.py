"""Where an offset lives and which transactions are settled: the index files, read in place.

Pure: bytes in, numbers out. The `.index` is searched as Kafka's OffsetIndex.lookup does
(the last entry at or below the target; the reader then walks batches from that position), the
`.txnindex` lists the aborted transactions, and the producer snapshot plus the active
segment's batch headers give the last stable offset that bounds a read_committed read.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from tiering.kafka.batches import BatchHeader
from tiering.kafka.indexes import OFFSET_ENTRY, TXN_ENTRY

# ProducerStateManager snapshot, version 1: version (int16), crc (uint32), then an int32 count of
# entries: producerId, epoch, lastSequence, lastOffset, offsetDelta, timestamp,
# coordinatorEpoch, currentTxnFirstOffset.
_SNAPSHOT_HEADER = struct.Struct(">hIi")
_SNAPSHOT_ENTRY = struct.Struct(">qhiqiqiq")
NO_OPEN_TRANSACTION = -1


@dataclass(frozen=True)
class AbortedTransaction:
    producer_id: int
    first_offset: int
    last_offset: int      # the offset of its abort marker


def position_for(index: bytes | memoryview, base_offset: int, target: int) -> int:
    """Byte position in the `.log` where a walk for `target` starts.

    Kafka indexes a batch by its last offset, at the batch's position, so the entry found is
    the last batch that ends at or before the target; 0 when the index has none (an empty
    index, or a target in the first `index.interval.bytes` of the segment).
    """
    usable = len(index) - len(index) % OFFSET_ENTRY.size
    # A big-endian int32 view over the file's bytes: searched in place, not copied.
    entries = np.frombuffer(index, dtype=">i4", count=usable // 4).reshape(-1, 2)
    if not len(entries):
        return 0
    slot = int(np.searchsorted(entries[:, 0], target - base_offset, side="right")) - 1
    return 0 if slot < 0 else int(entries[slot, 1])


def aborted_transactions(txnindex: bytes) -> list[AbortedTransaction]:
    """The entries of a `.txnindex`; a torn last entry (a crash mid-append) is ignored."""
    usable = len(txnindex) - len(txnindex) % TXN_ENTRY.size
    return [AbortedTransaction(producer_id, first, last)
            for _version, producer_id, first, last, _lso in TXN_ENTRY.iter_unpack(txnindex[:usable])]


def open_transactions(snapshot: bytes) -> dict[int, int]:
    """Producer id -> first offset of its transaction open at the snapshot's offset.

    A snapshot that cannot be parsed gives nothing: the bound it would tighten then rests on
    the active segment's own batches alone.
    """
    if len(snapshot) < _SNAPSHOT_HEADER.size:
        return {}
    version, _crc, count = _SNAPSHOT_HEADER.unpack_from(snapshot)
    if version != 1 or count < 0 or len(snapshot) < _SNAPSHOT_HEADER.size + count * _SNAPSHOT_ENTRY.size:
        return {}
    found = {}
    for i in range(count):
        entry = _SNAPSHOT_ENTRY.unpack_from(snapshot, _SNAPSHOT_HEADER.size + i * _SNAPSHOT_ENTRY.size)
        if entry[7] != NO_OPEN_TRANSACTION:
            found[entry[0]] = entry[7]
    return found


def last_stable_offset(open_at_start: dict[int, int], headers: Iterable[BatchHeader], high_watermark: int) -> int:
    """The first offset of the earliest transaction still open at the high watermark, or the
    high watermark itself: what a read_committed consumer may see is below it.

    `open_at_start` is the producer snapshot at the active segment's base offset and
    `headers` that segment's batches in order, as the broker rebuilds its producer state.
    """
    open_first = dict(open_at_start)
    for header in headers:
        if header.base_offset >= high_watermark:
            break
        if not header.is_transactional:
            continue
        if header.is_control:
            open_first.pop(header.producer_id, None)
        else:
            open_first.setdefault(header.producer_id, header.base_offset)
    return min([high_watermark, *open_first.values()])
