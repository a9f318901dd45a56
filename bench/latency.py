"""Roll-to-remote latency: from a segment's roll to its manifest being visible in the store.

Method: an S3 server (moto's server mode) in its own process and `tiering run` as a child
process with default settings (inotify on, 60 s reconcile, concurrency 4) and a 16 MiB/s
upload limit. A simulated broker in this process rolls a 1 MiB segment every 0.5 s, round-
robin over 4 partitions of topic `live`, and writes its high-watermark checkpoint at each
roll (a real broker writes it every 5 s, which would add up to that much). A poller lists
the bucket every 50 ms and notes when each manifest first appears; latency is that time
minus the wall time when roll() returned (so it includes up to 50 ms of polling).

- idle: 60 rolls with nothing else to upload;
- backlog: the same rolls while the daemon drains 384 MiB of older segments of topic
  `backlog` (8 MiB segments, 4 partitions) at the 16 MiB/s limit; only rolls made while that
  backlog was still pending count.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

from bench.daemon_env import BUCKET, Daemon, Server
from bench.machine import describe, save_result
from tiering.kafka.checkpoints import TopicPartition
from tiering.simulate import SimulatedBroker
from tiering.store.keys import parse_key

ROLLS = 60
ROLL_INTERVAL = 0.5
PARTITIONS = 4
RATE_LIMIT = 16 * 2**20
PREFIX = "lat/"


class ManifestPoller:
    def __init__(self, client):
        self.client = client
        self.seen: dict[tuple[str, int, int], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.time()
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX):
                for item in page.get("Contents", []):
                    parsed = parse_key(item["Key"])
                    if parsed is not None and parsed.is_manifest:
                        self.seen.setdefault((parsed.topic, parsed.partition, parsed.base_offset), now)
            self._stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def roll_live(broker: SimulatedBroker, count: int, rolled: dict, during=lambda: True) -> None:
    for i in range(count):
        started = time.monotonic()
        p = i % PARTITIONS
        base = broker.logs[TopicPartition("live", p)].active.base_offset
        broker.produce("live", p, 250, value_size=4000, batch_records=25)
        broker.roll("live", p)
        if during():
            rolled[("live", p, base)] = time.time()
        time.sleep(max(0.0, ROLL_INTERVAL - (time.monotonic() - started)))


def percentiles(values: list[float]) -> dict:
    ordered = sorted(values)
    q = statistics.quantiles(ordered, n=100, method="inclusive")
    return {"samples": len(ordered), "p50_seconds": round(q[49], 3), "p99_seconds": round(q[98], 3),
            "max_seconds": round(ordered[-1], 3)}


def main(args) -> int:
    work = Path(tempfile.mkdtemp(prefix="tiering-bench-latency-"))
    server = Server()
    daemon = None
    try:
        log_dir = work / "logs"
        broker = SimulatedBroker(log_dir, segment_bytes=64 * 2**20, seed=2)
        broker.create_topic("live", PARTITIONS)
        daemon = Daemon.start(work, log_dir, server.endpoint, prefix=PREFIX,
                              extra=f"rate_limit_bytes_per_second = {RATE_LIMIT}")
        daemon.wait_ready()
        poller = ManifestPoller(server.client)

        idle: dict = {}
        roll_live(broker, ROLLS, idle)
        time.sleep(3)

        broker.create_topic("backlog", PARTITIONS, segment_bytes=8 * 2**20)
        for p in range(PARTITIONS):
            while broker.next_offset("backlog", p) * 4_100 < 96 * 2**20:
                broker.produce("backlog", p, 2000, value_size=4000, batch_records=25)
            broker.roll("backlog", p)
        time.sleep(1.0)   # let the daemon see the backlog before the live rolls start
        busy: dict = {}
        roll_live(broker, ROLLS, busy,
                  during=lambda: daemon.metrics().get("tiering_upload_backlog_segments", 0) > 0)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not all(k in poller.seen for k in [*idle, *busy]):
            time.sleep(0.2)
        poller.stop()
        metrics = daemon.metrics()
    finally:
        if daemon is not None:
            daemon.stop()
        server.close()
        shutil.rmtree(work, ignore_errors=True)

    def latencies(rolled: dict) -> list[float]:
        return [poller.seen[k] - t for k, t in rolled.items() if k in poller.seen]

    result = {"benchmark": "latency", "machine": describe(),
              "method": "roll() returned -> manifest first listed (50 ms polling)",
              "roll_interval_seconds": ROLL_INTERVAL, "segment_bytes": 2**20, "rate_limit_bytes_per_second": RATE_LIMIT,
              "idle": percentiles(latencies(idle)),
              "backlog": percentiles(latencies(busy)) if len(busy) >= 2 else {"samples": len(busy)},
              "missing": len([k for k in [*idle, *busy] if k not in poller.seen]),
              "daemon_histogram_count": metrics.get("tiering_roll_to_remote_seconds_count")}
    if not save_result("latency", result, args.json):
        return 0
    print("roll-to-remote latency (segment rolled -> manifest visible)")
    print(f"{'phase':>8}  {'samples':>7}  {'p50 s':>7}  {'p99 s':>7}  {'max s':>7}")
    for phase in ("idle", "backlog"):
        r = result[phase]
        if "p50_seconds" in r:
            print(f"{phase:>8}  {r['samples']:>7}  {r['p50_seconds']:>7.3f}  {r['p99_seconds']:>7.3f}  {r['max_seconds']:>7.3f}")
        else:
            print(f"{phase:>8}  {r['samples']:>7}  (too few samples)")
    if result["missing"]:
        print(f"{result['missing']} rolled segment(s) never became visible")
    return 0
