"""Building the adapters from a configuration (the one place that knows the concrete types)."""

from __future__ import annotations

import random
from typing import Any

from tiering.clock import SystemClock
from tiering.config import Config
from tiering.journal import Journal
from tiering.store.s3 import S3Store
from tiering.upload.offload_pass import Offloader


def open_store(config: Config) -> S3Store:
    return S3Store.from_config(config.store, config.upload)


def open_offloader(config: Config, store: S3Store, log: Any) -> Offloader:
    return Offloader(config, store, Journal(config.state.dir), SystemClock(), log, rng=random.Random())
