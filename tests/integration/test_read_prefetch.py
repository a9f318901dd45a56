"""Adaptive prefetch against a real S3 server behind the fault proxy's fixed latency: a far store
gets more GETs in flight at once than a near one, as the proxy itself counts them, for the
same reader at the same pace, and the bytes read are the same either way; a partition's
manifests are fetched together."""

from __future__ import annotations

import dataclasses
import hashlib
from urllib.parse import urlparse

import pytest

from tests.conftest import run_cli
from tests.faults.proxy import FaultProxy
from tiering.config import load_config
from tiering.kafka.logdir import scan_log_dirs
from tiering.simulate import SimulatedBroker
from tiering.wiring import open_reader

pytestmark = pytest.mark.integration

CHUNK = 32 * 1024
# The reader's pace, on a clock of its own that only the test moves: 1 MiB a second. At that
# pace a GET of the near store (moto on loopback, tens of ms) is covered by a few chunks,
# one 300 ms away by the whole ceiling (1.5 x 1 MiB/s x 0.3 s = 14.4 chunks of 32 KiB).
PACE = 1024 * 1024
FAR = 0.3
CEILING_CHUNKS = 16


class _ReaderClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _read(config, proxy: FaultProxy) -> tuple[str, int, float, tuple[int, int]]:
    """Read the whole partition at PACE; (digest of the batches, most GETs in flight at once as
    the proxy saw them, the store's latency as the reader measured it, (manifests, most of
    them in flight at once while the partition was mapped))."""
    clock = _ReaderClock()
    digest = hashlib.sha256()
    with open_reader(config) as reader:
        reader.monotonic = clock
        proxy.peak_in_flight = proxy.in_flight
        view = reader.catalog.partition("far", 0)     # the manifests, out of the read's count
        mapping = (len(view.remote), proxy.peak_in_flight)
        proxy.peak_in_flight = proxy.in_flight
        for batch in reader.batches("far", 0, 0):
            digest.update(batch.data)
            clock.now += len(batch.data) / PACE
        latency = reader.meter.estimate.latency
    return digest.hexdigest(), proxy.peak_in_flight, latency, mapping


def test_a_far_store_gets_more_gets_in_flight_than_a_near_one_at_the_same_pace(env):
    broker = SimulatedBroker(env.log_dir, segment_bytes=256 * 1024, seed=17)
    broker.create_topic("far", 1)
    broker.produce("far", 0, 560, value_size=1000, batch_records=4)
    broker.close()
    path = env.write_config("[retention]\nlocal_retention_bytes = 1\n")
    result = run_cli("run", "--config", str(path), "--once")
    assert result.returncode == 0, result.stderr
    [partition] = scan_log_dirs([env.log_dir]).partitions
    assert len(partition.segments) == 1 and partition.segments[0].is_active

    url = urlparse(env.endpoint)
    proxy = FaultProxy(url.hostname, url.port)
    try:
        config = load_config(path)
        config = dataclasses.replace(
            config, store=dataclasses.replace(config.store, endpoint_url=proxy.endpoint),
            read=dataclasses.replace(config.read, chunk_bytes=CHUNK, buffer_pool_bytes=64 * CHUNK,
                                     prefetch_bytes=CEILING_CHUNKS * CHUNK))
        near_digest, near_peak, near_latency, _ = _read(config, proxy)
        proxy.latency = FAR
        far_digest, far_peak, far_latency, (manifests, mapping_peak) = _read(config, proxy)
    finally:
        proxy.close()
    assert far_digest == near_digest
    assert far_latency >= FAR > near_latency
    # Near: a chunk or two ahead (the fixed window's growth by use went to its ceiling either
    # way: 6 and 8 GETs at once were seen with it). Far: the ceiling's GETs in parallel.
    assert far_peak >= max(2 * near_peak, CEILING_CHUNKS // 2), (near_peak, far_peak)
    # The partition's manifests were asked for together, not one round trip after the other.
    assert manifests >= 2 and mapping_peak == manifests
