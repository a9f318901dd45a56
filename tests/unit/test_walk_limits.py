"""The one-pass walker at the exact limits of its checks, against the batch-at-a-time walk
(tests/oracle_walk.py): first offset at the segment's base or one below, each batch's base
one past the last offset before it or on it (within a piece and across pieces), a last
offset one below the next segment's base or on it, leader epochs equal, rising, going back
or negative, a header-only batch (what the log cleaner keeps of a producer's last batch)
ending a piece, and offsets at the edge of the range the vectorised checks take.

The walker checks a piece's whole batches all at once (numpy) and walks them again one by
one only when a check fails there. Valid batches within that range must be accepted by the
checks at once: the walk exists to be cheap per batch, and a check that refuses valid input
would only show as the slow path, so each valid case here also asserts that it was not taken.
"""

from __future__ import annotations

import io
import struct

import crc32c
import pytest

from tests.oracle_walk import scan_segment as oracle_scan
from tiering.kafka.batches import CRC_START, HEADER_SIZE, LOG_OVERHEAD, CorruptSegment
from tiering.kafka.records import build_batch
from tiering.kafka.walk import _SAFE, SegmentWalker


class _Counting(SegmentWalker):
    """The walker, counting the pieces whose batches had to be walked one by one."""

    slow = 0

    def _one_by_one(self, view, starts, crcs, start):
        self.slow += 1
        return super()._one_by_one(view, starts, crcs, start)


def batch(base: int, count: int = 1, *, epoch: int = 0, ts: int = 1_000, delta: int | None = None,
          magic: int | None = None) -> bytes:
    data = bytearray(build_batch(base, [(ts + j, None, b"v" * 20, ()) for j in range(count)], leader_epoch=epoch))
    if delta is not None:
        struct.pack_into(">i", data, 23, delta)
    if magic is not None:
        data[16] = magic
    struct.pack_into(">I", data, 17, crc32c.crc32c(bytes(data[CRC_START:])))
    return bytes(data)


def header_only(base: int, *, delta: int = 0, epoch: int = 0) -> bytes:
    """A batch of no records: its header alone (a batch the log cleaner emptied but kept for its
    producer's state)."""
    data = bytearray(build_batch(base, [(1_000, None, b"", ())], leader_epoch=epoch)[:HEADER_SIZE])
    struct.pack_into(">i", data, 8, HEADER_SIZE - LOG_OVERHEAD)
    struct.pack_into(">i", data, 23, delta)
    struct.pack_into(">i", data, 57, 0)
    struct.pack_into(">I", data, 17, crc32c.crc32c(bytes(data[CRC_START:])))
    return bytes(data)


def oracle(data: bytes, base: int, next_offset: int | None):
    try:
        return oracle_scan(io.BytesIO(data), len(data), base, next_offset)
    except CorruptSegment as exc:
        return ("corrupt", exc.position, exc.reason)


def walked(data: bytes, base: int, next_offset: int | None, cuts: list[int]):
    """Fed in pieces ending at `cuts` (file positions) and at the end; (result, slow pieces)."""
    walker = _Counting(len(data), base, next_offset)
    try:
        at = 0
        for end in [*cuts, len(data)]:
            walker.feed(memoryview(data[at:end]))
            at = end
        return walker.finish(), walker.slow
    except CorruptSegment as exc:
        return ("corrupt", exc.position, exc.reason), walker.slow


def feedings(batches: list[bytes]) -> list[list[int]]:
    """Whole; cut at each batch's end (the next piece starts with a whole batch); cut inside
    the second batch's header."""
    ends, at = [], 0
    for b in batches[:-1]:
        at += len(b)
        ends.append(at)
    out = [[]] + [[end] for end in ends]
    if len(batches) > 1:
        out.append([ends[0] + 30])
    return out


VALID = {
    # first offset on the segment's base, each next one just past the last, the last offset
    # just below the next segment's base
    "adjacent": (100, 107, [batch(100), batch(101, 3), batch(104, 2), batch(106)]),
    "a gap before the next segment": (0, 10, [batch(0, 2), batch(5)]),
    "a header-only batch ends the file": (0, 5, [batch(0), header_only(1), batch(2, 2), header_only(4)]),
    "leader epochs rising, equal, after none": (0, 10, [batch(0, epoch=-1), batch(1, epoch=-1), batch(2, epoch=1),
                                                         batch(3, epoch=1), batch(4, epoch=3), batch(5, epoch=3)]),
    "negative offsets": (-10, -5, [batch(-10), batch(-9, 2), batch(-7, 2)]),
    "offsets at the range's low end": (-_SAFE, -_SAFE + 4, [batch(-_SAFE), batch(-_SAFE + 1, 3)]),
    "offsets at the range's high end": (_SAFE - 5, _SAFE + 3, [batch(_SAFE - 5, 3), batch(_SAFE - 2, 2),
                                                                 batch(_SAFE, 3)]),
    "timestamps falling": (0, None, [batch(0, ts=9_000), batch(1, ts=5_000), batch(2, ts=7_000)]),
}


@pytest.mark.parametrize("name", VALID)
def test_valid_batches_at_the_limits_are_accepted_at_once(name):
    base, next_offset, batches = VALID[name]
    data = b"".join(batches)
    expected = oracle(data, base, next_offset)
    assert not isinstance(expected, tuple)
    for cuts in feedings(batches):
        assert walked(data, base, next_offset, cuts) == (expected, 0), cuts


INVALID = {
    "first offset below the segment's base": (100, None, [batch(99), batch(100)]),
    "an offset on the last one": (0, None, [batch(0, 3), batch(2)]),
    "an offset on the last one but one": (0, None, [batch(0), batch(5, 5), batch(7)]),
    "last offset on the next segment's base": (0, 4, [batch(0, 2), batch(2, 3)]),
    "a negative last offset delta": (0, None, [batch(0), batch(1, delta=-1)]),
    "an older leader epoch": (0, None, [batch(0, epoch=5), batch(10, epoch=3)]),
    "no leader epoch after one": (0, None, [batch(0, epoch=0), batch(1, epoch=-1)]),
    "magic 1": (0, None, [batch(0), batch(1, magic=1)]),
    "magic 3": (0, None, [batch(0), batch(1, magic=3)]),
    "a wrong CRC": (0, None, [batch(0), batch(1)[:-1] + b"w"]),
    "a negative next segment's base": (-10, -7, [batch(-10), batch(-7)]),
    "past the range's low end": (-_SAFE - 1, None, [batch(-_SAFE - 1), batch(-_SAFE - 1)]),
}


@pytest.mark.parametrize("name", INVALID)
def test_batches_just_past_the_limits_are_refused_where_the_old_walk_refused_them(name):
    base, next_offset, batches = INVALID[name]
    data = b"".join(batches)
    expected = oracle(data, base, next_offset)
    assert isinstance(expected, tuple)
    for cuts in feedings(batches):
        assert walked(data, base, next_offset, cuts)[0] == expected, cuts


def test_feeding_more_than_the_segment_holds_is_refused():
    data = batch(0, 2)
    walker = SegmentWalker(len(data) - 1, 0, None)
    walker.feed(memoryview(data[:40]))
    with pytest.raises(ValueError, match=f"^fed {len(data)} bytes of a {len(data) - 1}-byte segment$"):
        walker.feed(memoryview(data[40:]))
    exact = SegmentWalker(len(data), 0, None)
    exact.feed(memoryview(data[:40]))
    exact.feed(memoryview(data[40:]))
    assert exact.finish().batch_count == 1


@pytest.mark.parametrize("kind", [bytes, bytearray])
def test_pieces_given_as_bytes_are_walked_as_views_are(kind):
    batches = [batch(0, 2, epoch=1), batch(2, epoch=2), header_only(3, epoch=2)]
    data = b"".join(batches)
    walker = SegmentWalker(len(data), 0, 4)
    for at, end in ((0, 30), (30, 200), (200, len(data))):
        assert walker.feed(kind(data[at:end])) == crc32c.crc32c(data[at:end])
    assert walker.finish() == oracle(data, 0, 4)
