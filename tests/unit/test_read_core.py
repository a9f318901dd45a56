"""The pure parts of the read path: offset index lookup, aborted transactions, the last stable
offset, what each isolation level shows, and the prefetch window."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from tiering.kafka.batches import parse_header
from tiering.kafka.indexes import OFFSET_ENTRY, TXN_ENTRY
from tiering.kafka.records import CONTROL_ABORT, CONTROL_COMMIT, build_batch, control_record
from tiering.read.offsets import (AbortedTransaction, aborted_transactions, last_stable_offset, open_transactions,
                                  position_for)
from tiering.read.prefetch import PrefetchWindow
from tiering.read.visibility import Visibility


@given(st.lists(st.integers(1, 50), min_size=0, max_size=40), st.integers(0, 3000))
def test_index_lookup_finds_the_last_entry_at_or_below_the_target(gaps, target):
    entries, relative, position = [], 0, 0
    for gap in gaps:
        relative += gap
        position += gap * 100
        entries.append((relative, position))
    index = b"".join(OFFSET_ENTRY.pack(r, p) for r, p in entries)
    base = 1000
    found = position_for(index, base, base + target)
    below = [p for r, p in entries if r <= target]
    assert found == (below[-1] if below else 0)


def test_index_lookup_ignores_a_torn_last_entry():
    index = OFFSET_ENTRY.pack(5, 400) + OFFSET_ENTRY.pack(9, 800)[:5]
    assert position_for(index, 0, 100) == 400


def test_aborted_transactions_and_open_ones_from_the_snapshot():
    txn = TXN_ENTRY.pack(0, 7, 100, 130, 131) + TXN_ENTRY.pack(0, 8, 140, 150, 151)
    assert aborted_transactions(txn + b"\x00" * 3) == [AbortedTransaction(7, 100, 130), AbortedTransaction(8, 140, 150)]
    entry = struct.Struct(">qhiqiqiq")
    body = struct.pack(">i", 2) + entry.pack(7, 0, 5, 90, 0, 1, 0, -1) + entry.pack(8, 0, 5, 95, 0, 1, 0, 93)
    assert open_transactions(struct.pack(">hI", 1, 0) + body) == {8: 93}
    assert open_transactions(b"garbage") == {}


def _header(base, count=1, *, pid=-1, txn=False, control=False, kind=CONTROL_COMMIT):
    records = ([(1, *control_record(kind), ())] if control
               else [(1, b"k", b"v", ())] * count)
    return parse_header(build_batch(base, records, producer_id=pid, producer_epoch=0 if pid >= 0 else -1,
                                    transactional=txn, control=control))


def test_last_stable_offset_is_the_first_offset_of_the_earliest_open_transaction():
    headers = [_header(100, 5), _header(105, 3, pid=1, txn=True), _header(108, 2),
               _header(110, 2, pid=2, txn=True), _header(112, pid=1, txn=True, control=True)]
    assert last_stable_offset({}, headers, 113) == 110          # pid 2 still open
    assert last_stable_offset({}, headers[:3], 110) == 105      # pid 1 not ended below the HW
    assert last_stable_offset({3: 90}, headers, 113) == 90      # open since before this segment
    assert last_stable_offset({}, headers[:1], 105) == 105


def test_read_committed_hides_aborted_batches_and_every_isolation_hides_markers():
    batches = [
        _header(0, 2, pid=1, txn=True),                        # aborted below
        _header(2, 2, pid=2, txn=True),                        # committed
        _header(4, 2),                                         # plain
        _header(6, pid=1, txn=True, control=True, kind=CONTROL_ABORT),
        _header(7, pid=2, txn=True, control=True),
        _header(8, 2, pid=1, txn=True),                        # pid 1's next transaction: committed
        _header(10, pid=1, txn=True, control=True),
    ]
    keys = {6: control_record(CONTROL_ABORT)[0], 7: control_record(CONTROL_COMMIT)[0],
            10: control_record(CONTROL_COMMIT)[0]}
    aborted = [AbortedTransaction(1, 0, 6)]

    def shown(isolation):
        v = Visibility(isolation, aborted)
        return [h.base_offset for h in batches if v.shows(h, keys.get(h.base_offset))]
    assert shown("read_uncommitted") == [0, 2, 4, 8]
    assert shown("read_committed") == [2, 4, 8]


def test_prefetch_window_grows_on_use_shrinks_on_waste_and_yields_to_a_short_pool():
    window = PrefetchWindow.for_config(32 * 1024 * 1024, 4 * 1024 * 1024)
    assert (window.chunks, window.max_chunks) == (1, 8)
    for expected in (2, 4, 8, 8):
        window = window.used()
        assert window.chunks == expected
    assert window.ahead() == 8
    assert PrefetchWindow.new_requests(6) == 5   # one spare slab stays for a reader's miss
    assert PrefetchWindow.new_requests(1) == 0   # pause
    assert window.wasted(2).chunks == 2
    assert window.wasted(10).chunks == 1
    off = PrefetchWindow.for_config(0, 4096)
    assert not off.enabled and off.used().chunks == 0 and off.ahead() == 0
