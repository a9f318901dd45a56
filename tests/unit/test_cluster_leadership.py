"""Broker identity, the leadership view and its tracker (tiering.cluster.identity/leadership)."""

import pytest

from tiering.cluster.identity import broker_identity
from tiering.cluster.leadership import (LeadershipTracker, LeadershipView, PartitionLeadership, StaticLeadership,
                                        parse_metadata_topics, unknown_view)
from tiering.config import parse_config
from tiering.errors import ConfigError


def test_identity_from_node_id_or_broker_id(tmp_path):
    kraft, zk = tmp_path / "a", tmp_path / "b"
    kraft.mkdir(), zk.mkdir()
    (kraft / "meta.properties").write_text("#\nnode.id=3\ndirectory.id=x\nversion=1\n")
    (zk / "meta.properties").write_text("version=0\nbroker.id=3\n")
    assert broker_identity([kraft, zk]).broker_id == 3


def test_identity_of_disagreeing_or_unformatted_log_dirs_is_none(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for d in (a, b, c):
        d.mkdir()
    (a / "meta.properties").write_text("node.id=1\n")
    (b / "meta.properties").write_text("node.id=2\n")
    split = broker_identity([a, b])
    assert split.broker_id is None and "different brokers (1 in" in split.problem
    missing = broker_identity([c])
    assert missing.broker_id is None and "missing" in missing.problem
    (c / "meta.properties").write_text("version=1\n")
    assert "neither node.id nor broker.id" in broker_identity([c]).problem
    assert broker_identity([a, c]).broker_id == 1     # one formatted dir names the broker


def lead(leader, epoch=4):
    return PartitionLeadership(leader, epoch, (1, 2, 3), (1, 2, 3))


def test_view_roles_never_guess():
    view = LeadershipView(2, {("t", 0): lead(2), ("t", 1): lead(1), ("t", 2): lead(None, -1)}, 1000, True)
    assert [view.role("t", p) for p in range(4)] == ["leader", "follower", "unknown", "unknown"]
    assert view.why_not_leader("t", 0) is None
    assert view.why_not_leader("t", 1) == "broker 1 leads it (leader epoch 4)"
    assert view.why_not_leader("t", 2) == "the partition has no leader"
    assert "not in the cluster's metadata" in view.why_not_leader("t", 3)
    assert view.leader_epoch("t", 0) == 4 and view.leader_epoch("t", 2) is None
    nobody = LeadershipView(None, {("t", 0): lead(2)}, 1000, True)
    assert nobody.role("t", 0) == "unknown" and "broker's id is unknown" in nobody.why_not_leader("t", 0)
    assert unknown_view(2).role("t", 0) == "unknown"
    assert "has not answered" in unknown_view(2).why_not_leader("t", 0)


class Log:
    def __init__(self):
        self.lines = []

    def info(self, event, **fields):
        self.lines.append(("info", event))

    def warning(self, event, **fields):
        self.lines.append(("warning", event))


def test_tracker_refreshes_on_its_interval_and_goes_unknown_when_stale():
    now = [0]
    source = StaticLeadership({("t", 0): lead(2, 7)})
    log, changes = Log(), []
    tracker = LeadershipTracker(source, 2, 10_000, lambda: now[0], log, changes.append)
    assert tracker.refresh({"t"}).role("t", 0) == "leader" and source.calls == 1
    now[0] = 9_999
    tracker.refresh({"t"})
    assert source.calls == 1                        # not due yet
    tracker.refresh({"t", "u"})
    assert source.calls == 2                        # a new topic: asked at once
    source.unreachable = True
    for step in (10_000, 20_000):                   # two failures, said once
        now[0] = 9_999 + step
        view = tracker.refresh({"t", "u"})
    assert view.role("t", 0) == "leader" and not view.reachable    # last good answer, within 2x
    assert log.lines == [("warning", log.lines[0][1])] and "unreachable" in log.lines[0][1]
    assert changes == [False]
    now[0] = 9_999 + 20_001                         # the last good answer is now older than 2x
    assert tracker.view().role("t", 0) == "unknown"
    source.unreachable = False
    source.set("t", 0, 3, 8)
    view = tracker.refresh({"t", "u"}, force=True)
    assert view.role("t", 0) == "follower" and view.reachable and changes == [False, True]
    assert log.lines[-1][0] == "info" and tracker.error is None


def test_tracker_that_never_reached_the_cluster_knows_no_role():
    source = StaticLeadership({("t", 0): lead(2)})
    source.unreachable = True
    tracker = LeadershipTracker(source, 2, 10_000, lambda: 0)
    view = tracker.refresh({"t"})
    assert view.role("t", 0) == "unknown" and view.fetched_at_ms is None and "static" in tracker.error


def test_metadata_parsing_keeps_leaderless_partitions_drops_errors():
    topics = [
        {"error_code": 0, "name": "t", "partitions": [
            {"error_code": 0, "partition_index": 0, "leader_id": 2, "leader_epoch": 5, "replica_nodes": [2, 1],
             "isr_nodes": [2]},
            {"error_code": 5, "partition_index": 1, "leader_id": -1, "leader_epoch": 6, "replica_nodes": [1],
             "isr_nodes": []},
            {"error_code": 9, "partition_index": 2, "leader_id": 1, "leader_epoch": 1, "replica_nodes": [1],
             "isr_nodes": [1]}]},
        {"error_code": 3, "name": "gone", "partitions": []},
    ]
    assert parse_metadata_topics(topics) == {("t", 0): PartitionLeadership(2, 5, (2, 1), (2,)),
                                             ("t", 1): PartitionLeadership(None, 6, (1,), ())}


def base_config(**cluster):
    doc = {"kafka": {"log_dirs": ["/x"]}, "store": {"bucket": "b"}}
    if cluster:
        doc["cluster"] = cluster
    return doc


def test_cluster_config_keys_and_defaults():
    default = parse_config(base_config())
    assert not default.cluster_mode
    assert (default.cluster.metadata_refresh_ms, default.cluster.chain_refresh_ms,
            default.cluster.claim_timeout_ms, default.cluster.claims) == (10_000, 30_000, 600_000, "auto")
    doc = base_config(metadata_refresh_s=0.5, chain_refresh_s="2s", claim_timeout_s=60, claims="off")
    doc["kafka"]["bootstrap_servers"] = "127.0.0.1:9092"
    config = parse_config(doc)
    assert config.cluster_mode
    assert (config.cluster.metadata_refresh_ms, config.cluster.chain_refresh_ms, config.cluster.claim_timeout_ms,
            config.cluster.claims) == (500, 2000, 60_000, "off")


@pytest.mark.parametrize("key,value,message", [
    ("metadata_refresh_s", 0.01, "cluster.metadata_refresh_s: must be >= 0.1 s"),
    ("metadata_refresh_s", True, "cluster.metadata_refresh_s: expected seconds"),
    ("claims", "maybe", "cluster.claims: must be one of auto, on, off"),
    ("leader", 1, "cluster.leader: unknown key"),
])
def test_cluster_config_problems(key, value, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        parse_config(base_config(**{key: value}))
