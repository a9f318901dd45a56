"""How fast a rollback brings a topic back to local disk, and what memory it takes.

Method: a simulated broker writes topic `back` (4 partitions, 16 MiB segments, default 1 GiB
of records with incompressible values in all); `tiering run --once` offloads it to an S3
server (moto's server mode, in its own process) and deletes the local copies, and the
broker "restarts" (log starts move up). The log dir as it is then (active segments and
checkpoints only) is copied aside. Each case copies it back to a fresh directory, with a fresh
state dir, and runs `tiering rollback --topic back --confirm` as a child process through a
relay on loopback that holds every HTTP request 0 or 50 ms (a store that far away). Figures:
wall time of the child, bytes restored per second (every file is downloaded, fsynced and
checksummed before it is renamed), and the child's peak RSS (wait4's ru_maxrss).
1 MB = 10^6 bytes.

Cases: `upload.concurrency` (partitions restored in parallel, and ranged GETs per .log) 4 at
0 and 50 ms, and 1 at 50 ms.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.daemon_env import ENV, Server, offload_everything, state_dir
from bench.machine import describe, save_result
from bench.relay import LatencyRelay
from tiering.simulate import SimulatedBroker

SEGMENT_BYTES = 16 * 1024 * 1024
PARTITIONS = 4
CASES = ((4, 0.0), (4, 0.05), (1, 0.05))   # (concurrency, latency)


def build(work: Path, mib: int, endpoint: str) -> tuple[Path, Path]:
    """Returns the offloaded log dir and the config that offloaded it."""
    log_dir = work / "kafka-logs"
    broker = SimulatedBroker(log_dir, segment_bytes=SEGMENT_BYTES, seed=3, clock_ms=lambda: 1_700_000_000_000)
    broker.create_topic("back", PARTITIONS)
    per_partition = mib * 1024 * 1024 // PARTITIONS
    for p in range(PARTITIONS):
        while broker.next_offset("back", p) * 4_100 < per_partition:
            broker.produce("back", p, 1600, value_size=4000, batch_records=16)
        broker.roll("back", p)
        broker.produce("back", p, 16, value_size=4000, batch_records=16)
    config = offload_everything(work, log_dir, endpoint, "rollback/")
    broker.restart()
    broker.close()
    return log_dir, config


def run_case(work: Path, offloaded: Path, config: Path, port: int, concurrency: int, delay: float) -> dict:
    case = work / f"case-{concurrency}-{int(delay * 1000)}"
    log_dir = case / "kafka-logs"
    shutil.copytree(offloaded, log_dir)
    relay = LatencyRelay("127.0.0.1", port, delay)
    text = (config.read_text().replace(f"127.0.0.1:{port}", f"127.0.0.1:{relay.port}")
            .replace(str(offloaded), str(log_dir)).replace("concurrency = 8", f"concurrency = {concurrency}")
            .replace(str(state_dir(work, "rollback/")), str(case / "state")))
    case_config = case / "tiering.toml"
    case_config.write_text(text)
    out_path = case / "stdout"
    started = time.monotonic()
    with open(out_path, "w") as out, open(case / "stderr", "w") as err:
        child = subprocess.Popen([sys.executable, "-m", "tiering", "rollback", "--config", str(case_config),
                                  "--topic", "back", "--confirm"], env=ENV, stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)      # the child's own peak RSS
    seconds = time.monotonic() - started
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"bench: the rollback failed: {(case / 'stderr').read_text().strip()}")
    summary = next(json.loads(line) for line in out_path.read_text().splitlines()
                   if line.startswith("{") and json.loads(line)["event"] == "rollback finished")
    shutil.rmtree(case, ignore_errors=True)
    return {"concurrency": concurrency, "latency_ms": int(delay * 1000), "seconds": round(seconds, 2),
            "restore_seconds": summary["seconds"], "bytes": summary["bytes_restored"],
            "segments": summary["segments_restored"], "requests": relay.requests,
            "mb_per_s": round(summary["bytes_restored"] / summary["seconds"] / 1e6, 1),
            "peak_rss_bytes": usage.ru_maxrss * 1024}


def main(args) -> int:
    mib = args.mib or 1024
    work = Path(tempfile.mkdtemp(prefix="bench-rollback-"))
    server = Server()
    try:
        offloaded, config = build(work, mib, server.endpoint)
        port = int(server.endpoint.rsplit(":", 1)[1])
        cases = [run_case(work, offloaded, config, port, concurrency, delay) for concurrency, delay in CASES]
    finally:
        server.close()
        shutil.rmtree(work, ignore_errors=True)
    result = {"benchmark": "rollback", "machine": describe(), "partitions": PARTITIONS,
              "segment_bytes": SEGMENT_BYTES, "cases": cases}
    if save_result("rollback", result, args.json):
        print(f"rollback of {cases[0]['bytes'] / 2**20:.0f} MiB in {cases[0]['segments']} segments of "
              f"{SEGMENT_BYTES >> 20} MiB over {PARTITIONS} partitions on {result['machine']['cores']} cores, "
              f"{result['machine']['cpu']}")
        print(f"{'concurrency, latency':<24} {'MB/s':>7} {'restore s':>9} {'wall s':>7} {'requests':>8} {'peak RSS':>9}")
        for c in cases:
            print(f"{str(c['concurrency']) + ', ' + str(c['latency_ms']) + ' ms':<24} {c['mb_per_s']:>7.1f} "
                  f"{c['restore_seconds']:>9.2f} {c['seconds']:>7.2f} {c['requests']:>8} "
                  f"{c['peak_rss_bytes'] / 2**20:>7.0f}Mi")
    return 0
