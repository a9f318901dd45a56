"""Which endpoints a Metadata answer lists, and which of them leads each partition (pure).

Single mode: this sidecar alone, leading every partition it can see. Cluster mode: one
endpoint per broker (the sidecar beside it), and the partition's leader is the sidecar beside
Kafka's leader, so a consumer spreads its fetches as it does on the cluster. Leader epochs are
never advertised (always -1): clients then skip OffsetsForLeaderEpoch validation, which this
endpoint cannot answer truthfully for a log whose epochs are split between the store and the
broker's checkpoint, and which a read-only endpoint does not need (no truncation happens here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Mapping, Protocol

from tiering.cluster.leadership import LeadershipView

SINGLE_NODE_ID = 0


@dataclass(frozen=True)
class Node:
    node_id: int
    host: str
    port: int


@dataclass(frozen=True)
class Topology:
    self_id: int
    nodes: tuple[Node, ...]
    # (topic, partition) -> leading node id; absent: `default_leader` (None: no leader known)
    leaders: Mapping[tuple[str, int], int] = field(default_factory=lambda: MappingProxyType({}))
    default_leader: int | None = None

    def leader(self, topic: str, partition: int) -> int | None:
        return self.leaders.get((topic, partition), self.default_leader)

    def leads(self, topic: str, partition: int) -> bool:
        """True unless another sidecar is known to lead it (an unknown leader is served here:
        this sidecar reads what it can see rather than turn a reader away on a guess)."""
        leader = self.leader(topic, partition)
        return leader is None or leader == self.self_id


def single(host: str, port: int) -> Topology:
    return Topology(SINGLE_NODE_ID, (Node(SINGLE_NODE_ID, host, port),), default_leader=SINGLE_NODE_ID)


def cluster(view: LeadershipView, broker_hosts: Mapping[int, str], *, self_host: str, port: int,
            peers: Mapping[int, str]) -> Topology:
    """The cluster's sidecars from a leadership view and the brokers' hosts (Kafka's metadata).
    A broker's sidecar is `peers[id]` ("host:port") when given, else the broker's host and this
    sidecar's own serve port; this broker's sidecar is `self_host` (serve.advertised_host)."""
    self_id = view.broker_id if view.broker_id is not None else SINGLE_NODE_ID
    ids = set(broker_hosts) | set(peers) | {self_id}
    ids |= {p.leader for p in view.partitions.values() if p.leader is not None}
    nodes = []
    for node_id in sorted(ids):
        if node_id in peers:
            host, _, peer_port = peers[node_id].rpartition(":")
            nodes.append(Node(node_id, host, int(peer_port)))
        elif node_id == self_id:
            nodes.append(Node(node_id, self_host, port))
        elif node_id in broker_hosts:
            nodes.append(Node(node_id, broker_hosts[node_id], port))
        # a leader whose host nobody knows is left out; its partitions answer "no leader"
    known = {n.node_id for n in nodes}
    leaders = {key: p.leader for key, p in view.partitions.items() if p.leader is not None and p.leader in known}
    return Topology(self_id, tuple(nodes), MappingProxyType(leaders), default_leader=None)


class TopologySource(Protocol):
    def current(self) -> Topology: ...


@dataclass(frozen=True)
class StaticTopology:
    topology: Topology

    def current(self) -> Topology:
        return self.topology


@dataclass(frozen=True)
class ClusterTopology:
    """Cluster mode: built afresh from the latest leadership view and broker hosts each time
    (both callables are cheap reads of state refreshed elsewhere, e.g. the daemon's tracker)."""

    view: Callable[[], LeadershipView]
    broker_hosts: Callable[[], Mapping[int, str]]
    self_host: str
    port: int
    peers: Mapping[int, str]

    def current(self) -> Topology:
        return cluster(self.view(), self.broker_hosts(), self_host=self.self_host, port=self.port, peers=self.peers)
