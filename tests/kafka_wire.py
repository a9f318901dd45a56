"""A stand-in Kafka broker on a real TCP port, speaking the wire protocol through kafka-python's
own message classes: it answers ApiVersions, Metadata, DescribeConfigs (each topic's configs as
the test sets them, Kafka's defaults otherwise), ListOffsets (the earliest offset the test
sets, 0 otherwise) and DeleteRecords and records every
DeleteRecords it receives as decoded from the bytes on the wire. It holds no log; each
partition's answer (an error code, or success) is set by the test. The point is to check what
the real client sends, not to imitate a broker's behaviour."""

from __future__ import annotations

import socket
import struct
import threading
from typing import Mapping

from kafka.protocol.admin import (DeleteRecordsRequest, DeleteRecordsResponse, DescribeConfigsRequest,
                                  DescribeConfigsResponse)
from kafka.protocol.consumer import ListOffsetsRequest, ListOffsetsResponse
from kafka.protocol.metadata import ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse

NODE_ID = 1
# Kafka's built-in topic defaults (config source DEFAULT_CONFIG = 5); a test's override is
# answered as DYNAMIC_TOPIC_CONFIG (1).
KAFKA_DEFAULTS = {"cleanup.policy": "delete", "retention.ms": "604800000", "retention.bytes": "-1",
                  "local.retention.ms": "-2", "local.retention.bytes": "-2", "remote.storage.enable": "false"}
DYNAMIC_TOPIC_CONFIG, DEFAULT_CONFIG = 1, 5


class FakeKafka:
    def __init__(self, partitions: Mapping[str, int], errors: Mapping[tuple[str, int], int] | None = None,
                 topic_configs: Mapping[str, Mapping[str, str]] | None = None,
                 earliest: Mapping[tuple[str, int], int] | None = None,
                 replicas: Mapping[tuple[str, int], list[int]] | None = None):
        self.partitions = dict(partitions)          # topic -> partition count
        self.replicas = dict(replicas or {})        # (topic, partition) -> replica broker ids ([NODE_ID] otherwise)
        self.topic_configs = {t: dict(c) for t, c in (topic_configs or {}).items()}   # topic overrides
        self.described: list[list[str]] = []
        self.earliest = dict(earliest or {})       # (topic, partition) -> ListOffsets earliest (0 otherwise)
        self.errors = dict(errors or {})            # (topic, partition) -> Kafka error code
        self.deletes: list[dict[tuple[str, int], int]] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self._stop = True
        self._server.close()

    # -- the wire ------------------------------------------------------------------------------

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        with conn:
            while True:
                head = _read(conn, 4)
                if head is None:
                    return
                payload = _read(conn, struct.unpack(">i", head)[0])
                if payload is None:
                    return
                api_key, version = struct.unpack(">hh", payload[:4])
                conn.sendall(self._answer(api_key, version, payload))

    def _answer(self, api_key: int, version: int, payload: bytes) -> bytes:
        if api_key == ApiVersionsRequest.API_KEY:
            request = ApiVersionsRequest.decode(payload, version=version, header=True)
            keys = [ApiVersionsResponse.ApiVersion(api_key=cls.API_KEY, min_version=0, max_version=cls.max_version)
                    for cls in (ApiVersionsRequest, MetadataRequest, DeleteRecordsRequest, DescribeConfigsRequest,
                                ListOffsetsRequest)]
            response = ApiVersionsResponse(error_code=0, api_keys=keys, throttle_time_ms=0)
        elif api_key == MetadataRequest.API_KEY:
            request = MetadataRequest.decode(payload, version=version, header=True)
            partition = MetadataResponse.MetadataResponseTopic.MetadataResponsePartition
            topics = [MetadataResponse.MetadataResponseTopic(
                error_code=0, name=name, is_internal=False,
                partitions=[partition(error_code=0, partition_index=p, leader_id=NODE_ID, leader_epoch=0,
                                      replica_nodes=self.replicas.get((name, p), [NODE_ID]),
                                      isr_nodes=self.replicas.get((name, p), [NODE_ID]), offline_replicas=[])
                            for p in range(count)])
                for name, count in sorted(self.partitions.items())]
            response = MetadataResponse(
                throttle_time_ms=0, cluster_id="fake", controller_id=NODE_ID, topics=topics,
                brokers=[MetadataResponse.MetadataResponseBroker(node_id=NODE_ID, host="127.0.0.1", port=self.port,
                                                                 rack=None)])
        elif api_key == DescribeConfigsRequest.API_KEY:
            request = DescribeConfigsRequest.decode(payload, version=version, header=True)
            self.described.append([r.resource_name for r in request.resources])
            result = DescribeConfigsResponse.DescribeConfigsResult
            entry = result.DescribeConfigsResourceResult
            results = []
            for resource in request.resources:
                name = resource.resource_name
                known = name in self.partitions
                configs = []
                for key in (resource.configuration_keys or KAFKA_DEFAULTS) if known else ():
                    override = self.topic_configs.get(name, {}).get(key)
                    configs.append(entry(name=key, value=override if override is not None else KAFKA_DEFAULTS.get(key),
                                         read_only=False, is_sensitive=False, synonyms=[],
                                         config_source=DYNAMIC_TOPIC_CONFIG if override is not None else DEFAULT_CONFIG))
                results.append(result(error_code=0 if known else 3, error_message=None if known else "unknown topic",
                                      resource_type=resource.resource_type, resource_name=name, configs=configs))
            response = DescribeConfigsResponse(throttle_time_ms=0, results=results)
        elif api_key == ListOffsetsRequest.API_KEY:
            request = ListOffsetsRequest.decode(payload, version=version, header=True)
            topic = ListOffsetsResponse.ListOffsetsTopicResponse
            response = ListOffsetsResponse(throttle_time_ms=0, topics=[topic(name=t.name, partitions=[
                topic.ListOffsetsPartitionResponse(partition_index=p.partition_index, error_code=0, timestamp=-1,
                                                   offset=self.earliest.get((t.name, p.partition_index), 0),
                                                   leader_epoch=0, old_style_offsets=[])
                for p in t.partitions]) for t in request.topics])
        elif api_key == DeleteRecordsRequest.API_KEY:
            request = DeleteRecordsRequest.decode(payload, version=version, header=True)
            asked = {(t.name, p.partition_index): p.offset for t in request.topics for p in t.partitions}
            self.deletes.append(asked)
            result = DeleteRecordsResponse.DeleteRecordsTopicResult
            response = DeleteRecordsResponse(throttle_time_ms=0, topics=[
                result(name=t.name, partitions=[result.DeleteRecordsPartitionResult(
                    partition_index=p.partition_index, low_watermark=p.offset,
                    error_code=self.errors.get((t.name, p.partition_index), 0)) for p in t.partitions])
                for t in request.topics])
        else:
            raise AssertionError(f"the fake broker got API key {api_key}, which tiering should not send")
        response.API_VERSION = version            # answer in the version the client asked in
        response.with_header(correlation_id=request.header.correlation_id)
        return response.encode(header=True, framed=True)


def _read(conn: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data
