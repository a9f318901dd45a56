"""Who leads each partition, from Kafka's own Metadata (cluster mode).

A port (`LeadershipSource`) with two adapters: `KafkaLeadership` asks the cluster through
kafka-python, `StaticLeadership` holds an answer in memory (simulations and tests inject it,
and change it to move leadership). `LeadershipTracker` refreshes periodically and hands out
`LeadershipView`s; a view never guesses: when the last good answer is older than twice the
refresh interval, every role is "unknown" and nothing new is uploaded on its word.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Iterable, Mapping, Protocol

from tiering.retention.admin import AdminError, LazyAdmin, _describe

PartitionKey = tuple[str, int]

LEADER, FOLLOWER, UNKNOWN = "leader", "follower", "unknown"


@dataclass(frozen=True)
class PartitionLeadership:
    leader: int | None          # broker id; None when the partition has no leader
    leader_epoch: int           # -1 when unknown
    replicas: tuple[int, ...]
    isr: tuple[int, ...]


class ClusterUnreachable(Exception):
    """No answer from the cluster (no broker reachable, a bad address, a timeout)."""


class LeadershipSource(Protocol):
    def describe(self, topics: Iterable[str]) -> dict[PartitionKey, PartitionLeadership]:
        """Each partition of `topics` the cluster knows; a topic it does not know is left out.
        Raises ClusterUnreachable."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class LeadershipView:
    """One refresh's answer, or the last good one."""

    broker_id: int | None
    partitions: Mapping[PartitionKey, PartitionLeadership]
    fetched_at_ms: int | None   # None: never reached the cluster
    reachable: bool

    def role(self, topic: str, partition: int) -> str:
        """"leader" | "follower" | "unknown" (never a guess)."""
        known = self.partitions.get((topic, partition))
        if self.broker_id is None or known is None or known.leader is None:
            return UNKNOWN
        return LEADER if known.leader == self.broker_id else FOLLOWER

    def leader_epoch(self, topic: str, partition: int) -> int | None:
        known = self.partitions.get((topic, partition))
        return known.leader_epoch if known is not None and known.leader_epoch >= 0 else None

    def why_not_leader(self, topic: str, partition: int) -> str | None:
        """Why this broker's sidecar does not upload the partition; None when it leads it."""
        known = self.partitions.get((topic, partition))
        if self.broker_id is None:
            return "this broker's id is unknown (meta.properties)"
        if self.fetched_at_ms is None or (not self.partitions and not self.reachable):
            return "the cluster has not answered (kafka.bootstrap_servers unreachable)"
        if known is None:
            return "the partition is not in the cluster's metadata (or the metadata is stale)"
        if known.leader is None:
            return "the partition has no leader"
        if known.leader != self.broker_id:
            return f"broker {known.leader} leads it (leader epoch {known.leader_epoch})"
        return None


def unknown_view(broker_id: int | None) -> LeadershipView:
    return LeadershipView(broker_id, MappingProxyType({}), None, False)


class StaticLeadership:
    """A LeadershipSource answering from memory: `set` moves leadership, `unreachable` makes
    it fail as a lost cluster does."""

    def __init__(self, partitions: Mapping[PartitionKey, PartitionLeadership] | None = None):
        self._lock = threading.Lock()
        self._partitions = dict(partitions or {})
        self.unreachable = False
        self.calls = 0

    def set(self, topic: str, partition: int, leader: int | None, leader_epoch: int,
            replicas: tuple[int, ...] = (), isr: tuple[int, ...] = ()) -> None:
        with self._lock:
            self._partitions[(topic, partition)] = PartitionLeadership(leader, leader_epoch, replicas, isr)

    def describe(self, topics: Iterable[str]) -> dict[PartitionKey, PartitionLeadership]:
        self.calls += 1
        if self.unreachable:
            raise ClusterUnreachable("static leadership set unreachable")
        wanted = set(topics)
        with self._lock:
            return {k: v for k, v in self._partitions.items() if k[0] in wanted}

    def close(self) -> None:
        pass


class KafkaLeadership(LazyAdmin):
    """Metadata through kafka-python's admin client (connects on first use, so a sidecar
    starts while the cluster is down). kafka-python negotiates the highest MetadataRequest
    version both sides speak; from v7 each partition carries its leader epoch."""

    def __init__(self, bootstrap_servers: str, timeout_ms: int = 5_000, bootstrap_timeout_ms: int = 5_000):
        super().__init__(bootstrap_servers, timeout_ms, bootstrap_timeout_ms)

    def describe(self, topics: Iterable[str]) -> dict[PartitionKey, PartitionLeadership]:
        from kafka.errors import KafkaError
        names = sorted(set(topics))
        if not names:
            return {}
        try:
            described = self._admin().describe_topics(names)
        except AdminError as exc:
            raise ClusterUnreachable(str(exc)) from None
        except KafkaError as exc:
            self.close()      # a fresh connection next time (the broker may have moved)
            raise ClusterUnreachable(f"Metadata on {self.bootstrap_servers}: {_describe(exc)}") from None
        return parse_metadata_topics(described or ())


def parse_metadata_topics(topics: Iterable[Mapping]) -> dict[PartitionKey, PartitionLeadership]:
    """MetadataResponse topics (kafka-python's dict form) to leadership. A topic or partition
    with an error other than "no leader right now" is left out: its leadership is unknown."""
    leader_not_available, no_error = 5, 0
    found: dict[PartitionKey, PartitionLeadership] = {}
    for topic in topics:
        name = topic.get("name")
        if not name or topic.get("error_code", 0) != no_error:
            continue
        for p in topic.get("partitions") or ():
            if p.get("error_code", 0) not in (no_error, leader_not_available):
                continue
            leader = p.get("leader_id", -1)
            found[(name, int(p["partition_index"]))] = PartitionLeadership(
                leader if leader is not None and leader >= 0 else None,
                int(p.get("leader_epoch", -1) if p.get("leader_epoch") is not None else -1),
                tuple(p.get("replica_nodes") or ()), tuple(p.get("isr_nodes") or ()))
    return found


@dataclass
class LeadershipTracker:
    """Refreshes leadership every `refresh_ms` (and at once when asked: a new partition, an
    error that says leadership moved), keeping the last good answer. Owned by one thread."""

    source: LeadershipSource
    broker_id: int | None
    refresh_ms: int
    now_ms: Callable[[], int]
    log: object = None
    on_reachable: Callable[[bool], None] = lambda reachable: None
    _partitions: Mapping[PartitionKey, PartitionLeadership] = field(default_factory=lambda: MappingProxyType({}))
    _fetched_at_ms: int | None = None
    _attempted_at_ms: int | None = None
    _reachable: bool = True         # until told otherwise: the first failure is said once
    _topics: frozenset[str] = frozenset()
    _error: str | None = None

    def refresh(self, topics: Iterable[str], force: bool = False) -> LeadershipView:
        """Ask the cluster when the last answer is due (or `force`, or new topics); the view."""
        wanted = frozenset(topics)
        now = self.now_ms()
        due = (force or self._attempted_at_ms is None or now - self._attempted_at_ms >= self.refresh_ms
               or not wanted <= self._topics)
        if due and wanted:
            self._attempted_at_ms = now
            try:
                answer = self.source.describe(wanted)
            except ClusterUnreachable as exc:
                self._error = str(exc)
                self._set_reachable(False, str(exc))
            else:
                self._partitions = MappingProxyType(dict(answer))
                self._fetched_at_ms = now
                self._topics = wanted
                self._error = None
                self._set_reachable(True, None)
        return self.view()

    def view(self) -> LeadershipView:
        now = self.now_ms()
        fresh = self._fetched_at_ms is not None and now - self._fetched_at_ms <= 2 * self.refresh_ms
        if not fresh:
            # The last answer is too old to act on: leadership may have moved since.
            return LeadershipView(self.broker_id, MappingProxyType({}), self._fetched_at_ms, False)
        return LeadershipView(self.broker_id, self._partitions, self._fetched_at_ms, self._reachable)

    def invalidate(self) -> None:
        """Ask the cluster at the next refresh, whenever it is (something says leadership moved)."""
        self._attempted_at_ms = None

    @property
    def error(self) -> str | None:
        """Why the last refresh failed; None after a good one."""
        return self._error

    def _set_reachable(self, reachable: bool, error: str | None) -> None:
        if reachable == self._reachable:
            return
        self._reachable = reachable
        self.on_reachable(reachable)
        if self.log is None:
            return
        if reachable:
            self.log.info("cluster reachable again: leadership known, uploads of led partitions resume")
        else:
            self.log.warning("cluster unreachable: nothing new is uploaded for partitions not known to be led "
                             "by this broker", error=error, broker_id=self.broker_id)

    def close(self) -> None:
        self.source.close()

