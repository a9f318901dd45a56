"""Which batches a consumer sees, by isolation level: Kafka's consumer rules, pure.

Control batches (transaction markers) are never shown. Under read_committed a transactional
batch is hidden while its producer is in an aborted transaction: the aborted transactions come
from the `.txnindex` files, and a producer enters the aborted set when the read reaches the
transaction's first offset and leaves it at its abort marker (as the Java consumer's
CompletedFetch does with the aborted-transaction list of a fetch response).
"""

from __future__ import annotations

import heapq
import struct
from typing import Iterable

from tiering.kafka.batches import BatchHeader
from tiering.kafka.records import CONTROL_ABORT
from tiering.read.offsets import AbortedTransaction

READ_UNCOMMITTED = "read_uncommitted"
READ_COMMITTED = "read_committed"
ISOLATION_LEVELS = (READ_UNCOMMITTED, READ_COMMITTED)


class Visibility:
    """Fed every batch in offset order; says whether its data records are shown."""

    def __init__(self, isolation: str, aborted: Iterable[AbortedTransaction] = ()):
        if isolation not in ISOLATION_LEVELS:
            raise ValueError(f"unknown isolation level {isolation!r}")
        self.committed_only = isolation == READ_COMMITTED
        self._pending = sorted({(t.first_offset, t.producer_id) for t in aborted})  # a sorted list is a heap
        self._aborting: set[int] = set()

    def add_aborted(self, transactions: Iterable[AbortedTransaction]) -> None:
        """More aborted transactions, learnt as later segments are opened."""
        for t in transactions:
            heapq.heappush(self._pending, (t.first_offset, t.producer_id))

    def shows(self, header: BatchHeader, first_record_key: bytes | None = None) -> bool:
        """`first_record_key` is the key of a control batch's marker record (its type)."""
        if self.committed_only and header.producer_id >= 0:
            while self._pending and self._pending[0][0] <= header.last_offset:
                self._aborting.add(heapq.heappop(self._pending)[1])
            if header.is_control:
                if marker_type(first_record_key) == CONTROL_ABORT:
                    self._aborting.discard(header.producer_id)
            elif header.is_transactional and header.producer_id in self._aborting:
                return False
        return not header.is_control


def marker_type(key: bytes | None) -> int | None:
    """The type of a transaction marker (EndTransactionMarker key: version, type)."""
    if key is None or len(key) < 4:
        return None
    return struct.unpack_from(">hh", key)[1]
