"""Where a segment's objects live in the bucket (design.md, "Remote layout").

    {prefix}[{hash}/]{topic}-{topic_id}/{partition}/{base offset, 20 digits}-{uid}.{suffix}
    {prefix}[{hash}/]{topic}-{topic_id}/{partition}/{base offset, 20 digits}.claim   (cluster mode)

The topic id keeps a deleted and re-created topic apart from its predecessor; the unique id
makes every upload attempt write fresh keys (objects are immutable, a retry never overwrites);
the optional hash spreads load across S3 key partitions. The manifest's suffix is
`manifest.json`; it is written last, and a segment without one does not exist.

**Whose key is it.** A deployment owns exactly the keys `KeyLayout.parse` accepts: the
layout above with nothing between its prefix and the layout, the hash segment present only
when `hash_prefix` is on and then equal to the hash of that topic, topic id and partition,
and every part in the form we write it (legal topic name, 22-character topic id, partition
without leading zeros, 20-digit base offset, 16-hex uid, one of our suffixes). Every listing
of the store goes through it (tiering.store.owned), so another deployment's keys nested
under our prefix (`tiered/` and `tiered/team-b/`) are never adopted, swept, expired or
counted: their keys have at least one more path component than our layout allows.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

MANIFEST_SUFFIX = "manifest.json"
# A claim (cluster mode): `{root}{base offset, 20 digits}.claim`, one per partition and start
# offset, written with `If-None-Match: *` before a segment's objects (tiering.cluster.claims).
CLAIM_SUFFIX = "claim"
# Remote object kinds and their key suffixes (the local file extensions where there is one).
OBJECT_SUFFIXES = {
    "log": "log",
    "index": "index",
    "timeindex": "timeindex",
    "txnindex": "txnindex",
    "snapshot": "snapshot",
    "leader_epoch": "leader-epoch-checkpoint",
}
# The shape only, with any root: the manifest parser uses it to find a manifest's own segment
# keys. It says nothing about whose key it is; ownership is `KeyLayout.parse`.
_SEGMENT_KEY = re.compile(
    r"^(?P<root>.*?(?P<topic>[A-Za-z0-9._-]+)-(?P<topic_id>[A-Za-z0-9_-]{22})/(?P<partition>\d+)/)"
    r"(?P<base>\d{20})-(?P<uid>[0-9a-f]{16})\.(?P<suffix>[a-z.-]+)$")


_SUFFIXES = "|".join(re.escape(s) for s in sorted({*OBJECT_SUFFIXES.values(), MANIFEST_SUFFIX}))
# What follows the prefix in one of our keys. A topic name is Kafka's (1..249 of [A-Za-z0-9._-],
# never "." or "..", checked below); it cannot hold '/', and the topic id is the last 22
# characters before the partition's '/' (Kafka's Uuid in unpadded URL-safe base64), so
# `{topic}-{topic_id}` splits one way only, whatever dashes and digits the name holds.
_TAIL = (r"(?P<topic>[A-Za-z0-9._-]{1,249})-(?P<topic_id>[A-Za-z0-9_-]{22})/(?P<partition>0|[1-9]\d{0,9})/"
         r"(?P<base>\d{20})(?:-(?P<uid>[0-9a-f]{16})\.(?P<suffix>" + _SUFFIXES + r")|\.(?P<claim>claim))")
_PLAIN_TAIL = re.compile(_TAIL)
_INT32_MAX, _INT64_MAX = 2**31 - 1, 2**63 - 1
_HASHED_TAIL = re.compile(r"(?P<hash>[0-9a-f]{8})/" + _TAIL)


def _hash8(tail: str) -> str:
    return hashlib.sha256(tail.encode()).hexdigest()[:8]


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
            return f"{self.prefix}{_hash8(tail)}/{tail}"
        return f"{self.prefix}{tail}"

    def segment(self, base_offset: int, uid: str) -> SegmentKeys:
        return SegmentKeys(self.root, base_offset, uid)

    def claim_key(self, base_offset: int) -> str:
        """The claim on the segment starting at `base_offset`, whoever uploads it."""
        return f"{self.root}{base_offset:020d}.{CLAIM_SUFFIX}"


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

    @property
    def claim_key(self) -> str:
        """The claim on this segment's start offset (shared by every attempt, every broker)."""
        return f"{self.root}{self.base_offset:020d}.{CLAIM_SUFFIX}"


@dataclass(frozen=True)
class ParsedKey:
    root: str
    topic: str
    topic_id: str
    partition: int
    base_offset: int
    uid: str            # "" for a claim (it belongs to a start offset, not to one attempt)
    suffix: str

    @property
    def is_manifest(self) -> bool:
        return self.suffix == MANIFEST_SUFFIX

    @property
    def is_claim(self) -> bool:
        return self.suffix == CLAIM_SUFFIX

    @property
    def stem(self) -> str:
        # A claim's stem is never a manifest's: the sweep takes claims as orphans once they
        # are older than daemon.orphan_ms, which is how claims leave the store.
        if self.is_claim:
            return f"{self.root}{self.base_offset:020d}"
        return f"{self.root}{self.base_offset:020d}-{self.uid}"


@dataclass(frozen=True)
class KeyLayout:
    """This deployment's part of the bucket (`store.prefix`, `store.hash_prefix`)."""

    prefix: str
    hash_prefix: bool = False

    def partition(self, topic: str, topic_id: str, partition: int) -> PartitionPath:
        return PartitionPath(self.prefix, topic, topic_id, partition, self.hash_prefix)

    def parse(self, key: str) -> ParsedKey | None:
        """The parts of a key this deployment writes; None for every other key (another
        deployment's, nested under our prefix or not, or anything not in our layout).

        The one ownership rule: whatever lists the store, deletes from it or counts what is
        in it asks this first.
        """
        if not key.startswith(self.prefix):
            return None
        pattern = _HASHED_TAIL if self.hash_prefix else _PLAIN_TAIL
        match = pattern.fullmatch(key, len(self.prefix))
        if match is None or match.group("topic") in (".", ".."):
            return None
        partition, base = int(match.group("partition")), int(match.group("base"))
        if partition > _INT32_MAX or base > _INT64_MAX:
            return None     # no Kafka partition or offset is that large
        path = self.partition(match.group("topic"), match.group("topic_id"), partition)
        if not key.startswith(path.root):
            return None     # a hash segment that is not this partition's hash
        if match.group("claim"):
            return ParsedKey(path.root, path.topic, path.topic_id, path.partition, base, "", CLAIM_SUFFIX)
        return ParsedKey(path.root, path.topic, path.topic_id, path.partition, base,
                         match.group("uid"), match.group("suffix"))


def parse_key(key: str) -> ParsedKey | None:
    """The parts of a key shaped like ours, under any root; None when it is not.

    Not an ownership test (see `KeyLayout.parse`): the manifest parser uses it to derive a
    manifest's own object keys from the key it was read from.
    """
    match = _SEGMENT_KEY.match(key)
    if not match:
        return None
    return ParsedKey(match.group("root"), match.group("topic"), match.group("topic_id"),
                     int(match.group("partition")), int(match.group("base")), match.group("uid"),
                     match.group("suffix"))
