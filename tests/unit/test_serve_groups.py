"""The group relay's pure parts: which group a request names, how long its answer may take, and
the error answers given when no coordinator can be reached (every API, every version)."""
import pytest
from kafka.protocol.admin.groups import DescribeGroupsRequest, DescribeGroupsResponse
from kafka.protocol.consumer.group import (HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest,
                                           OffsetCommitRequest, OffsetFetchRequest, OffsetFetchResponse,
                                           SyncGroupRequest)

from tiering.serve.groups import (GROUP_API_KEYS, JOIN_MARGIN_S, RelayError, error_response,
                                  parse_group_request, response_error)

COORDINATOR_NOT_AVAILABLE = 15


def frame(cls, version, correlation_id=41, **fields):
    request = cls(version=version, **fields)
    request.with_header(correlation_id=correlation_id, client_id="client")
    return bytes(request.encode(header=True))


def commit_topic(cls, version):
    topic = cls.OffsetCommitRequestTopic
    part = topic.OffsetCommitRequestPartition(partition_index=3, committed_offset=5, committed_leader_epoch=-1,
                                              commit_timestamp=-1, committed_metadata=None)
    return topic(name="orders" if version < 10 else "", topic_id=None, partitions=[part])


def fetch_fields(version):
    if version >= 8:
        g = OffsetFetchRequest.OffsetFetchRequestGroup
        t = g.OffsetFetchRequestTopics(name="orders" if version < 10 else "", topic_id=None, partition_indexes=[3, 4])
        return dict(groups=[g(group_id="readers", member_id=None, member_epoch=-1, topics=[t])], require_stable=False)
    t = OffsetFetchRequest.OffsetFetchRequestTopic(name="orders", partition_indexes=[3, 4])
    return dict(group_id="readers", topics=[t], require_stable=False)


REQUESTS = {
    JoinGroupRequest: lambda v: dict(group_id="readers", session_timeout_ms=10_000, rebalance_timeout_ms=45_000,
                                     member_id="", group_instance_id=None, protocol_type="consumer",
                                     protocols=[], reason=None),
    SyncGroupRequest: lambda v: dict(group_id="readers", generation_id=1, member_id="m", group_instance_id=None,
                                     protocol_type=None, protocol_name=None, assignments=[]),
    HeartbeatRequest: lambda v: dict(group_id="readers", generation_id=1, member_id="m", group_instance_id=None),
    LeaveGroupRequest: lambda v: dict(group_id="readers", member_id="m", members=[]),
    DescribeGroupsRequest: lambda v: dict(groups=["readers"], include_authorized_operations=False),
    OffsetFetchRequest: fetch_fields,
    OffsetCommitRequest: lambda v: dict(group_id="readers", generation_id_or_member_epoch=1, member_id="m",
                                        group_instance_id=None, retention_time_ms=-1,
                                        topics=[commit_topic(OffsetCommitRequest, v)]),
}
CASES = [(cls, v) for cls in REQUESTS for v in range(cls.max_version + 1)]


def test_the_relayed_apis_are_the_group_apis():
    assert GROUP_API_KEYS == {8, 9, 11, 12, 13, 14, 15}


@pytest.mark.parametrize("cls,version", CASES, ids=[f"{c.name}-v{v}" for c, v in CASES])
def test_every_version_names_its_group_and_gets_an_error_answer(cls, version):
    raw = frame(cls, version, **REQUESTS[cls](version))
    request = parse_group_request(raw, 60.0)
    assert (request.api_key, request.api_version, request.correlation_id, request.group_id) == (
        cls.API_KEY, version, 41, "readers")

    answer = error_response(raw, COORDINATOR_NOT_AVAILABLE)
    assert answer is not None
    # The answer is the request's own version, for the client's correlation id.
    assert int.from_bytes(answer[:4], "big") == 41
    if cls is OffsetCommitRequest:
        from kafka.protocol.consumer.group import OffsetCommitResponse
        decoded = OffsetCommitResponse.decode(answer, version=version, header=True)
        assert [(p.partition_index, p.error_code) for t in decoded.topics for p in t.partitions] == [
            (3, COORDINATOR_NOT_AVAILABLE)]
    elif cls is OffsetFetchRequest:
        decoded = OffsetFetchResponse.decode(answer, version=version, header=True)
        topics = decoded.groups[0].topics if version >= 8 else decoded.topics
        # Every partition asked about is answered with the error, never as "nothing committed".
        assert [(p.partition_index, p.committed_offset, p.error_code) for t in topics for p in t.partitions] == [
            (3, -1, COORDINATOR_NOT_AVAILABLE), (4, -1, COORDINATOR_NOT_AVAILABLE)]
        if version >= 2:
            assert response_error(cls.API_KEY, answer, version) == (0 if version >= 8 else COORDINATOR_NOT_AVAILABLE)
    elif cls is DescribeGroupsRequest:
        decoded = DescribeGroupsResponse.decode(answer, version=version, header=True)
        assert [(g.group_id, g.error_code) for g in decoded.groups] == [("readers", COORDINATOR_NOT_AVAILABLE)]
        assert response_error(cls.API_KEY, answer, version) == COORDINATOR_NOT_AVAILABLE
    else:
        assert response_error(cls.API_KEY, answer, version) == COORDINATOR_NOT_AVAILABLE


def test_join_may_take_the_rebalance_timeout_and_a_margin():
    raw = frame(JoinGroupRequest, 5, **REQUESTS[JoinGroupRequest](5))
    assert parse_group_request(raw, 60.0).timeout_s == 45.0 + JOIN_MARGIN_S
    # v0 has no rebalance timeout: the session timeout bounds the join.
    raw0 = frame(JoinGroupRequest, 0, **REQUESTS[JoinGroupRequest](0))
    assert parse_group_request(raw0, 60.0).timeout_s == 10.0 + JOIN_MARGIN_S
    beat = frame(HeartbeatRequest, 4, **REQUESTS[HeartbeatRequest](4))
    assert parse_group_request(beat, 60.0).timeout_s == 60.0


@pytest.mark.parametrize("raw,why", [
    (b"", "shorter than a request header"),
    (b"\x00\x0c\x00", "shorter than a request header"),
    (b"\x00\x01\x00\x04\x00\x00\x00\x01\x00\x00", "not a group API"),              # Fetch
    (b"\x00\x0c\x00\x63\x00\x00\x00\x01\x00\x00", "outside 0.."),                   # Heartbeat v99
    (b"\x00\x0c\x00\x03\x00\x00\x00\x01\x00\x01c\x7f\xff", "could not be decoded"),  # truncated body
])
def test_unreadable_frames_are_refused(raw, why):
    with pytest.raises(RelayError, match=why):
        parse_group_request(raw, 60.0)
    assert error_response(raw, COORDINATOR_NOT_AVAILABLE) is None


def test_a_request_naming_no_group_is_refused():
    raw = frame(DescribeGroupsRequest, 3, groups=[], include_authorized_operations=False)
    with pytest.raises(RelayError, match="names no group"):
        parse_group_request(raw, 60.0)


def test_offset_fetch_v8_is_routed_by_its_first_group():
    g = OffsetFetchRequest.OffsetFetchRequestGroup
    raw = frame(OffsetFetchRequest, 8, require_stable=False, groups=[
        g(group_id="first", member_id=None, member_epoch=-1, topics=None),
        g(group_id="second", member_id=None, member_epoch=-1, topics=None)])
    assert parse_group_request(raw, 60.0).group_id == "first"


def test_an_unreadable_answer_has_no_error_code():
    assert response_error(12, b"\x00\x00\x00\x01", 4) is None
    assert response_error(1, b"\x00\x00\x00\x01\x00\x00", 4) is None


# -- the relay's coordinator cache, against a small Kafka-speaking server on loopback --------

class _FakeKafka:
    """Answers ApiVersions, FindCoordinator (itself) and Heartbeat with the error codes queued
    in `heartbeat_errors`; counts the lookups."""

    def __init__(self, heartbeat_errors):
        self.heartbeat_errors = list(heartbeat_errors)
        self.lookups = 0

    async def start(self):
        import asyncio
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader, writer):
        import asyncio
        from kafka.protocol.consumer.group import HeartbeatResponse
        from kafka.protocol.metadata.api_versions import ApiVersionsResponse
        from kafka.protocol.metadata.find_coordinator import FindCoordinatorResponse
        try:
            while True:
                size = int.from_bytes(await reader.readexactly(4), "big")
                frame = await reader.readexactly(size)
                key, version = int.from_bytes(frame[:2], "big"), int.from_bytes(frame[2:4], "big")
                correlation = int.from_bytes(frame[4:8], "big")
                if key == 18:
                    keys = [ApiVersionsResponse.ApiVersion(api_key=k, min_version=0, max_version=4)
                            for k in (8, 9, 10, 11, 12, 13, 14, 15)]
                    answer = ApiVersionsResponse(version=version, error_code=0, api_keys=keys, throttle_time_ms=0)
                elif key == 10:
                    self.lookups += 1
                    here = dict(node_id=1, host="127.0.0.1", port=self.port, error_code=0, error_message=None)
                    answer = FindCoordinatorResponse(
                        version=version, throttle_time_ms=0, **here,
                        coordinators=[FindCoordinatorResponse.Coordinator(key="readers", **here)])
                else:
                    code = self.heartbeat_errors.pop(0) if self.heartbeat_errors else 0
                    answer = HeartbeatResponse(version=version, throttle_time_ms=0, error_code=code)
                answer.with_header(correlation_id=correlation)
                body = bytes(answer.encode(header=True))
                writer.write(len(body).to_bytes(4, "big") + body)
                await writer.drain()
        except asyncio.IncompleteReadError:
            writer.close()


def _beat(correlation_id):
    return frame(HeartbeatRequest, 3, correlation_id=correlation_id, **REQUESTS[HeartbeatRequest](3))


def _codes(answers):
    from kafka.protocol.consumer.group import HeartbeatResponse
    return [HeartbeatResponse.decode(a, version=3, header=True).error_code for a in answers]


def test_not_coordinator_makes_the_relay_look_again_and_a_fresh_answer_is_kept():
    import asyncio

    from tiering.serve.groups import GroupRelay

    async def scenario():
        kafka = await _FakeKafka([16, 0, 0]).start()
        relay = GroupRelay([("127.0.0.1", kafka.port)])
        await relay.start()
        answers = [await relay.forward(1, _beat(n)) for n in range(3)]
        await relay.close()
        kafka.server.close()
        return kafka.lookups, _codes(answers)

    lookups, codes = asyncio.run(scenario())
    # NOT_COORDINATOR is relayed as Kafka said it, and the next request looks the group up again;
    # after a good answer the coordinator is kept.
    assert codes == [16, 0, 0]
    assert lookups == 2


def test_a_known_coordinator_is_looked_up_again_after_its_time_to_live():
    import asyncio

    from tiering.serve.groups import GroupRelay
    now = [100.0]

    async def scenario():
        kafka = await _FakeKafka([]).start()
        relay = GroupRelay([("127.0.0.1", kafka.port)], coordinator_ttl_s=60.0, clock=lambda: now[0])
        await relay.start()
        await relay.forward(1, _beat(1))
        now[0] += 59.9
        await relay.forward(1, _beat(2))
        seen = kafka.lookups
        now[0] += 0.1
        await relay.forward(1, _beat(3))
        await relay.close()
        kafka.server.close()
        return seen, kafka.lookups

    assert asyncio.run(scenario()) == (1, 2)
