"""Which segments hold a partition's offsets, in both tiers: the reader's map.

Local segments come first: the broker's log dir says what is on disk (from its first segment
up to the high watermark). Below the first local segment the store's chain takes over: the
manifests of the partition from every broker (one LIST of the partition's key prefix, then the
manifests starting below the first local segment, fetched once and kept), resolved into
pieces (tiering.cluster.chain): each offset served by exactly one upload, the newer leader
epoch's copy where uploads overlap, whatever boundaries each broker's segments had. Only the
current topic id's keys are read, so a deleted and re-created topic never shows its
predecessor's records.
"""

from __future__ import annotations

import bisect
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable

from tiering.errors import TieringError, UsageError
from tiering.kafka.checkpoints import TopicPartition
from tiering.kafka.logdir import LocalPartition, LocalSegment, LogDirScan
from tiering.store.keys import KeyLayout, ParsedKey
from tiering.store.manifest import ManifestError, SegmentManifest, fetch_manifest
from tiering.read.remote_chain import RemoteChain, partition_manifest_keys
from tiering.store.protocol import ObjectInfo, ObjectStore


# (layout, partition root, first local offset) -> the manifests listed below that offset, as
# partition_manifest_keys answers: how a caller that caches the store's listing supplies it.
Listing = Callable[[KeyLayout, str, "int | None"], list[tuple[ParsedKey, ObjectInfo]]]


# Manifests fetched at once when a partition is first mapped: each is a round trip, and one
# after the other they kept a far store's reader from its first batch for seconds (32
# manifests at 50 ms: 2.4 s).
MANIFEST_FETCHES = 16


class UnknownPartition(UsageError):
    pass


class OffsetOutOfRange(UsageError):
    pass


class BadRemoteSegment(TieringError):
    """A manifest or object in the store that cannot be read as what it claims to be."""


@dataclass(frozen=True)
class RemoteSegment:
    """One piece of the chain: the offsets base_offset..last_offset, read from the upload
    whose manifest is at manifest_key and whose segment starts at link_base (at or below
    base_offset: a piece may start inside the segment it is read from)."""

    base_offset: int
    manifest_key: str
    last_offset: int
    link_base: int


@dataclass(frozen=True)
class PartitionView:
    topic: str
    partition: int
    topic_id: str
    local: LocalPartition | None
    high_watermark: int | None            # from the broker's checkpoint; None: not known
    remote: tuple[RemoteSegment, ...]     # the chain's pieces below the first local segment, in order
    unusable: tuple[str, ...] = ()        # manifests below it that do not validate (one line each)

    @property
    def first_local_offset(self) -> int | None:
        return self.local.segments[0].base_offset if self.local and self.local.segments else None

    @property
    def earliest(self) -> int | None:
        if self.remote:
            return self.remote[0].base_offset
        return self.first_local_offset

    def local_segments_from(self, offset: int) -> list[LocalSegment]:
        if self.local is None:
            return []
        segments = list(self.local.segments)
        bases = [s.base_offset for s in segments]
        start = max(0, bisect.bisect_right(bases, offset) - 1)
        return segments[start:]

    def remote_from(self, offset: int) -> list[RemoteSegment]:
        bases = [s.base_offset for s in self.remote]
        start = max(0, bisect.bisect_right(bases, offset) - 1)
        return list(self.remote[start:])


class Catalog:
    """Partition views and manifests, cached for the life of the reader (manifests are
    immutable; the log-dir scan is a snapshot taken when the catalog was made)."""

    def __init__(self, store: ObjectStore, scan: LogDirScan, prefix: str, hash_prefix: bool,
                 known_topic_ids: Callable[[str, int], Iterable[str]] = lambda topic, partition: ()):
        self.store = store
        self.scan = scan
        self.prefix = prefix
        self.hash_prefix = hash_prefix
        self._known_topic_ids = known_topic_ids
        self._manifests: dict[str, SegmentManifest] = {}
        self._lock = threading.Lock()

    def partition(self, topic: str, partition: int) -> PartitionView:
        local = next((p for p in self.scan.partitions if p.topic == topic and p.partition == partition), None)
        high_watermark = None
        if local is not None:
            state = self.scan.log_dir_state(local.log_dir)
            high_watermark = state.high_watermarks.get(TopicPartition(topic, partition))
        return self.view(topic, partition, local, high_watermark)

    def view(self, topic: str, partition: int, local: LocalPartition | None, high_watermark: int | None,
             listing: Listing | None = None) -> PartitionView:
        """The view of a partition from a local scan of it (None: not on this broker) and its
        high watermark; `listing` lists its manifests (default: one LIST of the store now)."""
        topic_id = local.topic_id if local is not None else None
        if topic_id is None:
            ids = sorted(set(self._known_topic_ids(topic, partition)))
            if len(ids) > 1:
                raise UnknownPartition(f"{topic}-{partition} is not on this broker and the journal knows "
                                       f"{len(ids)} incarnations of it ({', '.join(ids)}); cannot tell which to read")
            topic_id = ids[0] if ids else None
        if topic_id is None:
            where = ", ".join(str(s.path) for s in self.scan.log_dirs) or "no log dirs"
            raise UnknownPartition(f"unknown topic or partition {topic}-{partition}: not in the log dirs "
                                   f"({where}) and not in the journal; check the name with 'tiering status'")
        layout = KeyLayout(self.prefix, self.hash_prefix)
        root = layout.partition(topic, topic_id, partition).root
        first_local = local.segments[0].base_offset if local and local.segments else None
        # A link starting at or above the first local segment serves nothing the local copy
        # does not; one starting below it is cut where the local segments take over.
        if listing is None:
            listed = partition_manifest_keys(self.store, layout, root, below=first_local)
        else:
            listed = listing(layout, root, first_local)
        self._fetch_ahead([info.key for _, info in listed])
        usable, unusable = [], []
        for _, info in listed:
            try:
                usable.append((info.key, self.manifest(info.key)))
            except BadRemoteSegment as exc:
                # A read of local offsets does not need it; a read of the store's refuses
                # (without it the chain could show a gap or the wrong copy there).
                unusable.append(str(exc))
        chain = RemoteChain.of(usable)
        limit = first_local - 1 if first_local is not None else None
        remote = []
        for piece in chain.pieces:
            last = piece.last if limit is None else min(piece.last, limit)
            if piece.first <= last:
                remote.append(RemoteSegment(piece.first, piece.link.manifest_key, last, piece.link.base_offset))
        return PartitionView(topic, partition, topic_id, local, high_watermark, tuple(remote), tuple(unusable))

    def _fetch_ahead(self, keys: list[str]) -> None:
        """Fetch the manifests not cached yet in parallel; failures are left for the caller's
        own fetch of that key to report, in order."""
        missing = [k for k in keys if self.cached_manifest(k) is None]
        if len(missing) < 2:
            return

        def quietly(key: str) -> None:
            try:
                self.manifest(key)
            except Exception:  # the serial pass fetches it again and raises what it is
                pass
        with ThreadPoolExecutor(min(MANIFEST_FETCHES, len(missing)), thread_name_prefix="manifests") as pool:
            list(pool.map(quietly, missing))

    def cached_manifest(self, key: str) -> SegmentManifest | None:
        with self._lock:
            return self._manifests.get(key)

    def manifest(self, key: str) -> SegmentManifest:
        with self._lock:
            cached = self._manifests.get(key)
        if cached is not None:
            return cached
        try:
            manifest = fetch_manifest(self.store, key)
        except ManifestError as exc:
            raise BadRemoteSegment(f"{key}: unusable manifest ({exc}); run 'tiering verify'") from None
        with self._lock:
            self._manifests[key] = manifest
        return manifest
