"""The endpoint's group relay against a real broker's group coordinator (tiering.serve.groups).

A whole classic-protocol membership goes through the relay: join (Kafka first asks for a member
id, then makes the member leader), sync, heartbeat, commit, fetch of the commit, leave. The
commit is then read from Kafka directly, not through the relay, so the group state is Kafka's."""
import asyncio

from kafka import KafkaAdminClient
from kafka.protocol.consumer.group import (HeartbeatRequest, HeartbeatResponse, JoinGroupRequest,
                                           JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse,
                                           OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest,
                                           OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse)
from kafka.structs import TopicPartition

from tests.realkafka.clients import create_topic
from tiering.realkafka.broker import free_port
from tiering.serve.groups import GroupRelay, error_response

MEMBER_ID_REQUIRED = 79
COORDINATOR_NOT_AVAILABLE = 15
TOPIC = "relay-commits"
GROUP = "relay-group"
# ConsumerProtocolSubscription v0: version, [topic], user data (null): Kafka's coordinator reads it.
SUBSCRIPTION = b"\x00\x00" + b"\x00\x00\x00\x01" + len(TOPIC).to_bytes(2, "big") + TOPIC.encode() + b"\xff\xff\xff\xff"


def _frame(request, correlation_id):
    request.with_header(correlation_id=correlation_id, client_id="relay-test")
    return bytes(request.encode(header=True))


async def _call(relay, conn_id, request, response_cls, correlation_id):
    # A fresh broker has no coordinator until __consumer_offsets exists: the relay answers
    # None (the client is told COORDINATOR_NOT_AVAILABLE and asks again), so ask again here too.
    for _ in range(60):
        answer = await relay.forward(conn_id, _frame(request, correlation_id))
        if answer is not None:
            break
        await asyncio.sleep(0.5)
    assert answer is not None, f"{request.name} was not relayed"
    decoded = response_cls.decode(answer, version=request.API_VERSION, header=True)
    assert decoded.header.correlation_id == correlation_id
    return decoded


class _Cutter:
    """A TCP relay in front of the broker that can close every connection, as Kafka does with
    a connection idle for connections.max.idle.ms."""

    def __init__(self, host, port):
        self.target = (host, port)
        self.writers = []
        self.accepted = 0

    async def start(self):
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader, writer):
        self.accepted += 1
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.writers += [writer, up_writer]

        async def pipe(src, dst):
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self):
        for writer in self.writers:
            writer.close()
        self.writers = []

    async def close(self):
        self.cut()
        self.server.close()


async def _membership(bootstrap):
    host, port = bootstrap.split(":")
    cutter = _Cutter(host, int(port))
    through = await cutter.start()
    relay = GroupRelay([(host, int(port))],
                       connect=lambda _host, _port: asyncio.open_connection("127.0.0.1", through))
    await relay.start()
    versions = relay.versions()
    # What is advertised is what both the broker and the relay's decoder take.
    assert relay._versions is not None, "the broker's ApiVersions were not learnt"
    for key, (low, high) in versions.items():
        assert relay._versions[key][0] <= low <= high <= relay._versions[key][1]
    join_v = min(versions[JoinGroupRequest.API_KEY][1], 7)
    join = dict(group_id=GROUP, session_timeout_ms=10_000, rebalance_timeout_ms=10_000, group_instance_id=None,
                protocol_type="consumer", reason=None,
                protocols=[JoinGroupRequest.JoinGroupRequestProtocol(name="range", metadata=SUBSCRIPTION)])
    try:
        first = await _call(relay, 1, JoinGroupRequest(version=join_v, member_id="", **join), JoinGroupResponse, 11)
        assert first.error_code == MEMBER_ID_REQUIRED and first.member_id
        joined = await _call(relay, 1, JoinGroupRequest(version=join_v, member_id=first.member_id, **join),
                             JoinGroupResponse, 12)
        assert joined.error_code == 0
        assert joined.leader == joined.member_id == first.member_id and joined.generation_id >= 1
        sync_v = min(versions[SyncGroupRequest.API_KEY][1], 5)
        assignment = SyncGroupRequest.SyncGroupRequestAssignment(member_id=joined.member_id, assignment=b"plan")
        synced = await _call(relay, 1, SyncGroupRequest(
            version=sync_v, group_id=GROUP, generation_id=joined.generation_id, member_id=joined.member_id,
            group_instance_id=None, protocol_type="consumer", protocol_name="range", assignments=[assignment]),
            SyncGroupResponse, 13)
        assert (synced.error_code, synced.assignment) == (0, b"plan")
        # Kafka closes the relay's upstream (idle): the next heartbeat is relayed on a new one.
        cutter.cut()
        accepted = cutter.accepted
        beat = await relay.forward(1, _frame(HeartbeatRequest(
            version=min(versions[HeartbeatRequest.API_KEY][1], 4), group_id=GROUP, generation_id=joined.generation_id,
            member_id=joined.member_id, group_instance_id=None), 14))
        assert beat is not None, "a heartbeat after Kafka closed the upstream was not relayed"
        assert HeartbeatResponse.decode(beat, version=min(versions[HeartbeatRequest.API_KEY][1], 4),
                                        header=True).error_code == 0
        assert cutter.accepted == accepted + 1

        commit_v = min(versions[OffsetCommitRequest.API_KEY][1], 8)     # v8: topics by name
        topic = OffsetCommitRequest.OffsetCommitRequestTopic
        part = topic.OffsetCommitRequestPartition(partition_index=0, committed_offset=1234, committed_leader_epoch=-1,
                                                  commit_timestamp=-1, committed_metadata="via relay")
        committed = await _call(relay, 2, OffsetCommitRequest(
            version=commit_v, group_id=GROUP, generation_id_or_member_epoch=joined.generation_id,
            member_id=joined.member_id, group_instance_id=None, retention_time_ms=-1,
            topics=[topic(name=TOPIC, topic_id=None, partitions=[part])]), OffsetCommitResponse, 15)
        assert [p.error_code for t in committed.topics for p in t.partitions] == [0]

        fetch_v = min(versions[OffsetFetchRequest.API_KEY][1], 7)
        wanted = OffsetFetchRequest.OffsetFetchRequestTopic(name=TOPIC, partition_indexes=[0])
        fetched = await _call(relay, 2, OffsetFetchRequest(version=fetch_v, group_id=GROUP, topics=[wanted],
                                                           require_stable=True), OffsetFetchResponse, 16)
        assert [(p.committed_offset, p.metadata) for t in fetched.topics for p in t.partitions] == [
            (1234, "via relay")]

        left = await _call(relay, 1, LeaveGroupRequest(
            version=min(versions[LeaveGroupRequest.API_KEY][1], 3), group_id=GROUP, member_id=joined.member_id,
            members=[LeaveGroupRequest.MemberIdentity(member_id=joined.member_id, group_instance_id=None,
                                                      reason=None)]), LeaveGroupResponse, 17)
        assert left.error_code == 0
    finally:
        await relay.close()
        await cutter.close()
    assert relay._upstreams == {}


def test_a_membership_goes_through_the_relay_to_kafkas_coordinator(kafka_broker):
    create_topic(kafka_broker.bootstrap, TOPIC)
    asyncio.run(_membership(kafka_broker.bootstrap))
    # What was committed through the relay is in Kafka itself.
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
    try:
        offsets = admin.list_group_offsets(GROUP)
    finally:
        admin.close()
    found = offsets[GROUP][TopicPartition(TOPIC, 0)]
    assert (found.offset, found.metadata) == (1234, "via relay")


async def _nowhere():
    relay = GroupRelay([("127.0.0.1", free_port())], connect_timeout_s=1.0)
    await relay.start()            # logs that the versions are unknown; does not raise
    request = HeartbeatRequest(version=4, group_id=GROUP, generation_id=1, member_id="m", group_instance_id=None)
    raw = _frame(request, 21)
    assert await relay.forward(7, raw) is None
    answer = HeartbeatResponse.decode(error_response(raw, COORDINATOR_NOT_AVAILABLE), version=4, header=True)
    assert (answer.header.correlation_id, answer.error_code) == (21, COORDINATOR_NOT_AVAILABLE)
    await relay.close()


def test_no_reachable_cluster_means_coordinator_not_available():
    asyncio.run(_nowhere())
