"""Crash anywhere: the daemon, a real subprocess over a broker that keeps producing, with local
deletion right after upload, is killed with SIGKILL at seeded random moments and restarted.
After every kill each segment the broker ever rolled is whole in at least one tier; at the
end everything is offloaded exactly once, `verify` is clean, and the store holds no open
multipart upload and no object without a manifest."""

from __future__ import annotations

import json
import random
import signal
import time
from collections import Counter

import pytest

from tests.conftest import run_cli
from tests.faults.harness import Ledger, StoreView, config_text, open_multipart_uploads, whereabouts
from tests.integration.daemon_process import DaemonProcess, wait_for
from tiering.demo import free_port
from tiering.simulate import SimulatedBroker

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SMALL = [("events", p) for p in range(3)]
BIG = ("audit", 0)           # segments above the 5 MiB part size: multipart uploads in flight


def test_kill_9_at_random_moments_loses_nothing_and_duplicates_nothing(env, s3, tmp_path, soak, seed, fault_report):
    kills = 200 if soak else 12
    rng = random.Random(seed)
    broker = SimulatedBroker(env.log_dir, segment_bytes=1 << 30, seed=seed)   # rolls only when told
    broker.create_topic("events", len(SMALL))
    broker.create_topic("audit", 1)
    ledger = Ledger(broker)
    # Local copies go at once after upload (retention every 200 ms); the upload rate is held
    # down so that kills land in the middle of transfers, not between them.
    config = config_text(env, env.endpoint, retention="local_retention_ms = 0",
                         upload='rate_limit_bytes_per_second = "24MiB"',
                         daemon='retention_interval_ms = 200\nreconcile_interval_ms = 500\n'
                                'sweep_interval_ms = "1s"\nstale_multipart_ms = "3s"\norphan_ms = "3s"')

    def produce_a_little() -> None:
        if rng.random() < 0.1:
            broker.produce(*BIG, 7000, value_size=1000, batch_records=50)
            ledger.roll(*BIG)
            return
        topic, partition = rng.choice(SMALL)
        broker.produce(topic, partition, rng.randint(20, 400), value_size=rng.choice((100, 500)),
                       codec=rng.choice(("none", "gzip", "zstd")))
        if rng.random() < 0.4:
            ledger.roll(topic, partition)

    view = StoreView(s3)
    moments = []
    seen: Counter[str] = Counter()      # what the killed daemons logged, by event
    for kill in range(kills):
        daemon = DaemonProcess(config, tmp_path, None)
        # The moment counts from the daemon's first log line ("tiering started", before its
        # recovery), not from the spawn: on a loaded machine the interpreter's imports alone can
        # outlast the whole range, and a kill during imports tests nothing.
        spawned = time.monotonic()
        while not daemon.stdout_path.stat().st_size and daemon.proc.poll() is None \
                and time.monotonic() - spawned < 60:
            produce_a_little()
            time.sleep(rng.uniform(0.02, 0.12))
        moment = rng.uniform(0.0, 2.7)      # in recovery, uploads, retention
        started = time.monotonic()
        while time.monotonic() - started < moment:
            produce_a_little()
            time.sleep(rng.uniform(0.02, 0.12))
        assert daemon.proc.poll() is None, f"the daemon exited by itself: {daemon.stderr()}"
        daemon.proc.send_signal(signal.SIGKILL)
        daemon.proc.wait(10)
        moments.append(round(moment, 2))
        seen.update(_events(daemon.stdout()))
        where = whereabouts(ledger, env.log_dir, view)
        assert not where.lost, f"after kill {kill + 1} (at {moment:.2f} s) not whole in any tier: {where.lost}"
        assert not where.duplicates, f"after kill {kill + 1}: visible twice: {where.duplicates}"
        assert not where.broken, f"after kill {kill + 1}: visible but not whole: {where.broken}"

    # The broker rolls what it has; one daemon runs until everything is remote and cleaned up.
    for topic, partition in (*SMALL, BIG):
        broker.produce(topic, partition, 10)
        ledger.roll(topic, partition)
    port = free_port()
    config = config_text(env, env.endpoint, retention="local_retention_ms = 0",
                         upload='rate_limit_bytes_per_second = "24MiB"', metrics_port=port,
                         daemon='retention_interval_ms = 200\nreconcile_interval_ms = 500\n'
                                'sweep_interval_ms = "1s"\nstale_multipart_ms = "3s"\norphan_ms = "3s"')
    daemon = DaemonProcess(config, tmp_path, port)
    try:
        daemon.wait_ready()

        def settled() -> bool:
            where = whereabouts(ledger, env.log_dir, view)
            return (set(where.remote) == set(ledger.segments) and not where.local and not where.orphans
                    and not open_multipart_uploads(s3))
        wait_for(settled, 120, "the daemon did not offload everything and clean up after the kills", interval=0.5)
        code, _ = daemon.stop(signal.SIGTERM)
        assert code == 0, daemon.stderr()
    finally:
        daemon.kill()
    where = whereabouts(ledger, env.log_dir, view)
    assert not where.lost and not where.duplicates and not where.broken and not where.orphans
    assert not where.remote_only_unknown
    assert not open_multipart_uploads(s3)
    verify = run_cli("verify", "--config", str(config))
    assert verify.returncode == 0, verify.stdout + verify.stderr

    big = sum(1 for s in ledger.segments if s[0] == BIG[0])
    assert big >= 2, "the run never rolled a segment big enough for a multipart upload"
    # The kills must have hit work in progress, or this test proves nothing.
    assert seen["interrupted upload cleaned up"] + seen["interrupted upload had completed"] >= 1, seen
    fault_report("crash anywhere", seed=seed, kills=len(moments), segments=len(ledger.segments),
                 multipart_segments=big, offloaded=len(where.remote), lost=len(where.lost),
                 duplicates_visible=len(where.duplicates), orphans_left=len(where.orphans),
                 uploads_cut_by_a_kill=seen["interrupted upload cleaned up"],
                 uploads_killed_after_their_manifest=seen["interrupted upload had completed"],
                 uploaded_before_kills=seen["segment uploaded"], local_deletions_before_kills=seen["local deleted"],
                 kill_moments_s=f"{min(moments)}..{max(moments)}")
    broker.close()


def _events(stdout: str) -> Counter[str]:
    """The killed daemon's log events by name (its last line may be cut by the kill)."""
    counts: Counter[str] = Counter()
    for line in stdout.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        name = event.get("event", "")
        if name == "interrupted upload settled":
            name = ("interrupted upload had completed" if "had completed" in event.get("detail", "")
                    else "interrupted upload cleaned up")
        elif "deleted" in name and "store" not in name:
            name = "local deleted"
        counts[name] += 1
    return counts
