"""A real Apache Kafka KRaft cluster on loopback: N combined broker + controller nodes (3 by
default) forming one static quorum, one cluster id, each node its own log dir.

Built on `Broker` (one node each). The nodes start together (none serves before the quorum has
elected a leader, so a sequential start would wait on itself); one node can be killed -9 and
started again on the same ports and dirs. Small heaps and short failure-detection timeouts keep
three JVMs usable on a 2-core machine: a killed node loses its leaderships within a few seconds,
not the default 9 s session timeout. Automatic leader rebalancing is off, so leadership moves
only when a test moves it (preferred election, reassignment, kill).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tiering.realkafka.broker import Broker, BrokerError, _cluster_id, free_port


def cluster_props(size: int, min_isr: int) -> dict[str, str]:
    """Server properties every node of the cluster shares (on top of Broker's own)."""
    return {
        "default.replication.factor": str(size),
        "min.insync.replicas": str(min_isr),
        "offsets.topic.replication.factor": str(size),
        "transaction.state.log.replication.factor": str(size),
        "transaction.state.log.min.isr": str(min_isr),
        "share.coordinator.state.topic.replication.factor": str(size),
        "share.coordinator.state.topic.min.isr": str(min_isr),
        # Leadership moves only when a test moves it.
        "auto.leader.rebalance.enable": "false",
        # A killed node is fenced after 3 s instead of 9 s; its replicas leave the ISR after 5 s.
        "broker.session.timeout.ms": "3000",
        "broker.heartbeat.interval.ms": "500",
        "replica.lag.time.max.ms": "5000",
        "controller.quorum.election.timeout.ms": "1000",
        "controller.quorum.fetch.timeout.ms": "2000",
        "replica.fetch.wait.max.ms": "200",
        "num.replica.fetchers": "1",
    }


@dataclass
class Cluster:
    workdir: Path
    libs: Path
    size: int = 3
    heap: str = "256m"
    min_isr: int = 2
    extra_props: dict[str, str] = field(default_factory=dict)
    nodes: dict[int, Broker] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        ids = range(1, self.size + 1)
        controller_ports = {i: free_port() for i in ids}
        voters = ",".join(f"{i}@127.0.0.1:{controller_ports[i]}" for i in ids)
        cluster_id = _cluster_id()
        props = {**cluster_props(self.size, self.min_isr), **self.extra_props}
        for i in ids:
            self.nodes[i] = Broker(self.workdir / f"node{i}", self.libs, node_id=i, heap=self.heap,
                                   controller_port=controller_ports[i], cluster_id=cluster_id,
                                   quorum_voters=voters, extra_props=props)

    @property
    def bootstrap(self) -> str:
        """Every node's listener: clients reach the cluster while any one node is up."""
        return ",".join(node.bootstrap for node in self.nodes.values())

    def log_dir(self, node_id: int) -> Path:
        return self.nodes[node_id].log_dir

    def start(self, timeout: float = 180) -> float:
        """Start every node (formatting in parallel too); returns the seconds it took."""
        began = time.monotonic()
        with ThreadPoolExecutor(self.size) as pool:
            list(pool.map(lambda node: node.format(), self.nodes.values()))
        for node in self.nodes.values():
            node.launch()
        try:
            with ThreadPoolExecutor(self.size) as pool:
                list(pool.map(lambda node: node.wait_started(timeout), self.nodes.values()))
        except BrokerError:
            self.kill_all()
            raise
        return time.monotonic() - began

    def kill(self, node_id: int) -> None:
        """kill -9 of one node."""
        self.nodes[node_id].kill()

    def restart(self, node_id: int, timeout: float = 120) -> None:
        """Start a stopped or killed node again (same ports, dirs, id)."""
        node = self.nodes[node_id]
        if node.running():
            raise BrokerError(f"node {node_id} is still running")
        node.start(timeout)

    def revive(self, timeout: float = 180) -> list[int]:
        """Start every node that is not running, together (one node alone has no quorum to
        start with when the others are down too); returns their ids."""
        dead = [i for i, node in self.nodes.items() if not node.running()]
        for i in dead:
            self.nodes[i].launch()
        with ThreadPoolExecutor(max(len(dead), 1)) as pool:
            list(pool.map(lambda i: self.nodes[i].wait_started(timeout), dead))
        return dead

    def running(self) -> list[int]:
        return [i for i, node in self.nodes.items() if node.running()]

    def stop(self) -> None:
        with ThreadPoolExecutor(self.size) as pool:
            list(pool.map(lambda node: node.stop(), self.nodes.values()))

    def kill_all(self) -> None:
        for node in self.nodes.values():
            node.kill()

    def tail(self, lines: int = 30) -> str:
        return "\n".join(f"--- node {i} ({node.workdir}) ---\n{node.tail(lines)}" for i, node in self.nodes.items())
