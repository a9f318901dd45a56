"""What a partition holds and the raw batches that answer a Fetch, from both tiers.

    source = PartitionSource.from_config(config)
    result = source.fetch("orders", 0, offset=1200, max_bytes=1 << 20, read_committed=False)

Blocking, no protocol classes, safe to call from several threads at once. Batches are served
exactly as stored (control batches and aborted transactions included, as Kafka's broker sends
them: the consumer filters with the aborted list), through the tiered reader: the store's
objects and rolled local segments through its buffer pool with prefetch (cold local reads do
not fill the page cache), the active segment plainly, up to the high watermark.

What is cached, and for how long (Freshness):
- a partition's live state (its local segments, one scandir of its directory; the high
  watermark; the last stable offset) for `live_s` (0.5 s): a tailing consumer's fetches do not
  rescan anything in between. The high watermark comes from the cluster (ListOffsets latest,
  tiering.serve.watermarks) in cluster mode; in single mode from the broker's
  replication-offset-checkpoint, which the broker writes every
  replica.high.watermark.checkpoint.interval.ms (5 s by default): a consumer of the endpoint
  then sees new records up to that much later than on the broker. With no checkpoint yet, the
  active segment's log end.
- the store's listing of a partition's manifests for `store_s` (30 s), listed again at once
  when the first local offset moved (local retention deleted segments, so their offsets are
  now the store's) or when a read failed (remote retention deleted an object): the bucket is
  not listed on every fetch, and not at all while the local copy starts at offset 0. When the
  store cannot be listed, the last listing holds for another `store_s`. Manifests themselves
  are kept (immutable), and so is the chain resolved from them until the listing changes.
- an unknown partition for `live_s`: a client retrying a name that is nowhere does not rescan
  the log dirs and the journal on every request.
- the read streams of sequential consumers: a fetch that stops before the end leaves its
  stream (open sources, the prefetch under way, the slab it is on) under (topic, partition,
  next offset), so the next fetch from there continues it instead of planning and
  prefetching again. At most `cursors` streams (a quarter of the pool's slabs by default, so
  idle streams never hold more than that of the pool), the least recently used and those idle
  for `cursor_idle_s` closed.

One fetch never mixes tiers: it stops where the store's offsets end and the local ones begin
(as Kafka's broker returns one segment's bytes per partition and fetch), so `tier` says where
every byte of it came from.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

from tiering.clock import SystemClock
from tiering.errors import TieringError
from tiering.kafka.batches import ATTR_TIMESTAMP_TYPE
from tiering.kafka.checkpoints import TopicPartition
from tiering.kafka.indexes import TIME_ENTRY
from tiering.kafka.logdir import (LocalPartition, LogDirScan, LogDirState, read_log_dir_state, scan_log_dirs,
                                  scan_partition)
from tiering.kafka.records import decode_batch
from tiering.read.catalog import PartitionView, UnknownPartition
from tiering.read.reader import RawBatch, TieredReader
from tiering.read.remote_chain import partition_manifest_keys
from tiering.read.sources import ShortRead
from tiering.serve.active import ActiveScan
from tiering.serve.watermarks import HighWatermarks, KafkaHighWatermarks
from tiering.store.errors import StoreError
from tiering.store.keys import KeyLayout

# Kafka's error codes (org.apache.kafka.common.protocol.Errors) a source answers with.
NONE = 0
OFFSET_OUT_OF_RANGE = 1
UNKNOWN_TOPIC_OR_PARTITION = 3
KAFKA_STORAGE_ERROR = 56

# What a read of either tier raises when its bytes are gone or wrong (a segment deleted by
# retention meanwhile, an object missing, a CRC mismatch): the fetch is tried once more on a
# fresh view, then answered with KAFKA_STORAGE_ERROR.
_READ_ERRORS = (TieringError, OSError, ShortRead)

# Unknown partitions remembered at most (a client asking for many names does not grow it).
_UNKNOWN_KEPT = 10_000

# Kafka's legal topic names (Topic.validate): anything else is not a topic, and never a path.
_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")


@dataclass(frozen=True)
class AbortedTxn:
    producer_id: int
    first_offset: int


@dataclass(frozen=True)
class PartitionState:
    log_start_offset: int        # first offset in either tier
    high_watermark: int          # one past the last offset a consumer may read
    last_stable_offset: int      # read_committed bound (<= high_watermark)


@dataclass(frozen=True)
class FetchResult:
    error: int                   # Kafka error code: 0, 1 OFFSET_OUT_OF_RANGE, 3 UNKNOWN_TOPIC_OR_PARTITION, 56
    state: PartitionState | None
    records: bytes               # whole batches exactly as stored, from the batch holding the offset on
    aborted: tuple[AbortedTxn, ...]   # read_committed only: aborts overlapping the returned range
    tier: str                    # "store" | "local" | "active" | "" (no records)
    detail: str = ""             # with KAFKA_STORAGE_ERROR: what failed, for the log line


@dataclass(frozen=True)
class TopicInfo:
    name: str
    topic_id: uuid.UUID | None
    partitions: tuple[int, ...]


@dataclass(frozen=True)
class Freshness:
    live_s: float = 0.5          # a partition's segments, high watermark and LSO reused this long
    store_s: float = 30.0        # the store's listing of its manifests reused this long
    topics_s: float = 1.0        # topics() reused this long
    cursor_idle_s: float = 30.0  # a kept read stream closed after this long unused
    cursors: int | None = None   # read streams kept at most; None: a quarter of the pool's slabs


@dataclass
class _Live:
    view: PartitionView          # high_watermark set to the live one
    state: PartitionState
    at: float


@dataclass
class _Listed:
    first_local: int | None
    listed: list
    at: float


class _Stream:
    """A read stream: the reader's raw batches, with one batch pushed back."""

    def __init__(self, batches: Iterator[RawBatch], bound: int):
        self._batches = batches
        self.bound = bound
        self._pending: RawBatch | None = None
        self.ended = False
        self.last_used = 0.0

    def next(self) -> RawBatch | None:
        if self._pending is not None:
            batch, self._pending = self._pending, None
            return batch
        if self.ended:
            return None
        batch = next(self._batches, None)
        self.ended = batch is None
        return batch

    def push_back(self, batch: RawBatch) -> None:
        self._pending = batch

    def close(self) -> None:
        self._batches.close()


class PartitionSource:
    def __init__(self, reader: TieredReader, log_dirs: tuple[Path, ...], monotonic: Callable[[], float], *,
                 high_watermarks: HighWatermarks | None = None, freshness: Freshness = Freshness(),
                 on_close: Callable[[], None] = lambda: None):
        self.reader = reader
        self.log_dirs = tuple(Path(d) for d in log_dirs)
        self.high_watermarks = high_watermarks
        self.freshness = freshness
        self._monotonic = monotonic
        self._on_close = on_close
        self._lock = threading.Lock()
        # Refreshes of one partition run one at a time (a tailing crowd refreshes it once).
        self._stripes = tuple(threading.Lock() for _ in range(64))
        self._lives: dict[tuple[str, int], _Live] = {}
        self._scans: dict[tuple[str, int], ActiveScan] = {}
        self._listings: dict[str, _Listed] = {}
        # (topic, partition) -> (the listing, first local offset, the view) a view was made from
        self._chains: dict[tuple[str, int], tuple[_Listed | None, int | None, PartitionView]] = {}
        self._checkpoints: dict[Path, tuple[float, LogDirState]] = {}
        # Partitions found nowhere, and when: looking again (a scandir per log dir, the journal)
        # waits as long as a known partition's refresh does.
        self._unknown: dict[tuple[str, int], float] = {}
        self._topics: tuple[float, dict[str, TopicInfo]] | None = None
        self._cursors: OrderedDict[tuple[str, int, int], _Stream] = OrderedDict()
        cursors = freshness.cursors
        self._max_cursors = reader.pool.slab_count // 4 if cursors is None else cursors

    @classmethod
    def from_config(cls, config, store=None, *, clock=None, high_watermarks: HighWatermarks | None = None,
                    freshness: Freshness = Freshness()) -> PartitionSource:
        """A source with its own pool, prefetch threads and (unless given) store client, as
        `tiering cat`'s reader has; `close()` releases them. In cluster mode the high watermark
        is asked of the cluster (unless `high_watermarks` is given)."""
        from tiering.wiring import build_reader
        clock = clock or SystemClock()
        log_dirs = tuple(Path(d) for d in config.kafka.log_dirs)
        # The catalog's own scan is not used (each partition is scanned afresh, see _refresh);
        # its log dirs name where a partition was looked for. Connections to spare beyond the
        # prefetch threads: the fetches' own manifest and index GETs.
        reader, release = build_reader(config, LogDirScan(tuple(LogDirState(d) for d in log_dirs), (), ()),
                                       store=store, clock=clock, thread_prefix="serve-prefetch", spare_connections=8)
        if high_watermarks is None and config.kafka.bootstrap_servers:
            high_watermarks = KafkaHighWatermarks(config.kafka.bootstrap_servers, clock.monotonic)
        return cls(reader, log_dirs, clock.monotonic, high_watermarks=high_watermarks, freshness=freshness,
                   on_close=release)

    # -- the interface --------------------------------------------------------------------------

    def topics(self) -> dict[str, TopicInfo]:
        """The partitions in the broker's log dirs (a partition only in the store, of a topic
        the broker no longer has, is not listed; it can still be fetched by name when the
        journal knows its topic id)."""
        now = self._monotonic()
        with self._lock:
            if self._topics is not None and now - self._topics[0] < self.freshness.topics_s:
                return dict(self._topics[1])
        found: dict[str, tuple[uuid.UUID | None, set[int]]] = {}
        for partition in scan_log_dirs(self.log_dirs).partitions:
            topic_id, partitions = found.get(partition.topic, (None, set()))
            partitions.add(partition.partition)
            found[partition.topic] = (topic_id or _uuid(partition.topic_id), partitions)
        topics = {name: TopicInfo(name, topic_id, tuple(sorted(partitions)))
                  for name, (topic_id, partitions) in sorted(found.items())}
        with self._lock:
            self._topics = (now, topics)
        return dict(topics)

    def state(self, topic: str, partition: int) -> PartitionState | None:
        """None: no such partition here. Raises TieringError (or OSError) when its files or
        the store cannot be read."""
        live = self._live(topic, partition)
        return None if live is None else live.state

    def fetch(self, topic: str, partition: int, offset: int, max_bytes: int, read_committed: bool) -> FetchResult:
        try:
            return self._fetch(topic, partition, offset, max_bytes, read_committed, fresh=False)
        except _READ_ERRORS:
            # Likely a view older than what retention did meanwhile: once more on a fresh one.
            self._invalidate(topic, partition)
        try:
            return self._fetch(topic, partition, offset, max_bytes, read_committed, fresh=True)
        except _READ_ERRORS as exc:
            return FetchResult(KAFKA_STORAGE_ERROR, None, b"", (), "", detail=f"{topic}-{partition}: {exc}")

    def offset_for_timestamp(self, topic: str, partition: int, timestamp_ms: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record, in offset order, whose timestamp is at or
        after `timestamp_ms`, below the high watermark, as Kafka's fetchOffsetByTimestamp
        finds it: the first segment whose largest timestamp reaches it (the manifest's for
        the store's, the time index's last entry for rolled local ones), from its time index's
        entry at or below it, the first batch whose max timestamp reaches it, the first record
        in it that does. None: no such record. `timestamp_ms` >= 0 (the special values -1
        latest, -2 earliest are answered from state())."""
        if timestamp_ms < 0:
            raise ValueError(f"timestamp {timestamp_ms}: the special ListOffsets values are the caller's")
        live = self._live(topic, partition)
        if live is None:
            return None
        state = live.state
        start = self._timestamp_start(live.view, timestamp_ms)
        if start is None or state.high_watermark <= state.log_start_offset:
            return None
        start = min(max(start, state.log_start_offset), state.high_watermark - 1)
        batches = self.reader.raw_batches(live.view, start, state.high_watermark)
        try:
            for batch in batches:
                if batch.header.max_timestamp < timestamp_ms:
                    continue
                log_append_time = bool(batch.header.attributes & ATTR_TIMESTAMP_TYPE)
                for record in decode_batch(batch.data)[1]:
                    timestamp = batch.header.max_timestamp if log_append_time else record.timestamp
                    if timestamp >= timestamp_ms:
                        return (record.offset, timestamp) if record.offset < state.high_watermark else None
            return None
        finally:
            batches.close()

    def close(self) -> None:
        with self._lock:
            streams = list(self._cursors.values())
            self._cursors.clear()
        for stream in streams:
            stream.close()
        if self.high_watermarks is not None:
            self.high_watermarks.close()
        self._on_close()

    # -- fetching -------------------------------------------------------------------------------

    def _fetch(self, topic: str, partition: int, offset: int, max_bytes: int, read_committed: bool,
               fresh: bool) -> FetchResult:
        live = self._live(topic, partition, force=fresh)
        if live is None:
            return FetchResult(UNKNOWN_TOPIC_OR_PARTITION, None, b"", (), "")
        state = live.state
        if not state.log_start_offset <= offset <= state.high_watermark:
            return FetchResult(OFFSET_OUT_OF_RANGE, state, b"", (), "")
        bound = state.last_stable_offset if read_committed else state.high_watermark
        if offset >= bound:
            # At the live end (a tailing consumer long-polls here), or above the LSO under
            # read_committed: nothing yet, and no error.
            return FetchResult(NONE, state, b"", (), "")
        records, tier, upper = self._collect(topic, partition, live.view, offset, bound, max_bytes, fresh)
        aborted: tuple[AbortedTxn, ...] = ()
        if read_committed and records:
            aborted = tuple(AbortedTxn(t.producer_id, t.first_offset)
                            for t in self.reader.aborted_between(live.view, offset, upper))
        return FetchResult(NONE, state, records, aborted, tier)

    def _collect(self, topic: str, partition: int, view: PartitionView, offset: int, bound: int,
                 max_bytes: int, fresh: bool) -> tuple[bytes, str, int]:
        """Whole batches from the one holding `offset`, up to `max_bytes` (at least one), of
        one tier; with the tier and the offset after the last one."""
        stream = None if fresh else self._take_stream((topic, partition, offset), bound)
        reused = stream is not None
        if stream is None:
            stream = _Stream(self.reader.raw_batches(view, offset, bound), bound)
        out: list[bytes] = []
        size, tier, next_offset = 0, "", offset
        try:
            while True:
                batch = stream.next()
                if batch is None:
                    if reused and next_offset < bound:
                        # A kept stream was planned on an older view (before a roll, or up to
                        # a lower bound): the rest from a plan of the current one.
                        stream.close()
                        stream, reused = _Stream(self.reader.raw_batches(view, next_offset, bound), bound), False
                        continue
                    break
                if out and (batch.tier != tier or size + len(batch.data) > max_bytes):
                    stream.push_back(batch)
                    break
                out.append(batch.data)
                size += len(batch.data)
                tier = batch.tier
                next_offset = batch.header.last_offset + 1
                if size >= max_bytes:
                    break
        except _READ_ERRORS:
            stream.close()
            if not out:
                raise
            return b"".join(out), tier, next_offset   # what was read; the next fetch meets the error
        if stream.ended or not out:
            stream.close()
        else:
            self._keep_stream((topic, partition, next_offset), stream)
        return b"".join(out), tier, next_offset

    def _take_stream(self, key: tuple[str, int, int], bound: int) -> _Stream | None:
        with self._lock:
            stream = self._cursors.pop(key, None)
        if stream is not None and stream.bound > bound:
            stream.close()    # planned up to a bound that has gone down since: not to be served
            return None
        return stream

    def _keep_stream(self, key: tuple[str, int, int], stream: _Stream) -> None:
        now = self._monotonic()
        closing = []
        with self._lock:
            stream.last_used = now
            if key in self._cursors:
                closing.append(self._cursors.pop(key))
            self._cursors[key] = stream
            for other, kept in list(self._cursors.items()):
                if now - kept.last_used > self.freshness.cursor_idle_s:
                    closing.append(self._cursors.pop(other))
            while len(self._cursors) > self._max_cursors:
                closing.append(self._cursors.popitem(last=False)[1])
        for old in closing:
            old.close()

    # -- a partition's live state ---------------------------------------------------------------

    def _live(self, topic: str, partition: int, force: bool = False) -> _Live | None:
        if not isinstance(topic, str) or not _TOPIC_NAME.fullmatch(topic) or topic in (".", "..") \
                or not isinstance(partition, int) or partition < 0:
            return None
        key = (topic, partition)
        with self._lock:
            live = self._lives.get(key)
            unknown_at = self._unknown.get(key)
        if live is not None and not force and self._monotonic() - live.at < self.freshness.live_s:
            return live
        if unknown_at is not None and not force and self._monotonic() - unknown_at < self.freshness.live_s:
            return None    # asked again at once (a client retrying): not looked for again yet
        with self._stripes[hash(key) % len(self._stripes)]:
            with self._lock:
                live = self._lives.get(key)
            if live is not None and not force and self._monotonic() - live.at < self.freshness.live_s:
                return live    # refreshed by another thread meanwhile
            live = self._refresh(topic, partition)
            with self._lock:
                if live is None:
                    self._lives.pop(key, None)
                    self._scans.pop(key, None)
                    if len(self._unknown) >= _UNKNOWN_KEPT:
                        self._unknown.clear()
                    self._unknown[key] = self._monotonic()
                else:
                    self._lives[key] = live
                    self._unknown.pop(key, None)
            return live

    def _refresh(self, topic: str, partition: int) -> _Live | None:
        now = self._monotonic()
        local, checkpoint = self._local(topic, partition)
        view = self._view_as_before(topic, partition, local)
        if view is None:
            try:
                view = self.reader.catalog.view(topic, partition, local, None, listing=self._listing)
            except UnknownPartition:
                return None
            first_local = local.segments[0].base_offset if local is not None and local.segments else None
            with self._lock:
                listed = self._listings.get(self._root(topic, view.topic_id, partition))
                self._chains[(topic, partition)] = (listed, first_local, view)
        high_watermark = self.high_watermarks.latest(topic, partition) if self.high_watermarks is not None else None
        if high_watermark is None:
            high_watermark = checkpoint
        scan = None
        if local is not None and local.segments and local.segments[-1].is_active:
            scan = self._active_scan((topic, partition), local)
            scan.refresh(high_watermark)
            if high_watermark is None:
                high_watermark = scan.log_end   # no checkpoint yet: up to the log end
        view = replace(view, high_watermark=high_watermark)
        extent = self.reader.extent(view)
        if extent is None:
            base = view.earliest if view.earliest is not None else (high_watermark or 0)
            return _Live(view, PartitionState(base, base, base), now)
        stable = extent.end if scan is None else scan.last_stable_offset(extent.end)
        return _Live(view, PartitionState(extent.earliest, extent.end, max(extent.earliest, stable)), now)

    def _view_as_before(self, topic: str, partition: int, local: LocalPartition | None) -> PartitionView | None:
        """The last view's store part with this scan's local part, when the store's listing it
        was made from is still the one kept and the first local offset has not moved: a chain
        of thousands of manifests is not resolved again every refresh."""
        if local is None or local.topic_id is None:
            return None
        first_local = local.segments[0].base_offset if local.segments else None
        root = self._root(topic, local.topic_id, partition)
        now = self._monotonic()
        with self._lock:
            chain = self._chains.get((topic, partition))
            listed = self._listings.get(root)
        if (chain is None or listed is None or chain[0] is not listed or chain[1] != first_local
                or chain[2].topic_id != local.topic_id or now - listed.at >= self.freshness.store_s):
            return None
        return replace(chain[2], local=local, high_watermark=None)

    def _root(self, topic: str, topic_id: str, partition: int) -> str:
        return KeyLayout(self.reader.catalog.prefix, self.reader.catalog.hash_prefix).partition(
            topic, topic_id, partition).root

    def _local(self, topic: str, partition: int) -> tuple[LocalPartition | None, int | None]:
        """The partition's directory scanned now (one scandir), and its checkpointed HW."""
        for root in self.log_dirs:
            path = root / f"{topic}-{partition}"
            if path.is_dir() and not path.is_symlink():
                local = scan_partition(root, path, topic, partition, [])
                return local, self._checkpoint(root).high_watermarks.get(TopicPartition(topic, partition))
        return None, None

    def _checkpoint(self, root: Path) -> LogDirState:
        now = self._monotonic()
        with self._lock:
            cached = self._checkpoints.get(root)
        if cached is not None and now - cached[0] < self.freshness.live_s:
            return cached[1]
        state = read_log_dir_state(root, [])
        with self._lock:
            self._checkpoints[root] = (now, state)
        return state

    def _active_scan(self, key: tuple[str, int], local: LocalPartition) -> ActiveScan:
        active = local.segments[-1]
        with self._lock:
            scan = self._scans.get(key)
        if scan is None or scan.base_offset != active.base_offset or scan.log_path != active.log_path:
            scan = ActiveScan.start(active.log_path, active.base_offset)
            with self._lock:
                self._scans[key] = scan
        return scan

    def _listing(self, layout: KeyLayout, root: str, first_local: int | None) -> list:
        now = self._monotonic()
        with self._lock:
            cached = self._listings.get(root)
        if cached is not None and cached.first_local == first_local and now - cached.at < self.freshness.store_s:
            return cached.listed
        if first_local == 0:
            listed = []    # the local copy starts at 0: nothing of the store's is read (no LIST)
        else:
            try:
                listed = partition_manifest_keys(self.reader.catalog.store, layout, root, below=first_local)
            except StoreError:
                if cached is None or cached.first_local != first_local:
                    raise
                # The store is unreachable: the last listing holds (its objects are read only when
                # a fetch reaches them), asked again after another store_s, not on every refresh.
                listed = cached.listed
        with self._lock:
            self._listings[root] = _Listed(first_local, listed, now)
        return listed

    def _invalidate(self, topic: str, partition: int) -> None:
        with self._lock:
            live = self._lives.pop((topic, partition), None)
            self._chains.pop((topic, partition), None)
            listed = self._listings.get(self._root(topic, live.view.topic_id, partition)) if live else None
            if listed is not None:
                listed.at = float("-inf")    # listed again at the next refresh (kept if that fails)
            for key in [k for k in self._cursors if k[:2] == (topic, partition)]:
                self._cursors.pop(key).close()

    # -- timestamps -----------------------------------------------------------------------------

    def _timestamp_start(self, view: PartitionView, timestamp_ms: int) -> int | None:
        """Where the walk for the first record at or after `timestamp_ms` starts: in the first
        segment whose largest timestamp reaches it, at its time index's last entry at or
        below it; None when no segment reaches it."""
        catalog = self.reader.catalog
        for piece in view.remote:
            manifest = catalog.manifest(piece.manifest_key)
            if manifest.max_timestamp < timestamp_ms:
                continue
            entry = manifest.object("timeindex")
            index = catalog.store.get_bytes(entry.key, entry.size) if entry is not None and entry.size else b""
            return max(piece.base_offset, _time_lookup(index, manifest.base_offset, timestamp_ms))
        segments = view.local.segments if view.local is not None else ()
        for segment in segments:
            path = dict(segment.index_paths).get("timeindex") or segment.log_path.with_suffix(".timeindex")
            try:
                index = path.read_bytes() if not path.is_symlink() else b""
            except FileNotFoundError:
                index = b""
            entries = _time_entries(index)
            if not segment.is_active and entries and entries[-1][0] < timestamp_ms:
                continue    # a rolled segment's last time-index entry is its largest timestamp
            return _time_lookup(index, segment.base_offset, timestamp_ms)
        return None


def _time_entries(index: bytes) -> list[tuple[int, int]]:
    """(timestamp, relative offset) entries; the active segment's preallocated zero tail (and
    anything that does not rise after it) is not an entry."""
    usable = len(index) - len(index) % TIME_ENTRY.size
    entries: list[tuple[int, int]] = []
    for timestamp, relative in TIME_ENTRY.iter_unpack(index[:usable]):
        if entries and (relative <= entries[-1][1] or timestamp <= entries[-1][0]):
            break
        if not entries and timestamp == 0 and relative == 0:
            break
        entries.append((timestamp, relative))
    return entries


def _time_lookup(index: bytes, base_offset: int, timestamp_ms: int) -> int:
    """Kafka's TimeIndex.lookup: the offset of the last entry at or below the timestamp (the
    segment's base offset when none is)."""
    offset = base_offset
    for timestamp, relative in _time_entries(index):
        if timestamp > timestamp_ms:
            break
        offset = base_offset + relative
    return offset


def _uuid(topic_id: str | None) -> uuid.UUID | None:
    """partition.metadata's topic id (Kafka's Uuid.toString: URL-safe base64, unpadded)."""
    if not topic_id:
        return None
    try:
        raw = base64.urlsafe_b64decode(topic_id + "=" * (-len(topic_id) % 4))
    except (binascii.Error, ValueError):
        return None
    return uuid.UUID(bytes=raw) if len(raw) == 16 else None


__all__ = ["AbortedTxn", "FetchResult", "Freshness", "PartitionSource", "PartitionState", "TopicInfo",
           "KAFKA_STORAGE_ERROR", "NONE", "OFFSET_OUT_OF_RANGE", "UNKNOWN_TOPIC_OR_PARTITION"]
