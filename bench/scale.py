"""Scale: 10,000 partitions with three segments each (two rolled, one active).

Method: a simulated broker writes 100 topics x 100 partitions into one log dir (small
segments: the point is the count, not the bytes). An S3 server (moto's server mode) runs in
its own process; `tiering run` (concurrency 16, default 60 s reconcile, inotify on) is a
child process. Measured:

1. first start, empty store: seconds from process start to /readyz (the first complete
   reconcile: every partition scanned, every segment checked against the journal and the
   20,000 eligible ones queued), then the time to drain that backlog;
2. idle: the daemon's CPU time (user + system, from /proc/PID/stat) over 300 s with nothing
   to do, as a share of one core. 300 s is one retention interval (Kafka's default check
   interval): the window holds one retention pass and five 60 s reconcile scans wherever it
   starts, so two runs are comparable. CPU is read every 10 s too; the median 10 s slice is
   the steady cost between scans and passes;
3. restart: a new daemon over the same log dir and journal, seconds to /readyz.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench.daemon_env import Daemon, Server
from bench.machine import describe, save_result
from tiering.simulate import SimulatedBroker

TOPICS = 100
PARTITIONS = 100
IDLE_SECONDS = 300.0   # one retention interval (daemon.retention_interval_ms)
SLICE_SECONDS = 10.0
PREFIX = "scale/"


def build(log_dir: Path) -> int:
    broker = SimulatedBroker(log_dir, segment_bytes=2**20, seed=9, auto_checkpoint=False)
    for t in range(TOPICS):
        topic = f"topic-{t:03d}"
        broker.create_topic(topic, PARTITIONS)
        for p in range(PARTITIONS):
            for _ in range(2):
                broker.produce(topic, p, 20, value_size=100, batch_records=10)
                broker.roll(topic, p)
            broker.produce(topic, p, 5, value_size=100, batch_records=5)
            broker.release(topic, p)
    broker.checkpoint()
    return TOPICS * PARTITIONS * 2


def main(args) -> int:
    work = Path(tempfile.mkdtemp(prefix="tiering-bench-scale-"))
    server = Server()
    daemon = None
    try:
        log_dir = work / "logs"
        started = time.monotonic()
        eligible = build(log_dir)
        build_seconds = time.monotonic() - started

        daemon = Daemon.start(work, log_dir, server.endpoint, prefix=PREFIX, concurrency=16)
        first_ready = daemon.wait_ready()
        started = time.monotonic()
        while daemon.metrics().get('tiering_upload_segments_total{result="uploaded"}', 0) < eligible:
            if time.monotonic() - started > 3600:
                raise SystemExit("bench: the backlog did not drain within an hour")
            time.sleep(1)
        drain_seconds = time.monotonic() - started
        time.sleep(2)
        cpu_before, wall_before = daemon.cpu_seconds(), time.monotonic()
        slices, last = [], cpu_before
        for _ in range(int(IDLE_SECONDS / SLICE_SECONDS)):
            time.sleep(SLICE_SECONDS)
            now = daemon.cpu_seconds()
            slices.append(now - last)
            last = now
        idle_cpu = last - cpu_before
        idle_wall = time.monotonic() - wall_before
        steady = statistics.median(slices) / SLICE_SECONDS
        metrics = daemon.metrics()
        daemon.stop()

        daemon = Daemon.start(work, log_dir, server.endpoint, prefix=PREFIX, concurrency=16)
        restart_ready = daemon.wait_ready()
        restart_uploaded = daemon.metrics().get('tiering_upload_segments_total{result="uploaded"}', 0)
    finally:
        if daemon is not None:
            daemon.stop()
        server.close()
        shutil.rmtree(work, ignore_errors=True)

    result = {"benchmark": "scale", "machine": describe(), "partitions": TOPICS * PARTITIONS,
              "segments": TOPICS * PARTITIONS * 3, "eligible_segments": eligible,
              "build_seconds": round(build_seconds, 1),
              "first_start_ready_seconds": round(first_ready, 2),
              "drain_seconds": round(drain_seconds, 1),
              "drain_segments_per_second": round(eligible / drain_seconds, 1),
              "idle_seconds": round(idle_wall, 1), "idle_cpu_seconds": round(idle_cpu, 2),
              "idle_cpu_share_of_one_core": round(idle_cpu / idle_wall, 4),
              "idle_steady_cpu_share_of_one_core": round(steady, 4),
              "idle_cpu_seconds_per_10s": [round(x, 2) for x in slices],
              "reconcile_scans_during_idle_window_total": metrics.get("tiering_reconcile_scans_total"),
              "last_reconcile_seconds": metrics.get("tiering_reconcile_last_duration_seconds"),
              "restart_ready_seconds": round(restart_ready, 2),
              "restart_uploaded_again": restart_uploaded}
    if not save_result("scale", result, args.json):
        return 0
    print(f"scale: {result['partitions']} partitions, {result['segments']} segments "
          f"({eligible} eligible), one log dir")
    print(f"  first start -> ready (first complete reconcile): {result['first_start_ready_seconds']:.2f} s")
    print(f"  backlog drained in {result['drain_seconds']:.0f} s ({result['drain_segments_per_second']:.0f} segments/s)")
    print(f"  idle CPU over {idle_wall:.0f} s: {idle_cpu:.2f} s = {100 * idle_cpu / idle_wall:.2f}% of one core "
          f"(last reconcile scan {result['last_reconcile_seconds']:.3f} s); median 10 s slice: "
          f"{100 * steady:.2f}%")
    print(f"  restart -> ready: {result['restart_ready_seconds']:.2f} s, segments uploaded again: "
          f"{restart_uploaded:.0f}")
    return 0
