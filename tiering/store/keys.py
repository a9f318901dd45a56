"""Where a segment's objects live in the bucket (design.md, "Remote layout").

    {prefix}[{hash}/]{topic}-{topic_id}/{partition}/{base offset, 20 digits}-{uid}.{suffix}

The topic id keeps a deleted and re-created topic apart from its predecessor; the unique id
makes every upload attempt write fresh keys (objects are immutable, a retry never overwrites);
the optional hash spreads load across S3 key partitions. The manifest's suffix is
`manifest.json`; it is written last, and a segment without one does not exist.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

MANIFEST_SUFFIX = "manifest.json"
# Remote object kinds and their key suffixes (the local file extensions where there is one).
OBJECT_SUFFIXES = {
    "log": "log",
    "index": "index",
    "timeindex": "timeindex",
    "txnindex": "txnindex",
    "snapshot": "snapshot",
    "leader_epoch": "leader-epoch-checkpoint",
}
_SEGMENT_KEY = re.compile(
    r"^(?P<root>.*?(?P<topic>[A-Za-z0-9._-]+)-(?P<topic_id>[A-Za-z0-9_-]{22})/(?P<partition>\d+)/)"
    r"(?P<base>\d{20})-(?P<uid>[0-9a-f]{16})\.(?P<suffix>[a-z.-]+)$")


@dataclass(frozen=True)
class PartitionPath:
    prefix: str
    topic: str
    topic_id: str
    partition: int
    hash_prefix: bool = False

    @property
    def root(self) -> str:
        """The key prefix under which every object of this partition (and topic id) lives."""
        tail = f"{self.topic}-{self.topic_id}/{self.partition}/"
        if self.hash_prefix:
            return f"{self.prefix}{hashlib.sha256(tail.encode()).hexdigest()[:8]}/{tail}"
        return f"{self.prefix}{tail}"

    def segment(self, base_offset: int, uid: str) -> SegmentKeys:
        return SegmentKeys(self.root, base_offset, uid)


@dataclass(frozen=True)
class SegmentKeys:
    root: str
    base_offset: int
    uid: str

    @property
    def stem(self) -> str:
        return f"{self.root}{self.base_offset:020d}-{self.uid}"

    def object_key(self, kind: str) -> str:
        return f"{self.stem}.{OBJECT_SUFFIXES[kind]}"

    @property
    def manifest_key(self) -> str:
        return f"{self.stem}.{MANIFEST_SUFFIX}"


@dataclass(frozen=True)
class ParsedKey:
    root: str
    topic: str
    topic_id: str
    partition: int
    base_offset: int
    uid: str
    suffix: str

    @property
    def is_manifest(self) -> bool:
        return self.suffix == MANIFEST_SUFFIX

    @property
    def stem(self) -> str:
        return f"{self.root}{self.base_offset:020d}-{self.uid}"


def parse_key(key: str) -> ParsedKey | None:
    """The parts of one of our keys; None for a key we did not write."""
    match = _SEGMENT_KEY.match(key)
    if not match:
        return None
    return ParsedKey(match.group("root"), match.group("topic"), match.group("topic_id"),
                     int(match.group("partition")), int(match.group("base")), match.group("uid"),
                     match.group("suffix"))
