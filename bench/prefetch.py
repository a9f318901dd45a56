"""Cold-read throughput near and far: the fixed prefetch window against the adaptive one.

Method: a simulated broker writes topic `cold` (1 partition, 16 MiB segments, default 256 MiB)
in record batches of 1, 4 and 16 KiB in turn (incompressible values); `tiering run --once`
offloads it to an S3 server (moto's server mode, in its own process) and deletes the local
copies, leaving only the active segment. The fault proxy of the test suite
(tests/faults/proxy.py) sits between the reader and the server in its fixed-latency mode: it
holds every request for 0 or 50 ms before passing it on (once per round trip of a keep-alive
connection; bandwidth untouched) and counts the GETs in flight at once.

Each case reads the whole partition once from offset 0, sequentially, in a child process of
its own, through the tiered reader with the shipped [read] defaults (a 256 MiB pool of 4 MiB
chunks): every record batch CRC-32C checked, as `tiering cat --format raw` does. "fixed" is
the window as it was before adaptation, at the former default ceiling of 32 MiB (growth by
use only, no measurements); "adaptive" is the shipped policy, sized from the measured latency
and bandwidth and the reader's pace (tiering/read/prefetch.py). The cases run in rounds, each
round in the reverse order of the one before, so both policies see the same load over time;
the figure of a case is its median over the rounds. Throughput is over the whole read (from
mapping the partition: its LIST and manifests, to the last batch) and from the first batch on
(streaming). GETs in flight: the most at once as the proxy counted them, over the read's
chunk GETs (the child maps the partition first, then waits for the parent to reset the
count). 1 MB = 10^6 bytes.

The goal (issue 20): adaptive at 50 ms at least 90% of adaptive at 0 ms.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.daemon_env import ENV, Server, offload_everything
from bench.machine import describe, save_result
from bench.read import _rss
from tiering.simulate import SimulatedBroker

SEGMENT_BYTES = 16 * 1024 * 1024
FIXED_PREFETCH_BYTES = 32 * 1024 * 1024    # the former default, and the window it kept
LATENCIES = (0.0, 0.05)
POLICIES = ("fixed", "adaptive")
GOAL = 0.9


def add_arguments(parser) -> None:
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the four cases (default 3)")


def build(work: Path, mib: int, endpoint: str) -> Path:
    log_dir = work / "kafka-logs"
    broker = SimulatedBroker(log_dir, segment_bytes=SEGMENT_BYTES, seed=3, clock_ms=lambda: 1_700_000_000_000)
    broker.create_topic("cold", 1)
    written = 0
    while written < mib * 1024 * 1024:
        for records in (1, 4, 16):              # batches of about 1, 4 and 16 KiB
            broker.produce("cold", 0, records * 64, value_size=1000, batch_records=records)
            written += records * 64 * 1050
    broker.roll("cold", 0)
    broker.produce("cold", 0, 16, value_size=1000, batch_records=16)
    broker.close()
    return offload_everything(work, log_dir, endpoint, "prefetch/")


def run_case(config: Path, endpoint_port: int, policy: str, delay: float) -> dict:
    from tests.faults.proxy import FaultProxy

    proxy = FaultProxy("127.0.0.1", endpoint_port)
    proxy.latency = delay
    try:
        text = config.read_text().replace(f"127.0.0.1:{endpoint_port}", f"127.0.0.1:{proxy.port}")
        if policy == "fixed":
            text += f"\n[read]\nprefetch_bytes = {FIXED_PREFETCH_BYTES}\n"
        case_config = config.with_name(f"case-{policy}-{int(delay * 1000)}.toml")
        case_config.write_text(text)
        child = subprocess.Popen([sys.executable, "-m", "bench.prefetch", "--child", str(case_config), policy],
                                 env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
        # The child maps the partition (LIST, manifests 16 at a time), says so, and waits: the
        # peak of GETs in flight is then counted over the read's own chunk GETs.
        assert child.stdout is not None and child.stdin is not None
        mapped = child.stdout.readline()
        proxy.peak_in_flight = proxy.in_flight
        if mapped.strip() == "mapped":
            child.stdin.write("go\n")
            child.stdin.flush()
        out, err = child.communicate()
        if child.returncode:
            raise SystemExit(f"bench: the reader failed: {err.strip()}")
        figures = json.loads(out)
        figures["gets"] = proxy.counts["requests"]
        figures["peak_gets_in_flight"] = proxy.peak_in_flight
        return figures
    finally:
        proxy.close()


def child(config_path: str, policy: str) -> int:
    """Read the whole partition once; print figures as JSON."""
    from tiering.config import load_config
    from tiering.wiring import open_reader

    config = load_config(config_path)
    with open_reader(config) as reader:
        if policy == "fixed":
            reader.meter = None       # the window grows by use to its ceiling, as it did
        start_rss = _rss()
        read = 0
        first = None
        started = time.monotonic()
        reader.catalog.partition("cold", 0)
        mapped = time.monotonic() - started
        print("mapped", flush=True)
        sys.stdin.readline()
        started = time.monotonic() - mapped      # the wait for the parent is not the read's
        for batch in reader.batches("cold", 0, 0):
            if first is None:
                first = time.monotonic()
            read += len(batch.data)
        ended = time.monotonic()
        seconds = ended - started
        stats = reader.pool.stats()
        estimate = reader.meter.estimate if reader.meter is not None else None
    print(json.dumps({
        "bytes": read, "seconds": round(seconds, 3), "mb_per_s": round(read / seconds / 1e6, 1),
        "map_ms": round(mapped * 1000, 1), "first_batch_ms": round((first - started) * 1000, 1),
        "streaming_mb_per_s": round(read / (ended - first) / 1e6, 1),
        "prefetch_bytes": config.read.prefetch_bytes, "pool_bytes": config.read.buffer_pool_bytes,
        "chunk_bytes": config.read.chunk_bytes,
        "latency_ms": round(estimate.latency * 1000, 1) if estimate and estimate.latency is not None else None,
        "bandwidth_mb_per_s": round(estimate.bandwidth / 1e6, 1) if estimate and estimate.bandwidth else None,
        "prefetched": stats.prefetched, "prefetch_wasted": stats.prefetch_wasted, "waits": stats.waits,
        "peak_slabs_in_use": stats.peak_slabs_in_use, "start_rss_bytes": start_rss,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }))
    return 0


def main(args) -> int:
    mib = args.mib or 256
    rounds = max(1, args.rounds)
    work = Path(tempfile.mkdtemp(prefix="bench-prefetch-"))
    server = Server()
    order = [(policy, delay) for delay in LATENCIES for policy in POLICIES]
    runs: dict[tuple[str, float], list[dict]] = {case: [] for case in order}
    try:
        config = build(work, mib, server.endpoint)
        port = int(server.endpoint.rsplit(":", 1)[1])
        for r in range(rounds):
            for policy, delay in (order if r % 2 == 0 else order[::-1]):
                runs[(policy, delay)].append(run_case(config, port, policy, delay))
    finally:
        server.close()
        shutil.rmtree(work, ignore_errors=True)
    cases = []
    for (policy, delay), figures in runs.items():
        rates = [f["mb_per_s"] for f in figures]
        middle = sorted(figures, key=lambda f: f["mb_per_s"])[len(figures) // 2]
        cases.append({"policy": policy, "added_latency_ms": int(delay * 1000), "mb_per_s": statistics.median(rates),
                      "streaming_mb_per_s": statistics.median(f["streaming_mb_per_s"] for f in figures),
                      "mb_per_s_runs": rates, "median_run": middle})
    by = {(c["policy"], c["added_latency_ms"]): c for c in cases}
    ratios = {p: round(by[(p, 50)]["mb_per_s"] / by[(p, 0)]["mb_per_s"], 3) for p in POLICIES}
    streaming = {p: round(by[(p, 50)]["streaming_mb_per_s"] / by[(p, 0)]["streaming_mb_per_s"], 3) for p in POLICIES}
    result = {"benchmark": "prefetch", "machine": describe(), "load_average": os.getloadavg(), "mib": mib,
              "rounds": rounds, "cases": cases, "ratio_50ms_to_0ms": ratios,
              "streaming_ratio_50ms_to_0ms": streaming, "goal_ratio_adaptive": GOAL}
    if save_result("prefetch", result, args.json):
        first = cases[0]["median_run"]
        print(f"cold read of {first['bytes'] / 2**20:.0f} MiB (pool {first['pool_bytes'] >> 20} MiB of "
              f"{first['chunk_bytes'] >> 20} MiB chunks), {rounds} rounds, on {result['machine']['cores']} cores, "
              f"{result['machine']['cpu']}, load average at the end {result['load_average'][0]:.1f}")
        print(f"{'policy, added latency':<24} {'MB/s':>6} {'runs':<16} {'1st batch':>9} {'streaming':>9} {'GETs':>5} "
              f"{'in flight':>9} {'latency':>7} {'GET MB/s':>8} {'RSS start -> peak':>18}")
        for c in cases:
            m = c["median_run"]
            ceiling = f"{m['prefetch_bytes'] >> 20} MiB"
            latency = f"{m['latency_ms']:.0f}ms" if m["latency_ms"] is not None else "-"
            bandwidth = f"{m['bandwidth_mb_per_s']:.0f}" if m["bandwidth_mb_per_s"] else "-"
            print(f"{c['policy'] + ' (' + ceiling + '), ' + str(c['added_latency_ms']) + ' ms':<24} "
                  f"{c['mb_per_s']:>6.1f} {' '.join(f'{x:.0f}' for x in c['mb_per_s_runs']):<16} "
                  f"{m['first_batch_ms']:>7.0f}ms {c['streaming_mb_per_s']:>9.1f} {m['gets']:>5} "
                  f"{m['peak_gets_in_flight']:>9} {latency:>7} {bandwidth:>8} "
                  f"{m['start_rss_bytes'] / 2**20:>8.0f} -> {m['peak_rss_bytes'] / 2**20:.0f} MiB")
        for p in POLICIES:
            print(f"{p}: 50 ms / 0 ms = {ratios[p]:.0%} over the whole read, {streaming[p]:.0%} from the first batch on"
                  + (f" (goal: at least {GOAL:.0%})" if p == "adaptive" else ""))
    return 0


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--child":
    sys.exit(child(sys.argv[2], sys.argv[3]))
