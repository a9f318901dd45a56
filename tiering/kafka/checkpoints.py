"""The broker's small text files: offset checkpoints, partition.metadata, leader epochs,
meta.properties (kafka-log-format.md, "Checkpoint files")."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Kafka's Uuid.toString: URL-safe base64 of 16 bytes, unpadded. Exactly this form, because every
# store key carries the id and the key layout (store/keys.py) owns only this form: a looser id
# would be uploaded under keys that retention, verify and rollback never recognise as ours.
_TOPIC_ID = re.compile(r"[A-Za-z0-9_-]{22}")


class CheckpointError(ValueError):
    """A checkpoint file does not have the documented format. The message says where and what
    is wrong, never what the file holds: a checkpoint may be any file the broker's user could
    put there, and what we print reaches logs and terminals."""


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
        raise CheckpointError("unsupported version on the first line (expected 0)")
    count = _int(lines[1], "entry count")
    entries = lines[2:]
    if len(entries) != count:
        raise CheckpointError(f"header says {count} entries, found {len(entries)}")
    result: dict[TopicPartition, int] = {}
    for number, line in enumerate(entries, 1):
        parts = line.split()
        if len(parts) != 3:
            raise CheckpointError(f"malformed entry {number} (expected 'topic partition offset')")
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
    for number, line in enumerate(lines[2:], 1):
        parts = line.split()
        if len(parts) != 2:
            raise CheckpointError(f"malformed entry {number} (expected 'epoch startOffset')")
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
        raise CheckpointError("unsupported partition.metadata version (expected 'version: 0')")
    topic_id = fields.get("topic_id", "")
    if not _TOPIC_ID.fullmatch(topic_id):
        raise CheckpointError("malformed topic_id (expected base64 of a UUID: 22 characters of A-Z a-z 0-9 - _)")
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
        raise CheckpointError(f"{what} is not a number") from None
