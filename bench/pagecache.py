"""What a backfill does to the tailing consumers' page cache, untiered and tiered.

Scenario: a simulated broker writes 8 partitions; everything before each partition's active
segment is the cold backlog, 4 times the page cache the experiment gets (default: a backlog of
1 GiB in 16 MiB segments, a page cache of 256 MiB). The hot side is what a broker serves all
day: a producer appends to the active segment of every partition (5.4 MB/s in all, a 50th of
the page cache per second), and 3 consumer groups tail every partition 2, 5 and 10 s behind it,
in reads of 256 KiB; each fresh byte is read once per group. After 11 s of the hot side alone,
a backfill reads the whole backlog once at 200 MB/s while the hot side goes on, and the hot
side runs 11 s more (every group then has read what was written during the backfill).

- untiered: the backlog is on local disk and the backfill reads it with plain reads of 1 MiB,
  as a broker serving a lagging consumer does.
- tiered: `tiering run --once` has offloaded the backlog to an S3 server (moto, in its own
  process, outside the experiment: it is another machine's memory) and deleted all but the
  newest 2 backlog segments of each partition locally (local retention); the backfill reads
  through the tiered reader and its buffer pool (the shipped defaults), the remote segments
  with ranged GETs at the read rate limit of 200 MB/s and the local ones with O_DIRECT.

The page cache available to the experiment is limited with a memory cgroup made for it
(bench/cachelimit.py: the limit follows the processes' own memory, so the page cache gets
exactly the budget in both modes). Before each mode every file of the log dir is synced and
dropped from the page cache. The consumers' hit ratio is taken from the kernel: before each
read, cachestat(2) (mincore(2) before Linux 6.5) counts the pages of the range that are
resident. A mode's figures cover the backfill and the 11 s after it; the hit ratio while the
backfill runs is shown too. The backlog bytes left in the page cache are counted the same way
over every backlog file still on local disk, the moment the backfill ends.

Every read and append of either mode is recorded; a page-cache simulator (bench/cachesim.py,
the kernel's two LRU lists) replays the recorded trace with the same budget. Where no memory
cgroup can be made, its figures are the result (method "simulated"), and the latencies are
those of a run without memory pressure; otherwise they are printed beside the kernel's as a
cross-check.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.cachelimit import CacheBudget, Unavailable
from bench.cachesim import KINDS_BY_NUMBER, Access, replay
from bench.daemon_env import ENV, Server, write_config
from bench.machine import describe, save_result
from tiering.files import drop_cached_pages
from tiering.read.pagecache import PAGE, cached_bytes
from tiering.simulate import SimulatedBroker

TOPIC = "tail"
PARTITIONS = 8
LAGS = (2.0, 5.0, 10.0)          # seconds each consumer group tails behind the producer
BASELINE_SECONDS = 11.0          # hot side alone before the backfill (longer than the largest lag)
AFTER_SECONDS = 11.0             # hot side after it: every group has read what was written during it
BACKFILL_RATE = 200_000_000      # bytes/s, both modes
LOCAL_COLD_SEGMENTS = 2          # backlog segments per partition still local in tiered mode
RECORD_BYTES = 4_042             # a 4000-byte value in a batch of 16, with its share of headers
BIN_SECONDS = 0.5
GOAL_TIERED_HIT_RATIO = 0.95
GOAL_TIERED_CACHED_SHARE = 0.05


@dataclass(frozen=True)
class Scenario:
    backlog_bytes: int
    budget_bytes: int
    segment_bytes: int

    @classmethod
    def for_backlog(cls, mib: int) -> Scenario:
        backlog = mib * 1024 * 1024
        budget = backlog // 4
        return cls(backlog, budget, backlog // PARTITIONS // 8)

    @property
    def produce_rate(self) -> float:
        """A 50th of the page cache per second. What the groups tail (rate x largest lag) is 20%
        of the page cache, and all a mode writes (rate x 27 s) about 55%: the hot side alone
        never fills the page cache, so any eviction is the backfill's doing."""
        return self.budget_bytes / 50

    @property
    def read_bytes(self) -> int:
        return max(4 * PAGE, self.budget_bytes // 1024)     # 256 KiB for a 256 MiB page cache


# -- building the log dir -----------------------------------------------------------------------

def build(work: Path, scenario: Scenario) -> tuple[Path, list[int]]:
    log_dir = work / "kafka-logs"
    broker = SimulatedBroker(log_dir, segment_bytes=scenario.segment_bytes, seed=7,
                             clock_ms=lambda: 1_700_000_000_000, auto_checkpoint=False)
    broker.create_topic(TOPIC, PARTITIONS)
    backlog_records = scenario.backlog_bytes // PARTITIONS // RECORD_BYTES
    for p in range(PARTITIONS):
        broker.produce(TOPIC, p, backlog_records, value_size=4000, batch_records=16)
        broker.roll(TOPIC, p)
        broker.produce(TOPIC, p, 16, value_size=4000, batch_records=16)   # the hot side appends more
    broker.checkpoint()
    next_offsets = [broker.next_offset(TOPIC, p) for p in range(PARTITIONS)]
    broker.close()
    return log_dir, next_offsets


def segment_files(log_dir: Path) -> tuple[list[Path], list[Path]]:
    """(hot files, backlog files): the active segment of each partition, and all before it."""
    hot, backlog = [], []
    for p in range(PARTITIONS):
        logs = sorted((log_dir / f"{TOPIC}-{p}").glob("*.log"))
        hot.append(logs[-1])
        backlog += logs[:-1]
    return hot, backlog


def offload(work: Path, log_dir: Path, endpoint: str, scenario: Scenario) -> Path:
    """Offload the backlog and keep only the newest LOCAL_COLD_SEGMENTS of it locally; returns
    the config the tiered backfill reads with."""
    keep = (LOCAL_COLD_SEGMENTS + 1) * scenario.segment_bytes   # + the active segment
    config = write_config(work, log_dir, endpoint, prefix="pagecache/", port=None, concurrency=8,
                          extra=f"[retention]\nlocal_retention_bytes = {keep}\nretention_ms = -1\n"
                                f"[read]\nrate_limit_bytes_per_second = {BACKFILL_RATE}\n")
    result = subprocess.run([sys.executable, "-m", "tiering", "run", "--config", str(config), "--once"],
                            env=ENV, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"bench: offloading {log_dir} failed: {result.stderr.strip()}")
    return config


def drop_from_page_cache(paths: list[Path]) -> None:
    os.sync()   # dirty pages cannot be dropped
    for path in paths:
        drop_cached_pages(path)


# -- one mode -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModeRun:
    hot: np.ndarray              # the consumer groups' trace
    backfill: np.ndarray         # the backfill's trace
    backfill_summary: dict
    cold_cached_bytes: int       # backlog bytes in the page cache when the backfill ended
    page_cache_bytes: int | None  # the cgroup's page cache then (None without a cgroup)


def run_mode(work: Path, mode: str, files: list[Path], hot_numbers: list[int], backlog_numbers: list[int],
             next_offsets: list[int], scenario: Scenario, budget: CacheBudget | None, backfill_extra: dict) -> ModeRun:
    drop_from_page_cache(files)
    common = {"files": [str(f) for f in files], "procs_file": budget.procs_file if budget else None}
    hot_spec = _spec(work, f"{mode}-hot", common, hot_files=hot_numbers, lags=LAGS, read_bytes=scenario.read_bytes,
                     produce_rate=scenario.produce_rate, next_offsets=next_offsets)
    backfill_spec = _spec(work, f"{mode}-backfill", common, backlog_files=backlog_numbers, rate=BACKFILL_RATE,
                          **backfill_extra)
    hot = subprocess.Popen([sys.executable, "-m", "bench.pagecache_workers", "hot", str(hot_spec)], env=ENV,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if hot.stdout.readline().strip() != "ready":
            raise SystemExit(f"bench: the hot readers did not start: {hot.stderr.read().strip()}")
        time.sleep(BASELINE_SECONDS)
        backfill = subprocess.run([sys.executable, "-m", "bench.pagecache_workers", mode, str(backfill_spec)],
                                  env=ENV, capture_output=True, text=True)
        cold_cached = sum(cached_bytes(files[n]) for n in backlog_numbers)
        page_cache = budget.page_cache_bytes() if budget else None
        if backfill.returncode:
            raise SystemExit(f"bench: the {mode} backfill failed: {backfill.stderr.strip()}")
        time.sleep(AFTER_SECONDS)
    finally:
        hot.terminate()
        out, err = hot.communicate(timeout=60)
    if hot.returncode:
        raise SystemExit(f"bench: the hot readers failed: {err.strip()}")
    return ModeRun(np.load(work / f"{mode}-hot.npy"), np.load(work / f"{mode}-backfill.npy"),
                   json.loads(backfill.stdout.strip().splitlines()[-1]), cold_cached, page_cache)


def _spec(work: Path, name: str, common: dict, **fields) -> Path:
    path = work / f"{name}.json"
    path.write_text(json.dumps({**common, **fields, "out": str(work / f"{name}.npy")}))
    return path


# -- figures ---------------------------------------------------------------------------------------

def window(rows: np.ndarray, start: float, end: float) -> np.ndarray:
    """The consumer groups' reads (not the producer's appends) between two times."""
    reads = rows[rows[:, 5] >= 0]
    return reads[(reads[:, 0] >= start) & (reads[:, 0] <= end)]


def timeline(found: np.ndarray, origin: float, start: float, end: float) -> list[tuple[float, float]]:
    """(seconds since the backfill began, hit ratio) per BIN_SECONDS of consumer reads, from
    rows of (time, pages, resident)."""
    points = []
    edge = start
    while edge < end:
        part = found[(found[:, 0] >= edge) & (found[:, 0] < edge + BIN_SECONDS)]
        if part[:, 1].sum():
            points.append((round(edge - origin + BIN_SECONDS / 2, 2), round(float(part[:, 2].sum() / part[:, 1].sum()), 4)))
        edge += BIN_SECONDS
    return points


def simulate(run: ModeRun, budget_pages: int, backlog_numbers: set[int]) -> tuple[np.ndarray, int]:
    """The consumers' reads as the simulator saw them, replaying the recorded trace (rows of
    time, pages, resident), and the backlog bytes it held when the backfill ended."""
    accesses = [Access(r[0], int(r[1]), int(r[2]), int(r[3]), hot=r[5] >= 0) for r in run.hot]
    accesses += [Access(r[0], int(r[1]), int(r[2]), int(r[3]), KINDS_BY_NUMBER[int(r[6])]) for r in run.backfill]
    outcomes, at_end = replay(accesses, budget_pages, snapshot_time=run.backfill_summary["finished"])
    rows = np.array([(o.time, o.pages, o.resident) for o in outcomes], dtype=np.float64).reshape(-1, 3)
    cached = sum(pages for file, pages in at_end.items() if file in backlog_numbers) * PAGE
    return rows, cached


def figures(run: ModeRun, scenario: Scenario, backlog_numbers: list[int], simulated: bool) -> dict:
    summary = run.backfill_summary
    start, end = summary["started"], summary["finished"]
    sim_rows, sim_cached = simulate(run, scenario.budget_bytes // PAGE, set(backlog_numbers))
    reads = run.hot[run.hot[:, 5] >= 0]
    kernel = np.column_stack([reads[:, 0], reads[:, 3], reads[:, 4]])
    # (time, pages, resident) of every consumer read, from the method that gives the result
    found = sim_rows if simulated else kernel

    def ratio(rows: np.ndarray, first: float, last: float) -> float:
        part = rows[(rows[:, 0] >= first) & (rows[:, 0] <= last)]
        return round(float(part[:, 2].sum() / part[:, 1].sum()), 4) if part[:, 1].sum() else float("nan")

    during = window(run.hot, start, end + AFTER_SECONDS)
    before = window(run.hot, start - BASELINE_SECONDS, start)
    read = summary["bytes"]
    result = {
        "hot_hit_ratio": ratio(found, start, end + AFTER_SECONDS),
        "cold_read_bytes": read,
        "cold_cached_bytes": sim_cached if simulated else run.cold_cached_bytes,
        "hot_p50_ms": round(float(np.percentile(during[:, 5], 50)) * 1000, 3),
        "hot_p99_ms": round(float(np.percentile(during[:, 5], 99)) * 1000, 3),
        "hot_hit_ratio_before": ratio(found, start - BASELINE_SECONDS, start),
        "hot_hit_ratio_while_backfilling": ratio(found, start, end),
        "hot_p50_ms_before": round(float(np.percentile(before[:, 5], 50)) * 1000, 3),
        "hot_p99_ms_before": round(float(np.percentile(before[:, 5], 99)) * 1000, 3),
        "hot_reads": int(len(during)),
        "backfill_seconds": round(end - start, 2),
        "backfill_mb_per_s": round(read / (end - start) / 1e6, 1),
        "backfill_peak_rss_bytes": summary["peak_rss_bytes"],
        "page_cache_bytes_at_end": run.page_cache_bytes,
        "kernel": {"hot_hit_ratio": ratio(kernel, start, end + AFTER_SECONDS),
                   "cold_cached_bytes": run.cold_cached_bytes},
        "simulated": {"hot_hit_ratio": ratio(sim_rows, start, end + AFTER_SECONDS), "cold_cached_bytes": sim_cached},
        "timeline": timeline(found, start, start - BASELINE_SECONDS, end + AFTER_SECONDS),
    }
    result["cold_cached_share_of_read"] = round(result["cold_cached_bytes"] / read, 4) if read else 0.0
    result["cold_cached_share_of_page_cache"] = round(result["cold_cached_bytes"] / scenario.budget_bytes, 4)
    if "pool_bytes" in summary:
        result["pool_bytes"] = summary["pool_bytes"]
    return result


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 4.5))
    colours = {"untiered": "tab:red", "tiered": "tab:blue"}
    for mode, values in result["modes"].items():
        points = values["timeline"]
        axes.plot([p[0] for p in points], [p[1] for p in points], label=f"{mode} (hot hit ratio "
                  f"{values['hot_hit_ratio']:.3f})", color=colours[mode], marker=".")
        axes.axvspan(0, values["backfill_seconds"], color=colours[mode], alpha=0.08)
    axes.set_xlabel("seconds since the backfill began (shaded: backfill running)")
    axes.set_ylabel("tailing consumers' page-cache hit ratio")
    axes.set_ylim(0, 1.02)
    scenario = result["scenario"]
    axes.set_title(f"{scenario['backlog_bytes'] >> 20} MiB backfill at {BACKFILL_RATE / 1e6:.0f} MB/s, "
                   f"{scenario['page_cache_budget_bytes'] >> 20} MiB page cache ({result['method']})", fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# -- the benchmark ------------------------------------------------------------------------------------

def main(args) -> int:
    scenario = Scenario.for_backlog(args.mib or 1024)
    work = Path(tempfile.mkdtemp(prefix="bench-pagecache-"))
    server = Server()
    try:
        log_dir, next_offsets = build(work, scenario)
        hot_files, backlog_files = segment_files(log_dir)
        files = hot_files + backlog_files
        hot_numbers = list(range(len(hot_files)))
        backlog_numbers = list(range(len(hot_files), len(files)))
        try:
            limit = CacheBudget(scenario.budget_bytes)
            method, why_not = limit.method, None
        except Unavailable as exc:
            limit, method, why_not = contextlib.nullcontext(), "simulated", str(exc)
        with limit as budget:
            runs = {"untiered": run_mode(work, "untiered", files, hot_numbers, backlog_numbers, next_offsets,
                                         scenario, budget, {})}
        config = offload(work, log_dir, server.endpoint, scenario)
        local_backlog_bytes = sum(f.stat().st_size for f in backlog_files if f.exists())
        partitions = [{"partition": p, "dir": str(log_dir / f"{TOPIC}-{p}"), "stop": int(hot_files[p].stem)}
                      for p in range(PARTITIONS)]
        try:   # a fresh cgroup: nothing of the untiered mode is charged to it
            limit = contextlib.nullcontext() if method == "simulated" else CacheBudget(scenario.budget_bytes)
        except Unavailable as exc:
            raise SystemExit(f"bench: the memory cgroup for the tiered mode could not be made ({exc}), though the "
                             "untiered mode had one; run again") from None
        with limit as budget:
            runs["tiered"] = run_mode(work, "tiered", files, hot_numbers, backlog_numbers, next_offsets, scenario,
                                      budget, {"config": str(config), "topic": TOPIC, "partitions": partitions})
    finally:
        server.close()
        shutil.rmtree(work, ignore_errors=True)
    simulated = method == "simulated"
    modes = {mode: figures(run, scenario, backlog_numbers, simulated) for mode, run in runs.items()}
    result = {
        "benchmark": "pagecache", "machine": describe(), "method": method,
        "methods": _methods(method, why_not),
        "scenario": {
            "partitions": PARTITIONS, "segment_bytes": scenario.segment_bytes,
            "backlog_bytes": runs["untiered"].backfill_summary["bytes"],
            "page_cache_budget_bytes": scenario.budget_bytes, "produce_rate_bytes_per_second": scenario.produce_rate,
            "consumer_group_lags_seconds": list(LAGS), "hot_read_bytes": scenario.read_bytes,
            "backfill_rate_bytes_per_second": BACKFILL_RATE, "baseline_seconds": BASELINE_SECONDS,
            "after_backfill_seconds": AFTER_SECONDS,
            "tiered_local_backlog_bytes": local_backlog_bytes,
        },
        "modes": modes,
        "goals": {"tiered_hot_hit_ratio_at_least": GOAL_TIERED_HIT_RATIO,
                  "tiered_cold_cached_share_of_read_below": GOAL_TIERED_CACHED_SHARE},
    }
    tiered, untiered = modes["tiered"], modes["untiered"]
    result["goals_met"] = {
        "tiered_hot_hit_ratio": tiered["hot_hit_ratio"] >= GOAL_TIERED_HIT_RATIO,
        "tiered_cold_cached": tiered["cold_cached_share_of_read"] < GOAL_TIERED_CACHED_SHARE,
        "untiered_hot_hit_ratio_fell": untiered["hot_hit_ratio"] < untiered["hot_hit_ratio_before"],
    }
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    image = results / "pagecache.png"
    plot(result, image)
    result["plot"] = str(image.relative_to(Path(__file__).parent.parent))
    if save_result("pagecache", result, args.json):
        _print_table(result)
    return 0


def _methods(method: str, why_not: str | None) -> dict:
    if method == "simulated":
        hit = cached = (f"page-cache simulator (two-list LRU) replaying the run's recorded reads; no memory "
                        f"cgroup could be made ({why_not})")
        latency = "measured by the consumer groups (pread wall time), without memory pressure (no memory cgroup)"
    else:
        hit = f"kernel: cachestat(2) before every consumer read, page cache limited by a {method}"
        cached = f"kernel: cachestat(2) over every local backlog file when the backfill ended ({method})"
        latency = f"measured by the consumer groups (pread wall time) under the {method}'s limit"
    return {"hot_hit_ratio": hit, "cold_cached_bytes": cached, "hot_p50_ms": latency, "hot_p99_ms": latency,
            "cold_read_bytes": "bytes the backfill read (plain reads, or record batches from the tiered reader)",
            "simulated": "page-cache simulator (two-list LRU) replaying the run's recorded reads"}


def _print_table(result: dict) -> None:
    s = result["scenario"]
    print(f"page cache during a backfill: {s['backlog_bytes'] / 2**20:.0f} MiB backlog read once at "
          f"{BACKFILL_RATE / 1e6:.0f} MB/s while {PARTITIONS} partitions take {s['produce_rate_bytes_per_second'] / 1e6:.1f} MB/s "
          f"tailed by {len(LAGS)} consumer groups ({', '.join(f'{lag:g}' for lag in LAGS)} s behind), "
          f"{s['page_cache_budget_bytes'] / 2**20:.0f} MiB page cache; "
          f"{result['machine']['cores']} cores, {result['machine']['cpu']}, Linux {result['machine']['kernel']}")
    print(f"method: {result['method']}")
    print(f"{'mode':<9} {'hit ratio':>9} {'while':>6} {'before':>6} {'sim.':>5} {'p50':>7} {'p99':>7} "
          f"{'p99 bef.':>8} {'cold read':>9} {'cold cached':>11} {'of read':>7} {'of cache':>8} {'backfill':>9}")
    for mode, m in result["modes"].items():
        print(f"{mode:<9} {m['hot_hit_ratio']:>9.3f} {m['hot_hit_ratio_while_backfilling']:>6.3f} "
              f"{m['hot_hit_ratio_before']:>6.3f} {m['simulated']['hot_hit_ratio']:>5.3f} {m['hot_p50_ms']:>5.2f}ms "
              f"{m['hot_p99_ms']:>5.2f}ms {m['hot_p99_ms_before']:>6.2f}ms {m['cold_read_bytes'] / 2**20:>6.0f}MiB "
              f"{m['cold_cached_bytes'] / 2**20:>8.1f}MiB {m['cold_cached_share_of_read']:>7.1%} "
              f"{m['cold_cached_share_of_page_cache']:>8.1%} {m['backfill_mb_per_s']:>5.0f}MB/s")
    print("hit ratio: the consumers' reads from the backfill's start to 11 s after its end; while: during the "
          "backfill; before: the 11 s before it; sim.: the simulator on the recorded trace")
    met = result["goals_met"]
    print(f"tiered hot hit ratio >= {GOAL_TIERED_HIT_RATIO}: {met['tiered_hot_hit_ratio']}; tiered backlog left "
          f"cached < {GOAL_TIERED_CACHED_SHARE:.0%} of what it read: {met['tiered_cold_cached']}; untiered hot hit "
          f"ratio fell: {met['untiered_hot_hit_ratio_fell']}; plot: {result['plot']}")
