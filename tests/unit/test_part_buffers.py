"""The upload's part buffers: page-aligned, distinct, reused, and never more than the pool holds
(a worker waits for a slab rather than allocating one)."""

from __future__ import annotations

import ctypes
import mmap
import threading

from tiering.upload.buffers import PartBuffers


def address(view: memoryview) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


def test_slabs_are_page_aligned_distinct_and_reused():
    pool = PartBuffers(2, 2 * mmap.PAGESIZE)
    with pool.slab() as first, pool.slab() as second:
        assert len(first) == len(second) == 2 * mmap.PAGESIZE
        assert address(first) % mmap.PAGESIZE == 0 and address(second) % mmap.PAGESIZE == 0
        assert address(first) != address(second)
        seen = {address(first), address(second)}
    with pool.slab() as again:
        assert address(again) in seen


def test_a_worker_waits_for_a_slab_when_every_one_is_held():
    pool = PartBuffers(1, mmap.PAGESIZE)
    got = threading.Event()

    def worker():
        with pool.slab():
            got.set()

    with pool.slab():
        thread = threading.Thread(target=worker)
        thread.start()
        assert not got.wait(0.2)        # the only slab is held: the worker is still waiting
    assert got.wait(10)                 # released: it gets it
    thread.join()
