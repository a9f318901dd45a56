"""The batch walk at its exact boundaries: every refusal's position and message in full, a batch
ending at the last offset the segment may hold, one starting at the previous batch's last
offset, a header with exactly its own size left, a file that shrinks while it is read, and
a stream that hands over a few bytes at a time."""

from __future__ import annotations

import io
import struct

import crc32c
import pytest

from tests.unit.test_batches import segment
from tiering.kafka import batches
from tiering.kafka.batches import HEADER_SIZE, CorruptSegment, parse_header, scan_segment
from tiering.kafka.records import build_batch

SEGMENT = segment(5)                  # offsets 100..114, three records a batch, epochs 0 0 1 1 2
FIRST = parse_header(SEGMENT).size    # where the second batch starts


def scan(data: bytes, base: int = 100, next_offset: int | None = 115, size: int | None = None):
    return scan_segment(io.BytesIO(data), len(data) if size is None else size, base, next_offset)


def refusal(data: bytes, **kw) -> tuple[int, str]:
    with pytest.raises(CorruptSegment) as raised:
        scan(data, **kw)
    assert str(raised.value) == f"at byte {raised.value.position}: {raised.value.reason}"
    return raised.value.position, raised.value.reason


def test_an_empty_segment_has_no_offsets_and_no_timestamp():
    summary = scan(b"", next_offset=None)
    assert (summary.size, summary.batch_count, summary.record_count, summary.first_offset, summary.last_offset,
            summary.max_timestamp, summary.leader_epochs, summary.crc32c) == (0, 0, 0, None, None, -1, (), 0)


def test_the_summary_counts_every_byte():
    summary = scan(SEGMENT)
    assert summary.size == len(SEGMENT) and summary.crc32c == crc32c.crc32c(SEGMENT)


def test_the_last_batch_may_end_at_the_segments_last_offset_and_not_at_its_next():
    assert scan(SEGMENT, next_offset=115).last_offset == 114
    assert refusal(SEGMENT, next_offset=114) == (4 * FIRST, "batch last offset 114 outside the segment [100, 114)")


def test_a_batch_starting_at_the_previous_batchs_last_offset_is_out_of_order():
    one = build_batch(100, [(1, None, b"a", ()), (2, None, b"b", ())])     # 100, 101
    assert scan(one + build_batch(102, [(3, None, b"c", ())]), next_offset=103).batch_count == 2
    assert refusal(one + build_batch(101, [(3, None, b"c", ())]), next_offset=103) == \
        (len(one), "batch offset 101 out of order")


def test_a_header_with_exactly_its_size_left_is_read_and_its_batch_found_short():
    data = SEGMENT[:FIRST + HEADER_SIZE]
    declared = parse_header(SEGMENT, FIRST).size
    assert refusal(data) == (FIRST, f"truncated batch: {declared} bytes declared, {HEADER_SIZE} left in the file")
    assert refusal(SEGMENT[:FIRST + HEADER_SIZE - 1]) == (FIRST, f"truncated batch header ({HEADER_SIZE - 1} bytes left)")


def test_every_refusal_names_its_batchs_position():
    data = bytearray(SEGMENT)
    data[FIRST + 16] = 1
    assert refusal(bytes(data)) == (FIRST, "magic 1, expected 2 (only the v2 message format can be tiered)")
    data = bytearray(SEGMENT)
    struct.pack_into(">i", data, FIRST + 8, HEADER_SIZE - 13)
    assert refusal(bytes(data)) == (FIRST, f"batch length {HEADER_SIZE - 13} is below the minimum")
    struct.pack_into(">i", data, FIRST + 8, HEADER_SIZE - 12)          # exactly a header: no records, a CRC
    position, reason = refusal(bytes(data))
    assert position == FIRST and reason.startswith("CRC-32C mismatch in batch at offset 103 ")
    data = bytearray(SEGMENT)
    data[FIRST + 30] ^= 1
    stored = parse_header(SEGMENT, FIRST).crc
    computed = crc32c.crc32c(bytes(data[FIRST + 21:FIRST + parse_header(SEGMENT, FIRST).size]))
    assert refusal(bytes(data)) == (FIRST, f"CRC-32C mismatch in batch at offset 103 (stored {stored:08x}, "
                                           f"computed {computed:08x})")


def test_a_leader_epoch_going_back_names_the_last_epoch_seen():
    data = b"".join(build_batch(100 + i, [(1, None, b"v", ())], leader_epoch=e) for i, e in enumerate((0, 1, 2, 1)))
    position, reason = refusal(data, next_offset=104)
    assert position == 3 * len(build_batch(100, [(1, None, b"v", ())])) and reason == "leader epoch goes back from 2 to 1"


@pytest.mark.parametrize("keep", [FIRST + 10, FIRST + HEADER_SIZE + 7, len(SEGMENT) - 1])
def test_a_file_that_shrinks_while_it_is_read_is_refused_where_it_ended(keep, monkeypatch):
    # A small read block, so a batch body is read in several pieces (as a big one is).
    monkeypatch.setattr(batches, "_READ_BLOCK", 64)
    assert refusal(SEGMENT[:keep], size=len(SEGMENT)) == (keep, "file ended early (it shrank while being read)")


def test_bodies_read_in_pieces_give_the_same_summary(monkeypatch):
    whole = scan(SEGMENT)
    monkeypatch.setattr(batches, "_READ_BLOCK", 64)
    assert scan(SEGMENT) == whole


class Trickle(io.RawIOBase):
    """A stream that hands over at most 5 bytes per read, as a pipe or a network file may."""

    def __init__(self, data: bytes):
        self.data, self.at = data, 0

    def readable(self):
        return True

    def readinto(self, target):
        piece = self.data[self.at:self.at + min(5, len(target))]
        target[:len(piece)] = piece
        self.at += len(piece)
        return len(piece)


def test_short_reads_are_put_together():
    assert scan_segment(Trickle(SEGMENT), len(SEGMENT), 100, 115) == scan(SEGMENT)


def test_the_largest_timestamp_of_all_batches_is_kept():
    data = build_batch(100, [(50, None, b"v", ())]) + build_batch(101, [(7, None, b"v", ())])
    assert scan(data, next_offset=102).max_timestamp == 50
    assert scan(build_batch(100, [(-1, None, b"v", ())]), next_offset=101).max_timestamp == -1
