"""The buffer pool's accounting: a fixed set of page-aligned slabs reused for every chunk, one
load shared by concurrent readers, consumed-first then LRU eviction, readers waiting (never
growing the pool) when every slab is held, and prefetch that never evicts unread prefetches."""

from __future__ import annotations

import mmap
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from tiering.read.pool import BufferPool

CHUNK = 8192


def filler(byte: int, calls: list | None = None, gate: threading.Event | None = None):
    def load(slab: memoryview) -> int:
        if calls is not None:
            calls.append(byte)
        if gate is not None:
            assert gate.wait(10)
        slab[:CHUNK] = bytes([byte]) * CHUNK
        return CHUNK
    return load


def test_slabs_are_page_aligned_and_reused_for_every_chunk():
    pool = BufferPool(4 * CHUNK, CHUNK)
    addresses = set()
    for i in range(40):
        handle = pool.get(("o", i), filler(i))
        assert bytes(handle.view[:3]) == bytes([i]) * 3
        addresses.add(pool.slab_address(handle._entry.slab))
        handle.release(consumed=True)
    assert all(a % mmap.PAGESIZE == 0 for a in addresses)
    assert len(addresses) <= 4
    stats = pool.stats()
    assert (stats.loads, stats.evicted_consumed, stats.peak_slabs_in_use) == (40, 36, 4)


def test_concurrent_readers_of_a_chunk_share_one_load():
    pool = BufferPool(4 * CHUNK, CHUNK)
    calls, gate = [], threading.Event()
    seen = []

    def reader():
        handle = pool.get(("o", 0), filler(7, calls, gate))
        seen.append(bytes(handle.view[:1]))
        handle.release(consumed=False)
    threads = [threading.Thread(target=reader) for _ in range(5)]
    for t in threads:
        t.start()
    while pool.stats().gets < 5:
        threading.Event().wait(0.005)
    gate.set()
    for t in threads:
        t.join()
    stats = pool.stats()
    assert calls == [7] and seen == [b"\x07"] * 5
    assert (stats.loads, stats.joined + stats.hits) == (1, 4)


def test_eviction_takes_consumed_chunks_first_then_the_least_recently_used():
    pool = BufferPool(3 * CHUNK, CHUNK)
    for name in ("a", "c", "b"):
        pool.get(name, filler(1)).release(consumed=name == "b")
    pool.get("a", filler(1)).release(consumed=False)     # a is now more recent than c
    pool.get("d", filler(2)).release(consumed=False)     # evicts b: consumed, though used after c
    assert not pool.contains("b") and pool.contains("a") and pool.contains("c")
    pool.get("e", filler(3)).release(consumed=False)     # evicts c: least recently used
    assert not pool.contains("c") and pool.contains("a") and pool.contains("d")
    stats = pool.stats()
    assert (stats.evicted_consumed, stats.evicted_lru) == (1, 1)


def test_a_reader_waits_for_a_slab_instead_of_growing_the_pool():
    pool = BufferPool(2 * CHUNK, CHUNK)
    held = [pool.get("a", filler(1)), pool.get("b", filler(2))]
    got = []
    waiter = threading.Thread(target=lambda: got.append(pool.get("c", filler(3))))
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive() and not got, "no slab was free: the reader waits"
    held[0].release(consumed=True)
    waiter.join(5)
    assert got and bytes(got[0].view[:1]) == b"\x03" and not pool.contains("a")
    assert pool.stats().waits >= 1 and pool.stats().peak_slabs_in_use == 2


def test_a_failed_load_frees_its_slab_and_the_next_reader_loads_again():
    pool = BufferPool(2 * CHUNK, CHUNK)

    def broken(slab):
        raise OSError("connection reset")
    with pytest.raises(OSError):
        pool.get("a", broken)
    assert not pool.contains("a")
    assert bytes(pool.get("a", filler(5)).view[:1]) == b"\x05"


def test_prefetch_uses_spare_slabs_only_and_counts_what_was_used_or_wasted():
    pool = BufferPool(3 * CHUNK, CHUNK)
    with ThreadPoolExecutor(2) as executor:
        assert pool.prefetch("p1", filler(1), executor)
        assert pool.prefetch("p2", filler(2), executor)
        assert pool.prefetch("p3", filler(3), executor)
        executor.shutdown(wait=True)
    # Every slab holds an unread prefetch: another prefetch may not evict them ...
    with ThreadPoolExecutor(1) as executor:
        assert not pool.prefetch("p4", filler(4), executor)
    # ... a reader may (the least recently loaded: p1), which counts as wasted.
    pool.get("r", filler(9)).release(consumed=True)
    handle = pool.get("p2", filler(0))
    assert handle.was_prefetched and bytes(handle.view[:1]) == b"\x02"
    handle.release(consumed=True)
    stats = pool.stats()
    assert (stats.prefetched, stats.prefetch_used, stats.prefetch_wasted) == (3, 1, 1)
    assert pool.spare_slabs() == 2   # r and p2 are consumed; p3 is an unread prefetch
