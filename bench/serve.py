"""A backfill from the broker against one through `tiering serve`, on a real broker.

Scenario: a real Apache Kafka broker (one KRaft node, the fetched jars) holds two copies of a
backlog of `--mib` MiB (default 1024) of ~1 KiB records in ~16 KiB batches (librdkafka's
producer, `batch.size` 16 KiB, Kafka's default), one topic each: `backlog-local` stays on the
broker's disk; `backlog-tiered` is offloaded by `tiering run --once`, after which local retention
(DeleteRecords through the broker) leaves only its active segment on disk. The hot side is what
a broker serves all day: a producer appends 2 MB/s to 4 partitions of `hot`, and 3 consumers
tail every partition, each in its own group-less assignment from the end.

The broker runs in a memory cgroup made for the run (bench/cachelimit.py) that gives its page
cache `--budget-mib` MiB (default 256): the backlog is four times that, so a backfill that goes
through the broker's page cache must evict something. Every file of the log dir is dropped from
the page cache before each mode. Each mode runs the hot side alone for 10 s, then a backfill
that reads its whole backlog once with a librdkafka consumer (in a process of its own), then the hot side 10 s more:

- broker: the backfill reads `backlog-local` from the broker;
- endpoint: the backfill reads `backlog-tiered` from `tiering serve` (its own process, outside
  the broker's cgroup: store bytes go through its buffer pool, never the broker's page cache).

Figures per mode and phase (before / during / after the backfill):
- the tailing consumers' fetch latency: for every record, the time it was received minus the
  time it was produced (CreateTime), p50 and p99 in ms;
- the hot tail's page-cache residency: every 0.5 s, cachestat(2) (mincore(2) before Linux 6.5)
  over the newest 4 MiB of each hot partition's active segment, the bytes the tailing consumers
  read next, as a fraction resident (1.0: their reads are page-cache hits);
- the backfill's rate in MB/s of record batches received.

Then the endpoint's cold-read throughput: `backlog-tiered` read whole through the endpoint,
and by `tiering cat --format raw` on the same data, both through a relay that adds 0 ms and 50
ms to every store request (bench/relay.py), alternating order; the endpoint's peak RSS.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.cachelimit import CacheBudget, Unavailable
from bench.daemon_env import ENV, BUCKET, Server
from bench.machine import describe, save_result
from bench.relay import LatencyRelay
from tiering.files import drop_cached_pages
from tiering.read.pagecache import cached_pages

HOT, LOCAL, TIERED = "hot", "backlog-local", "backlog-tiered"
HOT_PARTITIONS = 4
HOT_RATE = 2_000_000          # bytes/s the hot producer appends
RECORD = 1000                 # bytes of value per record
TAILERS = 3
PHASE_S = 10.0
TAIL_WINDOW = 4 << 20         # the newest bytes of a hot segment the tailers read next
SEGMENT = 16 << 20


def add_arguments(parser) -> None:
    parser.add_argument("--budget-mib", type=int, default=256, help="the broker's page cache (MiB)")
    parser.add_argument("--skip-modes", action="store_true", help="only the throughput comparison")


@dataclass
class Phase:
    latencies_ms: list[float]
    residency: list[float]


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _producer(bootstrap: str, **conf):
    from confluent_kafka import Producer
    return Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 16384, "acks": "1", **conf})


def _create_topics(bootstrap: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = [NewTopic(HOT, HOT_PARTITIONS, 1, config={"segment.bytes": str(SEGMENT)}),
              NewTopic(LOCAL, 1, 1, config={"segment.bytes": str(SEGMENT)}),
              NewTopic(TIERED, 1, 1, config={"segment.bytes": str(SEGMENT)})]
    for future in admin.create_topics(topics).values():
        future.result(30)


def _fill(bootstrap: str, topic: str, mib: int) -> int:
    producer = _producer(bootstrap)
    value = os.urandom(RECORD // 2) * 2          # half compressible, as real payloads are
    count = (mib << 20) // RECORD
    for i in range(count):
        while True:
            try:
                producer.produce(topic, key=str(i).encode(), value=value, partition=0)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(120)
    return count


def _end_offset(bootstrap: str, topic: str, partition: int) -> tuple[int, int]:
    from confluent_kafka import Consumer, TopicPartition
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-offsets"})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)
    finally:
        consumer.close()


def backfill(bootstrap: str, topic: str, libs: Path, messages: int) -> tuple[int, float]:
    """Reads the partition whole with Kafka's own consumer (ConsumerPerformance, a subscribing
    group: its joins go through the endpoint's relay too): (bytes, seconds of fetching)."""
    cmd = ["java", "-Xmx512m", "-XX:+UseSerialGC", "-cp", f"{libs}/*", "org.apache.kafka.tools.ConsumerPerformance",
           "--bootstrap-server", bootstrap, "--topic", topic, "--messages", str(messages), "--timeout", "60000",
           "--group", f"backfill-{time.monotonic_ns()}", "--consumer.config", "/dev/null"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0:
        raise SystemExit(f"bench: ConsumerPerformance failed: {proc.stderr[-1500:]}")
    header, row = [line for line in proc.stdout.splitlines() if "," in line][-2:]
    fields = dict(zip([h.strip() for h in header.split(",")], [v.strip() for v in row.split(",")]))
    mb, fetch_ms = float(fields["data.consumed.in.MB"]), float(fields["fetch.time.ms"])
    if int(fields["data.consumed.in.nMsg"]) < messages:
        raise SystemExit(f"bench: the backfill read {fields['data.consumed.in.nMsg']} of {messages} records")
    return int(mb * 2**20), fetch_ms / 1000


def backfill_python(bootstrap: str, topic: str) -> tuple[int, float]:
    """Reads the partition whole from its first offset: (bytes of values, seconds)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"backfill-{time.monotonic_ns()}",
                         "enable.auto.commit": False, "enable.partition.eof": True, "auto.offset.reset": "earliest",
                         "fetch.max.bytes": 52428800, "max.partition.fetch.bytes": 8388608})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    received = 0
    start = time.monotonic()
    try:
        while True:
            messages = consumer.consume(10000, 1.0)
            done = False
            for m in messages:
                if m.error():
                    if m.error().code() == -191:      # partition EOF
                        done = True
                        continue
                    raise SystemExit(f"bench: the backfill consumer failed: {m.error()}")
                received += len(m.value() or b"") + len(m.key() or b"")
            if done:
                break
            if time.monotonic() - start > 900:
                raise SystemExit("bench: the backfill did not finish in 15 minutes")
    finally:
        consumer.close()
    return received, time.monotonic() - start


def _backfill_in_child(bootstrap: str, topic: str) -> tuple[int, float]:
    """The backfill in a process of its own: in this one its consume loop would hold the GIL
    the tailing consumers need, and their latency would measure that instead of the broker."""
    proc = subprocess.run([sys.executable, "-c", "import json, sys; from bench.serve import backfill_python; "
                           "print(json.dumps(backfill_python(sys.argv[1], sys.argv[2])))", bootstrap, topic],
                          capture_output=True, text=True, env=ENV, timeout=1200)
    if proc.returncode != 0:
        raise SystemExit(f"bench: the backfill failed: {proc.stderr[-1500:]}")
    size, seconds = json.loads(proc.stdout.strip().splitlines()[-1])
    return size, seconds


class HotSide:
    """The producer and the tailing consumers; phases are marked by `mark(name)`."""

    def __init__(self, bootstrap: str, log_dir: Path):
        self.bootstrap, self.log_dir = bootstrap, log_dir
        self.stop = threading.Event()
        self.phase = "warmup"
        self.phases: dict[str, Phase] = {}
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._produce, daemon=True),
                        threading.Thread(target=self._sample, daemon=True)]
        self.threads += [threading.Thread(target=self._tail, args=(n,), daemon=True) for n in range(TAILERS)]

    def mark(self, name: str) -> None:
        with self._lock:
            self.phase = name
            self.phases.setdefault(name, Phase([], []))

    def _record(self, latency: float | None = None, residency: float | None = None) -> None:
        with self._lock:
            phase = self.phases.setdefault(self.phase, Phase([], []))
            if latency is not None:
                phase.latencies_ms.append(latency)
            if residency is not None:
                phase.residency.append(residency)

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def _produce(self) -> None:
        producer = _producer(self.bootstrap, **{"linger.ms": 5})
        value = os.urandom(RECORD // 2) * 2
        per_tick = HOT_RATE // RECORD // 100          # every 10 ms
        n = 0
        next_tick = time.monotonic()
        while not self.stop.is_set():
            for _ in range(per_tick):
                producer.produce(HOT, value=value, partition=n % HOT_PARTITIONS)
                n += 1
            producer.poll(0)
            next_tick += 0.01
            time.sleep(max(0.0, next_tick - time.monotonic()))
        producer.flush(30)

    def _tail(self, number: int) -> None:
        from confluent_kafka import OFFSET_END, Consumer, TopicPartition
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"tail-{number}-{time.monotonic_ns()}",
                             "enable.auto.commit": False, "fetch.wait.max.ms": 100})
        consumer.assign([TopicPartition(HOT, p, OFFSET_END) for p in range(HOT_PARTITIONS)])
        try:
            while not self.stop.is_set():
                # poll, not consume(n, timeout): a batch call waits for n records or the
                # timeout, which would be measured as fetch latency.
                m = consumer.poll(0.1)
                if m is not None and not m.error():
                    self._record(latency=time.time() * 1000 - m.timestamp()[1])
        finally:
            consumer.close()

    def _sample(self) -> None:
        while not self.stop.wait(0.5):
            resident = total = 0
            for p in range(HOT_PARTITIONS):
                logs = sorted((self.log_dir / f"{HOT}-{p}").glob("*.log"))
                if not logs:
                    continue
                try:
                    fd = os.open(logs[-1], os.O_RDONLY)
                except OSError:
                    continue
                try:
                    size = os.fstat(fd).st_size
                    start = max(0, size - TAIL_WINDOW) & ~4095
                    pages, _ = cached_pages(fd, start, size - start)
                    resident += pages * 4096
                    total += size - start
                finally:
                    os.close(fd)
            if total:
                self._record(residency=min(1.0, resident / total))


def _summary(phase: Phase | None) -> dict:
    if phase is None:
        return {}
    return {"fetch_p50_ms": _percentile(phase.latencies_ms, 0.50), "fetch_p99_ms": _percentile(phase.latencies_ms, 0.99),
            "records": len(phase.latencies_ms),
            "hot_tail_resident": round(statistics.fmean(phase.residency), 4) if phase.residency else None}


def run_mode(name: str, bootstrap: str, log_dir: Path, backfill_from: str, topic: str) -> dict:
    for path in log_dir.rglob("*"):
        if path.is_file():
            with contextlib.suppress(OSError):
                drop_cached_pages(path)
    hot = HotSide(bootstrap, log_dir)
    hot.start()
    try:
        time.sleep(3)                 # the tailers join and reach the end
        hot.mark("before")
        time.sleep(PHASE_S)
        hot.mark("during")
        size, seconds = _backfill_in_child(backfill_from, topic)
        hot.mark("after")
        time.sleep(PHASE_S)
    finally:
        hot.close()
    return {"mode": name, "backfill_mb_s": round(size / seconds / 1e6, 1), "backfill_s": round(seconds, 1),
            **{phase: _summary(hot.phases.get(phase)) for phase in ("before", "during", "after")}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(work: Path, name: str, log_dir: Path, endpoint: str, bootstrap: str, port: int) -> Path:
    path = work / f"{name}.toml"
    path.write_text(f"""
[kafka]
log_dirs = ["{log_dir}"]
include = ["{TIERED}"]
bootstrap_servers = "{bootstrap}"
[store]
bucket = "{BUCKET}"
prefix = "serve/"
endpoint_url = "{endpoint}"
addressing_style = "path"
[upload]
concurrency = 4
[retention]
local_delete = "kafka-admin"
local_retention_bytes = 1
[state]
dir = "{work / 'state'}"
[metrics]
listen = ""
[serve]
listen = "127.0.0.1:{port}"
""")
    return path


class Endpoint:
    def __init__(self, config: Path, port: int, log: Path):
        self.port = port
        self.process = subprocess.Popen([sys.executable, "-m", "tiering", "serve", "--config", str(config)],
                                        stdout=open(log, "w"), stderr=subprocess.STDOUT, env=ENV)
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"bench: tiering serve exited {self.process.returncode}: see {log}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("bench: tiering serve did not listen") from None
                time.sleep(0.2)

    def peak_rss(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _cat_raw(config: Path, from_offset: int = 0) -> tuple[int, float]:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "tiering", "cat", "--config", str(config), TIERED, "0",
                           "--from-offset", str(from_offset), "--format", "raw"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=ENV)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"bench: tiering cat failed: {proc.stderr.decode()[-500:]}")
    return len(proc.stdout), seconds


def throughput(work: Path, log_dir: Path, server: Server, bootstrap: str, libs: Path, records: int) -> list[dict]:
    host, port = server.endpoint.removeprefix("http://").split(":")
    rows = []
    for delay in (0.0, 0.05):
        relay = LatencyRelay(host, int(port), delay)
        serve_port = _free_port()
        config = _config(work, f"relay-{int(delay * 1000)}", log_dir, f"http://127.0.0.1:{relay.port}", bootstrap,
                         serve_port)
        endpoint = Endpoint(config, serve_port, work / f"serve-{int(delay * 1000)}.log")
        try:
            # Rates in the bytes stored (what cat writes and what the endpoint sends), so both
            # sides are measured in the same unit.
            order = ("endpoint", "cat", "cat", "endpoint")
            seconds_of: dict[str, list[float]] = {"endpoint": [], "cat": []}
            stored = 0
            # cat's wall time includes starting Python and listing the store, the endpoint's
            # fetch time does not: the time of a cat of the last record alone is taken off.
            startup = min(_cat_raw(config, records - 1)[1] for _ in range(2))
            for what in order:
                if what == "endpoint":
                    _, seconds = backfill(f"127.0.0.1:{serve_port}", TIERED, libs, records)
                else:
                    stored, seconds = _cat_raw(config)
                    seconds -= startup
                seconds_of[what].append(seconds)
            runs = {k: [stored / s / 1e6 for s in v] for k, v in seconds_of.items()}
            best = {k: max(v) for k, v in runs.items()}
            rows.append({"store_latency_ms": int(delay * 1000), "endpoint_mb_s": round(best["endpoint"], 1),
                         "cat_raw_mb_s": round(best["cat"], 1),
                         "ratio": round(best["endpoint"] / best["cat"], 2), "cat_startup_s": round(startup, 2),
                         "endpoint_peak_rss_mib": round(endpoint.peak_rss() / 2**20, 1)})
        finally:
            endpoint.close()
    return rows


def main(args) -> int:
    from tiering.realkafka.broker import Broker
    from tiering.realkafka.fetch import fetch

    mib = args.mib or 1024
    libs = fetch(quiet=True)
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    server = Server()
    broker = Broker(work / "broker", libs, heap="512m", extra_props={"log.segment.bytes": str(SEGMENT)})
    result = {"machine": describe(), "mib": mib, "budget_mib": args.budget_mib}
    budget = None
    try:
        broker.start()
        bootstrap = broker.bootstrap
        _create_topics(bootstrap)
        for topic in (LOCAL, TIERED):
            _fill(bootstrap, topic, mib)
        time.sleep(2.5)                                   # the high watermark checkpoint
        serve_port = _free_port()
        config = _config(work, "tiering", broker.log_dir, server.endpoint, bootstrap, serve_port)
        once = subprocess.run([sys.executable, "-m", "tiering", "run", "--once", "--config", str(config)],
                              capture_output=True, text=True, env=ENV)
        if once.returncode != 0:
            raise SystemExit(f"bench: tiering run --once failed: {once.stderr[-1000:]}")
        low, high = _end_offset(bootstrap, TIERED, 0)
        result["tiered_log_start"], result["tiered_end"] = low, high
        if not args.skip_modes:
            try:
                budget = CacheBudget(args.budget_mib << 20)
                Path(budget.procs_file).write_text(str(broker.proc.pid))
                result["method"] = budget.method
            except (Unavailable, OSError) as exc:
                result["method"] = f"no page-cache limit ({exc})"
            endpoint = Endpoint(config, serve_port, work / "serve.log")
            try:
                result["modes"] = [run_mode("broker", bootstrap, broker.log_dir, bootstrap, LOCAL),
                                   run_mode("endpoint", bootstrap, broker.log_dir, f"127.0.0.1:{serve_port}", TIERED)]
                result["endpoint_peak_rss_mib"] = round(endpoint.peak_rss() / 2**20, 1)
            finally:
                endpoint.close()
        result["throughput"] = throughput(work, broker.log_dir, server, bootstrap, libs, high)
    finally:
        broker.stop()
        if budget is not None:
            budget.close()
        server.close()
    if save_result("serve", result, args.json):
        _print(result)
    return 0


def _print(result: dict) -> None:
    m = result["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, kernel {m['kernel']}; backlog {result['mib']} MiB, "
          f"broker page cache {result['budget_mib']} MiB ({result.get('method', '-')})")
    for mode in result.get("modes", []):
        print(f"\nbackfill from the {mode['mode']}: {mode['backfill_mb_s']} MB/s ({mode['backfill_s']} s)")
        print("phase   | fetch p50 ms | fetch p99 ms | hot tail resident | records")
        for phase in ("before", "during", "after"):
            s = mode[phase]
            print(f"{phase:7} | {s.get('fetch_p50_ms') or 0:12.1f} | {s.get('fetch_p99_ms') or 0:12.1f} | "
                  f"{s.get('hot_tail_resident') or 0:17.3f} | {s.get('records', 0)}")
    print("\nstore latency | endpoint MB/s | tiering cat --format raw MB/s | ratio | endpoint peak RSS MiB")
    for row in result["throughput"]:
        print(f"{row['store_latency_ms']:10} ms | {row['endpoint_mb_s']:13} | {row['cat_raw_mb_s']:29} | "
              f"{row['ratio']:5} | {row['endpoint_peak_rss_mib']}")
    print(json.dumps({"note": "figures of one run; see the module docstring for the method"}))
