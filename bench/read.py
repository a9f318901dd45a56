"""Cold-read throughput through the buffer pool, with and without prefetch, near and far.

Method: a simulated broker writes topic `cold` (1 partition, 16 MiB segments, default 1 GiB
of records with incompressible values); `tiering run --once` offloads it to an S3 server
(moto's server mode, in its own process) and deletes the local copies, leaving only the active
segment. A relay on loopback sits between the reader and the server and holds every HTTP
request for 0 or 50 ms before passing it on (a store that far away; bandwidth untouched).

Each case reads the whole partition once from offset 0, sequentially, in a child process of
its own: the tiered reader yields every record batch (CRC-32C checked, as `tiering cat
--format raw` does), and the child reports bytes/second over the read, the pool's counters
and its RSS after start-up (imports, store client, pool mapped but untouched) and its peak
(getrusage's ru_maxrss). Pool: 128 MiB of 4 MiB chunks (smaller than the data, so slabs are
reused). 1 MB = 10^6 bytes.

Cases: 96 MiB of prefetch at 0 and 50 ms, the default 32 MiB at 50 ms, and no prefetch at 50 ms
(and, for reference, at 0 ms); then 96 MiB at 0 ms under a read rate limit of 100 MB/s. The goal: with prefetch, 50 ms of latency costs at most 25% of the
throughput, and the reader's peak RSS stays within its start-up RSS + the pool + a small
constant.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.daemon_env import ENV, Server, offload_everything
from bench.machine import describe, save_result
from bench.relay import LatencyRelay
from tiering.simulate import SimulatedBroker

SEGMENT_BYTES = 16 * 1024 * 1024
POOL_BYTES = 128 * 1024 * 1024
CHUNK_BYTES = 4 * 1024 * 1024
# Cases: (prefetch bytes, latency). The window must cover what arrives during a round trip:
# in steady state throughput = window / (latency + window / bandwidth), so hiding a latency L
# at bandwidth B to within 25% takes a window of about 3 x B x L (~75 MB at 500 MB/s and
# 50 ms). 96 MiB is that; the former 32 MiB default is measured beside it.
PREFETCH_BYTES = 96 * 1024 * 1024
DEFAULT_PREFETCH_BYTES = 32 * 1024 * 1024
CASES = ((PREFETCH_BYTES, 0.0), (PREFETCH_BYTES, 0.05), (DEFAULT_PREFETCH_BYTES, 0.05), (0, 0.05), (0, 0.0))
# One more case checks the read rate limit: 96 MiB of prefetch, no latency, limited.
RATE_LIMIT = 100_000_000
RSS_CONSTANT = 32 * 1024 * 1024   # what "a small constant" above the pool is held to


def build(work: Path, mib: int, endpoint: str) -> Path:
    log_dir = work / "kafka-logs"
    broker = SimulatedBroker(log_dir, segment_bytes=SEGMENT_BYTES, seed=2, clock_ms=lambda: 1_700_000_000_000)
    broker.create_topic("cold", 1)
    while broker.next_offset("cold", 0) * 4_100 < mib * 1024 * 1024:
        broker.produce("cold", 0, 1600, value_size=4000, batch_records=16)
    broker.roll("cold", 0)
    broker.produce("cold", 0, 16, value_size=4000, batch_records=16)
    broker.close()
    return offload_everything(work, log_dir, endpoint, "read/")


def run_case(config: Path, endpoint_port: int, prefetch: int, delay: float, rate: int = 0) -> dict:
    relay = LatencyRelay("127.0.0.1", endpoint_port, delay)
    text = config.read_text().replace(f"127.0.0.1:{endpoint_port}", f"127.0.0.1:{relay.port}")
    text += (f"\n[read]\nbuffer_pool_bytes = {POOL_BYTES}\nchunk_bytes = {CHUNK_BYTES}\n"
             f"prefetch_bytes = {prefetch}\nrate_limit_bytes_per_second = {rate}\n")
    case_config = config.with_name(f"case-{prefetch}-{int(delay * 1000)}-{rate}.toml")
    case_config.write_text(text)
    child = subprocess.Popen([sys.executable, "-m", "bench.read", "--child", str(case_config)], env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = child.communicate()
    if child.returncode:
        raise SystemExit(f"bench: the reader failed: {err.strip()}")
    figures = json.loads(out)
    figures["requests"] = relay.requests
    return figures


def child(config_path: str) -> int:
    """Read the whole partition once; print figures as JSON."""
    from tiering.config import load_config
    from tiering.wiring import open_reader

    config = load_config(config_path)
    with open_reader(config) as reader:
        start_rss = _rss()
        read = 0
        first = None
        started = time.monotonic()
        for batch in reader.batches("cold", 0, 0):
            if first is None:
                first = time.monotonic() - started
            read += len(batch.data)
        seconds = time.monotonic() - started
        stats = reader.pool.stats()
    print(json.dumps({
        "bytes": read, "seconds": round(seconds, 3), "first_batch_ms": round(first * 1000, 1), "mb_per_s": round(read / seconds / 1e6, 1),
        "pool_hit_ratio": round(stats.hit_ratio, 3), "loads": stats.loads, "prefetched": stats.prefetched,
        "prefetch_used": stats.prefetch_used, "prefetch_wasted": stats.prefetch_wasted,
        "waits": stats.waits, "start_rss_bytes": start_rss,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }))
    return 0


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main(args) -> int:
    mib = args.mib or 1024
    work = Path(tempfile.mkdtemp(prefix="bench-read-"))
    server = Server()
    try:
        config = build(work, mib, server.endpoint)
        port = int(server.endpoint.rsplit(":", 1)[1])
        cases = []
        for prefetch, delay in CASES:
            figures = run_case(config, port, prefetch, delay)
            cases.append({"prefetch_bytes": prefetch, "latency_ms": int(delay * 1000), "rate_limit": 0, **figures})
        limited = {"prefetch_bytes": PREFETCH_BYTES, "latency_ms": 0, "rate_limit": RATE_LIMIT,
                   **run_case(config, port, PREFETCH_BYTES, 0.0, RATE_LIMIT)}
    finally:
        server.close()
        shutil.rmtree(work, ignore_errors=True)
    by = {(c["prefetch_bytes"], c["latency_ms"]): c for c in cases}
    cases.append(limited)
    near, far = by[(PREFETCH_BYTES, 0)], by[(PREFETCH_BYTES, 50)]
    cost = 1 - far["mb_per_s"] / near["mb_per_s"]
    default_cost = 1 - by[(DEFAULT_PREFETCH_BYTES, 50)]["mb_per_s"] / near["mb_per_s"]
    rss_over = max(c["peak_rss_bytes"] - c["start_rss_bytes"] for c in cases)
    result = {
        "benchmark": "read", "machine": describe(), "pool_bytes": POOL_BYTES, "chunk_bytes": CHUNK_BYTES,
        "prefetch_bytes": PREFETCH_BYTES, "cases": cases,
        "latency_cost_with_prefetch": round(cost, 3), "goal_latency_cost": 0.25,
        "latency_cost_with_default_prefetch": round(default_cost, 3),
        "peak_rss_over_start_bytes": rss_over, "goal_rss_over_start_bytes": POOL_BYTES + RSS_CONSTANT,
    }
    if save_result("read", result, args.json):
        print(f"cold read of {cases[0]['bytes'] / 2**20:.0f} MiB (pool {POOL_BYTES >> 20} MiB of "
              f"{CHUNK_BYTES >> 20} MiB chunks) on {result['machine']['cores']} cores, {result['machine']['cpu']}")
        print(f"{'prefetch, latency':<36} {'MB/s':>7} {'1st batch':>9} {'GETs':>5} {'hit ratio':>9} {'prefetched':>10} {'wasted':>6} "
              f"{'start RSS':>9} {'peak RSS':>9}")
        for c in cases:
            case = f"{c['prefetch_bytes'] >> 20} MiB, {c['latency_ms']} ms" if c["prefetch_bytes"] else \
                f"none, {c['latency_ms']} ms"
            case += f", {c['rate_limit'] / 1e6:.0f} MB/s limit" if c["rate_limit"] else ""
            print(f"{case:<36} {c['mb_per_s']:>7.1f} {c['first_batch_ms']:>7.0f}ms {c['requests']:>5} "
                  f"{c['pool_hit_ratio']:>9.2f} {c['prefetched']:>10} {c['prefetch_wasted']:>6} "
                  f"{c['start_rss_bytes'] / 2**20:>7.0f}Mi {c['peak_rss_bytes'] / 2**20:>7.0f}Mi")
        print(f"50 ms of latency costs {cost:.0%} with {PREFETCH_BYTES >> 20} MiB of prefetch (goal: at most 25%), "
              f"{default_cost:.0%} with the default {DEFAULT_PREFETCH_BYTES >> 20} MiB; peak RSS rose "
              f"{rss_over / 2**20:.0f} MiB over start-up (goal: at most the pool + {RSS_CONSTANT >> 20} MiB)")
    return 0


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--child":
    sys.exit(child(sys.argv[2]))
