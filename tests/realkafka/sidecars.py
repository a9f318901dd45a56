"""Three sidecars beside the 3-node cluster (one per node's log dir, each its own state dir, one
shared bucket and prefix, `kafka.bootstrap_servers` set), and an independent look at the
partition's chain in the store: every manifest of every broker, each segment's offsets decoded
from its stored `.log` with kafka-python's record parser (not the sidecar's own)."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import BUCKET, PREFIX, Env, run_cli
from tests.integration.daemon_process import DaemonProcess
from tests.realkafka.offload import get, partition_dir
from tiering.demo import free_port
from tiering.realkafka.cluster import Cluster

# How often a sidecar asks the cluster who leads what, in the tests (seconds).
REFRESH_S = 1
# A claim left by a sidecar that lost its partition (or was killed) mid-upload holds that start
# offset for claim_timeout_s, even against a newer leader (cluster.claims WAITs on a claim of a
# lower epoch), and the chain has a gap until then: 600 s by default, 5 s in these tests.
CLAIM_TIMEOUT_S = 5


@dataclass
class Sidecar:
    node_id: int
    env: Env
    config: Path
    workdir: Path
    port: int
    daemon: DaemonProcess | None = None
    runs: int = 0

    def run_once(self, timeout: float = 180) -> subprocess.CompletedProcess:
        result = run_cli("run", "--once", "--config", str(self.config), timeout=timeout)
        # Kept beside the config: what a failing test's runs said.
        self.runs += 1
        (self.workdir / f"once{self.runs}.out").write_text(
            f"exit {result.returncode}\n--- stdout\n{result.stdout}--- stderr\n{result.stderr}")
        return result

    def start(self) -> DaemonProcess:
        self.runs += 1
        run_dir = self.workdir / f"run{self.runs}"
        run_dir.mkdir()
        self.daemon = DaemonProcess(self.config, run_dir, self.port)
        return self.daemon

    def kill(self) -> None:
        """kill -9 of the daemon."""
        if self.daemon is not None:
            self.daemon.kill()

    def stop(self) -> int:
        if self.daemon is None or self.daemon.proc.poll() is not None:
            return self.daemon.proc.returncode if self.daemon else 0
        code, _ = self.daemon.stop(timeout=60)
        return code

    def status(self) -> dict:
        result = run_cli("status", "--json", "--config", str(self.config))
        assert result.returncode in (0, 1), result.stderr
        return json.loads(result.stdout)

    def cat(self, topic: str, partition: int, from_offset: int = 0) -> list[dict]:
        result = run_cli("cat", "--config", str(self.config), "--from-offset", str(from_offset),
                         topic, str(partition), timeout=180)
        assert result.returncode == 0, f"cat through node {self.node_id}'s sidecar: {result.stderr}"
        return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def make_sidecars(cluster: Cluster, root: Path, endpoint: str, topics: list[str], *,
                  bootstrap: str | None = None, extra: str = "", daemon: str = "") -> dict[int, Sidecar]:
    """One sidecar per node; `bootstrap` overrides the cluster's (for a sidecar that cannot
    reach it)."""
    sidecars = {}
    for node_id in cluster.nodes:
        workdir = root / f"sidecar{node_id}"
        workdir.mkdir()
        env = Env(workdir, endpoint, cluster.log_dir(node_id), workdir / "state")
        port = free_port()
        kafka = (f"include = {json.dumps(topics)}\n"
                 f"bootstrap_servers = \"{bootstrap or cluster.bootstrap}\"\n{extra}")
        config = env.write_config(kafka)
        text = config.read_text().replace('listen = ""', f'listen = "127.0.0.1:{port}"')
        text += ('\n[daemon]\nreconcile_interval_ms = "1s"\n' + daemon
                 + f"\n[cluster]\nmetadata_refresh_s = {REFRESH_S}\nchain_refresh_s = {REFRESH_S}\n"
                 f"claim_timeout_s = {CLAIM_TIMEOUT_S}\n")
        config.write_text(text)
        sidecars[node_id] = Sidecar(node_id, env, config, workdir, port)
    return sidecars


# -- the store, read independently --------------------------------------------------------------


@dataclass(frozen=True)
class StoredSegment:
    base_offset: int
    end_offset: int
    broker_id: int | None
    leader_epoch: int | None
    created_at_ms: int
    uid: str
    log_key: str
    log_size: int
    offsets: tuple[int, ...] = field(repr=False)      # decoded from the stored .log


# Stored objects are immutable (design.md, invariant 4): a .log decoded once stays decoded.
_DECODED: dict[str, tuple[int, ...]] = {}


def _offsets_of(s3, key: str) -> tuple[int, ...]:
    if key not in _DECODED:
        _DECODED[key] = _decode_offsets(get(s3, key))
    return _DECODED[key]


def _decode_offsets(data: bytes) -> tuple[int, ...]:
    from kafka.record import MemoryRecords
    records = MemoryRecords(data)
    out = []
    while True:
        batch = records.next_batch()
        if batch is None:
            break
        out.extend(r.offset for r in batch)
    return tuple(out)


def stored_segments(s3, topic: str, partition: int) -> list[StoredSegment]:
    """Every manifest of the partition in the store (whoever uploaded it), ordered by base offset."""
    found = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX):
        for item in page.get("Contents", []):
            if not item["Key"].endswith(".manifest.json"):
                continue
            doc = json.loads(get(s3, item["Key"]))
            if doc["topic"] != topic or doc["partition"] != partition:
                continue
            log = next(o for o in doc["objects"] if o["kind"] == "log")
            found.append(StoredSegment(doc["base_offset"], doc["end_offset"], doc.get("broker_id"),
                                       doc.get("leader_epoch"), doc["created_at_ms"], doc["uid"], log["key"],
                                       log["size"], _offsets_of(s3, log["key"])))
    return sorted(found, key=lambda s: (s.base_offset, s.created_at_ms))


@dataclass(frozen=True)
class ChainFacts:
    start: int | None
    end: int | None               # the last offset covered
    gaps: tuple[tuple[int, int], ...]
    overlaps: int                 # pairs of stored segments sharing an offset


def chain_facts(segments: list[StoredSegment]) -> ChainFacts:
    if not segments:
        return ChainFacts(None, None, (), 0)
    # Offsets are sparse only where Kafka left them so (compaction, transaction markers are
    # records too), so coverage is by each segment's [base, end] range.
    ranges = sorted((s.base_offset, s.end_offset) for s in segments)
    gaps, covered_to = [], ranges[0][0] - 1
    for first, last in ranges:
        if first > covered_to + 1:
            gaps.append((covered_to + 1, first - 1))
        covered_to = max(covered_to, last)
    overlaps = sum(1 for i, a in enumerate(ranges) for b in ranges[i + 1:] if b[0] <= a[1])
    return ChainFacts(ranges[0][0], covered_to, tuple(gaps), overlaps)


def rolled_log_bytes(log_dir: Path, topic: str, partition: int, below: int) -> int:
    """Bytes of this replica's .log files wholly below offset `below` (their next segment's base <= below)."""
    pdir = partition_dir(log_dir, topic, partition)
    bases = sorted(int(p.stem) for p in pdir.glob("*.log"))
    return sum((pdir / f"{b:020d}.log").stat().st_size for b, nxt in zip(bases, bases[1:]) if nxt <= below)


def rolled_bases(log_dir: Path, topic: str, partition: int) -> list[int]:
    pdir = partition_dir(log_dir, topic, partition)
    return sorted(int(p.stem) for p in pdir.glob("*.log"))


class Relay:
    """A plain TCP relay from a local port to one node's listener: a bootstrap address that is
    unreachable until `open()` and reaches the cluster after it (the client then talks to the
    nodes' advertised listeners directly, as any Kafka client does)."""

    def __init__(self, target_port: int):
        self.port = free_port()
        self.target_port = target_port
        self._server: socket.socket | None = None

    def open(self) -> None:
        self._server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while self._server is not None:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()

    def close(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            server.close()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
