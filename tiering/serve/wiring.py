"""Assembles the endpoint from a Config: source, topology (single or cluster), server.

Used by `tiering serve` and, when `[serve] listen` is set, by `tiering run`'s daemon.
"""

from __future__ import annotations

import socket
import threading
from types import MappingProxyType
from typing import Any, Mapping

from prometheus_client import CollectorRegistry, Gauge

from tiering.clock import SystemClock
from tiering.cluster.identity import broker_identity
from tiering.cluster.leadership import (ClusterUnreachable, KafkaLeadership, LeadershipTracker, LeadershipView,
                                        unknown_view)
from tiering.config import Config
from tiering.serve.server import ServeEndpoint, ThreadedEndpoint
from tiering.serve.topology import ClusterTopology, StaticTopology, TopologySource, single


def open_source(config: Config, registry: CollectorRegistry, clock: Any) -> Any:
    """The PartitionSource (tiering/serve/source.py), with its own store client, pool and
    prefetch threads: the daemon's store client is sized for uploads, and a backfill must not
    queue behind them. Its pool's hit ratio is a metric."""
    from tiering.serve.source import PartitionSource
    source = PartitionSource.from_config(config, None, clock=clock)
    Gauge("tiering_serve_pool_hit_ratio", "Share of the endpoint's chunk reads found in its buffer pool "
          "(loaded or being loaded: prefetch ahead of the consumer)",
          registry=registry).set_function(lambda: source.reader.pool.stats().hit_ratio)
    return source


def group_relay(config: Config, log: Any) -> Any | None:
    """Cluster mode: consumer-group requests relayed to Kafka's coordinators (groups.py)."""
    from tiering.serve.groups import GroupRelay
    servers = [s.strip().rpartition(":") for s in (config.kafka.bootstrap_servers or "").split(",") if s.strip()]
    return GroupRelay([(host, int(port)) for host, _, port in servers], log=log)


def advertised_host(config: Config) -> str:
    host, _ = config.serve.host_port
    if config.serve.advertised_host:
        return config.serve.advertised_host
    return socket.getfqdn() if host in ("", "0.0.0.0", "::") else host


def broker_hosts(described: Mapping[str, Any]) -> dict[int, str]:
    """Broker id -> host from kafka-python's describe_cluster() (DescribeCluster names the id
    `broker_id`; its Metadata fallback `node_id` before renaming it)."""
    hosts = {}
    for broker in described.get("brokers") or ():
        broker_id = broker.get("broker_id", broker.get("node_id"))
        if broker_id is not None and broker.get("host") and not broker.get("is_fenced", False):
            hosts[int(broker_id)] = broker["host"]
    return hosts


class ClusterWatch:
    """Keeps the cluster's leadership and broker hosts fresh on a thread of its own (the event
    loop must never wait for Kafka), for ClusterTopology to read."""

    def __init__(self, config: Config, source: Any, log: Any):
        self.config = config
        self.source = source
        self.log = log
        identity = broker_identity(config.kafka.log_dirs)
        clock = SystemClock()
        self.leadership = KafkaLeadership(config.kafka.bootstrap_servers or "")
        self.tracker = LeadershipTracker(self.leadership, identity.broker_id, config.cluster.metadata_refresh_ms,
                                         clock.now_ms, log)
        self._view: LeadershipView = unknown_view(identity.broker_id)
        self._hosts: Mapping[int, str] = MappingProxyType({})
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="serve-cluster", daemon=True)

    def view(self) -> LeadershipView:
        return self._view

    def hosts(self) -> Mapping[int, str]:
        return self._hosts

    def start(self) -> None:
        self._refresh()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.config.cluster.metadata_refresh_ms / 1000):
            self._refresh()

    def _refresh(self) -> None:
        try:
            self._view = self.tracker.refresh(self.source.topics(), force=True)
            self._hosts = MappingProxyType(broker_hosts(self.leadership._admin().describe_cluster()))
        except (ClusterUnreachable, Exception) as exc:  # noqa: BLE001 - keep the last answer; say why
            self.log.warning("serve: cluster metadata refresh failed; the last answer stays", error=str(exc))

    def close(self) -> None:
        self._stop.set()
        self.tracker.close()


def open_endpoint(config: Config, source: Any, registry: CollectorRegistry, log: Any,
                  groups: Any | None = None) -> tuple[ThreadedEndpoint, ClusterWatch | None]:
    """A ThreadedEndpoint, not started, and the cluster watch behind its topology (None in
    single mode); the caller starts both and stops them."""
    host = advertised_host(config)
    watch = None
    topology: TopologySource | None
    if config.cluster_mode:
        watch = ClusterWatch(config, source, log)
        topology = ClusterTopology(watch.view, watch.hosts, host, config.serve.host_port[1], config.serve.peers)
    else:
        topology = StaticTopology(single(host, config.serve.host_port[1])) if config.serve.host_port[1] else None
    if groups is None and config.cluster_mode:
        groups = group_relay(config, log)
    endpoint = ServeEndpoint(config.serve, source, topology, groups, registry, SystemClock(), log=log)
    return ThreadedEndpoint(endpoint), watch


class RunningEndpoint:
    """What `tiering run` holds: the endpoint, its source and cluster watch, closed together."""

    def __init__(self, endpoint: ThreadedEndpoint, source: Any, watch: ClusterWatch | None):
        self.endpoint, self.source, self.watch = endpoint, source, watch

    def close(self) -> None:
        if self.watch is not None:
            self.watch.close()
        self.endpoint.stop()
        self.source.close()


def start_in_daemon(config: Config, registry: CollectorRegistry, clock: Any, log: Any) -> RunningEndpoint:
    """Start the endpoint inside `tiering run` (a bind failure raises OSError at start, as the
    metrics listener's does)."""
    source = open_source(config, registry, clock)
    endpoint, watch = open_endpoint(config, source, registry, log)
    try:
        endpoint.start()
    except BaseException:
        source.close()
        raise
    if watch is not None:
        watch.start()
    return RunningEndpoint(endpoint, source, watch)
