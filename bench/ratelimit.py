"""Upload rate limit: is the achieved rate within 2% of the target over every 10 s window?

Method: a simulated broker writes a backlog larger than 36 s of the highest target (32 MiB
segments of ~16 KiB batches, 8 partitions); an S3 server runs in its own process behind a
byte-counting TCP relay in this process, so the rate is measured on the wire, outside the
daemon. For each target (8, 32, 64 MiB/s) a fresh `tiering run` daemon (concurrency 8,
16 MiB parts, its own prefix and state) drains the backlog; 2 s after its first byte we
record 30 s and compute the rate of every 10 s window, sliding by 1 s. Bytes are the
request bytes the relay forwarded (payload plus HTTP headers, under 0.1% here).

Then the one-shot case: `tiering run --once` drains the upload benchmark's backlog (768 MiB
of eligible segments, 24 of 32 MiB in ~16 KiB batches over 8 partitions) at 32 MiB/s through
the same relay; every 10 s window from 2 s after its first byte to its last byte is compared.

Both run against two servers in the same run (`--servers` picks): versitygw (a Go server, its
posix gateway, which verifies the CRC-32C the uploads send; built by scripts/fetch-s3-server,
skipped with a note when it is not) and moto's server mode. moto completes a multipart upload
by joining and checksumming the parts in Python under its GIL and meanwhile accepts no bytes
on any connection, for a second or more at 64 MiB/s: "short" counts the seconds in which less than
90% of the target reached the server. A token bucket cannot make up such a pause without
exceeding the target in a later window, so moto's windows measure the server as much as
the limiter; versitygw's measure the limiter.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.daemon_env import ENV, Daemon, Gateway, Server, write_config
from bench.machine import describe, save_result
from bench.relay import CountingRelay
from bench.upload import build_backlog

TARGETS_MIB = (8, 32, 64)
WARMUP_SECONDS = 2.0
MEASURE_SECONDS = 30.0
WINDOW_SECONDS = 10
ONCE_TARGET_MIB = 32
SHORT = 0.9                 # a second with less than this share of the target is "short"
ONCE_BACKLOG_MIB = 800      # the upload benchmark's default: >= 768 MiB of eligible segments


def per_second(samples: list[tuple[float, int]], start: float, seconds: float = MEASURE_SECONDS) -> list[int]:
    """Bytes in each second from `start`, for `seconds` whole seconds."""
    bins = [0] * int(seconds)
    for t, n in samples:
        i = math.floor(t - start)   # not int(): that would fold the second before `start` into bin 0
        if 0 <= i < len(bins):
            bins[i] += n
    return bins


def windows(bins: list[int]) -> list[float]:
    """Bytes per second of each 10 s window of per-second `bins`, sliding by one bin."""
    return [sum(bins[k:k + WINDOW_SECONDS]) / WINDOW_SECONDS for k in range(len(bins) - WINDOW_SECONDS + 1)]


def judged(samples: list[tuple[float, int]], start: float, seconds: float, target: int) -> dict:
    """The figures of one case: every window's deviation and the seconds short of the target."""
    bins = per_second(samples, start, seconds)
    rates = windows(bins)
    return {"target_bytes_per_second": target,
            "window_rates_bytes_per_second": [round(r) for r in rates[::WINDOW_SECONDS]],
            "sliding_windows": len(rates),
            "worst_deviation": max(((r - target) / target for r in rates), key=abs),
            "mean_rate_bytes_per_second": round(sum(rates) / len(rates)),
            "short_seconds": sum(1 for n in bins if n < SHORT * target)}


TARGET_SERVERS = {"versitygw": lambda work: Gateway(work / "versitygw"), "moto": lambda work: Server()}


def add_arguments(parser) -> None:
    parser.add_argument("--servers", default="versitygw,moto",
                        help="comma-separated S3 servers to measure against (default: versitygw,moto)")


def main(args) -> int:
    names = [name.strip() for name in args.servers.split(",") if name.strip()]
    unknown = sorted(set(names) - set(TARGET_SERVERS))
    if unknown or not names:
        print(f"bench ratelimit: unknown server {', '.join(unknown) or '(none)'} in --servers; "
              f"choose from {', '.join(TARGET_SERVERS)}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="tiering-bench-ratelimit-"))
    measured, skipped = {}, {}
    try:
        log_dir = work / "logs"
        mib = args.mib or int(max(TARGETS_MIB) * (WARMUP_SECONDS + MEASURE_SECONDS + 4))
        build_backlog(log_dir, mib)
        once_dir = work / "once-logs"
        once_files = build_backlog(once_dir, ONCE_BACKLOG_MIB)
        for name in names:
            (work / name).mkdir()
            try:
                target = TARGET_SERVERS[name](work / name)
            except FileNotFoundError as error:     # versitygw not built
                skipped[name] = str(error)
                continue
            try:
                measured[name] = measure(work / name, log_dir, once_dir, once_files, target)
            finally:
                target.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not measured:
        print(f"bench ratelimit: no server to measure against: {'; '.join(skipped.values())}", file=sys.stderr)
        return 1

    result = {"benchmark": "ratelimit", "machine": describe(), "servers": measured, "skipped": skipped,
              "relay": "a byte-counting TCP relay in front of each server", "window_seconds": WINDOW_SECONDS,
              "measured_seconds": MEASURE_SECONDS}
    if not save_result("ratelimit", result, args.json):
        return 0
    print(f"upload rate limit, {WINDOW_SECONDS} s windows sliding by 1 s over {MEASURE_SECONDS:.0f} s "
          f"(bytes on the wire, counted by a relay); short: seconds under {SHORT:.0%} of the target")
    print(f"{'server':>10}  {'target MiB/s':>12}  {'windows 0-10/10-20/20-30 s, MiB/s':>36}  "
          f"{'worst deviation':>15}  {'short s':>7}")
    for name, cases in measured.items():
        for r in cases["daemon"]:
            shown = " / ".join(f"{w / 2**20:.2f}" for w in r["window_rates_bytes_per_second"])
            print(f"{name:>10}  {r['target_bytes_per_second'] / 2**20:>12.0f}  {shown:>36}  "
                  f"{r['worst_deviation'] * 100:>+14.2f}%  {r['short_seconds']:>7}")
    for name, cases in measured.items():
        once = cases["run_once"]
        print(f"{name}: run --once draining {once['backlog_bytes'] / 2**20:.0f} MiB at {ONCE_TARGET_MIB} MiB/s: "
              f"{once['sliding_windows']} windows over {once['measured_seconds']} s, "
              f"{' / '.join(f'{w / 2**20:.2f}' for w in once['window_rates_bytes_per_second'])} MiB/s, "
              f"worst deviation {once['worst_deviation'] * 100:+.2f}%, {once['short_seconds']} s short")
    for name, why in skipped.items():
        print(f"{name}: not measured: {why}")
    return 0


def measure(work: Path, log_dir: Path, once_dir: Path, once_files: list[Path], server) -> dict:
    """The daemon at every target, then the one-shot drain, against one server behind a relay."""
    relay = CountingRelay("127.0.0.1", int(server.endpoint.rsplit(":", 1)[1]))
    results = []
    for target_mib in TARGETS_MIB:
        target = target_mib * 2**20
        server.reset()
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
        results.append({**judged(list(relay.samples), start, MEASURE_SECONDS, target),
                        "limiter_wait_seconds_total": round(waited, 1)})
    return {"daemon": results, "run_once": one_shot(work, once_dir, once_files, server, relay)}


def one_shot(work: Path, log_dir: Path, files: list[Path], server, relay: CountingRelay) -> dict:
    """`run --once` draining the upload benchmark's backlog at ONCE_TARGET_MIB through the relay."""
    payload = sum(f.stat().st_size for f in files)
    target = ONCE_TARGET_MIB * 2**20
    server.reset()
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
    return {**judged(samples, start, seconds, target), "backlog_bytes": payload, "files": len(files),
            "wall_seconds": round(time.monotonic() - started, 1), "measured_seconds": seconds}
