"""Topic configs as Kafka holds them, and what they mean for tiering (KIP-405).

Pure: the configs a source described (topic -> name -> (value, Kafka's config source)) and
the TOML configuration in; compaction and effective retention limits, each with where it came
from, out. The source itself is a port (`TopicConfigSource`); tiering.retention.admin has
the kafka-python adapter.

Precedence, per key (design.md "Topic configs"):
- a value the cluster states (any config source but Kafka's built-in `DEFAULT_CONFIG`: a
  topic override, a dynamic or static broker default) wins over the TOML;
- otherwise the TOML's `[topics."T"]` key, then its `[retention]` key (Kafka's built-in
  default says nothing the operator chose: the sidecar's own defaults stand);
- without `kafka.bootstrap_servers` the TOML alone, as before, and compaction falls back to
  `cleaner-offset-checkpoint`.
`remote.storage.enable` (KIP-405's per-topic switch, false by Kafka's built-in default): the
sidecar tiers by default, so the built-in default says nothing; a value the cluster states
for the topic keeps it out of tiering: `false` is the operator turning tiering off for it,
`true` means Kafka's own tiered storage holds it (Kafka refuses `true` on a broker without
`remote.log.storage.system.enable`). No TOML switch: `kafka.include` is the opt-in.
With bootstrap servers set, a topic whose config was never read (the cluster unreachable
since the sidecar first saw the topic) is held: not tiered (it may be compacted) and nothing
of it deleted in either tier, until its config is read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Iterable, Mapping, Protocol

from tiering.config import Config
from tiering.kafka.checkpoints import TopicPartition
from tiering.kafka.logdir import LogDirState

# The topic configs read from Kafka, with the TOML key each one stands for.
RETENTION_KEYS = {"retention.ms": "retention_ms", "retention.bytes": "retention_bytes",
                  "local.retention.ms": "local_retention_ms", "local.retention.bytes": "local_retention_bytes"}
REMOTE_STORAGE = "remote.storage.enable"
CONFIG_NAMES = ("cleanup.policy", *RETENTION_KEYS, REMOTE_STORAGE)
KAFKA_DEFAULT = "DEFAULT_CONFIG"          # Kafka's built-in default: nobody chose it
Entry = tuple[str | None, str]             # (value, Kafka's config source name)


class ConfigSourceError(Exception):
    """The configs could not be read (no broker reachable, bad address)."""


class TopicConfigSource(Protocol):
    def describe(self, topics: Iterable[str]) -> dict[str, dict[str, Entry]]:
        """Each topic's CONFIG_NAMES it could read; a topic the cluster does not know is left
        out. Raises ConfigSourceError when no request could be made."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class TopicConfig:
    entries: Mapping[str, Entry]

    @property
    def cleanup_policy(self) -> str:
        return self.entries.get("cleanup.policy", ("delete", KAFKA_DEFAULT))[0] or "delete"

    @property
    def compacted(self) -> bool:
        # KIP-405 refuses compacted topics, `compact,delete` too.
        return "compact" in {p.strip() for p in self.cleanup_policy.split(",")}

    def stated(self, name: str) -> tuple[int, str] | None:
        """(value, source) when the cluster states this key (not Kafka's built-in default)."""
        entry = self.entries.get(name)
        if entry is None or entry[0] is None or entry[1] == KAFKA_DEFAULT:
            return None
        try:
            return int(entry[0]), entry[1]
        except ValueError:
            return None

    def remote_storage(self) -> tuple[bool, str] | None:
        """(remote.storage.enable, source) when the cluster states it: a topic override, not
        Kafka's built-in default (false), which every topic of a cluster without KIP-405's
        tiered storage has and which says nothing about this sidecar."""
        entry = self.entries.get(REMOTE_STORAGE)
        if entry is None or entry[0] is None or entry[1] == KAFKA_DEFAULT:
            return None
        value = entry[0].strip().lower()
        return (value == "true", entry[1]) if value in ("true", "false") else None


@dataclass(frozen=True)
class TopicConfigs:
    """What is known of the cluster's topic configs. `from_kafka`: bootstrap servers are set,
    so Kafka is the source of truth; `error`: why the last read failed (the configs are then
    the last ones seen, from the journal)."""

    from_kafka: bool = False
    topics: Mapping[str, TopicConfig] = field(default_factory=lambda: MappingProxyType({}))
    read_at_ms: int | None = None
    error: str | None = None

    def undecided(self, topic: str) -> bool:
        """Kafka is the source of truth and has not described this topic yet: whether it is
        tiered is not known (nothing is uploaded, and nothing already pinned is let go)."""
        return self.from_kafka and topic not in self.topics

    def not_tiered_reason(self, tp: TopicPartition, state: LogDirState) -> str | None:
        if not self.from_kafka:
            if tp in state.compacted:
                return "compacted topic (listed in cleaner-offset-checkpoint; Kafka never tiers them)"
            return None
        known = self.topics.get(tp.topic)
        if known is None:
            return ("topic config not read from Kafka yet (kafka.bootstrap_servers): not tiered until its "
                    "cleanup.policy is known" + (f"; {self.error}" if self.error else ""))
        if known.compacted:
            return f"cleanup.policy={known.cleanup_policy} (Kafka never tiers compacted topics)"
        remote = known.remote_storage()
        if remote is not None and remote[0]:
            # Kafka's own RemoteLogManager tiers it: a second copy by us would be wasted, and a
            # DeleteRecords for local retention would move its remote log start too.
            return (f"remote.storage.enable=true ({remote[1]}): Kafka's own tiered storage (KIP-405) holds this "
                    "topic; the sidecar leaves it alone")
        if remote is not None:
            return (f"remote.storage.enable=false ({remote[1]}): tiering is turned off for this topic in Kafka "
                    "(kafka-configs.sh --alter --delete-config remote.storage.enable turns it back on)")
        return None

    def to_json(self) -> str:
        return json.dumps({"read_at_ms": self.read_at_ms,
                           "topics": {t: {k: list(v) for k, v in c.entries.items()} for t, c in self.topics.items()}},
                          sort_keys=True)

    @classmethod
    def from_json(cls, text: str, error: str | None = None) -> TopicConfigs:
        """The configs kept in the journal; anything malformed reads as nothing seen."""
        try:
            doc = json.loads(text)
            topics = {t: TopicConfig(MappingProxyType({k: (v[0], str(v[1])) for k, v in entries.items()}))
                      for t, entries in doc["topics"].items()}
            return cls(True, MappingProxyType(topics), doc.get("read_at_ms"), error)
        except (ValueError, KeyError, TypeError, AttributeError, IndexError):
            return cls(True, MappingProxyType({}), None, error)


@dataclass(frozen=True)
class EffectiveRetention:
    """A topic's four limits (Kafka's meanings, local -2 not resolved yet) and, per TOML key
    name, where each came from: `kafka:<config source>`, `toml:topics."T"`, `toml:retention`
    or `default`. `hold`: why nothing of the topic may be deleted, or None."""

    local_retention_ms: int
    local_retention_bytes: int
    retention_ms: int
    retention_bytes: int
    sources: Mapping[str, str]
    hold: str | None = None
    # remote.storage.enable as Kafka described it (value, `kafka:<config source>`), shown in
    # status; None without bootstrap servers or before the topic's config was read.
    remote_storage: tuple[str | None, str] | None = None

    def to_json(self) -> dict:
        shown = {key: {"value": getattr(self, key), "source": self.sources[key]} for key in RETENTION_KEYS.values()}
        if self.remote_storage is not None:
            shown["remote_storage_enable"] = {"value": self.remote_storage[0], "source": self.remote_storage[1]}
        return shown


def effective_retention(config: Config, topic: str, configs: TopicConfigs) -> EffectiveRetention:
    policy = config.retention_for(topic)
    table = config.topics.get(topic)
    values: dict[str, int] = {}
    sources: dict[str, str] = {}
    known = configs.topics.get(topic) if configs.from_kafka else None
    for kafka_name, key in RETENTION_KEYS.items():
        stated = known.stated(kafka_name) if known is not None else None
        if stated is not None:
            values[key], sources[key] = stated[0], f"kafka:{stated[1]}"
        else:
            values[key] = getattr(policy, key)
            sources[key] = _toml_source(config, topic, key, table is not None)
    # KIP-405: the local limits never exceed the total ones (Kafka refuses such a config; a
    # mix of sources could still produce one): the total value then stands for both.
    for local, total in (("local_retention_ms", "retention_ms"), ("local_retention_bytes", "retention_bytes")):
        if values[total] >= 0 and values[local] != -2 and (values[local] == -1 or values[local] > values[total]):
            values[local] = -2
            sources[local] += f" (above {total}: the total value applies)"
    hold = None
    if configs.from_kafka and known is None:
        hold = "topic config not read from Kafka yet: nothing deleted until it is"
    remote = known.entries.get(REMOTE_STORAGE) if known is not None else None
    return EffectiveRetention(values["local_retention_ms"], values["local_retention_bytes"], values["retention_ms"],
                              values["retention_bytes"], MappingProxyType(sources), hold,
                              (remote[0], f"kafka:{remote[1]}") if remote is not None else None)


def _toml_source(config: Config, topic: str, key: str, has_table: bool) -> str:
    # Config keeps parsed values only; whether the topic's table named the key is told by
    # comparing with the [retention] value it inherits otherwise.
    if has_table and getattr(config.topics[topic], key) != getattr(config.retention, key):
        return f'toml:topics."{topic}"'
    default = getattr(type(config.retention)(), key)
    return "toml:retention" if getattr(config.retention, key) != default else "default"


def topic_configs_of(described: Mapping[str, Mapping[str, Entry]], read_at_ms: int) -> TopicConfigs:
    return TopicConfigs(True, MappingProxyType({t: TopicConfig(MappingProxyType(dict(e))) for t, e in described.items()}),
                        read_at_ms)


def merge(previous: TopicConfigs, fresh: TopicConfigs) -> TopicConfigs:
    """Fresh configs over the last ones seen (a topic the fresh read did not cover keeps its
    last config: the cluster may have answered for some topics only)."""
    topics = dict(previous.topics)
    topics.update(fresh.topics)
    return TopicConfigs(True, MappingProxyType(topics), fresh.read_at_ms, fresh.error)
