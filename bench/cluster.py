"""One copy across replicas: what a 3-broker cluster's three sidecars put in the store.

Method: three real Apache Kafka KRaft nodes on loopback (tiering.realkafka.cluster), topic
`bench` with 3 partitions (one led by each node), RF=3, min.insync.replicas=2, 256 KiB segments;
three `tiering run` daemons (one per node's log dir, each its own state dir, one shared bucket
and prefix on moto's server, `kafka.bootstrap_servers` set, `cluster.metadata_refresh_s` =
REFRESH_S). A librdkafka producer (acks=all, idempotent) writes RATE bytes a second of
incompressible values for the whole run. After a warm-up, leadership of each partition in turn
moves to another node (its replicas reordered, then a preferred leader election); the time from
the moment the cluster's metadata names the new leader to the moment the new leader's first
manifest (its broker id and new leader epoch) is in the store is one sample. Then the producer
stops, the daemons catch up and stop.

Figures: store bytes / one replica's bytes (the `.log` bytes the store holds for offsets 0 to the
chain's end over the leader replica's rolled `.log` bytes for the same offsets; goal 1.00, at most
1.05), every object's bytes per uploading broker (from the manifests), the leader-change samples
against the goal of 2 x the metadata refresh interval, overlaps and gaps in each chain.
1 MB = 10^6 bytes.
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

from bench.daemon_env import BUCKET, Daemon, Server
from bench.machine import describe, save_result
from tiering.demo import free_port
from tiering.realkafka.cluster import Cluster
from tiering.realkafka.demo import topic_segment_config
from tiering.realkafka.fetch import fetch
from tiering.realkafka.ops import ClusterAdmin

TOPIC = "bench"
PARTITIONS = 3
SEGMENT_BYTES = 256 * 1024
RATE = 600_000                 # bytes a second, over every partition
VALUE_SIZE = 1000
REFRESH_S = 2
WARM_UP_S = 15
PREFIX = "cluster/"


def add_arguments(parser) -> None:
    parser.add_argument("--seconds", type=int, default=WARM_UP_S, help="warm-up before the first leader change")


def config_text(work: Path, log_dir: Path, endpoint: str, port: int, bootstrap: str, node: int) -> str:
    return f"""
[kafka]
log_dirs = ["{log_dir}"]
include = ["{TOPIC}"]
bootstrap_servers = "{bootstrap}"
[store]
bucket = "{BUCKET}"
prefix = "{PREFIX}"
endpoint_url = "{endpoint}"
addressing_style = "path"
[upload]
concurrency = 4
[state]
dir = "{work / f'state-{node}'}"
[metrics]
listen = "127.0.0.1:{port}"
[daemon]
reconcile_interval_ms = "1s"
[cluster]
metadata_refresh_s = {REFRESH_S}
chain_refresh_s = {REFRESH_S}
"""


class Producer:
    """acks=all, idempotent, RATE bytes a second round-robin over the partitions, in a thread."""

    def __init__(self, bootstrap: str):
        self.bootstrap = bootstrap
        self.stop_event = threading.Event()
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import os
        from confluent_kafka import Producer as RdProducer
        producer = RdProducer({"bootstrap.servers": self.bootstrap, "acks": "all", "enable.idempotence": True,
                               "linger.ms": 20, "message.timeout.ms": 120_000, "log_level": 3})
        began, sent = time.monotonic(), 0
        while not self.stop_event.is_set():
            if sent * VALUE_SIZE > (time.monotonic() - began) * RATE:
                producer.poll(0.01)
                continue
            try:
                producer.produce(TOPIC, value=os.urandom(VALUE_SIZE), partition=sent % PARTITIONS,
                                 on_delivery=lambda err, msg: err and self.errors.append(str(err)))
                sent += 1
            except BufferError:
                producer.poll(0.05)
            producer.poll(0)
        producer.flush(120)

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(180)


# Manifests are immutable (a key is written once): each is fetched once, however often listed.
_MANIFESTS: dict[str, dict] = {}


def manifests(client) -> list[dict]:
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX):
        for item in page.get("Contents", []):
            if item["Key"].endswith(".manifest.json"):
                keys.append(item["Key"])
                if item["Key"] not in _MANIFESTS:
                    body = client.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
                    _MANIFESTS[item["Key"]] = json.loads(body)
    return [_MANIFESTS[k] for k in keys]


def chain_of(docs: list[dict], partition: int) -> dict:
    ranges = sorted((d["base_offset"], d["end_offset"]) for d in docs if d["partition"] == partition)
    gaps, overlaps, covered = 0, 0, (ranges[0][0] - 1 if ranges else -1)
    for i, (first, last) in enumerate(ranges):
        gaps += first > covered + 1
        overlaps += sum(1 for other in ranges[i + 1:] if other[0] <= last)
        covered = max(covered, last)
    return {"start": ranges[0][0] if ranges else None, "end": covered if ranges else None,
            "segments": len(ranges), "gaps": gaps, "overlaps": overlaps}


def replica_log_bytes(log_dir: Path, partition: int, up_to: int) -> int:
    """The replica's .log bytes for offsets [0, up_to] (segments whose next base <= up_to + 1)."""
    pdir = log_dir / f"{TOPIC}-{partition}"
    bases = sorted(int(p.stem) for p in pdir.glob("*.log"))
    return sum((pdir / f"{b:020d}.log").stat().st_size for b, nxt in zip(bases, bases[1:]) if nxt <= up_to + 1)


def move_leader(admin: ClusterAdmin, client, partition: int) -> dict:
    """Move `partition`'s leadership to its second replica; seconds until that leader's first upload."""
    state = admin.state(TOPIC, partition)
    order = [*state.replicas[1:], state.replicas[0]]
    admin.reassign(TOPIC, {partition: order})
    admin.wait_leader(TOPIC, partition, lambda p: list(p.replicas) == order, "the reordered replicas")
    admin.elect_preferred(TOPIC, [partition])
    moved = admin.wait_leader(TOPIC, partition, lambda p: p.leader == order[0], "the new leader", timeout=60)
    named = time.monotonic()
    deadline = named + 60
    while time.monotonic() < deadline:
        if any(d["partition"] == partition and d.get("broker_id") == moved.leader
               and d.get("leader_epoch") == moved.leader_epoch for d in manifests(client)):
            return {"partition": partition, "from": state.leader, "to": moved.leader,
                    "epoch": moved.leader_epoch, "seconds": round(time.monotonic() - named, 2)}
        time.sleep(0.25)
    return {"partition": partition, "from": state.leader, "to": moved.leader, "epoch": moved.leader_epoch,
            "seconds": None}


def main(args) -> int:
    # SIGTERM ends the run through the finally below (the nodes, daemons and server are ours to stop).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    server = Server()
    cluster = Cluster(work / "cluster", fetch(quiet=True))
    daemons: dict[int, Daemon] = {}
    try:
        start_seconds = cluster.start()
        admin = ClusterAdmin(cluster.bootstrap)
        admin.create_topic(TOPIC, PARTITIONS, 3, {**topic_segment_config(SEGMENT_BYTES), "min.insync.replicas": "2"})
        admin.wait_healthy(TOPIC, PARTITIONS)
        for node in cluster.nodes:
            port = free_port()
            config = work / f"tiering-{node}.toml"
            config.write_text(config_text(work, cluster.log_dir(node), server.endpoint, port, cluster.bootstrap, node))
            daemons[node] = Daemon(config, port, work / f"daemon-{node}.log")
        for daemon in daemons.values():
            daemon.wait_ready(120)
        producer = Producer(cluster.bootstrap)
        time.sleep(args.seconds)
        changes = [move_leader(admin, server.client, p) for p in range(PARTITIONS)]
        time.sleep(REFRESH_S * 2)
        producer.stop()
        if producer.errors:
            raise SystemExit(f"bench: the producer failed: {producer.errors[:3]}")
        # Let the daemons upload what the last rolls made eligible.
        time.sleep(REFRESH_S * 3)
        for daemon in daemons.values():
            daemon.stop()
        docs = manifests(server.client)
        partitions, per_broker = [], defaultdict(int)
        for d in docs:
            per_broker[str(d.get("broker_id"))] += sum(o["size"] for o in d["objects"])
        store_log_total = replica_total = 0
        for p, state in sorted(admin.describe(TOPIC).items()):
            chain = chain_of(docs, p)
            mine = [d for d in docs if d["partition"] == p]
            store_log = sum(next(o["size"] for o in d["objects"] if o["kind"] == "log") for d in mine)
            replica = replica_log_bytes(cluster.log_dir(state.leader), p, chain["end"]) if mine else 0
            store_log_total += store_log
            replica_total += replica
            partitions.append({"partition": p, **chain, "store_log_bytes": store_log, "replica_log_bytes": replica,
                               "ratio": round(store_log / replica, 3) if replica else None})
        admin.close()
    finally:
        for daemon in daemons.values():
            if daemon.process.poll() is None:
                daemon.process.kill()
        cluster.kill_all()
        server.close()
        shutil.rmtree(work, ignore_errors=True)
    samples = [c["seconds"] for c in changes if c["seconds"] is not None]
    result = {"benchmark": "cluster", "machine": describe(), "cluster_start_seconds": round(start_seconds, 1),
              "partitions": partitions, "segment_bytes": SEGMENT_BYTES, "rate_bytes_per_second": RATE,
              "metadata_refresh_s": REFRESH_S,
              "store_over_replica": round(store_log_total / replica_total, 3) if replica_total else None,
              "upload_bytes_per_broker": dict(sorted(per_broker.items())), "leader_changes": changes,
              "leader_change_to_first_upload_max_s": max(samples) if samples else None}
    if save_result("cluster", result, args.json):
        print(f"3 KRaft nodes (started in {start_seconds:.1f} s), topic of {PARTITIONS} partitions RF=3, "
              f"{SEGMENT_BYTES >> 10} KiB segments, {RATE / 1e6:.1f} MB/s produced, metadata refresh {REFRESH_S} s; "
              f"{result['machine']['cores']} cores, {result['machine']['cpu']}")
        print(f"store bytes / one replica's bytes: {result['store_over_replica']} (goal 1.00, at most 1.05)")
        for p in partitions:
            print(f"  partition {p['partition']}: {p['segments']} segments, offsets {p['start']}..{p['end']}, "
                  f"gaps {p['gaps']}, overlaps {p['overlaps']}, ratio {p['ratio']}")
        print("upload bytes per broker (every object, from the manifests): "
              + ", ".join(f"{b}: {n / 1e6:.2f} MB" for b, n in result["upload_bytes_per_broker"].items()))
        for c in changes:
            took = "no upload within 60 s" if c["seconds"] is None else f"{c['seconds']:.2f} s"
            print(f"  leader change of partition {c['partition']} ({c['from']} -> {c['to']}, epoch {c['epoch']}): "
                  f"first upload after {took} (goal < {2 * REFRESH_S} s)")
    return 0
