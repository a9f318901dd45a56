"""What the names in a log dir mean (kafka-log-format.md, "Layout of one log.dirs entry")."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

# Kafka's legal topic characters; a name of 1..249 of them that is not "." or "..".
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_PARTITION_DIR = re.compile(r"^(?P<topic>.+)-(?P<partition>\d{1,10})$")
_SPECIAL_DIR = re.compile(r"^.+-\d{1,10}\.[0-9a-f]{32}-(?P<kind>delete|future|stray)$")
_SEGMENT_FILE = re.compile(r"^(?P<offset>\d{20})\.(?P<ext>log|index|timeindex|txnindex|snapshot)$")
# Files the broker renames while deleting, cleaning or swapping segments: transient, never ours.
DELETED_SUFFIX = ".deleted"      # retention's rename, a minute before the unlink
TRANSIENT_SUFFIXES = (DELETED_SUFFIX, ".cleaned", ".swap")
PARTITION_FILES = ("leader-epoch-checkpoint", "partition.metadata")
SEGMENT_EXTENSIONS = ("log", "index", "timeindex", "txnindex", "snapshot")
MAX_PARTITION = 2**31 - 1
# KRaft's metadata log (in metadata.log.dir, the first log dir by default): the Raft
# quorum's own files (quorum-state, <offset>-<epoch>.checkpoint snapshots) sit beside its
# segments; it is never a topic's data.
KRAFT_METADATA_TOPIC = "__cluster_metadata"


class DirKind(Enum):
    PARTITION = "partition"
    IGNORED = "ignored"    # -delete / -future / -stray: the broker's business
    UNKNOWN = "unknown"    # not a partition dir: warn


@dataclass(frozen=True)
class PartitionDirName:
    kind: DirKind
    topic: str = ""
    partition: int = -1
    reason: str = ""


def parse_partition_dir(name: str) -> PartitionDirName:
    """Topic and partition of a `<topic>-<partition>` dir; the partition is after the last '-'."""
    special = _SPECIAL_DIR.match(name)
    if special:
        return PartitionDirName(DirKind.IGNORED, reason=f"{special.group('kind')} directory")
    match = _PARTITION_DIR.match(name)
    if not match:
        return PartitionDirName(DirKind.UNKNOWN, reason="not a <topic>-<partition> directory")
    topic, partition = match.group("topic"), int(match.group("partition"))
    if topic == KRAFT_METADATA_TOPIC:
        return PartitionDirName(DirKind.IGNORED, reason="KRaft metadata log")
    if not _TOPIC.match(topic) or topic in (".", ".."):
        return PartitionDirName(DirKind.UNKNOWN, reason=f"{topic!r} is not a legal Kafka topic name")
    if partition > MAX_PARTITION:
        return PartitionDirName(DirKind.UNKNOWN, reason=f"partition {partition} is out of range")
    return PartitionDirName(DirKind.PARTITION, topic, partition)


def is_legal_topic(name: str) -> bool:
    return bool(_TOPIC.match(name)) and name not in (".", "..")


def is_internal_topic(topic: str) -> bool:
    return topic.startswith("__")


@dataclass(frozen=True)
class SegmentFileName:
    base_offset: int
    extension: str


def parse_segment_file(name: str) -> SegmentFileName | None:
    """`00000000000000001234.log` -> (1234, "log"); None for anything else."""
    match = _SEGMENT_FILE.match(name)
    if not match:
        return None
    return SegmentFileName(int(match.group("offset")), match.group("ext"))


def is_transient_file(name: str) -> bool:
    """Files the broker is in the middle of deleting, cleaning, swapping or checkpointing."""
    return name.endswith(TRANSIENT_SUFFIXES) or name.endswith(".tmp")


def segment_file_name(base_offset: int, extension: str) -> str:
    return f"{base_offset:020d}.{extension}"
