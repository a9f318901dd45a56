"""The daemon in cluster mode, in process: a leader change reaches a running sidecar within
its metadata refresh, and a lost cluster is said in /readyz's detail."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

from tests.integration.test_cli_and_recovery import ListLog
from tests.integration.test_cluster_upload import TOPIC, TOPIC_ID, Node, StaticConfigs, chain_of, lead, manifests
from tiering.clock import SystemClock
from tiering.daemon import Daemon
from tiering.journal import Journal
from tiering.observability.metrics import Metrics
from tiering.upload.ratelimit import RateLimiter


def wait_until(check, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_running_sidecar_takes_over_at_a_leader_change(tmp_path, s3, s3_endpoint):
    old, new = Node(tmp_path, s3_endpoint, 1, 16 * 1024), Node(tmp_path, s3_endpoint, 2, 20 * 1024)
    for node in (old, new):
        node.produce(300)
    lead([old, new], 0, 1, 3)
    lead([old, new], 1, 1, 3)
    assert old.run_pass().uploaded
    new.produce(200)          # what the old leader had not rolled yet when it lost leadership
    config = replace(new.config, daemon=replace(new.config.daemon, watch=False, reconcile_interval_ms=600_000),
                     cluster=replace(new.config.cluster, metadata_refresh_ms=200))
    metrics = Metrics.create()
    clock = SystemClock()
    log = ListLog()
    made: list[Daemon] = []

    def run() -> None:
        # The journal (SQLite) belongs to the thread that opens it: the daemon's loop.
        daemon = Daemon(tmp_path / "unused.toml", config, new.store, Journal(config.state.dir), clock, log, metrics,
                        RateLimiter(0, clock.monotonic), leadership_factory=lambda _: new.leadership,
                        config_source_factory=lambda _: StaticConfigs())
        made.append(daemon)
        daemon.run()

    runner = threading.Thread(target=run, name="daemon")
    runner.start()
    daemon = wait_until(lambda: made and made[0], 30, "the daemon")
    try:
        wait_until(lambda: daemon.ready()[0] and daemon.gate.decisions.get((TOPIC, TOPIC_ID, 0)), 60,
                   "the first reconcile")
        assert daemon.gate.decisions[(TOPIC, TOPIC_ID, 0)].role == "follower"
        assert metrics.cluster_partitions.labels("follower")._value.get() == 2
        old_end = chain_of(old, 0).end
        lead([new], 0, 2, 4)             # the cluster moves leadership of partition 0 to broker 2
        wait_until(lambda: any(m["broker_id"] == 2 for m in manifests(s3, 0)), 60, "broker 2's first upload")
        wait_until(lambda: chain_of(new, 0).end > old_end and daemon.coordinator.in_flight == 0
                   and not daemon.coordinator.queue.backlog().segments, 60, "broker 2 to extend the chain")
        chain = chain_of(new, 0)
        assert chain.gaps() == () and len(chain.overlaps()) <= 1
        assert {(m["broker_id"], m["leader_epoch"]) for m in manifests(s3, 0) if m["base_offset"] > old_end} <= {(2, 4)}
        assert all(m["broker_id"] == 1 for m in manifests(s3, 1))      # still led by broker 1

        new.leadership.unreachable = True
        ok, detail = wait_until(lambda: (lambda r: r if "cluster unreachable" in r[1] else None)(daemon.ready()),
                                30, "/readyz to say the cluster is unreachable")
        assert ok and "nothing new is uploaded" in detail
        wait_until(lambda: metrics.cluster_reachable._value.get() == 0, 30, "the reachability gauge")
        assert [e for level, e, _ in log.events if "cluster unreachable" in e] == [
            "cluster unreachable: nothing new is uploaded for partitions not known to be led by this broker"]
    finally:
        daemon.request_stop()
        runner.join(30)
        old.close()
        new.close()
    assert not runner.is_alive()
