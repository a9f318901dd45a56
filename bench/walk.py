"""The integrity walk alone: CPU per batch and per GB at 1 KiB, 16 KiB and 1 MiB batches.

Method: a 64 MiB segment of identical batches of the given size (record values of random
bytes; each copy's base offset patched, which the CRC does not cover) held in memory, walked
by the one-pass walker in 16 MiB pieces (as the upload feeds it its parts) and, for
comparison, by the batch-at-a-time walk it replaced (tests/oracle_walk.py, reading the same
bytes through a file object). Best of 3 of process CPU time each; no disk, no network.
"""

from __future__ import annotations

import io
import os
import struct
import time

from bench.machine import describe, save_result
from tiering.kafka.records import build_batch
from tiering.kafka.walk import SegmentWalker

SEGMENT_BYTES = 64 * 1024 * 1024
PIECE_BYTES = 16 * 1024 * 1024
BATCH_SIZES = (1024, 16 * 1024, 1024 * 1024)


def make_segment(batch_bytes: int) -> tuple[bytes, int]:
    records = max(1, batch_bytes // 1024)
    value = max(1, (batch_bytes - 61) // records - 12)
    batch = build_batch(0, [(1_700_000_000_000, None, os.urandom(value), ()) for _ in range(records)])
    count = SEGMENT_BYTES // len(batch)
    data = bytearray(batch * count)
    for i in range(count):
        struct.pack_into(">q", data, i * len(batch), i * records)
    return bytes(data), count


def walk_new(data: bytes) -> None:
    view = memoryview(data)
    walker = SegmentWalker(len(data), 0, None)
    for at in range(0, len(data), PIECE_BYTES):
        walker.feed(view[at:at + PIECE_BYTES])
    walker.finish()


def walk_old(data: bytes) -> None:
    from tests.oracle_walk import scan_segment
    scan_segment(io.BytesIO(data), len(data), 0, None)


def best_cpu(fn, data: bytes) -> float:
    times = []
    for _ in range(3):
        started = time.process_time()
        fn(data)
        times.append(time.process_time() - started)
    return min(times)


def main(args) -> int:
    rows = []
    for size in BATCH_SIZES:
        data, count = make_segment(size)
        row = {"batch_bytes": len(data) // count, "batches": count}
        for name, fn in (("one_pass", walk_new), ("batch_at_a_time", walk_old)):
            cpu = best_cpu(fn, data)
            row[name] = {"us_per_batch": cpu / count * 1e6, "cpu_seconds_per_gb": cpu / (len(data) / 1e9)}
        rows.append(row)
    result = {"benchmark": "walk", "machine": describe(), "segment_bytes": SEGMENT_BYTES,
              "piece_bytes": PIECE_BYTES, "rows": rows}
    if not save_result("walk", result, args.json):
        return 0
    m = result["machine"]
    print(f"integrity walk alone: {SEGMENT_BYTES >> 20} MiB segment in memory, best of 3 (process CPU)")
    print(f"machine: {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}, Python {m['python']}")
    print(f"{'batch':>10}{'batches':>9}{'one-pass us/batch':>19}{'CPU s/GB':>10}{'old us/batch':>14}{'CPU s/GB':>10}")
    for r in rows:
        print(f"{r['batch_bytes']:>10}{r['batches']:>9}{r['one_pass']['us_per_batch']:>19.3f}"
              f"{r['one_pass']['cpu_seconds_per_gb']:>10.3f}{r['batch_at_a_time']['us_per_batch']:>14.3f}"
              f"{r['batch_at_a_time']['cpu_seconds_per_gb']:>10.3f}")
    return 0
