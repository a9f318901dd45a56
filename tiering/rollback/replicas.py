"""Which brokers hold a replica of each partition a rollback is about, and what must happen
on each of them.

A rollback lowers the log start on the broker it runs on only. Kafka keeps the leader's: a
follower adopts it on every fetch and deletes the segments below it, so a partition with
replicas on other brokers is rolled back for good only when every replica is (README, "A
replicated topic"). The replica sets come from the cluster's Metadata through a port
(`ReplicaSource`): kafka-python's admin client in production, an in-memory one in tests.
Each answer is kept in the journal, so a rollback run while the cluster cannot answer (its
only broker stopped for the rollback) still shows the replica sets seen last, and when.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Protocol

from tiering.errors import TieringError

PartitionKey = tuple[str, int]          # (topic, partition)
JOURNAL_KEY = "rollback_replicas"
PROCEDURE = 'README "A replicated topic"'


@dataclass(frozen=True)
class ReplicaSet:
    leader: int                          # -1: no leader now
    brokers: tuple[int, ...]             # every broker holding a replica, in Kafka's order


class ReplicaSourceError(Exception):
    """The cluster could not be asked (no broker reachable, bad address)."""


class ReplicaSource(Protocol):
    def replicas(self, topics: list[str]) -> dict[PartitionKey, ReplicaSet]:
        """Each partition of `topics` the cluster knows; raises ReplicaSourceError."""


class KafkaReplicaSource:
    """The cluster's Metadata through kafka-python's admin client
    (tiering.retention.admin.replica_brokers)."""

    def __init__(self, bootstrap_servers: str):
        self.bootstrap_servers = bootstrap_servers

    def replicas(self, topics: list[str]) -> dict[PartitionKey, ReplicaSet]:
        from tiering.retention.admin import replica_brokers
        try:
            found = replica_brokers(self.bootstrap_servers, topics)
        except TieringError as exc:
            raise ReplicaSourceError(str(exc)) from None
        return {key: ReplicaSet(leader, brokers) for key, (leader, brokers) in found.items()}


class InMemoryReplicaSource:
    """A cluster's replica sets held in memory; `down` makes every question fail with it."""

    def __init__(self, replicas: Mapping[PartitionKey, ReplicaSet] | None = None, down: str | None = None):
        self.known = dict(replicas or {})
        self.down = down
        self.asked: list[list[str]] = []

    def replicas(self, topics: list[str]) -> dict[PartitionKey, ReplicaSet]:
        self.asked.append(list(topics))
        if self.down is not None:
            raise ReplicaSourceError(self.down)
        return {key: found for key, found in self.known.items() if key[0] in topics}


@dataclass(frozen=True)
class KnownReplicas:
    """The replica sets a rollback goes by: asked now (`seen_at_ms` None) or as last recorded."""

    replicas: Mapping[PartitionKey, ReplicaSet] = field(default_factory=lambda: MappingProxyType({}))
    seen_at_ms: int | None = None
    error: str | None = None             # why the cluster gave no answer now

    def describe_source(self) -> str:
        if self.seen_at_ms is None:
            return "from the cluster's Metadata now"
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.seen_at_ms / 1000))
        return f"as recorded in the journal at {when} ({self.error})"


def known_replicas(source: ReplicaSource | None, journal: Any | None, topics: list[str],
                   now_ms: int) -> KnownReplicas | None:
    """Ask the cluster and record the answer; without an answer, the sets recorded while it
    answered (None when there are none, nor bootstrap servers to ask)."""
    error = "kafka.bootstrap_servers is not set"
    if source is not None:
        try:
            found = source.replicas(topics)
        except ReplicaSourceError as exc:
            error = f"the cluster did not answer: {exc}"
        else:
            if journal is not None:
                _remember(journal, found, now_ms)
            return KnownReplicas(MappingProxyType(found))
    recorded = _recorded(journal)
    wanted = {key: value for key, (value, _) in recorded.items() if key[0] in topics}
    if not wanted:
        return KnownReplicas(error=error) if source is not None else None
    seen = min(at for key, (_, at) in recorded.items() if key in wanted)
    return KnownReplicas(MappingProxyType(wanted), seen, error)


def _remember(journal: Any, found: Mapping[PartitionKey, ReplicaSet], now_ms: int) -> None:
    recorded = _recorded(journal)
    recorded.update({key: (value, now_ms) for key, value in found.items()})
    journal.set_meta(JOURNAL_KEY, json.dumps(
        [[t, p, v.leader, list(v.brokers), at] for (t, p), (v, at) in sorted(recorded.items())]))


def _recorded(journal: Any | None) -> dict[PartitionKey, tuple[ReplicaSet, int]]:
    """What the journal keeps; garbage reads as nothing recorded."""
    text = journal.get_meta(JOURNAL_KEY) if journal is not None else None
    if not text:
        return {}
    try:
        return {(str(t), int(p)): (ReplicaSet(int(leader), tuple(int(b) for b in brokers)), int(at))
                for t, p, leader, brokers, at in json.loads(text)}
    except (ValueError, TypeError):
        return {}


def replicated(partitions: Iterable[PartitionKey], known: KnownReplicas | None) -> list[str]:
    """The partitions (by name) with a replica on another broker."""
    if known is None:
        return []
    return [f"{t}-{p}" for t, p in partitions if len(known.replicas.get((t, p), ReplicaSet(-1, ())).brokers) > 1]


def warning_line(names: list[str]) -> str | None:
    """One line for a rollback of a partition that has more than one replica."""
    if not names:
        return None
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return (f"warning: {shown} {'has' if len(names) == 1 else 'have'} replicas on other brokers: a rollback of "
            f"this broker alone is undone by replication (a follower adopts the leader's log start) unless every "
            f"replica is rolled back with its broker stopped ({PROCEDURE}; the dry run lists what to do on each)")


def procedure_lines(partitions: list[PartitionKey], known: KnownReplicas, this_broker: int | None,
                    command: str) -> list[str]:
    """Per partition, the brokers holding a replica; per broker, what must happen there."""
    lines = [f"replicas ({known.describe_source()}):"]
    per_broker: dict[int, list[str]] = {}
    unlisted = []
    for topic, partition in partitions:
        name = f"{topic}-{partition}"
        found = known.replicas.get((topic, partition))
        if found is None or not found.brokers:
            unlisted.append(name)
            lines.append(f"  {name}: the cluster does not list its replicas")
            continue
        brokers = ", ".join(_broker(b, found.leader, this_broker) for b in found.brokers)
        lines.append(f"  {name}: broker{'s' if len(found.brokers) > 1 else ''} {brokers}")
        for broker in found.brokers:
            per_broker.setdefault(broker, []).append(name)
    if not per_broker:
        return lines
    if len(per_broker) == 1:      # one broker holds them all: this one (the partitions are here)
        lines.append("  every partition has its only replica here: this rollback is all it takes")
        return lines
    lines.append(f"what must happen on each broker ({PROCEDURE}), all of them stopped at once:")
    for broker in sorted(per_broker, key=lambda b: (b != this_broker, b)):
        where = "this broker" if broker == this_broker else f"broker {broker}"
        how = command if broker == this_broker else f"{command} with that broker's own sidecar config"
        lines.append(f"  {where}: stop it; {how} ({', '.join(per_broker[broker])})")
    lines.append("  then start them all; once consumers read from the restored offsets, --delete-remote on each "
                 "broker removes the store's copies")
    return lines


def _broker(broker: int, leader: int, this_broker: int | None) -> str:
    notes = [n for n, on in (("this broker", broker == this_broker), ("leader", broker == leader)) if on]
    return f"{broker} ({', '.join(notes)})" if notes else str(broker)
