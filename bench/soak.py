"""Soak: the daemon's memory over many segments, beside a simulated broker.

Method: an S3 server (moto's server mode) in its own process and `tiering run` as a child
process (concurrency 4, inotify on, 60 s reconcile) with local retention of 1 byte (every
uploaded rolled segment is deleted locally at the next retention pass, every 10 s) and total
retention of 2 minutes (remote segments expire, so the journal's rows come and go: a steady
state, as a broker's retention gives one). A simulated broker in this process rolls small
segments (20 records of 100 bytes) round-robin over 8 partitions, as fast as the daemon
uploads them: no more than 40 rolled and not yet uploaded at any time, and no more than
1,500 (`--alive`) rolled and not yet deleted from the store by total retention, so what the
daemon holds is a steady state by construction even where retention passes are slower than
uploads (on 2 shared cores, with moto, a pass took 2-3 minutes); every 100 rolls it
deletes producer snapshots below each partition's first segment, as a broker does when its
log start offset moves. At every 1,000 segments (`--every`)
uploaded (the daemon's own counter), the daemon's RSS, threads and open fds are read from
/proc; growth is the last reading minus the one at the end of the warm-up (the first 1,000).

`--tracemalloc`: the daemon runs under tracemalloc (slower, more memory) and writes a
snapshot at each reading; the biggest growths between the warm-up and the end are printed
(file:line and KiB), which is how to find what grows when the RSS does.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from bench.daemon_env import ENV, Daemon, Server, write_config
from bench.machine import describe, save_result
from tiering.demo import free_port
from tiering.simulate import SimulatedBroker

DEFAULT_SEGMENTS = 10_000
EVERY = 1_000
PARTITIONS = 8
OUTSTANDING = 40
ALIVE = 1_500
PREFIX = "soak/"
TOPIC = "soak"
CONFIG = """
[retention]
local_retention_bytes = 1
retention_ms = "2min"
[daemon]
retention_interval_ms = "10s"
"""
# The daemon under tracemalloc: each SIGUSR2 writes a snapshot next to the config.
_TRACED_CHILD = """
import signal, sys, tracemalloc
tracemalloc.start(1)
count = [0]
def dump(*_):
    count[0] += 1
    tracemalloc.take_snapshot().dump(sys.argv[1] + f"/snapshot-{count[0]:03d}")
signal.signal(signal.SIGUSR2, dump)
from tiering.cli.main import main
main(["run", "--config", sys.argv[2]])
"""


def add_arguments(parser) -> None:
    parser.add_argument("--segments", type=int, default=DEFAULT_SEGMENTS,
                        help=f"segments to upload (default {DEFAULT_SEGMENTS:,})")
    parser.add_argument("--every", type=int, default=EVERY,
                        help=f"segments between two readings (default {EVERY:,})")
    parser.add_argument("--alive", type=int, default=ALIVE,
                        help=f"segments rolled and not yet expired from the store, at most (default {ALIVE:,})")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="run the daemon under tracemalloc and print what grew")


def proc_figures(pid: int) -> dict:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {"rss_mib": round(int(status["VmRSS"].split()[0]) / 1024, 1), "threads": int(status["Threads"]),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def start_daemon(work: Path, log_dir: Path, endpoint: str, traced: bool) -> Daemon:
    port = free_port()
    config = write_config(work, log_dir, endpoint, prefix=PREFIX, port=port, extra=CONFIG)
    if not traced:
        return Daemon(config, port, work / "daemon.log")
    daemon = Daemon.__new__(Daemon)
    daemon.port = port
    daemon.process = subprocess.Popen([sys.executable, "-c", _TRACED_CHILD, str(work), str(config)],
                                      stdout=open(work / "daemon.log", "w"), stderr=subprocess.STDOUT, env=ENV)
    return daemon


def soak(segments: int, traced: bool, every: int = EVERY, alive: int = ALIVE) -> dict:
    work = Path(tempfile.mkdtemp(prefix="tiering-bench-soak-"))
    server = Server()
    daemon = None
    readings = []
    try:
        log_dir = work / "logs"
        broker = SimulatedBroker(log_dir, segment_bytes=64 * 2**20, seed=5)
        broker.create_topic(TOPIC, PARTITIONS)
        daemon = start_daemon(work, log_dir, server.endpoint, traced)
        daemon.wait_ready(120)
        started = time.monotonic()
        rolled = uploaded = expired = 0
        next_reading = every
        next_check = 0.0
        while uploaded < segments:
            if (rolled - uploaded < OUTSTANDING and rolled - expired < alive
                    and rolled < segments + OUTSTANDING):
                p = rolled % PARTITIONS
                broker.produce(TOPIC, p, 20, value_size=100)
                broker.roll(TOPIC, p)
                rolled += 1
                if rolled % 100 == 0:
                    trim_snapshots(log_dir)
                continue
            now = time.monotonic()
            if now >= next_check:
                if daemon.process.poll() is not None:
                    raise SystemExit(f"bench: the daemon exited (see {work / 'daemon.log'})")
                figures = daemon.metrics()
                uploaded = int(figures.get('tiering_upload_segments_total{result="uploaded"}', 0))
                expired = int(deleted(figures, "remote"))
                next_check = now + 0.2
            while uploaded >= next_reading:
                if traced:
                    daemon.process.send_signal(signal.SIGUSR2)
                readings.append({"segments": next_reading, "seconds": round(time.monotonic() - started, 1),
                                 **proc_figures(daemon.process.pid)})
                print(f"  {readings[-1]}", file=sys.stderr, flush=True)
                next_reading += every
            time.sleep(0.02)
        metrics = daemon.metrics()
        grew = top_growth(work) if traced else []
    finally:
        if daemon is not None:
            daemon.stop()
        server.close()
        shutil.rmtree(work, ignore_errors=True)
    warm = readings[0]["rss_mib"] if readings else 0.0
    after_warmup = [r["rss_mib"] for r in readings[1:]] or [warm]
    return {"benchmark": "soak", "machine": describe(), "segments": segments, "partitions": PARTITIONS, "every": every,
            "alive": alive,
            "tracemalloc": traced, "readings": readings,
            "rss_after_warmup_mib": warm, "rss_end_mib": readings[-1]["rss_mib"] if readings else 0.0,
            "growth_after_warmup_mib": round(readings[-1]["rss_mib"] - warm, 1) if readings else 0.0,
            "max_after_warmup_mib": max(after_warmup),
            "remote_deleted": deleted(metrics, "remote"), "local_deleted": deleted(metrics, "local"),
            "tracemalloc_top_growth": grew}


def trim_snapshots(log_dir: Path) -> None:
    """What a broker does as its log start offset moves up: delete the producer snapshots
    below its first segment (the simulated broker keeps every one, and the scans would list
    a growing number of files)."""
    for partition in log_dir.iterdir():
        if not partition.is_dir():
            continue
        names = [entry.name for entry in os.scandir(partition)]
        logs = [int(n.split(".")[0]) for n in names if n.endswith(".log")]
        if not logs:
            continue
        first = min(logs)
        for name in names:
            if name.endswith(".snapshot") and int(name.split(".")[0]) < first:
                try:
                    os.unlink(partition / name)
                except FileNotFoundError:
                    pass


def deleted(metrics: dict[str, float], tier: str) -> float:
    return sum(v for k, v in metrics.items()
               if k.startswith("tiering_retention_deleted_segments_total{") and f'tier="{tier}"' in k)


def top_growth(work: Path, limit: int = 12) -> list[dict]:
    """The biggest growths between the snapshot after the warm-up and the last one."""
    shots = sorted(work.glob("snapshot-*"))
    deadline = time.monotonic() + 30
    while len(shots) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
        shots = sorted(work.glob("snapshot-*"))
    if len(shots) < 2:
        return []
    time.sleep(2)    # the last dump may still be being written
    first, last = tracemalloc.Snapshot.load(str(shots[0])), tracemalloc.Snapshot.load(str(shots[-1]))
    stats = last.compare_to(first, "lineno")
    return [{"where": str(s.traceback[0]), "grew_kib": round(s.size_diff / 1024, 1), "count_diff": s.count_diff}
            for s in stats[:limit]]


def main(args) -> int:
    result = soak(args.segments, args.tracemalloc, args.every, args.alive)
    if not save_result("soak", result, args.json):
        return 0
    print(f"soak: {args.segments:,} segments over {PARTITIONS} partitions; daemon RSS per {args.every:,} uploaded")
    print(f"{'segments':>9}  {'seconds':>8}  {'RSS MiB':>8}  {'threads':>7}  {'fds':>4}")
    for r in result["readings"]:
        print(f"{r['segments']:>9,}  {r['seconds']:>8.1f}  {r['rss_mib']:>8.1f}  {r['threads']:>7}  {r['fds']:>4}")
    print(f"growth after warm-up (first {args.every:,}): {result['growth_after_warmup_mib']:+.1f} MiB "
          f"(max {result['max_after_warmup_mib']:.1f} MiB); deleted locally {result['local_deleted']:.0f}, "
          f"remotely {result['remote_deleted']:.0f}")
    for item in result["tracemalloc_top_growth"]:
        print(f"  {item['grew_kib']:>+9.1f} KiB  {item['count_diff']:>+7}  {item['where']}")
    return 0
