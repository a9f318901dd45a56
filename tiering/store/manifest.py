"""The per-segment manifest: the JSON document written last, after every object verified.

A manifest read back from the store is untrusted input: it is validated field by field, and
its object keys must be this segment's own keys (no `..`, no other topic, partition or uid),
so a tampered manifest can never send a reader or a rollback somewhere else.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from tiering.kafka.names import is_legal_topic
from tiering.store.errors import ObjectTooLarge
from tiering.store.keys import OBJECT_SUFFIXES, SegmentKeys, parse_key

if TYPE_CHECKING:
    from tiering.store.protocol import ObjectStore

FORMAT_VERSION = 1

# What a manifest may hold. Ours are 1-3 KiB; anything past 1 MiB at a manifest key is not
# one, and is refused from its Content-Length without being read.
MAX_MANIFEST_BYTES = 1 << 20
MAX_OFFSET = 2**63 - 1            # Kafka offsets are int64
MAX_INT32 = 2**31 - 1             # partitions, leader epochs, broker ids
# Kafka addresses a segment's files with int32 positions: no .log or index exceeds this.
MAX_OBJECT_BYTES = 2**31 - 1
# Timestamps in ms: -1 (none) or 0 to the end of year 9999, which datetime and os.utime
# (restore sets a segment's mtime from max_timestamp) both accept.
MAX_TIMESTAMP_MS = 253_402_300_799_999
NO_TIMESTAMP = -1


class ManifestError(ValueError):
    """A manifest that does not match the schema or points outside its own segment."""


@dataclass(frozen=True)
class ObjectEntry:
    kind: str          # "log", "index", "timeindex", "txnindex", "snapshot", "leader_epoch"
    key: str
    size: int
    crc32c: str        # 8 hex digits, of the whole object
    etag: str          # as the store reported it after the upload


@dataclass(frozen=True)
class SegmentManifest:
    format_version: int
    topic: str
    topic_id: str
    partition: int
    base_offset: int
    end_offset: int                        # next segment's base offset - 1 (KIP-405)
    last_batch_offset: int | None          # last offset actually present
    size_bytes: int                        # of the .log
    batch_count: int
    record_count: int
    max_timestamp: int
    leader_epochs: tuple[tuple[int, int], ...]   # (epoch, start offset) within the segment
    objects: tuple[ObjectEntry, ...]
    uid: str
    broker_id: int | None
    created_at_ms: int
    tool_version: str
    # Where max_timestamp came from: "records" (the batches' largest timestamp) or "file-mtime"
    # (no batch had one: the .log's mtime when it was scanned for upload, as Kafka's
    # LogSegment.largestTimestamp falls back to lastModified). A field added without a new
    # format_version: readers ignore fields they do not know, and max_timestamp itself holds
    # the effective value, so an older reader takes the right decisions too.
    max_timestamp_source: str = "records"
    # The uploader's leader epoch for this partition when it uploaded (cluster mode); None for
    # a single-mode upload. Added without a new format_version, like max_timestamp_source: it
    # orders overlapping copies in the partition's chain (tiering.cluster.chain), the newer
    # epoch's copy winning. Left out of the JSON when None, so single-mode manifests are as
    # before.
    leader_epoch: int | None = None

    @property
    def effective_max_timestamp(self) -> int:
        """The timestamp retention goes by. A manifest written before the mtime fallback holds
        -1 for a segment without timestamps: its upload time stands in (never earlier than
        the file's last write, so the segment is kept at least as long as Kafka would)."""
        return self.max_timestamp if self.max_timestamp >= 0 else self.created_at_ms

    def object(self, kind: str) -> ObjectEntry | None:
        return next((o for o in self.objects if o.kind == kind), None)

    @property
    def total_bytes(self) -> int:
        return sum(o.size for o in self.objects)

    def to_json(self) -> bytes:
        document = asdict(self)
        document["leader_epochs"] = [list(e) for e in self.leader_epochs]
        if document["leader_epoch"] is None:
            del document["leader_epoch"]
        return (json.dumps(document, indent=1, sort_keys=True) + "\n").encode()


_INT_FIELDS = ("format_version", "partition", "base_offset", "end_offset", "size_bytes", "batch_count",
               "record_count", "max_timestamp", "created_at_ms")


def fetch_manifest(store: ObjectStore, manifest_key: str) -> SegmentManifest:
    """Read and validate the manifest at `manifest_key`: ManifestError when it is not a
    valid manifest (too large included), StoreError when the store fails."""
    try:
        data = store.get_bytes(manifest_key, MAX_MANIFEST_BYTES)
    except ObjectTooLarge as exc:
        raise ManifestError(f"{exc.detail}: not a manifest") from None
    return parse_manifest(data, manifest_key)


def parse_manifest(data: bytes, manifest_key: str) -> SegmentManifest:
    """Validate a manifest read from `manifest_key`; raises ManifestError (and nothing else,
    whatever the bytes)."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{len(data)} bytes, over the {MAX_MANIFEST_BYTES} a manifest may have")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError(f"not JSON: {exc}") from None
    except RecursionError:
        # json's C parser recurses per level of nesting; ours have three levels.
        raise ManifestError("not JSON this tool reads: nested too deeply") from None
    if not isinstance(doc, dict):
        raise ManifestError("not a JSON object")
    if doc.get("format_version") != FORMAT_VERSION:
        raise ManifestError(f"unsupported format_version {doc.get('format_version')!r} (this tool reads {FORMAT_VERSION})")
    for name in _INT_FIELDS:
        if not _is_int(doc.get(name)):
            raise ManifestError(f"field {name!r} must be an integer, got {doc.get(name)!r}")
    for name in ("topic", "topic_id", "uid", "tool_version"):
        if not isinstance(doc.get(name), str):
            raise ManifestError(f"field {name!r} must be a string")
    if not is_legal_topic(doc["topic"]):
        raise ManifestError(f"illegal topic name {doc['topic']!r}")
    _in_range(doc, "partition", 0, MAX_INT32)
    _in_range(doc, "base_offset", 0, MAX_OFFSET)
    _in_range(doc, "end_offset", doc["base_offset"], MAX_OFFSET)
    _in_range(doc, "size_bytes", 0, MAX_OBJECT_BYTES)
    _in_range(doc, "batch_count", 0, MAX_OFFSET)
    _in_range(doc, "record_count", 0, MAX_OFFSET)
    _in_range(doc, "max_timestamp", NO_TIMESTAMP, MAX_TIMESTAMP_MS)
    _in_range(doc, "created_at_ms", 0, MAX_TIMESTAMP_MS)
    last = doc.get("last_batch_offset")
    if last is not None and (not _is_int(last) or not doc["base_offset"] <= last <= doc["end_offset"]):
        raise ManifestError(f"last_batch_offset {last!r} outside the segment")
    if doc.get("broker_id") is not None:
        _in_range(doc, "broker_id", -MAX_INT32 - 1, MAX_INT32)
    if doc.get("leader_epoch") is not None:
        _in_range(doc, "leader_epoch", 0, MAX_INT32)
    epochs = doc.get("leader_epochs")
    if not isinstance(epochs, list) or not all(
            isinstance(e, list) and len(e) == 2 and all(_is_int(x) for x in e) for e in epochs):
        raise ManifestError("leader_epochs must be a list of [epoch, start offset]")
    # They go into the partition's leader-epoch checkpoint on a rollback: each a real epoch,
    # starting inside this segment, epochs and start offsets both rising (as the scan of the
    # segment found them).
    previous: list[int] | None = None
    for epoch, start in epochs:
        if not 0 <= epoch <= MAX_INT32 or not doc["base_offset"] <= start <= doc["end_offset"]:
            raise ManifestError(f"leader epoch [{epoch}, {start}] out of range (epochs 0..{MAX_INT32}, start "
                                f"offsets {doc['base_offset']}..{doc['end_offset']})")
        if previous is not None and (epoch <= previous[0] or start <= previous[1]):
            raise ManifestError(f"leader epochs must rise: [{epoch}, {start}] after {previous}")
        previous = [epoch, start]

    parsed_key = parse_key(manifest_key)
    if parsed_key is None or not parsed_key.is_manifest:
        raise ManifestError(f"{manifest_key!r} is not a manifest key")
    expected = (doc["topic"], doc["topic_id"], doc["partition"], doc["base_offset"], doc["uid"])
    found = (parsed_key.topic, parsed_key.topic_id, parsed_key.partition, parsed_key.base_offset, parsed_key.uid)
    if expected != found:
        raise ManifestError(f"manifest fields {expected} do not match its key {found}")
    keys = SegmentKeys(parsed_key.root, parsed_key.base_offset, parsed_key.uid)

    objects = doc.get("objects")
    if not isinstance(objects, list) or not objects:
        raise ManifestError("objects must be a non-empty list")
    entries, kinds = [], set()
    for raw in objects:
        if not isinstance(raw, dict):
            raise ManifestError("each object must be a JSON object")
        kind = raw.get("kind")
        if kind not in OBJECT_SUFFIXES or kind in kinds:
            raise ManifestError(f"unknown or repeated object kind {kind!r}")
        kinds.add(kind)
        if raw.get("key") != keys.object_key(kind):
            raise ManifestError(f"object key {raw.get('key')!r} is not this segment's {kind} key")
        if not _is_int(raw.get("size")) or not 0 <= raw["size"] <= MAX_OBJECT_BYTES:
            raise ManifestError(f"object {kind}: size must be an integer in 0..{MAX_OBJECT_BYTES}")
        crc = raw.get("crc32c")
        if not isinstance(crc, str) or len(crc) != 8 or any(c not in "0123456789abcdef" for c in crc):
            raise ManifestError(f"object {kind}: crc32c must be 8 lowercase hex digits")
        if not isinstance(raw.get("etag"), str):
            raise ManifestError(f"object {kind}: etag must be a string")
        entries.append(ObjectEntry(kind, raw["key"], raw["size"], crc, raw["etag"]))
    if "log" not in kinds:
        raise ManifestError("no log object")
    log_entry = next(e for e in entries if e.kind == "log")
    if log_entry.size != doc["size_bytes"]:
        raise ManifestError(f"log object size {log_entry.size} differs from size_bytes {doc['size_bytes']}")
    return SegmentManifest(
        format_version=doc["format_version"], topic=doc["topic"], topic_id=doc["topic_id"],
        partition=doc["partition"], base_offset=doc["base_offset"], end_offset=doc["end_offset"],
        last_batch_offset=last, size_bytes=doc["size_bytes"], batch_count=doc["batch_count"],
        record_count=doc["record_count"], max_timestamp=doc["max_timestamp"],
        leader_epochs=tuple((e[0], e[1]) for e in epochs), objects=tuple(entries), uid=doc["uid"],
        broker_id=doc.get("broker_id"), created_at_ms=doc["created_at_ms"], tool_version=doc["tool_version"],
        max_timestamp_source=_timestamp_source(doc.get("max_timestamp_source", "records")),
        leader_epoch=doc.get("leader_epoch"),
    )


def _in_range(doc: dict, name: str, low: int, high: int) -> None:
    if not _is_int(doc.get(name)) or not low <= doc[name] <= high:
        raise ManifestError(f"field {name!r} must be an integer in {low}..{high}, got {_shown(doc.get(name))}")


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "..."


TIMESTAMP_SOURCES = ("records", "file-mtime")


def _timestamp_source(value: object) -> str:
    if value not in TIMESTAMP_SOURCES:
        raise ManifestError(f"max_timestamp_source must be one of {', '.join(TIMESTAMP_SOURCES)}, got {value!r}")
    return str(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
