"""The one-pass walker (fed a segment piece by piece, batches straddling pieces) against the
batch-at-a-time walk it replaced (tests/oracle_walk.py): on random segments, batch sizes,
piece sizes and corruptions, both accept with the same summary or refuse at the same byte for
the same reason."""

from __future__ import annotations

import io
import os
import struct

import crc32c
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.oracle_walk import scan_segment as oracle_scan
from tiering.checksums import crc32c_combine
from tiering.kafka.batches import CorruptSegment
from tiering.kafka.records import build_batch
from tiering.kafka.walk import SegmentWalker

WALK = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def oracle(data: bytes, size: int, base: int, next_offset: int | None):
    try:
        return oracle_scan(io.BytesIO(data), size, base, next_offset)
    except CorruptSegment as exc:
        return ("corrupt", exc.position, exc.reason)


def walked(data: bytes, size: int, base: int, next_offset: int | None, pieces: list[int]):
    """Feed `data` in pieces of the given sizes (the last repeated); a short file ends early."""
    walker = SegmentWalker(size, base, next_offset)
    try:
        at, k = 0, 0
        while at < len(data):
            n = pieces[min(k, len(pieces) - 1)]
            piece = data[at:at + n]
            assert walker.feed(memoryview(piece)) == crc32c.crc32c(piece)
            at += len(piece)
            k += 1
        return walker.finish()
    except CorruptSegment as exc:
        return ("corrupt", exc.position, exc.reason)


@st.composite
def segments(draw):
    base = draw(st.sampled_from([0, 100, 2**40]))
    offset, epoch, out = base, draw(st.integers(-1, 3)), bytearray()
    for _ in range(draw(st.integers(0, 12))):
        count = draw(st.integers(1, 4))
        value = draw(st.integers(0, 3000))
        epoch = max(epoch, draw(st.integers(-1, epoch + 1))) if draw(st.booleans()) else epoch
        records = [(1_000 + offset + j, None, b"v" * value, ()) for j in range(count)]
        out += build_batch(offset, records, leader_epoch=epoch)
        offset += count + draw(st.integers(0, 2))          # gaps, as compaction leaves them
    return base, bytes(out), offset + draw(st.integers(0, 2))


@st.composite
def corruption(draw, data: bytes):
    """One of the corruptions the batch tests plant, or none."""
    kind = draw(st.sampled_from(["none", "flip", "truncate", "length", "offset", "epoch", "magic", "shrink"]))
    data = bytearray(data)
    if not data or kind == "none":
        return bytes(data), len(data)
    batch_starts, at = [], 0
    while at + 12 <= len(data):
        batch_starts.append(at)
        at += 12 + int.from_bytes(data[at + 8:at + 12], "big")
    start = draw(st.sampled_from(batch_starts))
    if kind == "flip":
        for _ in range(draw(st.integers(1, 3))):
            data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
    elif kind == "truncate":
        del data[draw(st.integers(0, len(data) - 1)):]
    elif kind == "length":
        struct.pack_into(">i", data, start + 8, draw(st.integers(-2**31, 2**31 - 1)))
    elif kind == "offset":
        struct.pack_into(">q", data, start, draw(st.sampled_from([-1, 0, 99, 2**63 - 1, -2**63])))
    elif kind == "epoch":
        struct.pack_into(">i", data, start + 12, draw(st.integers(-3, 5)))
    elif kind == "magic":
        data[start + 16] = draw(st.sampled_from([0, 1, 3]))
    elif kind == "shrink":      # the file is shorter than the size it had when the walk began
        return bytes(data[:draw(st.integers(0, len(data) - 1))]), len(data)
    return bytes(data), len(data)


@WALK
@given(st.data())
def test_the_one_pass_walker_agrees_with_the_batch_at_a_time_walk(data):
    base, segment, next_offset = data.draw(segments())
    corrupted, size = data.draw(corruption(segment))
    pieces = data.draw(st.lists(st.integers(1, 9000), min_size=1, max_size=4))
    bound = data.draw(st.sampled_from([next_offset, None]))
    assert walked(corrupted, size, base, bound, pieces) == oracle(corrupted, size, base, bound)


def test_a_batch_straddling_three_pieces_and_a_header_cut_in_two():
    batches = [build_batch(10 * i, [(1, None, b"x" * 5000, ())], leader_epoch=i) for i in range(3)]
    data = b"".join(batches)
    summary = oracle(data, len(data), 0, 30)
    # 30: the first header cut after 30 bytes; 2000: the first batch's body over three pieces
    assert walked(data, len(data), 0, 30, [30, 2000, 2000, 7]) == summary
    assert summary.batch_count == 3 and summary.leader_epochs == ((0, 0), (1, 10), (2, 20))


def test_one_corrupt_batch_among_many_is_reported_where_it_is():
    batches = [build_batch(i, [(1, None, b"x" * 100, ())]) for i in range(500)]
    data = bytearray(b"".join(batches))
    at = sum(len(b) for b in batches[:321]) + 70
    data[at] ^= 0x10
    assert walked(bytes(data), len(data), 0, 500, [1 << 20])[:2] == ("corrupt", at - 70)


@pytest.mark.parametrize("split", [0, 1, 7, 4096])
def test_crc32c_combine_is_the_crc_of_the_concatenation(split):
    data = os.urandom(5000)
    first, second = data[:split], data[split:]
    assert crc32c_combine(crc32c.crc32c(first), crc32c.crc32c(second), len(second)) == crc32c.crc32c(data)


def test_offsets_at_the_ends_of_int64_are_walked_as_exactly_as_the_old_walk():
    top = 2**63 - 1
    # the second batch's last offset (top + 1) is past int64: the old walk took it as it is
    data = build_batch(top - 5, [(1, None, b"x", ())]) + build_batch(top, [(1, None, b"y", ())] * 2)
    for bound in (None, top, top + 2):
        for pieces in ([len(data)], [50], [len(data) // 2 + 3]):
            assert walked(data, len(data), 0, bound, pieces) == oracle(data, len(data), 0, bound)
    following = data + build_batch(7, [(1, None, b"z", ())])
    assert walked(following, len(following), 0, None, [len(data), 100])[0] == "corrupt"
