"""Finding 8: what the coordinator remembers per segment follows the segments on the local
disk, not every segment it ever uploaded (the daemon's memory grew about 7.5 KiB per segment)."""

from __future__ import annotations

import os

import pytest

from tests.integration.test_cli_and_recovery import ListLog
from tiering.clock import SystemClock
from tiering.config import load_config
from tiering.journal import Journal
from tiering.kafka.eligibility import TopicFilter
from tiering.kafka.logdir import scan_log_dirs
from tiering.observability.metrics import Metrics
from tiering.simulate import SimulatedBroker
from tiering.upload.coordinator import UploadCoordinator
from tiering.upload.pins import PinStore
from tiering.wiring import open_store

pytestmark = pytest.mark.integration

ROUNDS = 6


def offer_all(coordinator: UploadCoordinator, log_dir) -> int:
    """Offer every partition of a fresh scan; returns how many rolled segments are on disk."""
    scan = scan_log_dirs([log_dir])
    for partition in scan.partitions:
        coordinator.offer(partition, scan.log_dirs[0], TopicFilter())
    return sum(1 for p in scan.partitions for s in p.segments if not s.is_active)


def delete_rolled(log_dir) -> int:
    """What local retention does to uploaded segments: unlink their files."""
    deleted = 0
    for partition in scan_log_dirs([log_dir]).partitions:
        for segment in partition.segments:
            if segment.is_active:
                continue
            for path in (segment.log_path, *(p for _, p in segment.index_paths), segment.snapshot_path):
                if path is not None and path.exists():
                    os.unlink(path)
            deleted += 1
    return deleted


def test_remembered_segments_follow_the_local_disk_not_the_uploads(env, s3):
    broker = SimulatedBroker(env.log_dir, segment_bytes=8 * 1024, seed=8)
    broker.create_topic("orders", 2)
    config = load_config(env.write_config())
    metrics = Metrics.create()
    log = ListLog()
    coordinator = UploadCoordinator(config, open_store(config), Journal(config.state.dir), SystemClock(), log,
                                    metrics=metrics, stop_on_fatal=False, keep_results=False,
                                    pins=PinStore(config.state.pin_roots, log))
    uploaded_total = 0
    remembered = []
    for _ in range(ROUNDS):
        for partition in (0, 1):
            broker.produce("orders", partition, 300, value_size=100)
        on_disk = offer_all(coordinator, env.log_dir)
        coordinator.drain()
        uploaded_total = int(metrics.registry.get_sample_value("tiering_upload_segments_total",
                                                               {"result": "uploaded"}) or 0)
        # Still on disk and uploaded: remembered (so they are not read again on each scan).
        assert offer_all(coordinator, env.log_dir) == on_disk
        assert coordinator.queue.backlog().segments == 0
        delete_rolled(env.log_dir)
        offer_all(coordinator, env.log_dir)     # the scan after local retention
        remembered.append(coordinator.remembered())
    assert uploaded_total >= ROUNDS * 4, uploaded_total
    # Nothing uploaded is on the disk any more, so nothing needs remembering; before the
    # pruning, the count grew by every upload (it equalled uploaded_total).
    assert remembered == [0] * ROUNDS, remembered
    # And nothing was uploaded twice: the journal still answers for what was forgotten.
    assert len({k for k in s3_manifest_keys(s3)}) == uploaded_total


def s3_manifest_keys(s3) -> list[str]:
    from tests.conftest import BUCKET, PREFIX
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX):
        keys += [o["Key"] for o in page.get("Contents", []) if o["Key"].endswith(".manifest.json")]
    return keys
