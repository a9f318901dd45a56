"""The active segment walked incrementally (tiering.serve.active): its log end and last stable
offset equal a whole walk's (tiering.read.offsets.last_stable_offset, the reader's) after every
append, at every high watermark; a batch still being written is not counted; a truncated and
rewritten segment, or a high watermark gone down, starts the walk over."""

from __future__ import annotations

import random
import struct

import crc32c

from tiering.kafka.batches import HEADER_SIZE, parse_header
from tiering.kafka.names import segment_file_name
from tiering.kafka.records import CONTROL_ABORT, CONTROL_COMMIT, build_batch, control_record
from tiering.read.offsets import last_stable_offset, open_transactions
from tiering.serve.active import ActiveScan

BASE = 100


def plain(offset: int, n: int = 3) -> bytes:
    return build_batch(offset, [(1000 + offset + i, b"k", b"v" * 20, ()) for i in range(n)])


def txn(offset: int, producer_id: int) -> bytes:
    return build_batch(offset, [(1000 + offset, b"k", b"t", ())], producer_id=producer_id, producer_epoch=0,
                       base_sequence=0, transactional=True)


def marker(offset: int, producer_id: int, commit: bool = True) -> bytes:
    key, value = control_record(CONTROL_COMMIT if commit else CONTROL_ABORT)
    return build_batch(offset, [(1000 + offset, key, value, ())], producer_id=producer_id, producer_epoch=0,
                       transactional=True, control=True)


def headers_of(data: bytes):
    position = 0
    while position + HEADER_SIZE <= len(data):
        header = parse_header(data[position:position + HEADER_SIZE])
        if position + header.size > len(data):
            return
        yield header
        position += header.size


def snapshot(open_txns: dict[int, int]) -> bytes:
    entries = b"".join(struct.pack(">qhiqiqiq", pid, 0, 0, first, 0, 0, 0, first) for pid, first in open_txns.items())
    body = struct.pack(">i", len(open_txns)) + entries
    return struct.pack(">hI", 1, crc32c.crc32c(body)) + body


def test_incremental_log_end_and_lso_equal_a_whole_walk_after_every_append_at_every_high_watermark(tmp_path):
    path = tmp_path / segment_file_name(BASE, "log")
    (tmp_path / segment_file_name(BASE, "snapshot")).write_bytes(snapshot({7: 90}))   # open since before
    path.write_bytes(b"")
    scan = ActiveScan.start(path, BASE)
    rng = random.Random(3)
    offset, open_now = BASE, {}
    for step in range(120):
        choice = rng.random()
        if choice < 0.4:
            batch, n = plain(offset), 3
        elif choice < 0.7:
            pid = rng.choice([1, 2, 3])
            batch, n = txn(offset, pid), 1
            open_now.setdefault(pid, offset)
        else:
            pid = rng.choice([1, 2, 3, 7])
            batch, n = marker(offset, pid, commit=rng.random() < 0.5), 1
            open_now.pop(pid, None)
        with open(path, "ab") as f:
            f.write(batch)
        offset += n
        data = path.read_bytes()
        ends = [BASE] + [h.last_offset + 1 for h in headers_of(data)]
        # The high watermark anywhere in what is written, rising (as the broker's does).
        high_watermark = rng.choice([e for e in ends if e >= scan.applied_until] or [ends[-1]])
        scan.refresh(high_watermark)
        assert scan.log_end == offset
        whole = last_stable_offset({7: 90}, headers_of(data), high_watermark)
        assert scan.last_stable_offset(high_watermark) == whole, step
    assert open_transactions(snapshot({7: 90})) == {7: 90}


def test_a_batch_still_being_written_is_not_counted(tmp_path):
    path = tmp_path / segment_file_name(BASE, "log")
    first, second = plain(BASE), plain(BASE + 3)
    path.write_bytes(first + second[:HEADER_SIZE + 5])
    scan = ActiveScan.start(path, BASE)
    scan.refresh(None)
    assert scan.log_end == BASE + 3
    path.write_bytes(first + second[:-1])          # one byte short
    scan.refresh(None)
    assert scan.log_end == BASE + 3
    path.write_bytes(first + second)
    scan.refresh(None)
    assert scan.log_end == BASE + 6


def test_a_truncated_and_rewritten_segment_or_a_lower_high_watermark_starts_over(tmp_path):
    path = tmp_path / segment_file_name(BASE, "log")
    old = plain(BASE) + txn(BASE + 3, 5) + plain(BASE + 4)
    path.write_bytes(old)
    scan = ActiveScan.start(path, BASE)
    scan.refresh(BASE + 7)
    assert (scan.log_end, scan.last_stable_offset(BASE + 7)) == (BASE + 7, BASE + 3)
    # A leader change: the broker truncates to offset 103 and the new leader's batches follow;
    # the file grew (its size alone does not tell).
    new = plain(BASE) + plain(BASE + 3, n=1) + plain(BASE + 4, n=3)
    path.write_bytes(new + plain(BASE + 7))
    scan.refresh(BASE + 10)
    assert (scan.log_end, scan.last_stable_offset(BASE + 10)) == (BASE + 10, BASE + 10)
    # Truncated below what was walked, same content up to there.
    path.write_bytes(plain(BASE))
    scan.refresh(BASE + 3)
    assert (scan.log_end, scan.last_stable_offset(BASE + 3)) == (BASE + 3, BASE + 3)
    # The high watermark below what was applied: walked again up to it.
    path.write_bytes(plain(BASE) + txn(BASE + 3, 6) + plain(BASE + 4))
    scan.refresh(BASE + 7)
    assert scan.last_stable_offset(BASE + 7) == BASE + 3
    scan.refresh(BASE + 3)
    assert scan.last_stable_offset(BASE + 3) == BASE + 3


def test_a_batch_rewritten_at_the_same_position_with_the_same_base_offset_is_told_by_its_crc(tmp_path):
    path = tmp_path / segment_file_name(BASE, "log")
    path.write_bytes(plain(BASE) + plain(BASE + 3))
    scan = ActiveScan.start(path, BASE)
    scan.refresh(BASE + 6)
    assert scan.log_end == BASE + 6
    path.write_bytes(plain(BASE) + txn(BASE + 3, 9) + plain(BASE + 4))
    scan.refresh(BASE + 7)
    assert (scan.log_end, scan.last_stable_offset(BASE + 7)) == (BASE + 7, BASE + 3)


def test_a_high_watermark_gone_down_on_an_unchanged_file_walks_again_up_to_it(tmp_path):
    path = tmp_path / segment_file_name(BASE, "log")
    path.write_bytes(plain(BASE) + txn(BASE + 3, 5) + marker(BASE + 4, 5))
    scan = ActiveScan.start(path, BASE)
    scan.refresh(BASE + 5)
    assert scan.last_stable_offset(BASE + 5) == BASE + 5          # the marker is below it: closed
    scan.refresh(BASE + 4)                                         # a new leader's lower high watermark
    assert scan.last_stable_offset(BASE + 4) == BASE + 3          # the marker is not: open again
