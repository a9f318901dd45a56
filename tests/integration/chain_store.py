"""One partition replicated on three simulated brokers, uploaded by all three into one store
(real upload code, moto over HTTP): the chain every reader of the store must resolve.

Replicas (same seed, same topic id) hold the same batches where they agree; each rolls its
segments at its own offsets. Broker 1 led in epoch 0 and wrote offsets 300..339 that nobody
replicated; broker 2 led from epoch 1 on (from offset 300, with other records), broker 3
follows it. Uploads (broker: segment, leader epoch, created):

    1: [0..99] e0 t1000    [100..199] e0 t1001    [200..339] e0 t1002   (300..339 diverge)
    2: [280..379] e1 t2000                              (the new leader's first upload, whole)
    3: [0..59] no epoch t500 (listed first at base 0)   [260..419] no epoch t2500

    pieces: 1@0 0..99 | 1@100 100..199 | 1@200 200..279 | 2@280 280..379 | 3@260 380..419

Broker 3's log dir then keeps only its active segment [420..459] (the others deleted, as local
retention would), so a reader on broker 3 reads 0..419 from the chain.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from tests.conftest import BUCKET, PREFIX
from tiering.config import load_config
from tiering.kafka.logdir import LocalPartition, scan_log_dirs
from tiering.kafka.names import segment_file_name
from tiering.simulate import SimulatedBroker
from tiering.store.manifest import SegmentManifest
from tiering.upload.segment import offload_segment, target_for
from tiering.wiring import open_reader, open_store

TOPIC = "orders"
TOPIC_ID = "AAAAAAAAAAAAAAAAAAAAAA"
SEED = 5
NEW_LEADER_SEED = 77

# (broker, base offset) -> (leader epoch, created_at_ms, uid)
UPLOADS = {
    (1, 0): (0, 1000, "a000000000000000"),
    (1, 100): (0, 1001, "a000000000000100"),
    (1, 200): (0, 1002, "a000000000000200"),
    (2, 280): (1, 2000, "b000000000000280"),
    (3, 0): (None, 500, "0000000000000001"),
    (3, 260): (None, 2500, "c000000000000260"),
}
PIECES = ((1, 0, 0, 99), (1, 100, 100, 199), (1, 200, 200, 279), (2, 280, 280, 379), (3, 260, 380, 419))
LOCAL_FIRST = 420      # broker 3's first local segment once the others are deleted
LOG_END = 460          # broker 3's next offset


@dataclass
class ChainStore:
    brokers: dict[int, SimulatedBroker]
    manifests: dict[tuple[int, int], tuple[str, SegmentManifest]]   # (broker, base) -> (key, manifest)

    def log_dir(self, broker: int) -> Path:
        return self.brokers[broker].log_dir

    def key(self, broker: int, base: int) -> str:
        return self.manifests[(broker, base)][0]


def _to(broker: SimulatedBroker, end: int) -> None:
    broker.produce(TOPIC, 0, end - broker.next_offset(TOPIC, 0), value_size=60)


def _new_leader(broker: SimulatedBroker) -> None:
    broker.bump_leader_epoch(TOPIC, 0)
    broker.rng = random.Random(NEW_LEADER_SEED)     # records the old leader never had


def build_brokers(root: Path, log_dir_of: dict[int, Path] | None = None) -> dict[int, SimulatedBroker]:
    brokers = {}
    for n in (1, 2, 3):
        clock = itertools.count(1_700_000_000_000, 10)
        path = (log_dir_of or {}).get(n, root / f"broker-{n}")
        broker = SimulatedBroker(path, broker_id=n, segment_bytes=1 << 30, seed=SEED,
                                 clock_ms=lambda c=clock: next(c))
        broker.create_topic(TOPIC, 1, topic_id=TOPIC_ID)
        brokers[n] = broker
    one, two, three = brokers[1], brokers[2], brokers[3]
    for end in (100, 200):
        _to(one, end)
        one.roll(TOPIC, 0)
    _to(one, 340)                      # 300..339: epoch 0, never replicated
    one.roll(TOPIC, 0)
    for end in (150, 280):
        _to(two, end)
        two.roll(TOPIC, 0)
    _to(two, 300)
    _new_leader(two)
    for end in (380, 450):
        _to(two, end)
        two.roll(TOPIC, 0)
    for end in (60, 260):
        _to(three, end)
        three.roll(TOPIC, 0)
    _to(three, 300)
    _new_leader(three)
    _to(three, 420)
    three.roll(TOPIC, 0)
    _to(three, LOG_END)
    return brokers


def local_partition(broker: SimulatedBroker) -> LocalPartition:
    return next(p for p in scan_log_dirs([broker.log_dir]).partitions if p.topic == TOPIC)


def upload_all(brokers: dict[int, SimulatedBroker], store, s3, bucket: str, prefix: str,
               uploads: dict = UPLOADS) -> dict[tuple[int, int], tuple[str, SegmentManifest]]:
    """Each listed segment through the real upload code; its manifest then rewritten with the
    uploader's leader epoch and a fixed creation time (what a cluster-mode upload records)."""
    done = {}
    for (n, base), (epoch, created, uid) in uploads.items():
        partition = local_partition(brokers[n])
        segment = next(s for s in partition.segments if s.base_offset == base)
        target = target_for(segment, partition, prefix, False, n, uid)
        manifest = offload_segment(target, store, lambda: created)
        manifest = replace(manifest, leader_epoch=epoch, created_at_ms=created)
        key = target.keys.manifest_key
        s3.put_object(Bucket=bucket, Key=key, Body=manifest.to_json())
        done[(n, base)] = (key, manifest)
    return done


def delete_local_below(broker: SimulatedBroker, offset: int) -> None:
    """What local retention leaves: the segments below `offset` gone, log start moved up."""
    directory = broker.partition_dir(TOPIC, 0)
    for path in sorted(directory.glob("*.log")):
        base = int(path.name[:20])
        if base < offset:
            for ext in ("log", "index", "timeindex", "txnindex", "snapshot"):
                (directory / segment_file_name(base, ext)).unlink(missing_ok=True)
    broker.restart()


@pytest.fixture
def chain(env, s3):
    """(config path, brokers, manifests, every record broker 3 held before its local deletion)."""
    path = env.write_config()
    config = load_config(path)
    brokers = build_brokers(env.root, {3: env.log_dir})
    with open_reader(config) as reader:
        truth = [(r.offset, r.value) for r in reader.records(TOPIC, 0, 0)]
    store = open_store(config)
    try:
        manifests = upload_all(brokers, store, s3, BUCKET, PREFIX)
    finally:
        store.close()
    delete_local_below(brokers[3], LOCAL_FIRST)
    yield path, brokers, manifests, truth
    for broker in brokers.values():
        broker.close()


