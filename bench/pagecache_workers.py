"""The processes of the page-cache benchmark, each started by bench/pagecache.py:

    python -m bench.pagecache_workers hot SPEC          a producer, and consumer groups tailing it
    python -m bench.pagecache_workers untiered SPEC     the backfill, plain reads of local files
    python -m bench.pagecache_workers tiered SPEC       the backfill, through the tiered reader

SPEC is a JSON file. Each process joins the experiment's memory cgroup (when there is one)
once it is set up and before it reads any data, so that every page it reads in is charged to
the experiment's page-cache budget. Its set-up (imports, the tiered reader's store client and
buffer pool, faulted in whole) happens before, outside the cgroup: memory allocated in a burst
inside it would force the kernel to reclaim page cache before the limit could follow. Each
records what it read as a trace (numpy array, one row per read: time, file number, first page,
pages, pages resident before the read, seconds, kind) and prints a JSON summary last.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from bench.cachelimit import join
from bench.cachesim import BYPASS, DROPPED, KINDS_BY_NUMBER
from tiering.kafka.batches import HEADER_SIZE, parse_header
from tiering.read.pagecache import PAGE, cached_pages

# A trace row: time (CLOCK_MONOTONIC, the same in every process), file number in the spec's
# `files`, first page, pages, pages resident before the read (-1: not looked), seconds the read
# took (WRITE for the producer's appends), kind (cachesim.KINDS_BY_NUMBER).
TRACE_COLUMNS = 7
WRITE = -1.0   # the seconds column of the producer's appends (not reads: nothing is measured)


def _pages(position: int, length: int) -> tuple[int, int]:
    """First page and number of pages of the byte range."""
    first = position // PAGE
    return first, (position + length - 1) // PAGE - first + 1


def _load(spec_path: str) -> dict:
    return json.loads(Path(spec_path).read_text())


def _join(spec: dict) -> None:
    if spec.get("procs_file"):
        join(spec["procs_file"])


def _save(spec: dict, rows: list[tuple], summary: dict) -> None:
    np.save(spec["out"], np.array(rows, dtype=np.float64).reshape(-1, TRACE_COLUMNS))
    summary["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(summary), flush=True)


def hot(spec_path: str) -> int:
    """The broker's hot side: a producer appends to the active segment of every partition at
    spec["produce_rate"] bytes/s, and consumer groups tail each partition, every group
    spec["lags"][g] seconds behind the end, in reads of spec["read_bytes"]: the latest bytes of
    every partition are read once per group, the first time soon after they were written. The
    producer appends copies of the segment's first batch under new offsets (the CRC does not
    cover the base offset), so the segments stay valid Kafka logs."""
    spec = _load(spec_path)
    files, hot_files = spec["files"], spec["hot_files"]
    size = spec["read_bytes"]
    per_partition = spec["produce_rate"] / len(hot_files)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    writers = [os.open(files[n], os.O_WRONLY | os.O_APPEND) for n in hot_files]
    readers = [os.open(files[n], os.O_RDONLY) for n in hot_files]
    template = os.pread(readers[0], HEADER_SIZE, 0)
    template += os.pread(readers[0], parse_header(template).size - HEADER_SIZE, HEADER_SIZE)
    records = parse_header(template).last_offset_delta + 1
    next_offsets = list(spec["next_offsets"])
    ends = [os.fstat(fd).st_size for fd in readers]        # what consumers may read up to
    rows: list[tuple] = []
    _join(spec)

    def produce() -> None:
        started, done = time.monotonic(), 0
        while not stop.is_set():
            for p, fd in enumerate(writers):
                os.write(fd, next_offsets[p].to_bytes(8, "big") + template[8:])
                first, pages = _pages(ends[p], len(template))
                rows.append((time.monotonic(), hot_files[p], first, pages, -1, WRITE, 0))
                next_offsets[p] += records
                ends[p] += len(template)
                done += len(template)
            stop.wait(max(0.0, started + done / spec["produce_rate"] - time.monotonic()))

    def consume(lag: float) -> None:
        behind = int(lag * per_partition)
        positions = list(ends)     # a group starts at the end, and falls behind by `lag`
        while not stop.is_set():
            did = False
            for p, fd in enumerate(readers):
                while positions[p] + size <= ends[p] - behind and not stop.is_set():
                    # Looking first does not bring pages in: cachestat counts, it does not read.
                    first, pages = _pages(positions[p], size)
                    resident = cached_pages(fd, first * PAGE, pages * PAGE)[0]
                    before = time.perf_counter()
                    got = len(os.pread(fd, size, positions[p]))
                    seconds = time.perf_counter() - before
                    rows.append((time.monotonic(), hot_files[p], first, pages, resident, seconds, 0))
                    positions[p] += got
                    did = True
            if not did:
                stop.wait(0.01)

    threads = [threading.Thread(target=produce)] + [threading.Thread(target=consume, args=(lag,))
                                                     for lag in spec["lags"]]
    for thread in threads:
        thread.start()
    print("ready", flush=True)
    while not stop.wait(0.1):
        pass
    for thread in threads:
        thread.join()
    _save(spec, rows, {"reads": sum(1 for row in rows if row[5] != WRITE)})
    return 0


def untiered(spec_path: str) -> int:
    """A broker serving a lagging consumer: every backlog segment read once, in order, with
    plain reads of 1 MiB, at spec["rate"] bytes/s."""
    from tiering.upload.ratelimit import RateLimiter

    spec = _load(spec_path)
    limiter = RateLimiter(spec["rate"], time.monotonic)
    size = 1024 * 1024
    rows: list[tuple] = []
    total = 0
    _join(spec)
    started = time.monotonic()
    for n in spec["backlog_files"]:
        fd = os.open(spec["files"][n], os.O_RDONLY)
        try:
            offset = 0
            while True:
                limiter.charge(size)
                data = os.pread(fd, size, offset)
                if not data:
                    break
                rows.append((time.monotonic(), n, *_pages(offset, len(data)), -1, 0, 0))
                offset += len(data)
                total += len(data)
        finally:
            os.close(fd)
    _save(spec, rows, {"bytes": total, "started": started, "finished": time.monotonic()})
    return 0


def tiered(spec_path: str) -> int:
    """The same backfill through the tiered reader: each partition from offset 0 up to its hot
    segment, remote segments from the store and cold local ones through the buffer pool."""
    from tiering.config import load_config
    from tiering.wiring import open_reader

    spec = _load(spec_path)
    config = load_config(spec["config"])
    number = {path: n for n, path in enumerate(spec["files"])}
    rows: list[tuple] = []
    total = 0
    with open_reader(config) as reader:
        zeros = bytes(reader.pool.chunk_bytes)
        for slab in range(reader.pool.slab_count):
            reader.pool.slab_view(slab)[:] = zeros
        _join(spec)
        started = time.monotonic()
        for partition in spec["partitions"]:
            local = _local_segments(Path(partition["dir"]), partition["stop"], number)
            position, current = 0, None
            for batch in reader.batches(spec["topic"], partition["partition"], 0):
                if batch.header.base_offset >= partition["stop"]:
                    break
                total += len(batch.data)
                segment = _segment_of(local, batch.header.base_offset)
                if segment is None:
                    continue          # from the store: no local page is touched
                if segment != current:
                    current, position = segment, 0
                n, kind = segment[1], segment[2]
                rows.append((time.monotonic(), n, *_pages(position, len(batch.data)), -1, 0,
                             KINDS_BY_NUMBER.index(kind)))
                position += len(batch.data)
        finished = time.monotonic()
        stats = reader.pool.stats()
    _save(spec, rows, {"bytes": total, "started": started, "finished": finished,
                       "pool_bytes": reader.pool.pool_bytes, "pool_hit_ratio": round(stats.hit_ratio, 3)})
    return 0


def _local_segments(directory: Path, stop: int, number: dict[str, int]) -> list[tuple[int, int, str]]:
    """(base offset, file number, how the reader reads it) of the partition's local backlog
    segments: O_DIRECT where the file system takes it (the page cache is bypassed), else a
    buffered read whose new pages are dropped at once (what ColdFile does)."""
    found = []
    for path in sorted(directory.glob("*.log")):
        base = int(path.stem)
        if base >= stop:
            continue
        try:
            os.close(os.open(path, os.O_RDONLY | os.O_DIRECT))
            kind = BYPASS
        except OSError:
            kind = DROPPED
        found.append((base, number[str(path)], kind))
    return found


def _segment_of(local: list[tuple[int, int, str]], offset: int) -> tuple[int, int, str] | None:
    held = [segment for segment in local if segment[0] <= offset]
    return held[-1] if held else None


if __name__ == "__main__":
    role, spec_file = sys.argv[1], sys.argv[2]
    sys.exit({"hot": hot, "untiered": untiered, "tiered": tiered}[role](spec_file))
