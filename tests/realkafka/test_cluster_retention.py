"""Issue 19 on a real 3-node KRaft cluster: retention on every replica (through the leader's
DeleteRecords while the brokers run, by unlinking while they are stopped), and sidecars that
cannot reach the cluster (the whole cluster down; one sidecar's bootstrap address unreachable).
Nothing is lost from both tiers: every record reads back once through each sidecar's `cat`."""

from __future__ import annotations

import base64

import pytest

from tests.conftest import bucket_snapshot, events
from tests.realkafka.clients import list_offsets, produce_kafka_python
from tests.realkafka.offload import high_watermark, segment_bases, wait_for_high_watermark, wait_until
from tests.realkafka.replicated import create_replicated_topic
from tests.realkafka.sidecars import Relay, chain_facts, stored_segments
from tiering.realkafka.ops import ClusterAdmin

pytestmark = [pytest.mark.realkafka, pytest.mark.integration]

ADMIN_RETENTION = '\n[retention]\nlocal_delete = "kafka-admin"\nlocal_retention_bytes = 1\n'
UNLINK_RETENTION = '\n[retention]\nlocal_delete = "unlink"\nlocal_retention_bytes = 1\n'
ASKED = "broker asked to delete segment (DeleteRecords)"


UNREACHABLE = "cluster unreachable: nothing new is uploaded for partitions not known to be led by this broker"


def run_all(sidecars, order, codes: tuple[int, ...] = (0,)) -> dict[int, list[dict]]:
    """`run --once` on each sidecar in `order`, each exiting one of `codes`; each run's JSON events."""
    out = {}
    for node in order:
        result = sidecars[node].run_once()
        assert result.returncode in codes and "Traceback" not in result.stderr, \
            f"node {node}: {result.stdout[-3000:]}{result.stderr[-3000:]}"
        out.setdefault(node, []).extend(events(result.stdout))
    return out


def assert_every_record_once(sidecar, topic: str, sent: list[tuple]) -> None:
    got = sidecar.cat(topic, 0)
    assert [r["offset"] for r in got] == list(range(len(sent))), f"node {sidecar.node_id}: offsets"
    assert [(base64.b64decode(r["key"]), base64.b64decode(r["value"])) for r in got] == \
        [(k, v) for k, v, _, _ in sent], f"node {sidecar.node_id}: records differ"


def trimmed_below(log_dir, topic: str, start: int) -> bool:
    """The replica keeps no segment wholly below `start` (at most one segment begins below it)."""
    bases = segment_bases(log_dir, topic, 0)
    return bool(bases) and sum(1 for b in bases if b < start) <= 1 and \
        all(nxt > start for b, nxt in zip(bases, bases[1:]) if b < start)


def wait_all_high_watermarks(cluster, topic: str, at_least: int) -> None:
    for node in cluster.nodes:
        wait_for_high_watermark(cluster.log_dir(node), topic, 0, at_least)


def test_the_leaders_delete_records_trims_every_replica_and_nothing_is_lost(cluster, s3, sidecars_for):
    topic = "cret"
    state = create_replicated_topic(cluster, topic)[0]
    sent = produce_kafka_python(cluster.bootstrap, topic, 600, value_size=300)
    wait_all_high_watermarks(cluster, topic, 600)
    sidecars = sidecars_for([topic])
    for sidecar in sidecars.values():
        sidecar.config.write_text(sidecar.config.read_text() + ADMIN_RETENTION)
    followers = [n for n in cluster.nodes if n != state.leader]
    ran = run_all(sidecars, [*followers, state.leader, *followers])

    # Only the leader's sidecar sent DeleteRecords (it applies to every replica).
    assert [n for n, evs in ran.items() if any(e["event"] == ASKED for e in evs)] == [state.leader]
    segments = stored_segments(s3, topic, 0)
    assert {s.broker_id for s in segments} == {state.leader}
    facts = chain_facts(segments)
    assert facts.start == 0 and facts.gaps == ()
    start = list_offsets(cluster.bootstrap, topic)[0]
    assert 0 < start <= facts.end + 1
    # Every replica's disk is trimmed: followers take the leader's log start on their next fetch.
    for node in cluster.nodes:
        wait_until(lambda: trimmed_below(cluster.log_dir(node), topic, start), 60,
                   f"node {node} to delete its segments below {start}")
    for sidecar in sidecars.values():
        assert_every_record_once(sidecar, topic, sent)


def test_unlink_on_stopped_brokers_and_a_lost_cluster_upload_nothing_new_then_recover(cluster, s3, sidecars_for):
    topic = "cunl"
    state = create_replicated_topic(cluster, topic)[0]
    sent = produce_kafka_python(cluster.bootstrap, topic, 400, value_size=300)
    wait_all_high_watermarks(cluster, topic, 400)
    sidecars = sidecars_for([topic])
    # Cluster up: the leader's sidecar uploads (and every sidecar keeps the topic's configs);
    # the followers run first, as a fresh follower's sidecar may well before the leader uploads.
    run_all(sidecars, [*(n for n in cluster.nodes if n != state.leader), state.leader])
    first_end = chain_facts(stored_segments(s3, topic, 0)).end
    assert first_end is not None

    # More records, then the whole cluster is lost (kill -9 of every node); with the brokers
    # stopped, local retention may unlink.
    sent += produce_kafka_python(cluster.bootstrap, topic, 400, value_size=300, start=400)
    wait_all_high_watermarks(cluster, topic, 800)
    cluster.kill_all()
    for sidecar in sidecars.values():
        sidecar.config.write_text(sidecar.config.read_text() + UNLINK_RETENTION)
    before = bucket_snapshot(s3)
    # Each run says once that the cluster is unreachable (exit 0 or 1: seen both).
    ran = run_all(sidecars, list(cluster.nodes), codes=(0, 1))
    assert all(sum(e["event"] == UNREACHABLE for e in evs) == 1 for evs in ran.values()), ran
    # Nobody knows who leads: nothing new reaches the store...
    assert bucket_snapshot(s3) == before, "a sidecar uploaded without knowing it leads"
    # ...but every replica drops what the chain covers (the brokers are stopped: unlink).
    for node in cluster.nodes:
        bases = segment_bases(cluster.log_dir(node), topic, 0)
        assert bases and bases[0] > 0, f"node {node} kept segments the chain covers: {bases}"
        assert bases[0] <= first_end + 1, f"node {node} deleted what the store does not hold: {bases}"

    # The cluster is back (unlink off again under running brokers): the leader's sidecar uploads
    # the rest; nothing is lost from both tiers.
    for sidecar in sidecars.values():
        sidecar.config.write_text(sidecar.config.read_text().replace(UNLINK_RETENTION, ""))
    cluster.start()
    with ClusterAdmin(cluster.bootstrap) as admin:
        state = admin.wait_healthy(topic, 1)[0]
    wait_all_high_watermarks(cluster, topic, 800)
    run_all(sidecars, list(cluster.nodes))
    segments = stored_segments(s3, topic, 0)
    facts = chain_facts(segments)
    assert facts.start == 0 and facts.gaps == () and facts.end > first_end
    assert facts.overlaps <= 1
    assert high_watermark(cluster.log_dir(state.leader), topic, 0) == 800
    for sidecar in sidecars.values():
        assert_every_record_once(sidecar, topic, sent)


def test_a_sidecar_that_loses_the_cluster_uploads_nothing_until_it_is_back(cluster, s3, sidecars_for):
    """The leader's sidecar reaches the cluster through a relay: while the relay is closed
    (bootstrap unreachable) it cannot know it still leads, so it uploads nothing new, though it
    knows the topic's configs from its earlier run; once the relay is open again it continues."""
    topic = "cblind"
    state = create_replicated_topic(cluster, topic)[0]
    produce_kafka_python(cluster.bootstrap, topic, 300, value_size=300)
    wait_all_high_watermarks(cluster, topic, 300)
    relay = Relay(cluster.nodes[state.leader].port)
    leader = sidecars_for([topic], bootstrap=f"127.0.0.1:{relay.port}")[state.leader]
    try:
        relay.open()
        result = leader.run_once()
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        first_end = chain_facts(stored_segments(s3, topic, 0)).end
        assert first_end is not None

        produce_kafka_python(cluster.bootstrap, topic, 300, value_size=300, start=300)
        wait_all_high_watermarks(cluster, topic, 600)
        relay.close()
        before = bucket_snapshot(s3)
        blind = leader.run_once()
        assert blind.returncode in (0, 1) and "Traceback" not in blind.stderr, blind.stderr[-3000:]
        assert sum(e["event"] == UNREACHABLE for e in events(blind.stdout)) == 1, blind.stdout[-3000:]
        assert bucket_snapshot(s3) == before, "uploaded without knowing it leads"

        relay.open()
        result = leader.run_once()
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    finally:
        relay.close()
    segments = stored_segments(s3, topic, 0)
    assert {(s.broker_id, s.leader_epoch) for s in segments} == {(state.leader, state.leader_epoch)}
    facts = chain_facts(segments)
    assert facts.start == 0 and facts.gaps == () and facts.overlaps == 0 and facts.end > first_end
