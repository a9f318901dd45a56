"""Building the adapters from a configuration (the one place that knows the concrete types)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from tiering.clock import SystemClock
from tiering.config import Config
from tiering.daemon import Daemon
from tiering.journal import Journal
from tiering.observability.metrics import Metrics
from tiering.observability.sdnotify import Notifier
from tiering.store.s3 import S3Store
from tiering.upload.offload_pass import Offloader
from tiering.upload.ratelimit import RateLimiter


def open_store(config: Config, limiter: RateLimiter | None = None) -> S3Store:
    if limiter is None:
        limiter = RateLimiter(config.upload.rate_limit_bytes_per_second, SystemClock().monotonic)
    return S3Store.from_config(config.store, config.upload, limiter)


def open_offloader(config: Config, store: S3Store, log: Any) -> Offloader:
    return Offloader(config, store, Journal(config.state.dir), SystemClock(), log, rng=random.Random())


def open_daemon(config_path: str | Path, config: Config, log: Any) -> Daemon:
    clock = SystemClock()
    metrics = Metrics.create()
    limiter = RateLimiter(config.upload.rate_limit_bytes_per_second, clock.monotonic,
                          on_wait=metrics.rate_limit_wait.inc)
    store = open_store(config, limiter)
    return Daemon(config_path, config, store, Journal(config.state.dir), clock, log, metrics, limiter,
                  notifier=Notifier())
