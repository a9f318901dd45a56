"""The broker's small text files: offset checkpoints, partition.metadata, leader epochs,
meta.properties (kafka-log-format.md, "Checkpoint files")."""

from __future__ import annotations

from dataclasses import dataclass


class CheckpointError(ValueError):
    """A checkpoint file does not have the documented format."""


@dataclass(frozen=True)
class TopicPartition:
    topic: str
    partition: int

    def __str__(self) -> str:
        return f"{self.topic}-{self.partition}"


def parse_offset_checkpoint(text: str) -> dict[TopicPartition, int]:
    """`0 / N / "topic partition offset" x N` -> {TopicPartition: offset}.

    An empty file has no entries: the broker creates `cleaner-offset-checkpoint` empty at
    start-up and leaves it so until the cleaner first writes it (Kafka's CheckpointFile reads
    an empty file as an empty list)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not text:
        return {}
    if len(lines) < 2:
        raise CheckpointError("expected a version line and an entry count")
    if lines[0] != "0":
        raise CheckpointError(f"unsupported version {lines[0]!r} (expected 0)")
    count = _int(lines[1], "entry count")
    entries = lines[2:]
    if len(entries) != count:
        raise CheckpointError(f"header says {count} entries, found {len(entries)}")
    result: dict[TopicPartition, int] = {}
    for line in entries:
        parts = line.split()
        if len(parts) != 3:
            raise CheckpointError(f"malformed entry {line!r} (expected 'topic partition offset')")
        result[TopicPartition(parts[0], _int(parts[1], "partition"))] = _int(parts[2], "offset")
    return result


def format_offset_checkpoint(entries: dict[TopicPartition, int]) -> str:
    lines = ["0", str(len(entries))]
    lines += [f"{tp.topic} {tp.partition} {offset}" for tp, offset in sorted(
        entries.items(), key=lambda item: (item[0].topic, item[0].partition))]
    return "\n".join(lines) + "\n"


def rewrite_offset_checkpoint(text: str, offsets: dict[TopicPartition, int]) -> str:
    """`text` with the offsets of the partitions in `offsets` replaced, every other line kept
    as it was (same order, same bytes); partitions the file does not list are not added.
    Raises CheckpointError for a file that does not parse."""
    parse_offset_checkpoint(text)
    lines = text.splitlines()
    for i, line in enumerate(lines):
        parts = line.split()
        if len(parts) == 3:
            tp = TopicPartition(parts[0], int(parts[1]))
            if tp in offsets:
                lines[i] = f"{tp.topic} {tp.partition} {offsets[tp]}"
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class EpochEntry:
    epoch: int
    start_offset: int


def parse_leader_epoch_checkpoint(text: str) -> tuple[EpochEntry, ...]:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) < 2 or lines[0] != "0":
        raise CheckpointError("expected version 0 and an entry count")
    count = _int(lines[1], "entry count")
    if len(lines) - 2 != count:
        raise CheckpointError(f"header says {count} entries, found {len(lines) - 2}")
    entries = []
    for line in lines[2:]:
        parts = line.split()
        if len(parts) != 2:
            raise CheckpointError(f"malformed entry {line!r} (expected 'epoch startOffset')")
        entries.append(EpochEntry(_int(parts[0], "epoch"), _int(parts[1], "start offset")))
    return tuple(entries)


def format_leader_epoch_checkpoint(entries: tuple[EpochEntry, ...] | list[EpochEntry]) -> str:
    return "\n".join(["0", str(len(entries))] + [f"{e.epoch} {e.start_offset}" for e in entries]) + "\n"


def parse_partition_metadata(text: str) -> str:
    """The topic id (base64 of a UUID) from `version: 0 / topic_id: <id>`."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    if fields.get("version") != "0":
        raise CheckpointError(f"unsupported partition.metadata version {fields.get('version')!r}")
    topic_id = fields.get("topic_id", "")
    if not topic_id or not all(c.isalnum() or c in "-_" for c in topic_id):
        raise CheckpointError(f"malformed topic_id {topic_id!r}")
    return topic_id


def parse_properties(text: str) -> dict[str, str]:
    """Java .properties, the subset the broker writes (meta.properties)."""
    result = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "!")):
            continue
        key, _, value = line.partition("=")
        result[key.strip()] = value.strip()
    return result


def broker_id_from_meta(properties: dict[str, str]) -> int | None:
    for key in ("node.id", "broker.id"):
        if properties.get(key, "").lstrip("-").isdigit():
            return int(properties[key])
    return None


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise CheckpointError(f"{what} {text!r} is not a number") from None
