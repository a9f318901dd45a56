"""The `kafka-admin` actuator: the live broker drops old segments itself when its log start
offset moves (the Admin API's DeleteRecords), so nothing under a running broker is unlinked
by us. Through kafka-python's admin client, a maintained implementation of the protocol.
"""

from __future__ import annotations

import logging
from typing import Iterable, Mapping, Protocol

from tiering.kafka.topicconfig import CONFIG_NAMES, ConfigSourceError, Entry

PartitionKey = tuple[str, int]   # (topic, partition)


class AdminError(Exception):
    """The request could not be made at all (no broker reachable, bad address)."""


class RecordDeleter(Protocol):
    def delete_records(self, offsets: Mapping[PartitionKey, int]) -> dict[PartitionKey, str | None]:
        """Move each partition's log start offset to the given offset; per partition, None on
        success or the broker's error. Raises AdminError when no request could be made."""

    def close(self) -> None: ...


class LazyAdmin:
    """kafka-python's admin client, connected on first use (a daemon must start even while the
    brokers are down) and dropped by `close()`, so the next use connects afresh. The base of
    every adapter here that talks to the cluster through it."""

    def __init__(self, bootstrap_servers: str, timeout_ms: int, bootstrap_timeout_ms: int):
        self.bootstrap_servers = bootstrap_servers
        self.timeout_ms = timeout_ms
        self.bootstrap_timeout_ms = bootstrap_timeout_ms
        self._client = None

    def _admin(self):
        """Raises AdminError when no broker can be reached."""
        if self._client is None:
            self._client = _admin_client(self.bootstrap_servers, self.timeout_ms, self.bootstrap_timeout_ms)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            finally:
                self._client = None


class KafkaAdminDeleter(LazyAdmin):
    def __init__(self, bootstrap_servers: str, timeout_ms: int = 30_000, bootstrap_timeout_ms: int = 10_000):
        super().__init__(bootstrap_servers, timeout_ms, bootstrap_timeout_ms)

    def delete_records(self, offsets: Mapping[PartitionKey, int]) -> dict[PartitionKey, str | None]:
        from kafka import TopicPartition
        from kafka.errors import KafkaError
        admin = self._admin()
        results: dict[PartitionKey, str | None] = {}
        # One request per partition: kafka-python raises for the whole batch when any partition
        # fails, and each partition's outcome must be known (and logged) on its own.
        for (topic, partition), offset in sorted(offsets.items()):
            try:
                admin.delete_records({TopicPartition(topic, partition): offset}, timeout_ms=self.timeout_ms)
                results[(topic, partition)] = None
            except KafkaError as exc:
                results[(topic, partition)] = _describe(exc)
        return results


def _admin_client(bootstrap_servers: str, timeout_ms: int, bootstrap_timeout_ms: int):
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError
    # The client's own log lines would reach stderr through logging's last-resort
    # handler; what matters from them is in the AdminError we raise.
    quiet = logging.getLogger("kafka")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    try:
        return KafkaAdminClient(bootstrap_servers=bootstrap_servers.split(","), client_id="tiering",
                                request_timeout_ms=timeout_ms, bootstrap_timeout_ms=bootstrap_timeout_ms)
    except KafkaError as exc:
        raise AdminError(f"kafka.bootstrap_servers {bootstrap_servers}: {_describe(exc)}; "
                         "check the broker is up and the address is right") from None
    except ValueError as exc:
        raise AdminError(f"kafka.bootstrap_servers {bootstrap_servers}: {exc}") from None


class KafkaConfigReader(LazyAdmin):
    """The TopicConfigSource adapter: DescribeConfigs for the topics asked about (one request
    for them all), the tiering-relevant names only, with Kafka's config source of each."""

    def __init__(self, bootstrap_servers: str, timeout_ms: int = 10_000, bootstrap_timeout_ms: int = 5_000):
        super().__init__(bootstrap_servers, timeout_ms, bootstrap_timeout_ms)

    def describe(self, topics: Iterable[str]) -> dict[str, dict[str, Entry]]:
        from kafka.admin import ConfigResource, ConfigResourceType
        from kafka.errors import KafkaError
        names = sorted(set(topics))
        if not names:
            return {}
        try:
            admin = self._admin()
            resources = [ConfigResource(ConfigResourceType.TOPIC, t, configs={n: None for n in CONFIG_NAMES})
                         for t in names]
            answer = admin.describe_configs(resources, config_filter="all")
        except AdminError as exc:
            raise ConfigSourceError(str(exc)) from None
        except KafkaError as exc:
            self.close()
            raise ConfigSourceError(f"DescribeConfigs: {_describe(exc)}") from None
        described: dict[str, dict[str, Entry]] = {}
        for topic, entries in (answer.get("topic") or {}).items():
            # kafka-python does not raise for one resource's error (an unknown topic): such a
            # topic comes back without entries and counts as not read.
            if topic in names and "cleanup.policy" in entries:
                described[topic] = {name: (e.get("value"), str(e.get("config_source", "UNKNOWN")))
                                    for name, e in entries.items() if name in CONFIG_NAMES}
        return described


def _describe(exc: Exception) -> str:
    text = str(exc)
    name = type(exc).__name__
    return text if name in text else f"{name}: {text}" if text else name


class KafkaLogStarts:
    """ListOffsets earliest (answered by each partition's leader) through kafka-python's
    consumer: the log start the cluster holds, to confirm a rollback before the store's
    copies go (tiering.rollback.confirm)."""

    def __init__(self, bootstrap_servers: str, timeout_ms: int = 15_000):
        self.bootstrap_servers = bootstrap_servers
        self.timeout_ms = timeout_ms

    def __call__(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        from kafka import KafkaConsumer, TopicPartition
        from kafka.errors import KafkaError

        from tiering.errors import TieringError
        logging.getLogger("kafka").addHandler(logging.NullHandler())
        logging.getLogger("kafka").propagate = False
        try:
            consumer = KafkaConsumer(bootstrap_servers=self.bootstrap_servers.split(","), client_id="tiering",
                                     enable_auto_commit=False, request_timeout_ms=self.timeout_ms,
                                     fetch_max_wait_ms=500)
        except (KafkaError, ValueError) as exc:
            raise TieringError(f"kafka.bootstrap_servers {self.bootstrap_servers}: {_describe(exc)}; check the "
                               "broker is up and the address is right") from None
        try:
            answer = consumer.beginning_offsets([TopicPartition(t, p) for t, p in partitions])
        except KafkaError as exc:
            raise TieringError(f"ListOffsets on {self.bootstrap_servers}: {_describe(exc)}") from None
        finally:
            consumer.close()
        return {(tp.topic, tp.partition): offset for tp, offset in answer.items() if offset is not None}


def replica_brokers(bootstrap_servers: str, topics: list[str],
                    timeout_ms: int = 10_000) -> dict[tuple[str, int], tuple[int, tuple[int, ...]]]:
    """(leader, replica broker ids) of each partition of `topics`, from the cluster's
    Metadata; raises TieringError when it cannot be asked."""
    from kafka.errors import KafkaError

    from tiering.errors import TieringError
    try:
        client = _admin_client(bootstrap_servers, timeout_ms, 5_000)
    except AdminError as exc:
        raise TieringError(str(exc)) from None
    try:
        described = client.describe_topics(topics)
    except KafkaError as exc:
        raise TieringError(f"Metadata on {bootstrap_servers}: {_describe(exc)}") from None
    finally:
        client.close()
    found: dict[tuple[str, int], tuple[int, tuple[int, ...]]] = {}
    for topic in described or ():
        for partition in topic.get("partitions") or ():
            found[(topic.get("name") or topic.get("topic"), partition["partition_index"])] = (
                partition.get("leader_id", -1), tuple(partition.get("replica_nodes") or ()))
    return found
