"""The one-shot drain waits for a completion while every upload slot is busy: it never spins
on a zero timeout (which held a core and the GIL while the uploads it waited for needed both)."""

from __future__ import annotations

import threading
import time

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
from tiering.wiring import open_store

pytestmark = pytest.mark.integration


class HeldUploads:
    """The real S3 store, except that each upload first waits for the test to let it go: the
    slot stays busy as long as the test wants, as a slow store would keep it."""

    def __init__(self, store):
        self.store = store
        self.started = threading.Semaphore(0)
        self.release = threading.Event()

    def upload_parts(self, key, size, parts, whole_crc):
        self.started.release()
        self.release.wait(30)
        return self.store.upload_parts(key, size, parts, whole_crc)

    def __getattr__(self, name):
        return getattr(self.store, name)


def test_drain_with_every_slot_busy_and_more_segments_ready_does_not_spin(env, s3):
    broker = SimulatedBroker(env.log_dir, segment_bytes=8 * 1024, seed=17)
    broker.create_topic("orders", 1)
    broker.produce("orders", 0, 800, value_size=100)
    config = load_config(env.write_config())
    store = HeldUploads(open_store(config))
    journal = Journal(config.state.dir)
    metrics = Metrics.create()
    coordinator = UploadCoordinator(config, store, journal, SystemClock(), ListLog(), metrics=metrics)
    scan = scan_log_dirs([env.log_dir])
    for partition in scan.partitions:
        coordinator.offer(partition, scan.log_dirs[0], TopicFilter())
    rolled = sum(1 for p in scan.partitions for s in p.segments if not s.is_active)
    slots = config.upload.concurrency
    assert rolled > slots

    coordinator.pump()
    for _ in range(slots):
        assert store.started.acquire(timeout=30)
    # Uploads hold every slot and more segments are ready: what the loop burns now is the cost
    # of waiting, measured as this thread's CPU time, not as elapsed time.
    release = threading.Timer(1.0, store.release.set)
    release.start()
    before = time.thread_time()
    coordinator.drain()
    cpu_while_held = time.thread_time() - before
    release.join()
    uploaded = metrics.registry.get_sample_value("tiering_upload_segments_total", {"result": "uploaded"})
    assert uploaded == rolled
    # A spinning loop spends about the whole second held (and more) on the CPU; a waiting one a
    # few milliseconds for the uploads' bookkeeping.
    assert cpu_while_held < 0.25, f"the drain loop used {cpu_while_held:.2f} s of CPU while waiting"
    coordinator.shutdown(0)
    store.close()
    journal.close()
