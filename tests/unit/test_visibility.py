"""read_committed visibility (tiering/read/visibility.py) at its edges: aborted transactions
learnt as later segments are opened, in any order, and the abort marker that ends one."""

from tiering.kafka.batches import BatchHeader
from tiering.read.offsets import AbortedTransaction
from tiering.read.visibility import READ_COMMITTED, READ_UNCOMMITTED, Visibility

TRANSACTIONAL, CONTROL = 0x10, 0x20
ABORT_KEY, COMMIT_KEY = b"\x00\x00\x00\x00", b"\x00\x00\x00\x01"


def batch(base, count, producer_id, attributes=TRANSACTIONAL):
    return BatchHeader(base, 0, 0, 2, 0, attributes, count - 1, 0, 0, producer_id, 0, 0, count)


def marker(offset, producer_id):
    return batch(offset, 1, producer_id, TRANSACTIONAL | CONTROL)


def test_aborted_transactions_added_later_and_out_of_order_hide_their_batches():
    v = Visibility(READ_COMMITTED)
    # Learnt segment by segment, the later transaction first: the heap keeps them in order.
    v.add_aborted([AbortedTransaction(producer_id=8, first_offset=30, last_offset=34)])
    v.add_aborted([AbortedTransaction(producer_id=7, first_offset=20, last_offset=24)])
    seen = [v.shows(batch(20, 2, 7)),            # producer 7's aborted transaction
            v.shows(batch(22, 2, 9)),            # another producer: committed
            v.shows(marker(24, 7), ABORT_KEY),   # its abort marker (never shown)
            v.shows(batch(25, 5, 7)),            # producer 7's next transaction: not aborted
            v.shows(batch(30, 4, 8)),            # producer 8's aborted one
            v.shows(marker(34, 8), ABORT_KEY),
            v.shows(batch(35, 1, 8))]
    assert seen == [False, True, False, True, False, False, True]


def test_a_commit_marker_does_not_end_an_aborted_transaction_and_plain_batches_always_show():
    v = Visibility(READ_COMMITTED, [AbortedTransaction(producer_id=7, first_offset=10, last_offset=20)])
    assert v.shows(batch(10, 1, 7)) is False
    assert v.shows(marker(11, 7), COMMIT_KEY) is False     # a marker, not the abort: still aborting
    assert v.shows(batch(12, 1, 7)) is False
    assert v.shows(batch(13, 1, 7, attributes=0)) is True  # not transactional
    assert v.shows(marker(20, 7), ABORT_KEY) is False
    assert v.shows(batch(21, 1, 7)) is True


def test_read_uncommitted_shows_every_data_batch_and_no_marker():
    v = Visibility(READ_UNCOMMITTED, [AbortedTransaction(producer_id=7, first_offset=10, last_offset=20)])
    v.add_aborted([AbortedTransaction(producer_id=7, first_offset=30, last_offset=31)])
    assert [v.shows(batch(10, 1, 7)), v.shows(marker(20, 7), ABORT_KEY), v.shows(batch(30, 1, 7))] == [
        True, False, True]
