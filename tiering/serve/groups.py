"""Consumer groups through the endpoint: relayed to the real cluster's group coordinator.

The endpoint serves records; it keeps no group state of its own. FindCoordinator is answered
with the sidecar itself (so a client's coordinator is a node its metadata already names), and
every group request that follows (JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit,
OffsetFetch, DescribeGroups) is forwarded byte for byte to Kafka's coordinator for that group and
its answer relayed unchanged. Membership, generations, session timeouts and committed offsets
all stay Kafka's (`__consumer_offsets`), so a consumer can move between the broker and the
endpoint without losing its place, and nothing here can drift from Kafka's rules.

The endpoint handles one request per connection at a time, in order (as Kafka's broker does),
so each client connection gets its own upstream connection per coordinator and a relayed
answer keeps the client's correlation id without any rewriting.
"""
from __future__ import annotations

import asyncio
import itertools
import struct
from dataclasses import dataclass
from typing import Callable

from kafka.protocol.admin.groups import DescribeGroupsRequest
from kafka.protocol.consumer.group import (HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest,
                                           OffsetCommitRequest, OffsetFetchRequest, SyncGroupRequest)
from kafka.protocol.metadata.api_versions import ApiVersionsRequest, ApiVersionsResponse
from kafka.protocol.metadata.find_coordinator import FindCoordinatorRequest, FindCoordinatorResponse

import structlog

FIND_COORDINATOR = 10
# Request classes of the APIs relayed, by API key: decoded only to learn the group's id.
_RELAYED = {
    OffsetCommitRequest.API_KEY: OffsetCommitRequest,        # 8
    OffsetFetchRequest.API_KEY: OffsetFetchRequest,          # 9
    JoinGroupRequest.API_KEY: JoinGroupRequest,              # 11
    HeartbeatRequest.API_KEY: HeartbeatRequest,              # 12
    LeaveGroupRequest.API_KEY: LeaveGroupRequest,            # 13
    SyncGroupRequest.API_KEY: SyncGroupRequest,              # 14
    DescribeGroupsRequest.API_KEY: DescribeGroupsRequest,    # 15
}
GROUP_API_KEYS = frozenset(_RELAYED)

# Error codes that mean "ask again where the coordinator is" (Kafka's Errors).
NOT_COORDINATOR_ERRORS = frozenset({14, 15, 16})   # LOAD_IN_PROGRESS, NOT_AVAILABLE, NOT_COORDINATOR
_SIZE = struct.Struct(">i")
_HEADER = struct.Struct(">hhi")                     # api key, api version, correlation id
# The largest answer accepted from Kafka: a DescribeGroups of a big group stays far below it.
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
# JoinGroup is answered only when the rebalance completes: up to the group's rebalance timeout.
JOIN_MARGIN_S = 30.0


class RelayError(Exception):
    """A group request this relay cannot route (undecodable, or no group named)."""


@dataclass(frozen=True)
class GroupRequest:
    api_key: int
    api_version: int
    correlation_id: int
    group_id: str
    timeout_s: float          # how long its answer may take


@dataclass(frozen=True)
class Coordinator:
    node_id: int
    host: str
    port: int


def parse_group_request(frame: bytes, default_timeout_s: float) -> GroupRequest:
    """Which group a relayed request is for, and how long its answer may take (pure).

    Raises RelayError when the frame is not a decodable group request: the caller closes the
    connection, as Kafka does with a request it cannot read."""
    if len(frame) < _HEADER.size:
        raise RelayError(f"a request of {len(frame)} bytes is shorter than a request header")
    api_key, version, correlation_id = _HEADER.unpack_from(frame)
    cls = _RELAYED.get(api_key)
    if cls is None:
        raise RelayError(f"API key {api_key} is not a group API")
    if not 0 <= version <= cls.max_version:
        raise RelayError(f"{cls.name} version {version} is outside 0..{cls.max_version}")
    try:
        request = cls.decode(bytes(frame), version=version, header=True)
    except Exception as e:  # noqa: BLE001 - a hostile frame may fail anywhere in the decoder
        raise RelayError(f"{cls.name} v{version} could not be decoded: {type(e).__name__}") from None
    group = _group_of(api_key, request)
    if not group:
        raise RelayError(f"{cls.name} v{version} names no group")
    timeout = default_timeout_s
    if api_key == JoinGroupRequest.API_KEY:
        rebalance_ms = getattr(request, "rebalance_timeout_ms", -1)
        session_ms = getattr(request, "session_timeout_ms", 0) or 0
        timeout = max(rebalance_ms if rebalance_ms > 0 else session_ms, 0) / 1000 + JOIN_MARGIN_S
    return GroupRequest(api_key, version, correlation_id, group, timeout)


def _group_of(api_key: int, request) -> str | None:
    if api_key == DescribeGroupsRequest.API_KEY:
        groups = request.groups or []
        return groups[0] if groups else None
    if api_key == OffsetFetchRequest.API_KEY and request.API_VERSION >= 8:
        # v8+ may name several groups; Kafka's consumer names one. Routed by the first: a
        # group with another coordinator gets NOT_COORDINATOR from Kafka and the client asks again.
        groups = request.groups or []
        return groups[0].group_id if groups else None
    return request.group_id


def response_error(api_key: int, response: bytes, version: int) -> int | None:
    """The top-level error code of a relayed answer, where the API has one (pure)."""
    cls = _RESPONSES.get(api_key)
    if cls is None:
        return None
    try:
        decoded = cls.decode(bytes(response), version=version, header=True)
    except Exception:  # noqa: BLE001 - the client sees Kafka's answer whatever we make of it
        return None
    if api_key == DescribeGroupsRequest.API_KEY:
        groups = decoded.groups or []
        return groups[0].error_code if groups else None
    return getattr(decoded, "error_code", None)


def _response_classes() -> dict[int, type]:
    from kafka.protocol.admin.groups import DescribeGroupsResponse
    from kafka.protocol.consumer.group import (HeartbeatResponse, JoinGroupResponse, LeaveGroupResponse,
                                               OffsetCommitResponse, OffsetFetchResponse, SyncGroupResponse)
    return {cls.API_KEY: cls for cls in (OffsetCommitResponse, OffsetFetchResponse, JoinGroupResponse,
                                         HeartbeatResponse, LeaveGroupResponse, SyncGroupResponse,
                                         DescribeGroupsResponse)}


_RESPONSES = _response_classes()


def error_response(frame: bytes, error_code: int) -> bytes | None:
    """An answer to a group request carrying only `error_code`, in the request's own version
    (for when no coordinator can be reached); None when the request cannot be read."""
    try:
        request = parse_group_request(frame, 0.0)
    except RelayError:
        return None
    cls = _RESPONSES[request.api_key]
    fields = _error_fields(request.api_key, request.api_version, frame, error_code)
    response = cls(version=request.api_version, **fields)
    response.with_header(correlation_id=request.correlation_id)
    return bytes(response.encode(header=True))


def _error_fields(api_key: int, version: int, frame: bytes, error_code: int) -> dict:
    if api_key == JoinGroupRequest.API_KEY:
        return dict(throttle_time_ms=0, error_code=error_code, generation_id=-1, protocol_type=None,
                    protocol_name=None, leader="", skip_assignment=False, member_id="", members=[])
    if api_key == SyncGroupRequest.API_KEY:
        return dict(throttle_time_ms=0, error_code=error_code, protocol_type=None, protocol_name=None,
                    assignment=b"")
    if api_key in (HeartbeatRequest.API_KEY, LeaveGroupRequest.API_KEY):
        extra = {"members": []} if api_key == LeaveGroupRequest.API_KEY else {}
        return dict(throttle_time_ms=0, error_code=error_code, **extra)
    request = _RELAYED[api_key].decode(bytes(frame), version=version, header=True)
    response = _RESPONSES[api_key]
    if api_key == DescribeGroupsRequest.API_KEY:
        return dict(throttle_time_ms=0, groups=[
            response.DescribedGroup(error_code=error_code, error_message=None, group_id=g, group_state="",
                                    protocol_type="", protocol_data="", members=[],
                                    authorized_operations=None)  # None: INT32_MIN, "not asked for"
            for g in request.groups or []])
    if api_key == OffsetCommitRequest.API_KEY:
        topic, partition = response.OffsetCommitResponseTopic, response.OffsetCommitResponseTopic.OffsetCommitResponsePartition
        return dict(throttle_time_ms=0, topics=[
            topic(name=t.name, topic_id=t.topic_id,
                  partitions=[partition(partition_index=p.partition_index, error_code=error_code) for p in t.partitions])
            for t in request.topics or []])
    # OffsetFetch. Every partition asked about carries the error too: before v2 there is no
    # top-level error, and an answer without the partition would read as "nothing committed",
    # which would send the consumer to auto.offset.reset.
    topic = response.OffsetFetchResponseTopic
    partition = topic.OffsetFetchResponsePartition
    if version >= 8:
        group, topics = response.OffsetFetchResponseGroup, response.OffsetFetchResponseGroup.OffsetFetchResponseTopics
        g_partition = topics.OffsetFetchResponsePartitions
        return dict(throttle_time_ms=0, topics=[], error_code=0, groups=[
            group(group_id=g.group_id, error_code=error_code, topics=[
                topics(name=t.name, topic_id=t.topic_id, partitions=[
                    g_partition(partition_index=i, committed_offset=-1, committed_leader_epoch=-1, metadata=None,
                                error_code=error_code) for i in t.partition_indexes])
                for t in g.topics or []])
            for g in request.groups or []])
    return dict(throttle_time_ms=0, error_code=error_code, groups=[], topics=[
        topic(name=t.name, partitions=[partition(partition_index=i, committed_offset=-1, committed_leader_epoch=-1,
                                                 metadata=None, error_code=error_code) for i in t.partition_indexes])
        for t in request.topics or []])


class _Upstream:
    """One connection to a Kafka broker, used by one client connection at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer

    async def exchange(self, frame: bytes, timeout_s: float) -> bytes:
        self.writer.write(_SIZE.pack(len(frame)) + bytes(frame))
        async with asyncio.timeout(timeout_s):
            await self.writer.drain()
            size = _SIZE.unpack(await self.reader.readexactly(_SIZE.size))[0]
            if not 0 <= size <= MAX_RESPONSE_BYTES:
                raise ConnectionError(f"Kafka answered with a frame of {size} bytes")
            return await self.reader.readexactly(size)

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass


Connector = Callable[[str, int], "asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]]"]


async def _open(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(host, port)


class GroupRelay:
    """Forwards group requests to Kafka's coordinators (see the module's docstring).

    `bootstrap` is the cluster's `kafka.bootstrap_servers` as (host, port) pairs. One instance
    lives on the endpoint's event loop; `conn_id` names a client connection."""

    def __init__(self, bootstrap: list[tuple[str, int]], *, connect_timeout_s: float = 5.0,
                 request_timeout_s: float = 60.0, coordinator_ttl_s: float = 60.0,
                 connect: Connector = _open, clock: Callable[[], float] | None = None, log=None):
        if not bootstrap:
            raise ValueError("GroupRelay needs at least one bootstrap server")
        self.bootstrap = list(bootstrap)
        self.connect_timeout_s = connect_timeout_s
        self.request_timeout_s = request_timeout_s
        self.coordinator_ttl_s = coordinator_ttl_s
        self._connect = connect
        self._clock = clock
        self.log = log if log is not None else structlog.get_logger("tiering")
        self._coordinators: dict[str, tuple[Coordinator, float]] = {}
        self._upstreams: dict[int, dict[tuple[str, int], _Upstream]] = {}
        self._versions: dict[int, tuple[int, int]] | None = None
        self._correlation = itertools.count(1)
        self._next_bootstrap = itertools.cycle(range(len(self.bootstrap)))

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    # -- what to advertise --------------------------------------------------------------------

    async def start(self) -> None:
        """Learns the group APIs' versions from the cluster (best effort: `versions()` falls
        back to what the decoder reads until a broker answers)."""
        try:
            await self._learn_versions()
        except (OSError, ConnectionError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
            self.log.warning("group APIs: the cluster did not answer ApiVersions; advertising the relay's own versions",
                             reason=str(e) or type(e).__name__)

    def versions(self) -> dict[int, tuple[int, int]]:
        """API key -> (min, max) to advertise: what Kafka's brokers support, within what this
        relay decodes. Before a broker has answered: the decoder's whole range."""
        ours = {key: (0, cls.max_version) for key, cls in _RELAYED.items()}
        ours[FIND_COORDINATOR] = (0, FindCoordinatorRequest.max_version)
        if self._versions is None:
            return ours
        both = {}
        for key, (low, high) in ours.items():
            if key in self._versions:
                k_low, k_high = self._versions[key]
                if max(low, k_low) <= min(high, k_high):
                    both[key] = (max(low, k_low), min(high, k_high))
        return both

    async def _learn_versions(self) -> None:
        host, port = self._bootstrap()
        upstream = await self._open_upstream(host, port)
        try:
            request = ApiVersionsRequest(version=2)
            request.with_header(correlation_id=next(self._correlation), client_id="tiering-serve")
            answer = await upstream.exchange(bytes(request.encode(header=True)), self.connect_timeout_s)
            response = ApiVersionsResponse.decode(answer, version=2, header=True)
            if response.error_code:
                raise ConnectionError(f"ApiVersions answered error {response.error_code}")
            self._versions = {a.api_key: (a.min_version, a.max_version) for a in response.api_keys}
        finally:
            await upstream.close()

    # -- relaying ------------------------------------------------------------------------------

    async def forward(self, conn_id: int, frame: bytes) -> bytes | None:
        """Kafka's answer to a group request (`frame` without its size prefix), or None when no
        coordinator could be reached (the caller answers COORDINATOR_NOT_AVAILABLE).
        Raises RelayError for a frame that is not a readable group request."""
        request = parse_group_request(frame, self.request_timeout_s)
        coordinator = await self._coordinator(request.group_id)
        if coordinator is None:
            return None
        address = (coordinator.host, coordinator.port)
        try:
            reused = address in self._upstreams.get(conn_id, {})
            upstream = await self._upstream(conn_id, address)
            try:
                answer = await upstream.exchange(frame, request.timeout_s)
            except (ConnectionResetError, BrokenPipeError, asyncio.IncompleteReadError):
                if not reused:
                    raise
                # Kafka closes a connection idle for connections.max.idle.ms (10 minutes): a
                # long-lived client connection finds its upstream gone. One fresh try.
                await self._drop(conn_id, address)
                upstream = await self._upstream(conn_id, address)
                answer = await upstream.exchange(frame, request.timeout_s)
        except (OSError, ConnectionError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
            self.log.warning("group request not relayed: the coordinator did not answer; the client is told to look again",
                             group=request.group_id, coordinator=coordinator.node_id, reason=str(e) or type(e).__name__)
            await self._drop(conn_id, address)
            self._coordinators.pop(request.group_id, None)
            return None
        if response_error(request.api_key, answer, request.api_version) in NOT_COORDINATOR_ERRORS:
            self._coordinators.pop(request.group_id, None)
        return answer

    async def close_connection(self, conn_id: int) -> None:
        for upstream in (self._upstreams.pop(conn_id, None) or {}).values():
            await upstream.close()

    async def close(self) -> None:
        for conn_id in list(self._upstreams):
            await self.close_connection(conn_id)

    # -- where the coordinators are ---------------------------------------------------------------

    def _bootstrap(self) -> tuple[str, int]:
        return self.bootstrap[next(self._next_bootstrap)]

    async def _coordinator(self, group: str) -> Coordinator | None:
        known = self._coordinators.get(group)
        if known is not None and self._now() - known[1] < self.coordinator_ttl_s:
            return known[0]
        for _ in range(len(self.bootstrap)):
            host, port = self._bootstrap()
            try:
                found = await self._find(host, port, group)
            except (OSError, ConnectionError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
                self.log.warning("group coordinator lookup failed on a bootstrap server", server=f"{host}:{port}",
                                 reason=str(e) or type(e).__name__)
                continue
            if found is not None:
                self._coordinators[group] = (found, self._now())
                return found
        return None

    async def _find(self, host: str, port: int, group: str) -> Coordinator | None:
        if self._versions is None:
            await self._learn_versions()
        low, high = self._versions.get(FIND_COORDINATOR, (0, 0))
        version = min(high, FindCoordinatorRequest.max_version)
        if version < low:
            raise ConnectionError(f"Kafka's FindCoordinator versions {low}..{high} are beyond this relay's")
        if version >= 4:
            request = FindCoordinatorRequest(version=version, key_type=0, coordinator_keys=[group])
        else:
            request = FindCoordinatorRequest(version=version, key=group, key_type=0)
        request.with_header(correlation_id=next(self._correlation), client_id="tiering-serve")
        upstream = await self._open_upstream(host, port)
        try:
            answer = await upstream.exchange(bytes(request.encode(header=True)), self.connect_timeout_s)
        finally:
            await upstream.close()
        response = FindCoordinatorResponse.decode(answer, version=version, header=True)
        if version >= 4 and not response.coordinators:
            return None
        entry = response.coordinators[0] if version >= 4 else response
        if entry.error_code:
            self.log.info("Kafka has no coordinator for the group yet", group=group, error=entry.error_code)
            return None
        return Coordinator(entry.node_id, entry.host, entry.port)

    # -- upstream connections -----------------------------------------------------------------------

    async def _open_upstream(self, host: str, port: int) -> _Upstream:
        async with asyncio.timeout(self.connect_timeout_s):
            reader, writer = await self._connect(host, port)
        return _Upstream(reader, writer)

    async def _upstream(self, conn_id: int, address: tuple[str, int]) -> _Upstream:
        mine = self._upstreams.setdefault(conn_id, {})
        upstream = mine.get(address)
        if upstream is None:
            upstream = mine[address] = await self._open_upstream(*address)
        return upstream

    async def _drop(self, conn_id: int, address: tuple[str, int]) -> None:
        upstream = self._upstreams.get(conn_id, {}).pop(address, None)
        if upstream is not None:
            await upstream.close()
