"""Building the adapters from a configuration (the one place that knows the concrete types)."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from tiering.clock import SystemClock
from tiering.config import Config
from tiering.heap import release_free_memory
from tiering.journal import Journal
from tiering.kafka.logdir import LogDirScan, scan_log_dirs
from tiering.store.s3 import S3Store, make_client
from tiering.upload.offload_pass import Offloader
from tiering.upload.ratelimit import RateLimiter

if TYPE_CHECKING:
    from tiering.daemon import Daemon
    from tiering.read.reader import TieredReader

# The daemon's modules (its HTTP server, the log dir watcher, the metrics) and the read path's
# are imported where they are opened: `run --once` uses neither, and every module imported
# is resident for the whole run (design.md invariant 6's base; README "Upload memory").


def open_store(config: Config, limiter: RateLimiter | None = None) -> S3Store:
    if limiter is None:
        limiter = RateLimiter(config.upload.rate_limit_bytes_per_second, SystemClock().monotonic)
    store = S3Store.from_config(config.store, config.upload, limiter)
    release_free_memory()      # what building the client freed, before the part buffers fill
    return store


def open_offloader(config: Config, store: S3Store, log: Any) -> Offloader:
    return Offloader(config, store, Journal(config.state.dir), SystemClock(), log, rng=random.Random())


def open_daemon(config_path: str | Path, config: Config, log: Any) -> Daemon:
    from tiering.daemon import Daemon
    from tiering.observability.metrics import Metrics
    from tiering.observability.sdnotify import Notifier

    clock = SystemClock()
    metrics = Metrics.create()
    limiter = RateLimiter(config.upload.rate_limit_bytes_per_second, clock.monotonic,
                          on_wait=metrics.rate_limit_wait.inc)
    store = open_store(config, limiter)
    return Daemon(config_path, config, store, Journal(config.state.dir), clock, log, metrics, limiter,
                  notifier=Notifier())


# Prefetch requests in flight at once, at most: each is one ranged GET of a chunk.
MAX_PREFETCH_THREADS = 32


def build_reader(config: Config, scan: LogDirScan, *, store: S3Store | None = None, cold_method: str | None = None,
                 clock: Any = None, thread_prefix: str = "prefetch",
                 spare_connections: int = 4) -> tuple[TieredReader, Callable[[], None]]:
    """A tiered reader with its pool, prefetch threads, rate limiter and (unless `store` is
    given) store client, and the function that releases them: `tiering cat`'s reader and the
    Kafka-protocol endpoint's source are built the same way."""
    from tiering.read.catalog import Catalog
    from tiering.read.meter import StoreMeter
    from tiering.read.pool import BufferPool
    from tiering.read.prefetch import PrefetchWindow
    from tiering.read.reader import TieredReader

    clock = clock or SystemClock()
    window = PrefetchWindow.for_config(config.read.prefetch_bytes, config.read.chunk_bytes)
    threads = min(MAX_PREFETCH_THREADS, window.max_chunks)
    executor = ThreadPoolExecutor(threads, thread_name_prefix=thread_prefix) if threads else None
    limiter = (RateLimiter(config.read.rate_limit_bytes_per_second, clock.monotonic)
               if config.read.rate_limit_bytes_per_second else None)
    owned_store = store is None
    if store is None:
        store = S3Store(make_client(config.store, pool_size=threads + spare_connections), config.store.bucket,
                        config.upload, config.store.storage_class)
    pool = BufferPool(config.read.buffer_pool_bytes, config.read.chunk_bytes)
    catalog = Catalog(store, scan, config.store.prefix, config.store.hash_prefix, _journal_topic_ids(config.state.dir))
    # The store's measured latency and bandwidth size the prefetch lead (adaptive prefetch).
    reader = TieredReader(catalog, pool, window, executor, limiter, cold_method, StoreMeter(clock.monotonic))

    def release() -> None:
        if limiter is not None:
            limiter.cancel()
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        if owned_store:
            store.close()
    return reader, release


@contextmanager
def open_reader(config: Config, scan: LogDirScan | None = None,
                cold_method: str | None = None) -> Iterator[TieredReader]:
    """A tiered reader with its pool, prefetch threads and store client; all released on exit."""
    reader, release = build_reader(config, scan if scan is not None else scan_log_dirs(config.kafka.log_dirs),
                                   cold_method=cold_method)
    try:
        yield reader
    finally:
        release()


def _journal_topic_ids(state_dir: Path) -> Callable[[str, int], set[str]]:
    """Topic ids the journal knows for a partition no longer in the log dirs (read without
    creating a journal where there is none)."""
    def known(topic: str, partition: int) -> set[str]:
        if not (state_dir / "journal.sqlite").exists():
            return set()
        journal = Journal(state_dir)
        try:
            return {r.id.topic_id for r in journal.all() if r.id.topic == topic and r.id.partition == partition}
        finally:
            journal.close()
    return known
