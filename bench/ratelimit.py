"""Upload rate limit: is the achieved rate within 5% of the target over every 10 s window?

Method: a simulated broker writes a backlog larger than 36 s of the highest target (64 MiB
segments, 4 partitions); an S3 server (moto's server mode) runs in its own process behind a
byte-counting TCP relay in this process, so the rate is measured on the wire, outside the
daemon. For each target (8, 32, 64 MiB/s) a fresh `tiering run` daemon (concurrency 8,
16 MiB parts, its own prefix and state) drains the backlog; 2 s after its first byte we
record 30 s and compute the rate of every 10 s window, sliding by 1 s. Bytes are the
request bytes the relay forwarded (payload plus HTTP headers, under 0.1% here).

Then the one-shot case: `tiering run --once` drains the upload benchmark's backlog (768 MiB
of eligible segments, 24 of 32 MiB in ~16 KiB batches over 8 partitions) at 32 MiB/s through
the same relay; every 10 s window from 2 s after its first byte to its last byte is compared.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.daemon_env import BUCKET, ENV, Daemon, Server, write_config
from bench.machine import describe, save_result
from bench.relay import CountingRelay
from bench.upload import build_backlog

TARGETS_MIB = (8, 32, 64)
WARMUP_SECONDS = 2.0
MEASURE_SECONDS = 30.0
WINDOW_SECONDS = 10
ONCE_TARGET_MIB = 32
ONCE_BACKLOG_MIB = 800      # the upload benchmark's default: >= 768 MiB of eligible segments


def windows(samples: list[tuple[float, int]], start: float, seconds: float = MEASURE_SECONDS) -> list[float]:
    """Bytes per second of each 10 s window starting at start + k seconds, within `seconds`."""
    per_second = [0] * int(seconds)
    for t, n in samples:
        i = math.floor(t - start)   # not int(): that would fold the second before `start` into bin 0
        if 0 <= i < len(per_second):
            per_second[i] += n
    return [sum(per_second[k:k + WINDOW_SECONDS]) / WINDOW_SECONDS
            for k in range(len(per_second) - WINDOW_SECONDS + 1)]


def main(args) -> int:
    work = Path(tempfile.mkdtemp(prefix="tiering-bench-ratelimit-"))
    server = Server()
    results = []
    try:
        log_dir = work / "logs"
        mib = args.mib or int(max(TARGETS_MIB) * (WARMUP_SECONDS + MEASURE_SECONDS + 4))
        build_backlog(log_dir, mib)
        port = int(server.endpoint.rsplit(":", 1)[1])
        relay = CountingRelay("127.0.0.1", port)
        for target_mib in TARGETS_MIB:
            target = target_mib * 2**20
            urllib.request.urlopen(urllib.request.Request(f"{server.endpoint}/moto-api/reset", method="POST")).read()
            server.client.create_bucket(Bucket=BUCKET)
            relay.samples.clear()
            daemon = Daemon.start(work, log_dir, f"http://127.0.0.1:{relay.port}", prefix=f"rl{target_mib}/",
                                  extra=f"rate_limit_bytes_per_second = {target}\npart_size_bytes = 16777216",
                                  concurrency=8)
            daemon.wait_ready()
            while not relay.samples:
                time.sleep(0.01)
            start = relay.samples[0][0] + WARMUP_SECONDS
            time.sleep(max(0.0, start + MEASURE_SECONDS + 0.5 - time.monotonic()))
            waited = daemon.metrics().get("tiering_upload_rate_limit_wait_seconds_total", 0.0)
            daemon.stop()
            rates = windows(list(relay.samples), start)
            deviations = [(r - target) / target for r in rates]
            results.append({
                "target_bytes_per_second": target,
                "window_rates_bytes_per_second": [round(r) for r in rates[::WINDOW_SECONDS]],
                "sliding_windows": len(rates),
                "worst_deviation": max(deviations, key=abs),
                "mean_rate_bytes_per_second": round(sum(rates) / len(rates)),
                "limiter_wait_seconds_total": round(waited, 1),
            })
        once = one_shot(work, server, relay)
    finally:
        server.close()
        shutil.rmtree(work, ignore_errors=True)

    result = {"benchmark": "ratelimit", "machine": describe(), "server": "moto (server mode, loopback) "
              "behind a byte-counting relay", "window_seconds": WINDOW_SECONDS, "measured_seconds": MEASURE_SECONDS,
              "targets": results, "run_once": once}
    if not save_result("ratelimit", result, args.json):
        return 0
    print(f"upload rate limit, {WINDOW_SECONDS} s windows sliding by 1 s over {MEASURE_SECONDS:.0f} s "
          f"(bytes on the wire, counted by a relay)")
    print(f"{'target MiB/s':>12}  {'windows 0-10/10-20/20-30 s, MiB/s':>36}  {'worst deviation':>15}")
    for r in results:
        shown = " / ".join(f"{w / 2**20:.2f}" for w in r["window_rates_bytes_per_second"])
        print(f"{r['target_bytes_per_second'] / 2**20:>12.0f}  {shown:>36}  {r['worst_deviation'] * 100:>+14.2f}%")
    print(f"run --once draining {once['backlog_bytes'] / 2**20:.0f} MiB at {ONCE_TARGET_MIB} MiB/s: "
          f"{once['sliding_windows']} windows over {once['measured_seconds']} s, "
          f"{' / '.join(f'{w / 2**20:.2f}' for w in once['window_rates_bytes_per_second'])} MiB/s, "
          f"worst deviation {once['worst_deviation'] * 100:+.2f}%")
    return 0


def one_shot(work: Path, server: Server, relay: CountingRelay) -> dict:
    """`run --once` draining the upload benchmark's backlog at ONCE_TARGET_MIB through the relay."""
    log_dir = work / "once-logs"
    files = build_backlog(log_dir, ONCE_BACKLOG_MIB)
    payload = sum(f.stat().st_size for f in files)
    target = ONCE_TARGET_MIB * 2**20
    urllib.request.urlopen(urllib.request.Request(f"{server.endpoint}/moto-api/reset", method="POST")).read()
    server.client.create_bucket(Bucket=BUCKET)
    relay.samples.clear()
    config = write_config(work, log_dir, f"http://127.0.0.1:{relay.port}", prefix="once/", port=None, concurrency=8,
                          extra=f"rate_limit_bytes_per_second = {target}\npart_size_bytes = 16777216\n"
                                '[retention]\nretention_ms = -1\nlocal_delete = "off"')
    started = time.monotonic()
    code = subprocess.run([sys.executable, "-m", "tiering", "run", "--once", "--config", str(config)], env=ENV,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).returncode
    if code != 0:
        raise SystemExit(f"bench: run --once exited {code}")
    samples = list(relay.samples)
    start = samples[0][0] + WARMUP_SECONDS
    seconds = math.floor(samples[-1][0] - start)
    rates = windows(samples, start, seconds)
    deviations = [(r - target) / target for r in rates]
    return {"target_bytes_per_second": target, "backlog_bytes": payload, "files": len(files),
            "wall_seconds": round(time.monotonic() - started, 1), "measured_seconds": seconds,
            "window_rates_bytes_per_second": [round(r) for r in rates[::WINDOW_SECONDS]],
            "sliding_windows": len(rates), "worst_deviation": max(deviations, key=abs)}
