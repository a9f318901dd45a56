"""Adaptive prefetch: the pure decision at its boundaries (what a GET's times say about the
store, a reader's pace, the chunks that cover one GET at that pace, the pool's and the
ceiling's bounds), and the prefetcher and remote source feeding it, on an injected clock."""

from __future__ import annotations

import math
from concurrent.futures import Executor, Future

from tests.unit.memstore import MemoryStore
from tiering.read.cursor import Prefetcher
from tiering.read.meter import StoreMeter
from tiering.read.pool import BufferPool
from tiering.read.prefetch import (HEADROOM, STORE_WINDOW, PrefetchWindow, ReaderPace, StoreEstimate,
                                   chunks_needed, most_ahead)
from tiering.read.sources import RemoteObject

CHUNK = 4 * 1024 * 1024


def test_a_get_gives_the_latency_to_its_first_byte_and_the_bandwidth_after_it():
    assert StoreEstimate().get_seconds(CHUNK) is None
    first = StoreEstimate().observe(0.05, 0.09, 4_000_000)
    assert first.latency == 0.05 and math.isclose(first.bandwidth, 1e8) and first.gets == 1
    # The least latency and the most bandwidth of the last GETs: a GET queued behind others
    # (later first byte, slower transfer) does not lengthen the estimate ...
    queued = first.observe(0.15, 0.35, 4_000_000)
    assert queued.latency == 0.05 and math.isclose(queued.bandwidth, 1e8)
    assert math.isclose(queued.get_seconds(CHUNK), 0.05 + CHUNK / 1e8)
    # ... a quicker one shortens it at once.
    quick = queued.observe(0.01, 0.03, 4_000_000)
    assert quick.latency == 0.01 and math.isclose(quick.bandwidth, 2e8) and quick.gets == 3
    # A GET with no bytes says nothing of the bandwidth; a clock that went back, no latency.
    assert StoreEstimate().observe(0.05, 0.05, 0).bandwidth is None
    assert first.observe(0.05, 0.05, 0).bandwidth == first.bandwidth
    assert StoreEstimate().observe(-0.01, 0.02, 100).latency == 0.0


def test_the_estimate_forgets_a_get_after_the_window():
    estimate = StoreEstimate().observe(0.01, 0.02, 1_000_000)          # quick, 100 MB/s
    for _ in range(STORE_WINDOW - 1):
        estimate = estimate.observe(0.2, 0.3, 1_000_000)              # a farther store: 10 MB/s
    assert estimate.latency == 0.01 and math.isclose(estimate.bandwidth, 1e8)
    estimate = estimate.observe(0.2, 0.3, 1_000_000)
    assert estimate.latency == 0.2 and math.isclose(estimate.bandwidth, 1e7)
    assert len(estimate.recent) == STORE_WINDOW and estimate.gets == STORE_WINDOW + 1


def test_a_get_whose_bytes_all_came_with_the_first_one_is_too_fast_to_time():
    estimate = StoreEstimate().observe(0.01, 0.01, 1000)
    assert estimate.bandwidth == math.inf and estimate.get_seconds(CHUNK) == 0.01


def test_a_readers_pace_counts_its_own_time_only():
    assert ReaderPace().observe(0, 1.0).rate is None
    pace = ReaderPace().observe(1_000_000, 0.01)
    assert pace.rate == 1e8
    assert math.isclose(pace.observe(1_000_000, 0.02).rate, 1e8 - 0.25 * 5e7)
    instant = pace.observe(1_000_000, 0.0)
    assert instant.rate == math.inf
    assert instant.observe(1_000_000, 0.01).rate == 1e8   # a timed sample replaces "instant"


def _store(get_seconds: float) -> StoreEstimate:
    """An estimate under which a whole chunk takes `get_seconds`: half to the first byte."""
    return StoreEstimate().observe(get_seconds / 2, get_seconds, CHUNK)


def test_the_lead_covers_one_get_at_the_readers_pace_with_headroom_exactly():
    assert HEADROOM == 1.5
    # 8 chunks a second, a GET of 0.25 s: 2 chunks consumed per GET, 3 with the headroom.
    pace = ReaderPace(8 * CHUNK)
    assert chunks_needed(pace, _store(0.25), CHUNK, most=100) == 3
    # One byte a second more and the third chunk no longer covers it.
    assert chunks_needed(ReaderPace(8 * CHUNK + 1), _store(0.25), CHUNK, most=100) == 4
    # Twice the latency, twice the lead; a far store, many GETs in parallel.
    assert chunks_needed(pace, _store(0.5), CHUNK, most=100) == 6
    assert chunks_needed(pace, _store(5.0), CHUNK, most=100) == 60


def test_the_lead_stays_within_one_chunk_and_its_bound():
    pace = ReaderPace(8 * CHUNK)
    assert chunks_needed(pace, _store(0.25), CHUNK, most=3) == 3
    assert chunks_needed(pace, _store(0.25), CHUNK, most=2) == 2
    assert chunks_needed(ReaderPace(1.0), _store(0.25), CHUNK, most=100) == 1
    # Nothing measured yet, or a side too fast to time: the bound (growth by use paces the start).
    assert chunks_needed(ReaderPace(), _store(0.25), CHUNK, most=7) == 7
    assert chunks_needed(pace, StoreEstimate(), CHUNK, most=7) == 7
    assert chunks_needed(ReaderPace(math.inf), _store(0.25), CHUNK, most=7) == 7
    assert chunks_needed(pace, StoreEstimate().observe(0.0, 0.0, CHUNK), CHUNK, most=7) == 1


def test_the_pool_bounds_the_lead_below_the_ceiling():
    assert most_ahead(32, 64) == 32          # the ceiling (prefetch_bytes)
    assert most_ahead(32, 34) == 32
    assert most_ahead(32, 33) == 31          # every slab but the reader's and one for a miss
    assert most_ahead(32, 3) == 1
    assert most_ahead(32, 2) == 1


def test_the_window_grown_by_use_gives_way_to_what_is_needed():
    window = PrefetchWindow.for_config(32 * CHUNK, CHUNK)
    assert window.ahead(3) == 1               # still growing: the window paces the start
    for _ in range(5):
        window = window.used()
    assert window.chunks == 32
    assert (window.ahead(), window.ahead(3), window.ahead(40), window.ahead(0)) == (32, 3, 32, 1)
    off = PrefetchWindow.for_config(0, CHUNK)
    assert off.ahead(3) == 0


class _Now(Executor):
    """Runs what is submitted at once: prefetches complete before advance() returns."""

    def submit(self, fn, /, *args, **kwargs):
        future = Future()
        future.set_result(fn(*args, **kwargs))
        return future


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _Source:
    size = 64 * CHUNK

    def chunk_key(self, index):
        return ("s", index)

    def loader(self, index, chunk_bytes):
        return lambda slab: chunk_bytes


def _reader(slabs: int, get_seconds: float) -> tuple[Prefetcher, _Clock, BufferPool]:
    clock = _Clock()
    meter = StoreMeter(clock)
    meter.observe(get_seconds / 2, get_seconds, CHUNK)
    pool = BufferPool(slabs * CHUNK, CHUNK)
    return Prefetcher(pool, _Now(), PrefetchWindow.for_config(32 * CHUNK, CHUNK), meter, clock), clock, pool


def _read(prefetcher: Prefetcher, clock: _Clock, chunks: range, per_chunk: float, waited: float = 0.0) -> None:
    """The reader moves on a chunk every `per_chunk` seconds, `waited` of them waiting for it."""
    for i in chunks:
        clock.now += per_chunk
        prefetcher.advance([_Source()], i, was_prefetched=i > 0, waited=waited)


def test_the_prefetcher_keeps_the_lead_the_measurements_call_for():
    prefetcher, clock, pool = _reader(slabs=64, get_seconds=0.25)
    _read(prefetcher, clock, range(0, 8), per_chunk=1 / 8)
    assert prefetcher.pace.rate == 8 * CHUNK and prefetcher.lead == 3
    assert [pool.contains(("s", i)) for i in (8, 9, 10, 11)] == [True, True, True, False]


def test_time_spent_waiting_for_a_chunk_is_not_the_readers_pace():
    prefetcher, clock, _ = _reader(slabs=64, get_seconds=0.25)
    # A quarter of a second between chunks, half of it waiting: still 8 chunks a second.
    _read(prefetcher, clock, range(0, 8), per_chunk=0.25, waited=0.125)
    assert prefetcher.pace.rate == 8 * CHUNK and prefetcher.lead == 3


def test_a_farther_store_gets_a_longer_lead_within_the_pool():
    prefetcher, clock, pool = _reader(slabs=64, get_seconds=1.0)
    _read(prefetcher, clock, range(0, 8), per_chunk=1 / 8)
    assert prefetcher.lead == 12
    small, clock, pool = _reader(slabs=10, get_seconds=1.0)
    _read(small, clock, range(0, 8), per_chunk=1 / 8)
    assert small.lead == 8 and pool.stats().peak_slabs_in_use <= 10


def test_a_remote_chunk_times_its_get_to_the_first_byte_and_to_the_end():
    store = MemoryStore()
    store.objects["k"] = bytes(range(256)) * 64
    times = iter([10.0, 10.05, 10.09])
    meter = StoreMeter(lambda: next(times))
    source = RemoteObject(store, "k", len(store.objects["k"]), meter=meter)
    slab = memoryview(bytearray(8192))
    assert source.loader(0, 8192)(slab) == 8192 and bytes(slab[:3]) == b"\x00\x01\x02"
    estimate = meter.estimate
    assert math.isclose(estimate.latency, 0.05) and math.isclose(estimate.bandwidth, 8192 / 0.04)
