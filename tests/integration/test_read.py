"""Cold reads against a real S3 server over HTTP: records read back after their local copy was
deleted equal what was produced (kafka-python's reader is the judge) for every codec, across
segment borders and tiers, from the middle of a segment, with and without prefetch;
read_committed against read_uncommitted; shared GETs; `tiering cat` and its errors; and the
page cache after a cold local read, measured by the kernel."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from kafka.record import MemoryRecords

from tests.conftest import run_cli
from tests.unit.test_batches import bomb_batch
from tiering.config import load_config
from tiering.kafka.batches import CODECS
from tiering.kafka.checkpoints import TopicPartition
from tiering.kafka.logdir import scan_log_dirs
from tiering.read import pagecache
from tiering.read.sources import DIRECT, FADVISE
from tiering.simulate import SimulatedBroker
from tiering.wiring import open_reader

pytestmark = pytest.mark.integration

KEEP_ONLY_ACTIVE = """
[retention]
local_retention_bytes = 1
"""


def kafka_python_records(paths: list[Path]) -> list[tuple]:
    """(offset, timestamp, key, value, headers) of every data record, by kafka-python's reader."""
    out = []
    for path in paths:
        batches = MemoryRecords(path.read_bytes())
        while (batch := batches.next_batch()) is not None:
            assert batch.validate_crc()
            if batch.is_control_batch:
                continue
            for r in batch:
                out.append((r.offset, r.timestamp, r.key, r.value, tuple((k, v) for k, v in r.headers)))
    return out


def as_tuples(records) -> list[tuple]:
    return [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in records]


@pytest.fixture
def offloaded(env):
    """Five topics, one per codec, and a transactional one; everything but the active segments
    offloaded and deleted locally. Returns (config path, expected records per topic)."""
    broker = SimulatedBroker(env.log_dir, segment_bytes=40 * 1024, seed=11)
    for codec in CODECS:
        broker.create_topic(f"c-{codec}", 1)
        broker.produce(f"c-{codec}", 0, 1200, codec=codec, value_size=120, headers=True, batch_records=8)
    broker.create_topic("pay", 1)
    for i in range(60):
        broker.produce("pay", 0, 5, value_size=200)
        broker.produce_transaction("pay", 0, 6, commit=i % 3 != 0, codec="zstd" if i % 2 else "none",
                                   value_size=200)
    expected = {p.topic: kafka_python_records([s.log_path for s in p.segments])
                for p in scan_log_dirs([env.log_dir]).partitions}
    broker.close()
    config = env.write_config(KEEP_ONLY_ACTIVE)
    result = run_cli("run", "--config", str(config), "--once")
    assert result.returncode == 0, result.stderr
    for partition in scan_log_dirs([env.log_dir]).partitions:
        assert len(partition.segments) == 1 and partition.segments[0].is_active, partition.topic
    return config, expected


def read_config(path: Path, **read):
    config = load_config(path)
    return dataclasses.replace(config, read=dataclasses.replace(config.read, **read))


# rclone (README: "Store compatibility") with prefetch only: its ranged GETs in parallel.
@pytest.mark.parametrize("s3_server, prefetch", [("moto", 0), ("moto", 256 * 1024), ("rclone", 256 * 1024)],
                         indirect=["s3_server"])
def test_every_codec_reads_back_what_was_produced_across_borders_and_tiers(offloaded, prefetch):
    path, expected = offloaded
    config = read_config(path, chunk_bytes=16 * 1024, buffer_pool_bytes=128 * 1024, prefetch_bytes=prefetch)
    with open_reader(config) as reader:
        for codec in CODECS:
            topic = f"c-{codec}"
            assert as_tuples(reader.records(topic, 0, 0)) == expected[topic], codec
            # from the middle of a remote segment: located by its offset index
            assert as_tuples(reader.records(topic, 0, 737)) == [r for r in expected[topic] if r[0] >= 737], codec
        stats = reader.pool.stats()
    assert stats.peak_slabs_in_use <= stats.slabs == 8
    assert stats.loads > stats.slabs, "slabs were reused for more chunks than the pool holds"
    if prefetch:
        assert stats.prefetched > 0 and stats.prefetch_used > 0
    else:
        assert stats.prefetched == 0


def test_read_committed_hides_aborted_transactions_and_markers(offloaded):
    path, expected = offloaded
    with open_reader(load_config(path)) as reader:
        uncommitted = as_tuples(reader.records("pay", 0, 0, "read_uncommitted"))
        committed = as_tuples(reader.records("pay", 0, 0, "read_committed"))
    assert uncommitted == expected["pay"]
    # Every 3rd transaction (i % 3 == 0) aborted: 20 of 60, 6 records each.
    assert len(committed) == len(uncommitted) - 20 * 6
    aborted = set(uncommitted) - set(committed)
    assert len(aborted) == 120
    # The aborted records are exactly the transactional ones of the aborted transactions:
    # batches of 6 right after each run of 5 plain records, every third round.
    offsets = sorted(r[0] for r in aborted)
    rounds = [offsets[i:i + 6] for i in range(0, 120, 6)]
    assert all(r == list(range(r[0], r[0] + 6)) for r in rounds)
    assert [r[0] // 12 for r in rounds] == list(range(0, 60, 3))  # 5 plain + 6 txn + 1 marker a round


def test_concurrent_readers_of_one_chunk_share_one_get(offloaded):
    path, expected = offloaded
    config = read_config(path, chunk_bytes=16 * 1024, buffer_pool_bytes=64 * 1024 * 1024, prefetch_bytes=0)
    results, errors = {}, []
    with open_reader(config) as reader:
        def read(n):
            try:
                results[n] = as_tuples(reader.records("c-gzip", 0, 0))
            except Exception as exc:  # reported below
                errors.append(exc)
        threads = [threading.Thread(target=read, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stats = reader.pool.stats()
    assert not errors and all(r == expected["c-gzip"] for r in results.values())
    sizes = _remote_log_sizes(path, "c-gzip")
    chunks = sum(-(-s // (16 * 1024)) for s in sizes)
    assert sizes and all(sizes)
    assert stats.loads == chunks, "each chunk was fetched once for all four readers"
    assert stats.gets == 4 * chunks and stats.hits + stats.joined == 3 * chunks


def _remote_log_sizes(path: Path, topic: str) -> list[int]:
    from tiering.read.catalog import Catalog
    config = load_config(path)
    with open_reader(config) as reader:
        catalog: Catalog = reader.catalog
        view = catalog.partition(topic, 0)
        return [catalog.manifest(r.manifest_key).size_bytes for r in view.remote]


def test_cat_prints_json_lines_and_raw_batches(offloaded, tmp_path):
    path, expected = offloaded
    result = run_cli("cat", "--config", str(path), "c-snappy", "0", "--from-offset", "100", "--count", "50")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    want = [r for r in expected["c-snappy"] if r[0] >= 100][:50]
    assert [(d["offset"], d["timestamp"], base64.b64decode(d["key"]), base64.b64decode(d["value"]))
            for d in lines] == [r[:4] for r in want]
    assert lines[0]["headers"] == [["trace", base64.b64encode(b"t-100").decode()], ["empty", None]]

    raw = subprocess.run([sys.executable, "-m", "tiering", "cat", "--config", str(path), "c-lz4", "0",
                          "--from-offset", "0", "--format", "raw"], capture_output=True, timeout=120)
    assert raw.returncode == 0, raw.stderr
    out = tmp_path / "raw.bin"
    out.write_bytes(raw.stdout)
    assert kafka_python_records([out]) == expected["c-lz4"]


def test_cat_errors_name_the_valid_range(offloaded):
    path, expected = offloaded
    last = expected["c-none"][-1][0]
    result = run_cli("cat", "--config", str(path), "c-none", "0", "--from-offset", str(last + 1))
    assert result.returncode == 2
    assert result.stderr.strip() == (f"tiering: offset {last + 1} is outside what c-none-0 holds in either tier: "
                                     f"valid offsets are 0..{last} (local from {_local_start(path, 'c-none')}); "
                                     "pass --from-offset in that range")
    for args in (("nope", "0"), ("c-none", "7")):
        result = run_cli("cat", "--config", str(path), *args, "--from-offset", "0")
        assert result.returncode == 2
        assert result.stderr.startswith(f"tiering: unknown topic or partition {args[0]}-{args[1]}")
        assert len(result.stderr.strip().splitlines()) == 1


def _local_start(path: Path, topic: str) -> int:
    partition = next(p for p in scan_log_dirs(load_config(path).kafka.log_dirs).partitions if p.topic == topic)
    return partition.segments[0].base_offset


def cold_file(path: Path) -> None:
    """Write back and drop a file's pages, so that it starts out of the page cache."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def cached_share(path: Path) -> tuple[float, str]:
    fd = os.open(path, os.O_RDONLY)
    try:
        pages, method = pagecache.cached_pages(fd)
        return pages / -(-os.fstat(fd).st_size // pagecache.PAGE), method
    finally:
        os.close(fd)


@pytest.fixture
def cold_local(env):
    """A topic whose rolled segments are still local (nothing offloaded), out of the page cache."""
    broker = SimulatedBroker(env.log_dir, segment_bytes=2 * 1024 * 1024, seed=4)
    broker.create_topic("hist", 1)
    broker.produce("hist", 0, 12000, value_size=400, batch_records=20)
    broker.close()
    partition = scan_log_dirs([env.log_dir]).partitions[0]
    rolled = [s for s in partition.segments if not s.is_active]
    assert len(rolled) >= 2
    for segment in rolled:
        cold_file(segment.log_path)
        assert cached_share(segment.log_path)[0] < 0.02
    expected = kafka_python_records_no_cache(rolled + [partition.segments[-1]])
    return env.write_config(), rolled, expected


def kafka_python_records_no_cache(segments) -> list[tuple]:
    """The expected records, read without leaving the cold segments cached."""
    records = kafka_python_records([s.log_path for s in segments])
    for segment in segments[:-1]:
        cold_file(segment.log_path)
    return records


@pytest.mark.parametrize("method", [DIRECT, FADVISE])
def test_a_cold_local_read_leaves_the_segment_out_of_the_page_cache(cold_local, method):
    path, rolled, expected = cold_local
    config = read_config(path, chunk_bytes=256 * 1024, buffer_pool_bytes=2 * 1024 * 1024)
    with open_reader(config, cold_method=method) as reader:
        assert as_tuples(reader.records("hist", 0, 0)) == expected
    for segment in rolled:
        share, how = cached_share(segment.log_path)
        assert share <= 0.10, f"{segment.log_path.name}: {share:.0%} cached after a cold read ({how})"
    # The same bytes read plainly, as a broker serving a lagging consumer does: all cached.
    for segment in rolled:
        segment.log_path.read_bytes()
        assert cached_share(segment.log_path)[0] == 1.0


def test_fadvise_drops_only_the_pages_its_read_brought_in(cold_local):
    path, rolled, expected = cold_local
    hot = rolled[0].log_path
    size = hot.stat().st_size
    half = size // 2 // pagecache.PAGE * pagecache.PAGE
    fd = os.open(hot, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)   # no readahead into the second half
    os.pread(fd, half, 0)                              # someone else's hot read of the first half
    before = pagecache.resident_map(fd, 0, size)
    os.close(fd)
    assert all(b & 1 for b in before[:half // pagecache.PAGE])
    assert not any(b & 1 for b in before[half // pagecache.PAGE:])
    config = read_config(path, chunk_bytes=256 * 1024, buffer_pool_bytes=2 * 1024 * 1024)
    with open_reader(config, cold_method=FADVISE) as reader:
        assert as_tuples(reader.records("hist", 0, 0)) == expected
    fd = os.open(hot, os.O_RDONLY)
    after = pagecache.resident_map(fd, 0, size)
    os.close(fd)
    first, second = after[:half // pagecache.PAGE], after[half // pagecache.PAGE:]
    # The kernel may reclaim a clean page at any time (one CI run lost some under a parallel
    # job); the fault this guards against, dropping every page the read touched, leaves none.
    assert sum(b & 1 for b in first) >= 0.90 * len(first), "pages that were resident before the read stayed"
    assert sum(b & 1 for b in second) <= 0.10 * len(second), "pages the read brought in were dropped"


def test_a_damaged_remote_object_is_one_line_and_exit_1(offloaded, s3):
    path, expected = offloaded
    from tests.conftest import BUCKET
    [log_key] = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]
                 if "/c-zstd-" in o["Key"] and "/00000000000000000000-" in o["Key"] and o["Key"].endswith(".log")]
    data = bytearray(s3.get_object(Bucket=BUCKET, Key=log_key)["Body"].read())
    data[5000] ^= 0xFF   # a bit flip inside a batch (the store would never; a tamperer or a bug might)
    s3.put_object(Bucket=BUCKET, Key=log_key, Body=bytes(data))
    result = run_cli("cat", "--config", str(path), "c-zstd", "0", "--from-offset", "0")
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"tiering: s3 object {log_key} at byte ") and "CRC-32C mismatch" in line
    # Records before the damaged batch were printed; none after it.
    printed = [json.loads(x)["offset"] for x in result.stdout.splitlines()]
    assert printed == [r[0] for r in expected["c-zstd"]][:len(printed)] and len(printed) < len(expected["c-zstd"])


def test_a_pool_smaller_than_the_prefetch_window_stays_within_its_slabs(offloaded):
    path, expected = offloaded
    config = read_config(path, chunk_bytes=8 * 1024, buffer_pool_bytes=3 * 8 * 1024, prefetch_bytes=1024 * 1024)
    with open_reader(config) as reader:
        for codec in CODECS:
            assert as_tuples(reader.records(f"c-{codec}", 0, 0)) == expected[f"c-{codec}"]
        stats = reader.pool.stats()
    assert stats.slabs == 3 and stats.peak_slabs_in_use == 3
    assert stats.loads > 50 and stats.prefetched > 0
    # Every prefetch was used, wasted, or is among the (at most 3) slabs still holding one.
    assert 0 <= stats.prefetched - stats.prefetch_used - stats.prefetch_wasted <= stats.slabs


def test_a_decompression_bomb_through_cat_is_one_line_exit_1_and_bounded_memory(env):
    """A 16 KiB zstd batch that expands to 512 MiB, offloaded and read back from the store:
    refused at the decompression limit, in bounded memory (the peak RSS of `cat`, as the kernel
    counts it, stays far below the expanded size)."""
    broker = SimulatedBroker(env.log_dir, segment_bytes=1 << 30, seed=5)
    broker.create_topic("bomb", 1)
    broker.produce("bomb", 0, 10)
    log = broker.logs[TopicPartition("bomb", 0)]
    log.append(bomb_batch(log.next_offset, expanded_mib=512), 1, 1_000)
    broker.produce("bomb", 0, 10)
    broker.roll("bomb", 0)
    broker.produce("bomb", 0, 1)
    broker.close()
    # A small buffer pool, so the bound below is about decompression, whatever the pool holds.
    config = env.write_config('\n[read]\nbuffer_pool_bytes = "8MiB"\n' + KEEP_ONLY_ACTIVE)
    assert run_cli("run", "--config", str(config), "--once").returncode == 0
    assert not (env.log_dir / "bomb-0" / "00000000000000000000.log").exists()     # read from the store
    cat, peak_mib = _run_measured(env.root, "cat", "--config", str(config), "bomb", "0", "--from-offset", "0")
    print(f"cat: peak RSS {peak_mib:.0f} MiB")
    assert cat.returncode == 1, cat.stderr
    assert [json.loads(line)["offset"] for line in cat.stdout.splitlines()] == list(range(10))
    lines = cat.stderr.strip().splitlines()
    assert len(lines) == 1 and "batch at offset 10" in lines[0] and "decompress to more than" in lines[0], lines
    assert "Traceback" not in cat.stderr
    assert peak_mib < 256, f"peak RSS {peak_mib:.0f} MiB for a 512 MiB bomb"


def _run_measured(workdir: Path, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    """The command line in a subprocess, and its own peak RSS in MiB. A small wrapper process
    starts it and reads RUSAGE_CHILDREN: measured from the test process itself, the figure
    would include the test process's own peak (Linux keeps the pre-exec high-water mark of a
    process spawned with vfork, and pytest with its in-process S3 server is big)."""
    peak_file = workdir / "measured.peak"
    wrapper = ("import resource, subprocess, sys\n"
               "code = subprocess.call(sys.argv[2:])\n"
               "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
               "sys.exit(code)\n")
    result = subprocess.run([sys.executable, "-c", wrapper, str(peak_file), sys.executable, "-m", "tiering", *args],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return result, int(peak_file.read_text()) / 1024
