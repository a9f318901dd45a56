"""Fixed cases at the exact boundaries of the core rules (found by mutation testing: each case
here fails on a one-character change of a comparison or a constant that no other test reached).
Index checks at the first and last legal entry, eligibility at the high watermark, the
read_committed rules at producer id 0 and at a transaction's first offset."""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import pytest

from tiering.kafka.batches import BatchHeader
from tiering.kafka.eligibility import TopicFilter, Verdict, plan_partition, segment_verdict
from tiering.kafka.indexes import OFFSET_ENTRY, TIME_ENTRY, CorruptIndex, check_index
from tiering.kafka.logdir import LocalSegment
from tiering.read.offsets import AbortedTransaction, last_stable_offset, open_transactions, position_for
from tiering.read.visibility import READ_COMMITTED, READ_UNCOMMITTED, Visibility, marker_type

# -- index files ----------------------------------------------------------------------------------

BASE, NEXT, LOG = 1000, 1010, 500       # ten offsets, 500 bytes


def index(*entries: tuple[int, int]) -> bytes:
    return b"".join(OFFSET_ENTRY.pack(*e) for e in entries)


def timeindex(*entries: tuple[int, int]) -> bytes:
    return b"".join(TIME_ENTRY.pack(*e) for e in entries)


def test_index_entries_at_the_first_and_last_legal_offset_and_position_are_accepted():
    check_index("index", index((0, 0), (9, 499)), LOG, BASE, NEXT)
    check_index("timeindex", timeindex((5, 0), (6, 9)), LOG, BASE, NEXT)


@pytest.mark.parametrize("entries", [((10, 0),), ((-1, 0),), ((0, 500),), ((0, -1),), ((0, 0), (10, 499))])
def test_index_entries_one_past_either_end_are_refused(entries):
    with pytest.raises(CorruptIndex, match="points outside the segment"):
        check_index("index", index(*entries), LOG, BASE, NEXT)


@pytest.mark.parametrize("entries", [((10, 0),), ((-1, 0),)])
def test_timeindex_entries_one_past_either_end_are_refused(entries):
    with pytest.raises(CorruptIndex, match="points outside the segment"):
        check_index("timeindex", timeindex(*((5, r) for r, _ in entries)), LOG, BASE, NEXT)


@pytest.mark.parametrize("entries", [
    ((0, 0), (0, 10)),      # offset repeats, position rises
    ((1, 10), (2, 10)),     # offset rises, position repeats
    ((2, 20), (1, 10)),     # both fall
    ((0, 0), (0, 0)),       # the preallocated zero tail of an untrimmed index
    ((1, 10), (0, 20)),
    ((1, 20), (2, 10)),
])
def test_index_entries_that_do_not_rise_in_both_columns_are_refused(entries):
    with pytest.raises(CorruptIndex, match=r"is not above the previous one \(untrimmed or damaged index\)$"):
        check_index("index", index(*entries), LOG, BASE, NEXT)


def test_timestamps_that_repeat_or_fall_are_refused():
    for entries in (((5, 1), (5, 2)), ((6, 1), (5, 2))):
        with pytest.raises(CorruptIndex, match="do not rise"):
            check_index("timeindex", timeindex(*entries), LOG, BASE, NEXT)
    check_index("timeindex", timeindex((5, 1), (6, 1)), LOG, BASE, NEXT)    # the offset may repeat


def test_the_span_is_counted_from_the_base_offset():
    # With a large base offset, an entry past next - base must be refused (next + base would let it through).
    with pytest.raises(CorruptIndex):
        check_index("index", index((10, 0),), LOG, 10**9, 10**9 + 10)
    with pytest.raises(CorruptIndex):
        check_index("timeindex", timeindex((1, 10),), LOG, 10**9, 10**9 + 10)


def test_index_errors_name_the_entry():
    with pytest.raises(CorruptIndex, match=r"\.timeindex entry \(5, 10\) points outside the segment"):
        check_index("timeindex", timeindex((5, 10),), LOG, BASE, NEXT)
    with pytest.raises(CorruptIndex, match=r"\.timeindex timestamps do not rise at 5 "):
        check_index("timeindex", timeindex((5, 1), (5, 2)), LOG, BASE, NEXT)


def test_the_position_found_is_the_last_entry_at_or_below_the_target():
    data = index((0, 0), (4, 100), (9, 400))
    assert [position_for(data, BASE, BASE + d) for d in (0, 3, 4, 5, 8, 9, 10)] == [0, 0, 100, 100, 100, 400, 400]
    assert position_for(b"", BASE, BASE + 5) == 0
    assert position_for(index((4, 100)), BASE, BASE + 3) == 0
    assert position_for(index((4, 100)) + b"\x00\x00\x00", BASE, BASE + 4) == 100     # a torn tail is ignored


# -- eligibility ----------------------------------------------------------------------------------

def segment(base: int, next_offset: int | None) -> LocalSegment:
    return LocalSegment(Path("/l"), "t", 0, base, next_offset, 1, Path(f"/l/t-0/{base:020d}.log"))


def test_a_segment_ending_just_below_the_high_watermark_is_eligible_and_at_it_is_not():
    assert segment_verdict(segment(0, 100), None, 100) == Verdict(True)       # end 99 < 100
    above = segment_verdict(segment(0, 100), None, 99)                          # end 99 >= 99
    assert above == Verdict(False, "above the high watermark (end offset 99 >= 99)", True)


def test_each_refusal_is_not_eligible_and_says_whether_it_waits_for_the_high_watermark():
    assert segment_verdict(segment(0, 10), "compacted", 100) == Verdict(False, "compacted", False)
    assert segment_verdict(segment(0, None), None, 100) == Verdict(False, "active segment (still being written)", False)
    assert segment_verdict(segment(0, 10), None, None) == Verdict(
        False, "no high watermark for this partition in replication-offset-checkpoint", True)
    for verdict in (segment_verdict(segment(0, 10), "x", 100), segment_verdict(segment(0, None), None, 100),
                    segment_verdict(segment(0, 10), None, None), segment_verdict(segment(0, 10), None, 9)):
        assert verdict.eligible is False


def test_topic_filter_exclusion_wins_and_an_unmatched_topic_is_named():
    f = TopicFilter(include=("or*",), exclude=("orders-tmp",))
    assert f.reason_excluded("orders") is None
    assert f.reason_excluded("orders-tmp") == "excluded by kafka.exclude 'orders-tmp'"
    assert f.reason_excluded("clicks") == "not matched by kafka.include"


# -- read_committed -------------------------------------------------------------------------------

TXN, CONTROL = 0x10, 0x20


def header(base: int, count: int = 1, *, producer_id: int = -1, attributes: int = 0) -> BatchHeader:
    return BatchHeader(base, 0, 0, 2, 0, attributes, count - 1, 0, 0, producer_id, 0, 0, count)


ABORT_KEY = struct.pack(">hh", 0, 0)
COMMIT_KEY = struct.pack(">hh", 0, 1)


def test_producer_id_zero_is_a_real_producer_and_its_aborted_data_is_hidden():
    v = Visibility(READ_COMMITTED, [AbortedTransaction(0, 10, 12)])
    assert v.shows(header(10, 2, producer_id=0, attributes=TXN)) is False
    assert v.shows(header(12, producer_id=0, attributes=TXN | CONTROL), ABORT_KEY) is False    # the marker itself
    assert v.shows(header(13, producer_id=0, attributes=TXN)) is True                         # after the abort


def test_an_aborted_transaction_starts_hiding_at_its_first_offset_even_inside_a_batch():
    # first offset 11 is the batch's last offset (10..11), not its base: the batch is hidden
    v = Visibility(READ_COMMITTED, [AbortedTransaction(7, 11, 20)])
    assert v.shows(header(8, 2, producer_id=7, attributes=TXN)) is True          # 8..9: before the transaction
    assert v.shows(header(10, 2, producer_id=7, attributes=TXN)) is False


def test_the_pending_list_is_ordered_by_first_offset_not_producer_id():
    # producer 50's transaction starts at 5; producer 3's at 100: reaching offset 5 aborts only 50
    v = Visibility(READ_COMMITTED, [AbortedTransaction(3, 100, 110), AbortedTransaction(50, 5, 8)])
    assert v.shows(header(5, producer_id=50, attributes=TXN)) is False
    assert v.shows(header(6, producer_id=3, attributes=TXN)) is True


def test_a_commit_marker_does_not_end_an_abort_and_uncommitted_reads_see_everything():
    v = Visibility(READ_COMMITTED, [AbortedTransaction(7, 0, 5)])
    assert v.shows(header(0, producer_id=7, attributes=TXN)) is False
    assert v.shows(header(1, producer_id=7, attributes=TXN | CONTROL), COMMIT_KEY) is False
    assert v.shows(header(2, producer_id=7, attributes=TXN)) is False
    u = Visibility(READ_UNCOMMITTED, [AbortedTransaction(7, 0, 5)])
    assert u.shows(header(0, producer_id=7, attributes=TXN)) is True
    assert u.shows(header(1, producer_id=7, attributes=TXN | CONTROL), ABORT_KEY) is False


def test_an_unknown_isolation_level_is_named():
    with pytest.raises(ValueError, match="unknown isolation level 'read_everything'"):
        Visibility("read_everything")


def test_marker_type_needs_four_bytes():
    assert marker_type(None) is None
    assert marker_type(b"\x00\x00\x00") is None
    assert marker_type(ABORT_KEY) == 0 and marker_type(COMMIT_KEY) == 1
    assert marker_type(struct.pack(">hh", 7, 1) + b"junk") == 1


# -- the last stable offset -----------------------------------------------------------------------

def snapshot(*entries: tuple[int, int]) -> bytes:
    """Version 1 producer snapshot with (producer id, currentTxnFirstOffset) entries."""
    body = b"".join(struct.pack(">qhiqiqiq", pid, 0, 0, 0, 0, 0, 0, first) for pid, first in entries)
    return struct.pack(">hIi", 1, 0, len(entries)) + body


def test_open_transactions_from_a_snapshot():
    assert open_transactions(snapshot((5, 40), (6, -1), (0, 0))) == {5: 40, 0: 0}
    assert open_transactions(snapshot()) == {}
    whole = snapshot((5, 40))
    assert open_transactions(whole[:-1]) == {}                       # one byte short: not parsed
    assert open_transactions(whole + b"x") == {5: 40}                # trailing bytes: entries still read
    assert open_transactions(struct.pack(">hIi", 2, 0, 0)) == {}     # another version
    assert open_transactions(struct.pack(">hIi", 1, 0, -1)) == {}    # a negative count
    assert open_transactions(whole[:9]) == {}                        # a header one byte short


def test_last_stable_offset_at_the_high_watermark_boundary():
    headers = [header(10, producer_id=5, attributes=TXN), header(20, producer_id=6, attributes=TXN)]
    assert last_stable_offset({}, headers, 20) == 10
    assert last_stable_offset({}, headers[1:], 20) == 20          # a batch at the high watermark is not read
    assert last_stable_offset({}, headers[1:], 21) == 20
    assert last_stable_offset({5: 3}, [header(10, producer_id=5, attributes=TXN)], 30) == 3     # first stays
    assert last_stable_offset({5: 3}, [header(10, producer_id=5, attributes=TXN | CONTROL)], 30) == 30
    assert last_stable_offset({}, [header(10, producer_id=5)], 30) == 30     # not transactional



def test_a_snapshot_of_another_version_gives_nothing_even_with_entries():
    entries = snapshot((5, 40))
    assert open_transactions(struct.pack(">h", 2) + entries[2:]) == {}


def test_a_marker_at_the_high_watermark_is_not_read_and_one_without_an_open_transaction_is_harmless():
    marker = header(30, producer_id=5, attributes=TXN | CONTROL)
    assert last_stable_offset({5: 3}, [marker], 30) == 3        # the marker is not below the high watermark yet
    assert last_stable_offset({5: 3}, [marker], 31) == 31
    assert last_stable_offset({}, [marker], 31) == 31           # a marker for a producer with nothing open


# -- a partition's verdicts -----------------------------------------------------------------------

def test_a_topic_turned_off_has_no_eligible_segment_and_says_why():
    from tiering.kafka.checkpoints import TopicPartition
    from tiering.kafka.logdir import LocalPartition, LogDirState
    # the rolled segment with its producer snapshot (taken at the next base offset), so that
    # only the turn-off can hold it back
    rolled = dataclasses.replace(segment(0, 10), snapshot_path=Path("/l/orders-0/00000000000000000010.snapshot"))
    partition = LocalPartition(Path("/l"), "orders", 0, Path("/l/orders-0"), "4A8VWD3ZTJa4i2ZbnSPb8A", None,
                               (rolled, segment(10, None)))
    state = LogDirState(Path("/l"), {TopicPartition("orders", 0): 100})
    assert [v.eligible for _, v in plan_partition(partition, state, TopicFilter())] == [True, False]
    verdicts = plan_partition(partition, state, TopicFilter(), frozenset({"orders"}))
    assert [v for _, v in verdicts] == [Verdict(False, "tiering turned off for this topic (tiering resume re-enables it)")] * 2
    compacted = LogDirState(Path("/l"), {TopicPartition("orders", 0): 100}, frozenset({TopicPartition("orders", 0)}))
    assert plan_partition(partition, compacted, TopicFilter())[0][1] == Verdict(
        False, "compacted topic (listed in cleaner-offset-checkpoint; Kafka never tiers them)")
