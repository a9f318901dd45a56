"""Cluster mode's upload gating with three simulated brokers sharing one bucket and prefix
(moto over HTTP), each with its own log dir, state dir and a StaticLeadership standing in
for Kafka's Metadata."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest

from tests.conftest import BUCKET, PREFIX
from tests.integration.test_cli_and_recovery import ListLog
from tiering.cli.status import collect, print_table
from tiering.clock import SystemClock
from tiering.cluster.chain import Chain
from tiering.cluster.gate import open_gate
from tiering.cluster.leadership import StaticLeadership
from tiering.cluster.remote import list_chain
from tiering.config import parse_config
from tiering.journal import Journal, SegmentId
from tiering.kafka.eligibility import TopicFilter
from tiering.kafka.logdir import scan_log_dirs
from tiering.simulate import SimulatedBroker
from tiering.upload.coordinator import UploadCoordinator
from tiering.upload.offload_pass import Offloader
from tiering.wiring import open_store

TOPIC = "orders"
TOPIC_ID = "Wq3bW8QzSsKqmHTLx0Xb8w"
# Followers roll at other offsets than the leader: each simulated broker's segments differ.
SEGMENT_BYTES = {1: 16 * 1024, 2: 20 * 1024, 3: 24 * 1024}


class StaticConfigs:
    """Kafka's topic configs as a cluster with defaults answers them."""

    def describe(self, topics):
        return {t: {"cleanup.policy": ("delete", "DEFAULT_CONFIG")} for t in topics}

    def close(self):
        pass


class Node:
    def __init__(self, root, endpoint, broker_id, segment_bytes, claims="auto", retention=None, prefix=PREFIX):
        self.broker_id = broker_id
        self.sim = SimulatedBroker(root / f"logs-{broker_id}", broker_id=broker_id, segment_bytes=segment_bytes,
                                   seed=7, clock_ms=lambda: 1_700_000_000_000)
        self.sim.create_topic(TOPIC, 2, topic_id=TOPIC_ID)
        self.config = parse_config({
            "kafka": {"log_dirs": [str(self.sim.log_dir)], "bootstrap_servers": "127.0.0.1:9"},
            "store": {"bucket": BUCKET, "prefix": prefix, "endpoint_url": endpoint, "region": "us-east-1",
                      "addressing_style": "path"},
            "upload": {"concurrency": 2},
            "state": {"dir": str(root / f"state-{broker_id}")},
            "cluster": {"claims": claims},
            # the records are old: nothing expires here unless a test says otherwise
            "retention": retention or {"retention_ms": -1},
        })
        self.leadership = StaticLeadership()
        self.store = open_store(self.config)
        self.journal = Journal(self.config.state.dir)
        self.log = ListLog()

    def produce(self, count):
        for partition in (0, 1):
            self.sim.produce(TOPIC, partition, count, value_size=200)

    def run_pass(self):
        return Offloader(self.config, self.store, self.journal, SystemClock(), self.log, rng=random.Random(0),
                         leadership_factory=lambda _: self.leadership,
                         config_source_factory=lambda _: StaticConfigs()).run_pass()

    def close(self):
        self.store.close()
        self.journal.close()
        self.sim.close()


@pytest.fixture
def nodes(tmp_path, s3, s3_endpoint):
    made: dict[int, Node] = {}

    def make(broker_id, segment_bytes=None, claims="auto", retention=None, prefix=PREFIX):
        made[broker_id] = Node(tmp_path, s3_endpoint, broker_id, segment_bytes or SEGMENT_BYTES[broker_id], claims,
                               retention, prefix)
        return made[broker_id]
    yield make
    for node in made.values():
        node.close()


def lead(nodes, partition, leader, epoch):
    for node in nodes:
        node.leadership.set(TOPIC, partition, leader, epoch, (1, 2, 3), (1, 2, 3))


def manifests(s3, partition):
    found = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX):
        for item in page.get("Contents", []):
            if item["Key"].endswith(".manifest.json") and f"-{TOPIC_ID}/{partition}/" in item["Key"]:
                found.append(json.loads(s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()))
    return sorted(found, key=lambda m: (m["base_offset"], m["created_at_ms"]))


def chain_of(node, partition) -> Chain:
    return list_chain(node.store, node.config.store.layout, (TOPIC, TOPIC_ID, partition), 0).chain


def rolled_end(node, partition) -> int:
    return max(
        s.end_offset for p in scan_log_dirs([node.sim.log_dir]).partitions if p.partition == partition
        for s in p.segments if s.end_offset is not None)


def test_only_the_leader_uploads_a_new_leader_continues_the_chain_and_status_says_so(nodes, s3, capsys):
    cluster = [nodes(1), nodes(2), nodes(3)]
    for node in cluster:
        node.produce(300)
    lead(cluster, 0, 1, 3)
    lead(cluster, 1, 2, 5)
    reports = {node.broker_id: node.run_pass() for node in cluster}
    assert all(r.ok for r in reports.values())
    assert reports[3].uploaded == () and reports[3].not_led == 2        # leads nothing
    assert {m.partition for m in reports[1].uploaded} == {0} and {m.partition for m in reports[2].uploaded} == {1}
    for partition, (leader, epoch) in ((0, (1, 3)), (1, (2, 5))):
        docs = manifests(s3, partition)
        assert docs and {(d["broker_id"], d["leader_epoch"]) for d in docs} == {(leader, epoch)}
        chain = chain_of(cluster[0], partition)
        assert chain.start == 0 and chain.gaps() == () and chain.overlaps() == ()
        assert chain.end == rolled_end(cluster[leader - 1], partition)
    said = [event for level, event, _ in cluster[2].log.events if event.startswith("mode:")]
    assert said == ["mode: cluster: only partitions this broker leads are uploaded"]

    # Leadership of partition 0 moves to broker 3 (epoch 4), while everyone keeps producing.
    old_end = chain_of(cluster[0], 0).end
    for node in cluster:
        node.produce(200)
    lead(cluster, 0, 3, 4)
    assert cluster[0].run_pass().uploaded == ()                        # the old leader stops
    moved = cluster[2].run_pass()
    assert moved.ok and moved.uploaded and {m.partition for m in moved.uploaded} == {0}
    chain = chain_of(cluster[0], 0)
    assert chain.start == 0 and chain.gaps() == ()
    assert len(chain.overlaps()) <= 1                                  # at most one per leader change
    assert chain.end == rolled_end(cluster[2], 0)
    new = sorted(moved.uploaded, key=lambda m: m.base_offset)
    assert all((m.broker_id, m.leader_epoch) == (3, 4) for m in new)
    # only what extends the chain: the first new segment straddles (or starts right after) its old end
    assert new[0].base_offset <= old_end + 1 < new[0].end_offset + 1
    assert all(s.end_offset is None or s.end_offset <= old_end or s.base_offset in {m.base_offset for m in new}
               for p in scan_log_dirs([cluster[2].sim.log_dir]).partitions if p.partition == 0 for s in p.segments
               if s.end_offset is not None and s.end_offset > old_end)
    # every offset once, the newer epoch's copy where they overlap
    pieces = chain.pieces
    assert [p.first for p in pieces][1:] == [p.last + 1 for p in pieces][:-1]
    assert pieces[-1].link.leader_epoch == 4

    # `status` on the old leader: mode, role, the chain and who uploaded it, why it does not upload
    document, rows, error = collect(cluster[0].config, leadership=cluster[0].leadership, config_source=StaticConfigs())
    assert error is None
    assert document["cluster"] == {"mode": "cluster", "broker_id": 1, "reachable": True,
                                   "bootstrap_servers": "127.0.0.1:9", "error": None}
    by_partition = {p["partition"]: p for p in document["partitions"]}
    moved, other = by_partition[0], by_partition[1]
    assert moved["mode"] == "cluster" and moved["cluster"]["role"] == "follower"
    assert moved["cluster"]["not_uploading"] == "broker 3 leads it (leader epoch 4)"
    shown = moved["cluster"]["chain"]
    assert shown["uploaders"] == [1, 3] and (shown["start"], shown["end"]) == (chain.start, chain.end)
    assert shown["gaps"] == [] and len(shown["overlaps"]) == len(chain.overlaps())
    for overlap in shown["overlaps"]:
        assert {link["broker_id"] for link in overlap["links"]} == {1, 3}
    assert other["cluster"]["role"] == "follower" and other["cluster"]["chain"]["uploaders"] == [2]
    print_table(rows, document)
    text = capsys.readouterr().out
    assert text.startswith("Mode: cluster, broker 1, cluster reachable")
    assert "  orders-0: follower, not uploading: broker 3 leads it (leader epoch 4); chain 0.." in text
    assert "uploaded by broker(s) 1, 3" in text
    document, _, _ = collect(cluster[2].config, leadership=cluster[2].leadership, config_source=StaticConfigs())
    assert [(p["partition"], p["cluster"]["role"], p["cluster"]["not_uploading"]) for p in document["partitions"]] == [
        (0, "leader", None), (1, "follower", "broker 2 leads it (leader epoch 5)")]

    cluster[0].leadership.unreachable = True
    document, rows, _ = collect(cluster[0].config, leadership=cluster[0].leadership, config_source=StaticConfigs())
    assert not document["cluster"]["reachable"] and "unreachable" in document["cluster"]["error"]
    assert {p["cluster"]["role"] for p in document["partitions"]} == {"unknown"}
    assert {p["cluster"]["not_uploading"] for p in document["partitions"]} == {
        "the cluster has not answered (kafka.bootstrap_servers unreachable)"}
    single = replace(cluster[0].config, kafka=replace(cluster[0].config.kafka, bootstrap_servers=None))
    document, rows, _ = collect(single)
    assert document["cluster"] == {"mode": "single"}
    assert {(p["mode"], p["cluster"]) for p in document["partitions"]} == {("single", None)}
    print_table(rows, document)
    assert capsys.readouterr().out.startswith("Mode: single")


def test_unreachable_cluster_uploads_nothing_and_says_so_once(nodes, s3):
    node = nodes(1)
    node.produce(300)
    lead([node], 0, 1, 3)
    node.leadership.unreachable = True
    report = node.run_pass()
    assert report.uploaded == () and report.not_led == 2
    assert manifests(s3, 0) == []
    warnings = [e for level, e, _ in node.log.events if level == "warning" and "cluster unreachable" in e]
    assert len(warnings) == 1
    node.leadership.unreachable = False
    assert {m.partition for m in node.run_pass().uploaded} == {0}


@pytest.mark.parametrize("claims", ["auto", "off"])
def test_a_stale_old_leader_racing_the_new_one_leaves_one_copy_per_start_offset(nodes, s3, claims):
    # Same segment boundaries on both (the case where claims decide): broker 1 led at epoch 3
    # and still believes it does; broker 2 leads at epoch 4.
    old, new = nodes(1, 16 * 1024, claims), nodes(2, 16 * 1024, claims)
    for node in (old, new):
        node.produce(300)
    lead([old], 0, 1, 3)
    lead([new], 0, 2, 4)
    lead([old, new], 1, 3, 1)                 # partition 1: neither leads
    # The stale leader plans against the chain as it is (empty) ...
    gate = open_gate(old.config, old.store, SystemClock().now_ms, old.log, lambda _: old.leadership)
    gate.refresh({TOPIC})
    coordinator = UploadCoordinator(old.config, old.store, old.journal, SystemClock(), old.log, gate=gate)
    scan = scan_log_dirs([old.sim.log_dir])
    for partition in scan.partitions:
        coordinator.offer(partition, scan.log_dir_state(partition.log_dir), TopicFilter())
    # ... the new leader uploads meanwhile ...
    uploaded_by_new = new.run_pass().uploaded
    assert uploaded_by_new
    # ... and the stale one's uploads go ahead afterwards.
    try:
        coordinator.drain()
    finally:
        coordinator.shutdown(0)
    docs = manifests(s3, 0)
    starts = [d["base_offset"] for d in docs]
    if claims == "auto":
        assert gate.claims
        assert len(starts) == len(set(starts)) == len(uploaded_by_new)     # one copy of each start offset
        assert {d["broker_id"] for d in docs} == {2}
        assert coordinator.uploaded == []
        assert any("newer leader" in e for _, e, _ in old.log.events)
    else:
        # Without claims (a store without conditional writes) both copies land; the chain's
        # readers resolve them by leader epoch.
        assert len(starts) == 2 * len(uploaded_by_new)
        assert {p.link.broker_id for p in chain_of(new, 0).pieces} == {2}



def test_another_brokers_upload_under_the_same_base_offset_is_not_this_segment(nodes, s3):
    # A journal rebuilt from the store holds every broker's uploads by base offset; replicas
    # roll apart, so one starting where ours starts may end elsewhere.
    node = nodes(3)
    node.produce(300)
    lead([node], 0, 3, 1)
    lead([node], 1, 2, 1)
    first = next(p for p in scan_log_dirs([node.sim.log_dir]).partitions if p.partition == 0).segments[0]
    node.journal.set_meta("store_synced", "1")
    node.journal.mark_uploaded(SegmentId(TOPIC, TOPIC_ID, 0, first.base_offset), "0" * 16, first.end_offset - 5,
                               first.size, first.size, f"{PREFIX}elsewhere.manifest.json", 1)
    uploaded = node.run_pass().uploaded
    assert first.base_offset in {m.base_offset for m in uploaded if m.partition == 0}
    assert chain_of(node, 0).gaps() == () and chain_of(node, 0).start == first.base_offset


def test_a_pass_on_each_broker_trims_every_replica_by_the_chain_and_only_the_leader_expires_the_store(nodes, s3):
    """`run --once`'s pass end to end in cluster mode: the journal, the gate's roles and the
    chain reach retention. Local retention 0 and total retention 1 ms: every rolled segment is
    past both, so only who may delete what decides the outcome."""
    expire = {"local_retention_ms": 0, "retention_ms": 1}
    leader, follower = nodes(1, retention=expire), nodes(2, retention=expire)
    for node in (leader, follower):
        node.produce(300)
    lead((leader, follower), 0, 1, 3)
    lead((leader, follower), 1, 1, 3)
    before = {n.broker_id: rolled(n) for n in (leader, follower)}
    assert all(before.values())

    # The follower first: nothing of the chain exists yet, so it deletes nothing, uploads nothing.
    first = follower.run_pass()
    assert first.ok and first.uploaded == () and first.retention.count("local") == 0
    assert rolled(follower) == before[2]
    # The leader uploads everything and its pass expires them from the store again (1 ms):
    # its local copies go too (past local retention and remote), as a single broker's would.
    uploaded = leader.run_pass()
    assert uploaded.ok and {m.partition for m in uploaded.uploaded} == {0, 1}
    assert uploaded.retention.count("remote") == len(uploaded.uploaded)
    assert not manifests(s3, 0) and not manifests(s3, 1)

    # With total retention off, a second deployment (its own prefix): the follower's pass now
    # finds its segments covered by the leader's uploads and deletes them locally; the store
    # keeps them.
    keep = {"local_retention_ms": 0, "retention_ms": -1}
    leader2 = nodes(3, retention=keep, prefix=PREFIX + "second/")
    follower2 = nodes(4, segment_bytes=20 * 1024, retention=keep, prefix=PREFIX + "second/")
    for node in (leader2, follower2):
        node.produce(300)
    lead((leader2, follower2), 0, 3, 7)
    lead((leader2, follower2), 1, 3, 7)
    kept = leader2.run_pass()
    assert kept.ok and kept.uploaded and kept.retention.count("remote") == 0
    stored = {p: manifests(s3, p) for p in (0, 1)}
    assert stored[0] and stored[1]
    segments = {(p.partition, s.base_offset): s for p in scan_log_dirs([follower2.sim.log_dir]).partitions
                for s in p.segments if s.end_offset is not None}
    chains = {p: chain_of(leader2, p) for p in (0, 1)}
    expected_gone = {k for k, s in segments.items() if chains[k[0]].covers(s.base_offset, s.end_offset)}
    assert expected_gone and expected_gone != set(segments)    # the follower rolls at other offsets
    trimmed = follower2.run_pass()
    assert trimmed.ok and trimmed.uploaded == ()
    assert trimmed.retention.count("local") == len(expected_gone)
    assert rolled(follower2) == set(segments) - expected_gone
    assert {p: manifests(s3, p) for p in (0, 1)} == stored     # the follower expired nothing remote


def rolled(node) -> set[tuple[int, int]]:
    """(partition, base offset) of every rolled segment on the node's disk."""
    return {(p.partition, s.base_offset) for p in scan_log_dirs([node.sim.log_dir]).partitions
            for s in p.segments if s.end_offset is not None}
