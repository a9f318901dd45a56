"""Cluster operations through Kafka's Admin API (kafka-python's client, a maintained
implementation of the protocol): create a replicated topic, read each partition's leader, leader
epoch, replicas and ISR (Metadata), preferred leader election (ElectLeaders), partition
reassignment (AlterPartitionReassignments), and bounded waits for the outcome of each."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping


@dataclass(frozen=True)
class PartitionState:
    leader: int | None          # None: no leader
    leader_epoch: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]

    @property
    def healthy(self) -> bool:
        """A leader and every replica in sync."""
        return self.leader is not None and set(self.isr) == set(self.replicas)


class OpsError(Exception):
    pass


class ClusterAdmin:
    """One admin connection to the cluster (any reachable node of `bootstrap`)."""

    def __init__(self, bootstrap: str, timeout_ms: int = 15_000):
        from kafka import KafkaAdminClient
        quiet = logging.getLogger("kafka")
        quiet.addHandler(logging.NullHandler())
        quiet.propagate = False
        self.timeout_ms = timeout_ms
        self._admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), client_id="tiering-tests",
                                       request_timeout_ms=timeout_ms)

    def __enter__(self) -> "ClusterAdmin":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._admin.close()

    def create_topic(self, topic: str, partitions: int, replication_factor: int = 3,
                     configs: Mapping[str, str] | None = None,
                     assignments: Mapping[int, Iterable[int]] | None = None) -> None:
        spec = {"num_partitions": -1 if assignments else partitions,
                "replication_factor": -1 if assignments else replication_factor,
                "configs": dict(configs or {}),
                "assignments": {p: list(r) for p, r in (assignments or {}).items()}}
        self._admin.create_topics({topic: spec}, timeout_ms=self.timeout_ms)

    def describe(self, topic: str) -> dict[int, PartitionState]:
        """Each partition's state as the cluster's metadata says now ({} for an unknown topic)."""
        out = {}
        for t in self._admin.describe_topics([topic]):
            if t["name"] != topic or t.get("error_code", 0) != 0:
                continue
            for p in t["partitions"]:
                leader = p["leader_id"]
                out[p["partition_index"]] = PartitionState(
                    leader=leader if leader >= 0 else None, leader_epoch=p.get("leader_epoch", -1),
                    replicas=tuple(p["replica_nodes"]), isr=tuple(p["isr_nodes"]))
        return out

    def state(self, topic: str, partition: int) -> PartitionState:
        found = self.describe(topic).get(partition)
        if found is None:
            raise OpsError(f"{topic}-{partition}: not in the cluster's metadata")
        return found

    def elect_preferred(self, topic: str, partitions: Iterable[int]) -> None:
        """Preferred leader election (the first replica becomes leader where it is in the ISR)."""
        self._admin.elect_leaders(0, {topic: list(partitions)}, timeout_ms=self.timeout_ms)

    def reassign(self, topic: str, replicas: Mapping[int, Iterable[int]]) -> None:
        from kafka import TopicPartition
        results = self._admin.alter_partition_reassignments(
            {TopicPartition(topic, p): list(r) for p, r in replicas.items()}, timeout_ms=self.timeout_ms)
        failed = {tp: err for tp, err in results.items() if err is not None}
        if failed:
            raise OpsError(f"reassignment refused: {failed}")

    def reassigning(self) -> bool:
        return bool(self._admin.list_partition_reassignments(timeout_ms=self.timeout_ms))

    def wait(self, topic: str, predicate: Callable[[dict[int, PartitionState]], bool], what: str,
             timeout: float = 60) -> dict[int, PartitionState]:
        """Poll the metadata until `predicate(states)` holds; OpsError with the last states if not."""
        deadline = time.monotonic() + timeout
        states: dict[int, PartitionState] = {}
        while True:
            try:
                states = self.describe(topic)
                if predicate(states):
                    return states
            except Exception as exc:    # a node going away mid-request: ask again
                if time.monotonic() >= deadline:
                    raise OpsError(f"{topic}: {what}: {exc}") from exc
            if time.monotonic() >= deadline:
                raise OpsError(f"{topic}: {what} not reached within {timeout:.0f}s (last: {states})")
            time.sleep(0.25)

    def wait_healthy(self, topic: str, partitions: int, timeout: float = 90) -> dict[int, PartitionState]:
        """Every partition has a leader and a full ISR."""
        return self.wait(topic, lambda s: len(s) == partitions and all(p.healthy for p in s.values()),
                         "every partition led with a full ISR", timeout)

    def wait_leader(self, topic: str, partition: int, predicate: Callable[[PartitionState], bool], what: str,
                    timeout: float = 60) -> PartitionState:
        return self.wait(topic, lambda s: partition in s and predicate(s[partition]), what, timeout)[partition]
