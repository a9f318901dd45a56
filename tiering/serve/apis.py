"""The API handlers: one request object in, the response's fields (nested dicts) out.

Read APIs are answered from the PartitionSource (blocking, so through `blocking`, the
server's executor); every write or admin API this endpoint advertises is refused with the
error code Kafka gives a principal without write rights, so clients fail cleanly and say why,
and the connection stays usable.
"""

from __future__ import annotations

import asyncio
import fnmatch
import uuid
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping

from tiering.serve import codec
from tiering.serve.topology import Topology

# Kafka error codes used here (org.apache.kafka.common.protocol.Errors)
NONE = 0
OFFSET_OUT_OF_RANGE = 1
UNKNOWN_TOPIC_OR_PARTITION = 3
NOT_LEADER_OR_FOLLOWER = 6
COORDINATOR_NOT_AVAILABLE = 15
TOPIC_AUTHORIZATION_FAILED = 29
CLUSTER_AUTHORIZATION_FAILED = 31
UNSUPPORTED_VERSION = 35
INVALID_REQUEST = 42
TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53
UNKNOWN_TOPIC_ID = 100

ZERO_UUID = uuid.UUID(int=0)
AUTHORIZED_OPERATIONS_OMITTED = None   # kafka-python codes this bitfield as a set; None = -2^31, "not asked"
LATEST, EARLIEST, MAX_TIMESTAMP, EARLIEST_LOCAL, LATEST_TIERED = -1, -2, -3, -4, -5
READ_ONLY = "read-only endpoint (tiering serve): write to the Kafka brokers instead"

# What this endpoint speaks, and why each range (kafka-python's schemas are Kafka 4.x's JSON
# definitions, which no longer carry versions Kafka 4 removed):
# - ApiVersions 0-4: v3+ is what every current client sends first (v0 answers unknown versions).
# - Metadata 0-13: the whole range of the schema; topic ids from v10, top-level error from v13.
# - Fetch 4-17: 4 is the oldest Kafka 4 keeps (isolation level, log start offset); 13+ by topic
#   id; 17 is the newest kafka-python and librdkafka send; 18 (KIP-1166) only matters to
#   follower replicas.
# - ListOffsets 1-10: 1 is Kafka 4's baseline; 11 would add "earliest pending upload" (-6).
# - FindCoordinator 0-6: the whole schema range (batched keys from v4).
# - Produce 3-13, InitProducerId 0-5, CreateTopics 2-7, DeleteTopics 1-6, DeleteRecords 0-2:
#   advertised only so a client gets a clean, per-item authorization error instead of an
#   "unsupported" failure or a dropped connection.
# OffsetForLeaderEpoch is not advertised: Metadata says leader epoch -1, so clients skip it.
READ_VERSIONS: Mapping[int, tuple[int, int]] = {18: (0, 4), 3: (0, 13), 1: (4, 17), 2: (1, 10), 10: (0, 6)}
REFUSED_VERSIONS: Mapping[int, tuple[int, int]] = {0: (3, 13), 22: (0, 5), 19: (2, 7), 20: (1, 6), 21: (0, 2)}
# Consumer-group APIs (answered by the GroupRelay, or COORDINATOR_NOT_AVAILABLE without one).
GROUP_VERSIONS: Mapping[int, tuple[int, int]] = {8: (2, 9), 9: (1, 9), 11: (0, 9), 12: (0, 4), 13: (0, 5),
                                                 14: (0, 5), 15: (0, 5)}


def supported_versions(groups: Any | None) -> dict[int, tuple[int, int]]:
    """Every advertised API key -> (min, max), clipped to what kafka-python can code."""
    table = {**READ_VERSIONS, **REFUSED_VERSIONS}
    relayed = groups.versions() if groups is not None else GROUP_VERSIONS
    # only the group APIs come from the relay: FindCoordinator and the rest are answered here
    table.update({k: v for k, v in relayed.items() if k in GROUP_VERSIONS})
    clipped = {}
    for key, (lo, hi) in table.items():
        s_lo, s_hi = codec.schema_versions(key)
        if max(lo, s_lo) <= min(hi, s_hi):
            clipped[key] = (max(lo, s_lo), min(hi, s_hi))
    return clipped


@dataclass(frozen=True)
class Access:
    """What one connection may see: None = every topic; else fnmatch patterns."""

    patterns: tuple[str, ...] | None = None

    def allows(self, topic: str) -> bool:
        return self.patterns is None or any(fnmatch.fnmatchcase(topic, p) for p in self.patterns)


@dataclass
class FetchOutcome:
    """What a Fetch served, for metrics: bytes by tier."""

    bytes_by_tier: dict[str, int]


Blocking = Callable[..., Awaitable[Any]]


class Handlers:
    def __init__(self, source: Any, topology: Callable[[], Topology], blocking: Blocking,
                 versions: Mapping[int, tuple[int, int]], *, max_inflight_bytes: int, poll_s: float = 0.05,
                 cluster_id: str = "tiering-serve", log: Any = None):
        self.source = source
        self.topology = topology
        self.blocking = blocking
        self.versions = versions
        self.max_inflight_bytes = max_inflight_bytes
        self.poll_s = poll_s
        self.cluster_id = cluster_id
        self.log = log

    # -- ApiVersions ----------------------------------------------------------------------

    def api_versions(self, version: int, error: int = NONE) -> dict:
        return {"error_code": error, "throttle_time_ms": 0,
                "api_keys": [{"api_key": k, "min_version": lo, "max_version": hi}
                             for k, (lo, hi) in sorted(self.versions.items())]}

    # -- Metadata -------------------------------------------------------------------------

    async def metadata(self, req: Any, version: int, access: Access) -> dict:
        topics = await self.blocking(self.source.topics)
        topo = self.topology()
        visible = {name: info for name, info in topics.items() if access.allows(name)}
        by_id = {info.topic_id: info for info in visible.values() if info.topic_id is not None}
        if req.topics is None or (version == 0 and not req.topics):
            wanted = [(name, None) for name in sorted(visible)]
        else:
            wanted = [(t.name, getattr(t, "topic_id", None)) for t in req.topics]
        answer = []
        for name, topic_id in wanted:
            info = visible.get(name) if name is not None else by_id.get(topic_id)
            if info is None:
                error = UNKNOWN_TOPIC_OR_PARTITION if name is not None else UNKNOWN_TOPIC_ID
                answer.append({"error_code": error, "name": name, "topic_id": topic_id or ZERO_UUID,
                               "is_internal": False, "partitions": [],
                               "authorized_operations": AUTHORIZED_OPERATIONS_OMITTED})
                continue
            partitions = []
            for p in info.partitions:
                leader = topo.leader(info.name, p)
                leader = topo.self_id if leader is None else leader
                partitions.append({"error_code": NONE, "partition_index": p, "leader_id": leader,
                                   "leader_epoch": -1, "replica_nodes": [leader], "isr_nodes": [leader],
                                   "offline_replicas": []})
            answer.append({"error_code": NONE, "name": info.name, "topic_id": info.topic_id or ZERO_UUID,
                           "is_internal": False, "partitions": partitions,
                           "authorized_operations": AUTHORIZED_OPERATIONS_OMITTED})
        return {"throttle_time_ms": 0, "error_code": NONE, "cluster_id": self.cluster_id,
                "controller_id": topo.self_id,
                "brokers": [{"node_id": n.node_id, "host": n.host, "port": n.port, "rack": None}
                            for n in topo.nodes],
                "topics": answer, "authorized_operations": AUTHORIZED_OPERATIONS_OMITTED}

    # -- ListOffsets ----------------------------------------------------------------------

    async def list_offsets(self, req: Any, version: int, access: Access) -> dict:
        topo = self.topology()
        topics = []
        read_committed = version >= 2 and req.isolation_level == 1
        for t in req.topics:
            partitions = []
            for p in t.partitions:
                error, offset, ts = await self._offset(t.name, p.partition_index, p.timestamp, topo, access,
                                                       read_committed)
                partitions.append({"partition_index": p.partition_index, "error_code": error,
                                   "timestamp": ts, "offset": offset, "leader_epoch": -1})
            topics.append({"name": t.name, "partitions": partitions})
        return {"throttle_time_ms": 0, "topics": topics}

    async def _offset(self, topic: str, partition: int, timestamp: int, topo: Topology,
                      access: Access, read_committed: bool) -> tuple[int, int, int]:
        if not access.allows(topic):
            return UNKNOWN_TOPIC_OR_PARTITION, -1, -1
        if not topo.leads(topic, partition):
            return NOT_LEADER_OR_FOLLOWER, -1, -1
        state = await self.blocking(self.source.state, topic, partition)
        if state is None:
            return UNKNOWN_TOPIC_OR_PARTITION, -1, -1
        if timestamp == LATEST:
            # Kafka: the latest offset a read_committed consumer may see is the last stable one
            return NONE, state.last_stable_offset if read_committed else state.high_watermark, -1
        if timestamp in (EARLIEST, EARLIEST_LOCAL):
            # "local" is both tiers here: this endpoint's log is the whole log
            return NONE, state.log_start_offset, -1
        if timestamp < 0:
            return UNSUPPORTED_VERSION, -1, -1   # max timestamp, last tiered: not offered here
        found = await self.blocking(self.source.offset_for_timestamp, topic, partition, timestamp)
        if found is None:
            return NONE, -1, -1      # Kafka: no record at or after the timestamp
        return NONE, found[0], found[1]

    # -- Fetch ----------------------------------------------------------------------------

    async def fetch(self, req: Any, version: int, access: Access, outcome: FetchOutcome) -> dict:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0, req.max_wait_ms) / 1000
        read_committed = req.isolation_level == 1
        topo = self.topology()
        topics = await self.blocking(self.source.topics) if version >= 13 else None
        by_id = {i.topic_id: i.name for i in (topics or {}).values() if i.topic_id is not None}
        wanted = []   # (response topic index, topic name or None, partition request)
        for t in req.topics:
            name = by_id.get(t.topic_id) if version >= 13 else t.topic
            for p in t.partitions:
                wanted.append((t, name, p))
        while True:
            responses, served = await self._fetch_once(wanted, version, read_committed, topo, access,
                                                       min(req.max_bytes, self.max_inflight_bytes), outcome)
            failed = any(p["error_code"] for t in responses for p in t["partitions"])
            # an error is answered at once, as Kafka does: the client has something to act on
            if served >= req.min_bytes or failed or loop.time() >= deadline or not wanted:
                break
            if not await self._wait_for_data(wanted, read_committed, deadline):
                break
        return {"throttle_time_ms": 0, "error_code": NONE, "session_id": 0, "responses": responses}

    async def _fetch_once(self, wanted: list, version: int, read_committed: bool, topo: Topology,
                          access: Access, budget: int, outcome: FetchOutcome) -> tuple[list, int]:
        by_topic: dict[int, dict] = {}
        order: list[dict] = []
        served = 0
        bytes_by_tier: dict[str, int] = {}
        for t, name, p in wanted:
            entry = by_topic.get(id(t))
            if entry is None:
                entry = {"topic": t.topic, "topic_id": t.topic_id, "partitions": []} if version >= 13 else \
                    {"topic": t.topic, "partitions": []}
                by_topic[id(t)] = entry
                order.append(entry)
            entry["partitions"].append(await self._fetch_partition(
                name, p, version, read_committed, topo, access, max(0, budget - served), served == 0,
                bytes_by_tier))
            served += len(entry["partitions"][-1]["records"] or b"")
        outcome.bytes_by_tier = bytes_by_tier
        return order, served

    async def _fetch_partition(self, name: str | None, p: Any, version: int, read_committed: bool,
                               topo: Topology, access: Access, budget: int, first: bool,
                               bytes_by_tier: dict[str, int]) -> dict:
        answer = {"partition_index": p.partition, "error_code": NONE, "high_watermark": -1,
                  "last_stable_offset": -1, "log_start_offset": -1, "aborted_transactions": None,
                  "preferred_read_replica": -1, "records": b""}
        if name is None or not access.allows(name):
            answer["error_code"] = UNKNOWN_TOPIC_ID if version >= 13 else UNKNOWN_TOPIC_OR_PARTITION
            return answer
        if not topo.leads(name, p.partition):
            answer["error_code"] = NOT_LEADER_OR_FOLLOWER
            return answer
        limit = min(p.partition_max_bytes, budget)
        if limit <= 0 and not first:
            state = await self.blocking(self.source.state, name, p.partition)
            if state is None:
                answer["error_code"] = UNKNOWN_TOPIC_OR_PARTITION
            else:
                _state_into(answer, state)
            return answer
        # KIP-74: the first partition gets at least one whole batch, however large
        result = await self.blocking(self.source.fetch, name, p.partition, p.fetch_offset, max(limit, 1),
                                     read_committed)
        answer["error_code"] = result.error
        if result.error and getattr(result, "detail", "") and self.log is not None:
            # a storage error: the client only sees its code, the operator needs what failed
            self.log.warning("kafka-protocol fetch failed", topic=name, partition=p.partition,
                             offset=p.fetch_offset, error_code=result.error, detail=result.detail)
        if result.state is not None:
            _state_into(answer, result.state)
        if not first and len(result.records) > limit:
            # the source always returns a whole batch; only the first partition with data may
            # exceed the budget (KIP-74), later ones answer empty and are fetched again next time
            return answer
        answer["records"] = result.records or b""
        if read_committed:
            answer["aborted_transactions"] = [{"producer_id": a.producer_id, "first_offset": a.first_offset}
                                              for a in result.aborted]
        if result.records:
            bytes_by_tier[result.tier] = bytes_by_tier.get(result.tier, 0) + len(result.records)
        return answer

    async def _wait_for_data(self, wanted: list, read_committed: bool, deadline: float) -> bool:
        """Long-poll at the log end: re-ask each partition's state every `poll_s` until one has
        something past its fetch offset (True) or the deadline passes (False)."""
        loop = asyncio.get_running_loop()
        while loop.time() < deadline:
            await asyncio.sleep(min(self.poll_s, max(0.0, deadline - loop.time())))
            for _, name, p in wanted:
                if name is None:
                    continue
                state = await self.blocking(self.source.state, name, p.partition)
                if state is None:
                    return True          # gone: answer now with its error
                end = state.last_stable_offset if read_committed else state.high_watermark
                if end > p.fetch_offset or p.fetch_offset < state.log_start_offset:
                    return True
        return False

    # -- FindCoordinator ------------------------------------------------------------------

    def find_coordinator(self, req: Any, version: int, available: bool) -> dict:
        topo = self.topology()
        me = next((n for n in topo.nodes if n.node_id == topo.self_id), topo.nodes[0])
        error = NONE if available else COORDINATOR_NOT_AVAILABLE
        node = {"node_id": me.node_id if available else -1, "host": me.host if available else "",
                "port": me.port if available else -1}
        message = None if available else "no consumer-group coordinator behind this endpoint (single mode)"
        if version >= 4:
            return {"throttle_time_ms": 0, "coordinators": [
                {"key": key, **node, "error_code": error, "error_message": message} for key in req.coordinator_keys]}
        return {"throttle_time_ms": 0, "error_code": error, "error_message": message, **node}


def _state_into(answer: dict, state: Any) -> None:
    answer["high_watermark"] = state.high_watermark
    answer["last_stable_offset"] = state.last_stable_offset
    answer["log_start_offset"] = state.log_start_offset


# -- refusals and group fall-backs: a response in the request's own version ------------------

def refused(api_key: int, req: Any, version: int) -> dict:
    """The answer to a write/admin request: per-item authorization errors, as Kafka answers a
    principal without write rights (clients treat them as final and say so)."""
    if api_key == 0:   # Produce
        return {"throttle_time_ms": 0, "responses": [
            {"name": t.name, "topic_id": getattr(t, "topic_id", None) or ZERO_UUID, "partition_responses": [
                {"index": p.index, "error_code": TOPIC_AUTHORIZATION_FAILED, "base_offset": -1,
                 "log_append_time_ms": -1, "log_start_offset": -1, "record_errors": [],
                 "error_message": READ_ONLY} for p in t.partition_data]} for t in req.topic_data]}
    if api_key == 22:  # InitProducerId
        error = TRANSACTIONAL_ID_AUTHORIZATION_FAILED if req.transactional_id else CLUSTER_AUTHORIZATION_FAILED
        return {"throttle_time_ms": 0, "error_code": error, "producer_id": -1, "producer_epoch": -1}
    if api_key == 19:  # CreateTopics
        return {"throttle_time_ms": 0, "topics": [
            {"name": t.name, "topic_id": ZERO_UUID, "error_code": TOPIC_AUTHORIZATION_FAILED, "error_message": READ_ONLY,
             "num_partitions": -1, "replication_factor": -1, "configs": None} for t in req.topics]}
    if api_key == 20:  # DeleteTopics
        names = list(req.topic_names or []) if version < 6 else [t.name for t in req.topics]
        return {"throttle_time_ms": 0, "responses": [
            {"name": n, "topic_id": ZERO_UUID, "error_code": TOPIC_AUTHORIZATION_FAILED, "error_message": READ_ONLY}
            for n in names]}
    if api_key == 21:  # DeleteRecords
        return {"throttle_time_ms": 0, "topics": [
            {"name": t.name, "partitions": [
                {"partition_index": p.partition_index, "low_watermark": -1, "error_code": TOPIC_AUTHORIZATION_FAILED}
                for p in t.partitions]} for t in req.topics]}
    raise KeyError(api_key)


def no_coordinator(api_key: int, req: Any, version: int) -> dict:
    """COORDINATOR_NOT_AVAILABLE for a consumer-group request (no relay, or none reachable):
    clients back off and ask FindCoordinator again; assign() consumers never need it."""
    e = COORDINATOR_NOT_AVAILABLE
    if api_key in (11,):   # JoinGroup
        return {"throttle_time_ms": 0, "error_code": e, "generation_id": -1, "protocol_type": None,
                "protocol_name": None, "leader": "", "skip_assignment": False, "member_id": "", "members": []}
    if api_key in (12, 14):  # Heartbeat, SyncGroup
        return {"throttle_time_ms": 0, "error_code": e, "protocol_type": None, "protocol_name": None,
                "assignment": b""} if api_key == 14 else {"throttle_time_ms": 0, "error_code": e}
    if api_key == 13:    # LeaveGroup
        return {"throttle_time_ms": 0, "error_code": e, "members": []}
    if api_key == 8:     # OffsetCommit
        return {"throttle_time_ms": 0, "topics": [
            {"name": t.name, "partitions": [{"partition_index": p.partition_index, "error_code": e}
                                            for p in t.partitions]} for t in req.topics]}
    if api_key == 9:     # OffsetFetch
        if version >= 8:
            return {"throttle_time_ms": 0, "groups": [
                {"group_id": g.group_id, "topics": [], "error_code": e} for g in req.groups]}
        # before v2 there is no top-level error: each asked partition carries it
        return {"throttle_time_ms": 0, "error_code": e, "topics": [
            {"name": t.name, "partitions": [{"partition_index": i, "committed_offset": -1, "metadata": "",
                                             "error_code": e} for i in t.partition_indexes]}
            for t in (req.topics or [])]}
    if api_key == 15:    # DescribeGroups
        return {"throttle_time_ms": 0, "groups": [
            {"error_code": e, "group_id": g, "group_state": "", "protocol_type": "", "protocol_data": "",
             "members": []} for g in req.groups]}
    raise KeyError(api_key)
