"""Reading the topic configs from Kafka, with the last ones seen kept in the journal.

A read that fails (the cluster unreachable) leaves the last configs seen in force, with the
error said; a topic the cluster has never described stays held (tiering.kafka.topicconfig).
The journal's owner writes what a successful read returned (`remember`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Iterable

from tiering.config import Config
from tiering.kafka.names import is_internal_topic
from tiering.kafka.topicconfig import (ConfigSourceError, TopicConfigs, TopicConfigSource, merge,
                                       topic_configs_of)

JOURNAL_KEY = "kafka_topic_configs"


def last_seen(config: Config, journal: Any) -> TopicConfigs:
    """The configs kept in the journal (none without bootstrap servers: the TOML rules)."""
    if not config.kafka.bootstrap_servers:
        return TopicConfigs()
    text = journal.get_meta(JOURNAL_KEY)
    return TopicConfigs.from_json(text) if text else TopicConfigs(True)


def read_configs(config: Config, source: TopicConfigSource | None, topics: Iterable[str], previous: TopicConfigs,
                 now_ms: int, log: Any) -> TopicConfigs:
    if not config.kafka.bootstrap_servers or source is None:
        return TopicConfigs()
    wanted = sorted({t for t in topics if not is_internal_topic(t)})
    try:
        fresh = topic_configs_of(source.describe(wanted), now_ms)
    except ConfigSourceError as exc:
        if previous.error != str(exc):
            log.warning("topic configs not read from Kafka; the last ones seen stay in force",
                        error=str(exc), known_topics=len(previous.topics))
        return replace(previous, from_kafka=True, error=str(exc))
    unknown = [t for t in wanted if t not in fresh.topics]
    if unknown:
        log.warning("Kafka described no config for some topics; they are held (not tiered, nothing deleted)",
                    topics=unknown[:20], count=len(unknown))
    return merge(previous, fresh)


def remember(journal: Any, configs: TopicConfigs) -> None:
    if configs.from_kafka and configs.error is None and configs.read_at_ms is not None:
        journal.set_meta(JOURNAL_KEY, configs.to_json())
