"""Retention in a cluster goes by the partition's chain (tests/integration/chain_store.py):
any replica deletes a local segment the chain covers, whoever uploaded it; DeleteRecords and
total retention (of every broker's uploads) are the leader's sidecar's alone."""

from __future__ import annotations

import shutil
from types import MappingProxyType

import pytest

from tests.conftest import BUCKET, PREFIX
from tests.integration.test_cli_and_recovery import ListLog
from tests.integration.chain_store import TOPIC, chain  # noqa: F401 (a fixture)
from tests.kafka_wire import FakeKafka
from tiering.clock import SystemClock
from tiering.cluster.leadership import LeadershipView, PartitionLeadership
from tiering.config import load_config
from tiering.journal import Journal
from tiering.kafka.logdir import scan_log_dirs
from tiering.reconcile import rebuild_journal
from tiering.retention.admin import KafkaAdminDeleter
from tiering.retention.run import RetentionRunner
from tiering.wiring import open_store

pytestmark = pytest.mark.integration

BROKER = 2       # the sidecar under test: broker 2's log dir [0..149] [150..279] [280..379] [380..449] [450..]


def view(leader: int) -> LeadershipView:
    return LeadershipView(BROKER, MappingProxyType({(TOPIC, 0): PartitionLeadership(leader, 1, (1, 2, 3), (1, 2, 3))}),
                          1, True)


def run_retention(env, brokers, retention: str, leader: int | None, now_ms: int, admin: str | None = None):
    text = env.write_config(f'bootstrap_servers = "{admin}"\n' if admin else "").read_text()
    text = text.replace(f'"{env.log_dir}"', f'"{brokers[BROKER].log_dir}"') + f"\n[retention]\n{retention}\n"
    path = env.root / "broker-2.toml"
    path.write_text(text)
    config = load_config(path)
    store = open_store(config)
    journal = Journal(env.root / "state-2")
    runner = RetentionRunner(store, ListLog(), lambda: now_ms,
                             deleter_factory=lambda servers: KafkaAdminDeleter(servers, 5000, 5000))
    try:
        rebuild_journal(journal, store, config.store.layout, SystemClock(), own_broker=BROKER)
        return runner.run(config, scan_log_dirs(config.kafka.log_dirs), journal.all(), frozenset(),
                          leadership=view(leader) if leader is not None else None)
    finally:
        runner.close()
        journal.close()
        store.close()


def local_bases(broker) -> list[int]:
    return sorted(int(p.name[:20]) for p in broker.partition_dir(TOPIC, 0).glob("*.log"))


def manifest_keys(s3) -> set[str]:
    listing = s3.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX).get("Contents", [])
    return {o["Key"] for o in listing if o["Key"].endswith(".manifest.json")}


def all_keys(s3) -> set[str]:
    return {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX).get("Contents", [])}


def test_a_follower_unlinks_what_the_chain_covers_and_leaves_the_store_to_the_leader(chain, env, s3):
    _, brokers, manifests, _ = chain
    before = all_keys(s3)
    report = run_retention(env, brokers, 'local_retention_ms = "1s"\nretention_ms = "1s"', leader=1,
                           now_ms=2_000_000_000_000)
    # 0..379 is in the chain (brokers 1, 2 and 3 uploaded it, at other boundaries than
    # broker 2's segments); [380..449] holds 420..449, which nobody uploaded yet.
    assert local_bases(brokers[BROKER]) == [380, 450]
    assert sorted(d.segment.base_offset for d in report.deleted if d.tier == "local") == [0, 150, 280]
    assert all_keys(s3) == before          # total retention: the leader's
    assert not report.failures


def test_the_leader_expires_every_brokers_uploads_by_the_chains_time(chain, env, s3):
    _, brokers, manifests, _ = chain
    second = manifests[(1, 100)][1]
    assert second.max_timestamp < manifests[(1, 200)][1].max_timestamp
    report = run_retention(env, brokers, 'retention_ms = "1s"\nlocal_retention_ms = "1s"', leader=BROKER,
                           now_ms=second.max_timestamp + 1000)
    # pieces 0..99 (broker 1) and 100..199 (broker 1) expire; broker 3's [0..59], serving no
    # offset (broker 1's epoch-0 copy wins over its epoch-less one), goes with them.
    gone = {manifests[k][0] for k in ((1, 0), (1, 100), (3, 0))}
    assert manifest_keys(s3) == {key for key, _ in manifests.values()} - gone
    assert not any(k.startswith(g.removesuffix("manifest.json")) for k in all_keys(s3) for g in gone)
    # broker 2's [0..149] went with the store's copies (total-time); [150..279] holds offsets
    # the store keeps, and is within local retention
    assert local_bases(brokers[BROKER]) == [150, 280, 380, 450]
    assert [(d.tier, d.reason) for d in report.deleted if d.tier == "local"] == [("local", "total-time")]
    assert not report.failures


def test_only_the_leaders_sidecar_sends_delete_records(chain, env, s3):
    _, brokers, _, _ = chain
    kafka = FakeKafka({TOPIC: 1})
    try:
        settings = 'local_delete = "kafka-admin"\nlocal_retention_ms = "1s"\nretention_ms = -1'
        follower = run_retention(env, brokers, settings, leader=1, now_ms=2_000_000_000_000, admin=kafka.bootstrap)
        assert kafka.deletes == [] and not follower.deleted
        leader = run_retention(env, brokers, settings, leader=BROKER, now_ms=2_000_000_000_000,
                               admin=kafka.bootstrap)
        assert kafka.deletes == [{(TOPIC, 0): 380}]
        assert sorted((d.tier, d.segment.base_offset) for d in leader.deleted) == [("local", b) for b in (0, 150, 280)]
    finally:
        kafka.close()
    assert local_bases(brokers[BROKER]) == [0, 150, 280, 380, 450]     # the broker deletes the files


def test_uploads_of_a_partition_moved_away_are_left_to_its_leaders_sidecar(chain, env, s3):
    _, brokers, _, _ = chain
    before = all_keys(s3)
    shutil.rmtree(brokers[BROKER].partition_dir(TOPIC, 0))     # reassigned to other brokers
    report = run_retention(env, brokers, 'local_retention_ms = "1s"\nretention_ms = "1s"', leader=1,
                           now_ms=2_000_000_000_000)
    # broker 2's journal still has its upload [280..379]; in a cluster that link belongs to a
    # chain the partition's leader expires, never this sidecar on its own rows
    assert all_keys(s3) == before and not report.deleted and not report.failures
