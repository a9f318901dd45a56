"""The tiered reader: a partition's record batches from an offset on, across segments and tiers.

    reader = TieredReader(catalog, pool, window, executor)
    for record in reader.records("orders", 0, from_offset=1200, isolation="read_committed"):
        ...

The first segment is found from the catalog (local segments first, then the store's), and the
position inside it from the segment's offset index, as the broker does; batches are then read
in order through the buffer pool (remote objects and cold local segments) or plainly (the
active segment), each checked against its CRC-32C, up to the high watermark (read_uncommitted)
or the last stable offset (read_committed).
"""

from __future__ import annotations

import struct
import threading
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import crc32c

from tiering.errors import TieringError
from tiering.files import read_regular
from tiering.kafka.batches import CRC_START, CURRENT_MAGIC, HEADER_SIZE, LOG_OVERHEAD, BatchHeader, parse_header
from tiering.kafka.codecs import CodecError
from tiering.kafka.indexes import TXN_ENTRY
from tiering.kafka.logdir import LocalSegment
from tiering.kafka.names import segment_file_name
from tiering.kafka.records import Record, decode_batch
from tiering.read import offsets
from tiering.read.catalog import BadRemoteSegment, Catalog, OffsetOutOfRange, PartitionView, RemoteSegment
from tiering.read.cursor import HotFile, PooledCursor, Prefetcher
from tiering.read.meter import StoreMeter
from tiering.read.pool import BufferPool
from tiering.read.prefetch import PrefetchWindow
from tiering.read.sources import ChunkSource, ColdFile, RemoteObject, ShortRead
from tiering.read.visibility import READ_COMMITTED, READ_UNCOMMITTED, Visibility
from tiering.upload.ratelimit import RateLimiter

_LENGTH = struct.Struct(">qi")
# Stored `.txnindex` files kept by the endpoint's aborted-transaction lookups (most are empty).
_TXN_CACHE_ENTRIES = 1024


class CorruptRead(TieringError):
    """Bytes in either tier that are not the batches they should be."""


@dataclass(frozen=True)
class Batch:
    header: BatchHeader
    data: bytes              # the whole batch as stored, CRC checked


@dataclass(frozen=True)
class RawBatch:
    header: BatchHeader
    data: bytes              # the whole batch as stored, CRC checked
    tier: str                # where it was read: "store", "local" (a rolled segment) or "active"


@dataclass(frozen=True)
class Extent:
    earliest: int            # first offset either tier holds
    end: int                 # one past the last readable offset (the high watermark)


@dataclass(frozen=True)
class _Segment:
    base_offset: int                  # the first offset read from it (a remote piece's first)
    local: LocalSegment | None = None
    remote: RemoteSegment | None = None

    @property
    def file_base(self) -> int:
        """The base offset of the segment file the bytes come from (its index is relative to it)."""
        return self.remote.link_base if self.remote is not None else self.base_offset

    @property
    def last_offset(self) -> int | None:
        """The last offset read from it; None: up to its end."""
        return self.remote.last_offset if self.remote is not None else None

    @property
    def is_active(self) -> bool:
        return self.local is not None and self.local.is_active

    @property
    def tier(self) -> str:
        return "store" if self.remote is not None else "active" if self.is_active else "local"


class TieredReader:
    def __init__(self, catalog: Catalog, pool: BufferPool, window: PrefetchWindow, executor: Executor | None,
                 limiter: RateLimiter | None = None, cold_method: str | None = None,
                 meter: StoreMeter | None = None, monotonic: Callable[[], float] | None = None):
        self.catalog = catalog
        self.pool = pool
        self.window = window
        self.executor = executor
        self.limiter = limiter
        self.cold_method = cold_method
        self._txn_cache: dict[str, bytes] = {}
        self._txn_lock = threading.Lock()
        self.meter = meter      # the store's measured latency and bandwidth: adaptive prefetch
        # The clock a read's pace is measured on (prefetch sizes its lead from it).
        self.monotonic = monotonic or (meter.monotonic if meter is not None else time.monotonic)

    # -- what a partition holds -------------------------------------------------------------

    def extent(self, view: PartitionView) -> Extent | None:
        earliest = view.earliest
        if earliest is None:
            return None
        if view.local is not None and view.local.segments:
            end = view.high_watermark
            if end is None:  # no checkpoint yet: up to the end of the active segment
                end = _log_end(view.local.segments[-1])
        else:
            end = view.remote[-1].last_offset + 1
        return Extent(earliest, end) if end > earliest else None

    def check_offset(self, view: PartitionView, offset: int) -> Extent:
        extent = self.extent(view)
        name = f"{view.topic}-{view.partition}"
        if extent is None:
            raise OffsetOutOfRange(f"{name} holds no records in either tier")
        if not extent.earliest <= offset < extent.end:
            local = view.first_local_offset
            tiers = f" (local from {local})" if local is not None and local != extent.earliest else ""
            raise OffsetOutOfRange(f"offset {offset} is outside what {name} holds in either tier: valid offsets "
                                   f"are {extent.earliest}..{extent.end - 1}{tiers}; pass --from-offset in that range")
        return extent

    # -- reading ----------------------------------------------------------------------------

    def records(self, topic: str, partition: int, from_offset: int,
                isolation: str = READ_UNCOMMITTED) -> Iterator[Record]:
        for batch in self.batches(topic, partition, from_offset, isolation):
            for record in _decode(batch):
                if record.offset >= from_offset:
                    yield record

    def batches(self, topic: str, partition: int, from_offset: int,
                isolation: str = READ_UNCOMMITTED) -> Iterator[Batch]:
        """Batches holding offsets from `from_offset` on, in order, as a consumer at this
        isolation level sees them (no control batches; under read_committed no aborted
        transactions, and nothing at or above the last stable offset)."""
        view = self.catalog.partition(topic, partition)
        extent = self.check_offset(view, from_offset)
        segments = _plan(view, from_offset)
        if view.unusable and any(s.remote is not None for s in segments):
            raise BadRemoteSegment(view.unusable[0])
        bound = extent.end
        visibility = Visibility(isolation)
        if isolation == READ_COMMITTED:
            bound = self._last_stable_offset(view, extent.end)
            visibility.add_aborted(t for t in self._aborted(segments) if t.last_offset >= from_offset)
        walk = self._walk_plan(segments, from_offset, bound)
        try:
            for _segment, header, data, fresh in walk:
                control_key = _decode(Batch(header, data))[0].key if header.is_control else None
                shown = visibility.shows(header, control_key)
                if fresh and shown:
                    yield Batch(header, data)
        finally:
            walk.close()    # its sources and slab go now, not whenever the walk is collected

    def raw_batches(self, view: PartitionView, from_offset: int, bound: int) -> Iterator[RawBatch]:
        """Every batch from the one holding `from_offset` on, below `bound`, in order and
        exactly as stored: control batches and aborted transactions included (a Kafka-protocol
        endpoint sends them so, and the consumer filters). The caller checks the offset
        against the view's extent first; the prefetch runs across the segments, and the
        iterator may be kept between calls to continue the stream where it stopped."""
        segments = _plan(view, from_offset)
        if view.unusable and any(s.remote is not None for s in segments):
            raise BadRemoteSegment(view.unusable[0])
        walk = self._walk_plan(segments, from_offset, bound)
        try:
            for segment, header, data, fresh in walk:
                if fresh:
                    yield RawBatch(header, data, segment.tier)
        finally:
            walk.close()

    def _walk_plan(self, segments: list[_Segment], from_offset: int,
                   bound: int) -> Iterator[tuple[_Segment, BatchHeader, bytes, bool]]:
        """(segment, header, bytes, fresh) of every batch walked, in order; `fresh` is False for
        a batch ending below what was asked for or already yielded (from an overlapping piece)."""
        opened = _Sources(self, segments)
        prefetcher = Prefetcher(self.pool, self.executor, self.window, self.meter, self.monotonic)
        floor = from_offset   # a batch ending below it was shown already, or was not asked for
        try:
            for i, segment in enumerate(segments):
                if segment.base_offset >= bound:
                    return
                cursor, where = opened.cursor(i, prefetcher)
                finished = False
                # A chain piece serves its offsets only: the batches of its file below them are
                # the previous piece's (another upload's copy, the newer epoch's where they
                # differ), those above the next one's. Piece boundaries are batch boundaries.
                floor = max(floor, segment.base_offset)
                first = max(from_offset, segment.base_offset)
                last = segment.last_offset
                stop = bound if last is None else min(bound, last + 1)
                try:
                    start = self._start_position(segment, first) if first > segment.file_base else 0
                    for header, data in _walk(cursor, start, stop, segment.is_active, where):
                        if header.last_offset < floor:
                            yield segment, header, data, False
                            continue
                        floor = header.last_offset + 1
                        yield segment, header, data, True
                    finished = True
                finally:
                    cursor.close(finished)
        finally:
            opened.close()

    # -- helpers ------------------------------------------------------------------------------

    def remote_source(self, segment: RemoteSegment) -> RemoteObject:
        log = self.catalog.manifest(segment.manifest_key).object("log")
        assert log is not None  # parse_manifest guarantees a log object
        return RemoteObject(self.catalog.store, log.key, log.size, self.limiter, self.meter)

    def _start_position(self, segment: _Segment, offset: int) -> int:
        if segment.remote is not None:
            entry = self.catalog.manifest(segment.remote.manifest_key).object("index")
            index = self.catalog.store.get_bytes(entry.key, entry.size) if entry is not None and entry.size else b""
        else:
            path = dict(segment.local.index_paths).get("index")
            index = _read_quietly(path)
        return offsets.position_for(index, segment.file_base, offset)

    def _aborted(self, segments: list[_Segment]) -> list[offsets.AbortedTransaction]:
        found = []
        for segment in segments:
            if segment.remote is not None:
                entry = self.catalog.manifest(segment.remote.manifest_key).object("txnindex")
                data = self.catalog.store.get_bytes(entry.key, entry.size) if entry is not None and entry.size else b""
            else:
                data = _read_quietly(dict(segment.local.index_paths).get("txnindex"))
            last = segment.last_offset
            # A piece's file may hold another piece's offsets (an overlapping upload): only the
            # aborts whose marker this piece serves are its own.
            found += [t for t in offsets.aborted_transactions(data)
                      if segment.remote is None or segment.base_offset <= t.last_offset <= last]
        return found

    def aborted_between(self, view: PartitionView, from_offset: int, upper: int) -> list[offsets.AbortedTransaction]:
        """The aborted transactions a read_committed consumer needs for the batches from
        `from_offset` up to `upper` (one past the last offset returned): those whose abort
        marker is at or above `from_offset` and that began below `upper`. As Kafka's
        collectAbortedTransactions: the `.txnindex` of the segment holding `from_offset` and of
        the following ones, until an entry's last stable offset reaches `upper` (no transaction
        begun below it can be aborted later on)."""
        found = []
        for segment in _plan(view, from_offset):
            complete = False
            data = self._txnindex(segment)
            usable = len(data) - len(data) % TXN_ENTRY.size
            for _version, producer_id, first, last, stable in TXN_ENTRY.iter_unpack(data[:usable]):
                if segment.remote is not None and not segment.base_offset <= last <= segment.last_offset:
                    continue    # another piece's abort (an overlapping upload), as in _aborted
                if last >= from_offset and first < upper:
                    found.append(offsets.AbortedTransaction(producer_id, first, last))
                if stable >= upper:
                    complete = True
                    break
            if complete:
                break
        return found

    def _txnindex(self, segment: _Segment) -> bytes:
        if segment.remote is None:
            # By name, not from the scan: the active segment's index appears with its first abort.
            return _read_quietly(segment.local.log_path.with_suffix(".txnindex"))
        key = segment.remote.manifest_key
        with self._txn_lock:
            cached = self._txn_cache.get(key)
        if cached is not None:
            return cached
        entry = self.catalog.manifest(key).object("txnindex")
        data = self.catalog.store.get_bytes(entry.key, entry.size) if entry is not None and entry.size else b""
        with self._txn_lock:    # a stored index never changes: kept, the oldest dropped
            self._txn_cache[key] = data
            while len(self._txn_cache) > _TXN_CACHE_ENTRIES:
                self._txn_cache.pop(next(iter(self._txn_cache)))
        return data

    def _last_stable_offset(self, view: PartitionView, end: int) -> int:
        if view.local is None or not view.local.segments or not view.local.segments[-1].is_active:
            return end
        active = view.local.segments[-1]
        snapshot = _read_quietly(view.local.path / segment_file_name(active.base_offset, "snapshot"))
        hot = HotFile(active.log_path)
        try:
            return offsets.last_stable_offset(offsets.open_transactions(snapshot), _headers(hot), end)
        finally:
            hot.close()


class _Sources:
    """The chunk sources of a read's segments, opened when first needed (the next one early,
    so prefetch can run across the border) and closed at the end."""

    def __init__(self, reader: TieredReader, segments: list[_Segment]):
        self.reader = reader
        self.segments = segments
        self._open: dict[int, ChunkSource | HotFile] = {}
        self._asked: set[int] = set()

    def source(self, i: int) -> ChunkSource | HotFile:
        if i not in self._open:
            segment = self.segments[i]
            if segment.remote is not None:
                self._open[i] = self.reader.remote_source(segment.remote)
            elif segment.is_active:
                self._open[i] = HotFile(segment.local.log_path)
            else:
                self._open[i] = ColdFile(segment.local.log_path, self.reader.cold_method)
        return self._open[i]

    def cursor(self, i: int, prefetcher: Prefetcher) -> tuple[PooledCursor | HotFile, str]:
        segment = self.segments[i]
        try:
            source = self.source(i)
        except FileNotFoundError:
            raise CorruptRead(f"{segment.local.log_path}: the segment was deleted while being read (the "
                              "broker's retention); read again from a later offset") from None
        where = f"s3 object {source.key}" if isinstance(source, RemoteObject) else str(segment.local.log_path)
        if isinstance(source, HotFile):
            return source, where

        def following() -> list[ChunkSource]:
            """The segments after this one, as far as a full prefetch window reaches."""
            chunk = self.reader.pool.chunk_bytes
            wanted = max(1, self.reader.window.max_chunks)
            sources: list[ChunkSource] = []
            for j in range(i + 1, len(self.segments)):
                if wanted <= 0 or self.segments[j].is_active:
                    break
                if not self._manifest_ready(j):
                    # asked for in the background; ask for the rest of the window's too
                    for k in range(j + 1, min(len(self.segments), j + wanted)):
                        self._manifest_ready(k)
                    break
                try:
                    nxt = self.source(j)
                except (OSError, TieringError):
                    break  # the read itself will report it when it gets there
                sources.append(nxt)
                wanted -= -(-nxt.size // chunk)
            return sources
        return PooledCursor(source, self.reader.pool, prefetcher, following), where

    def _manifest_ready(self, i: int) -> bool:
        """Whether segment i's manifest is at hand; if not, fetch it in the prefetch threads,
        so a far store's round trip for it is not paid by the reader at the border."""
        remote = self.segments[i].remote
        if remote is None or self.reader.catalog.cached_manifest(remote.manifest_key) is not None:
            return True
        if self.reader.executor is None:
            return True
        if i not in self._asked:
            self._asked.add(i)
            self.reader.executor.submit(self._fetch_quietly, remote.manifest_key)
        return False

    def _fetch_quietly(self, key: str) -> None:
        try:
            self.reader.catalog.manifest(key)
        except Exception:  # the reader fetches it again itself and reports the problem
            pass

    def close(self) -> None:
        for source in self._open.values():
            if isinstance(source, (ColdFile, HotFile)):
                source.close()
        self._open.clear()


def _plan(view: PartitionView, offset: int) -> list[_Segment]:
    first_local = view.first_local_offset
    plan = []
    if first_local is None or offset < first_local:
        plan += [_Segment(r.base_offset, remote=r) for r in view.remote_from(offset)]
    plan += [_Segment(s.base_offset, local=s) for s in view.local_segments_from(offset)]
    return plan


def _walk(cursor: PooledCursor | HotFile, position: int, bound: int, active: bool,
          where: str) -> Iterator[tuple[BatchHeader, bytes]]:
    size = cursor.size
    while position + LOG_OVERHEAD <= size:
        try:
            base_offset, length = _LENGTH.unpack(cursor.read(position, LOG_OVERHEAD))
            if base_offset >= bound:
                return
            total = LOG_OVERHEAD + length
            if length < HEADER_SIZE - LOG_OVERHEAD or position + total > size:
                if active:
                    return  # the broker is still writing this batch
                raise CorruptRead(f"{where} at byte {position}: batch length {length} does not fit the "
                                  f"segment's {size} bytes")
            data = cursor.read(position, total)
        except ShortRead as exc:
            raise CorruptRead(f"{where}: {exc}") from None
        header = parse_header(data)
        if header.magic != CURRENT_MAGIC:
            raise CorruptRead(f"{where} at byte {position}: magic {header.magic}, expected {CURRENT_MAGIC}")
        if crc32c.crc32c(memoryview(data)[CRC_START:]) != header.crc:
            raise CorruptRead(f"{where} at byte {position}: CRC-32C mismatch in the batch at offset "
                              f"{header.base_offset}; run 'tiering verify'")
        yield header, data
        position += total


def _headers(hot: HotFile) -> Iterator[BatchHeader]:
    position = 0
    while position + HEADER_SIZE <= hot.size:
        header = parse_header(hot.read(position, HEADER_SIZE))
        if header.magic != CURRENT_MAGIC or header.batch_length < HEADER_SIZE - LOG_OVERHEAD:
            return
        yield header
        position += header.size


def _decode(batch: Batch) -> list[Record]:
    try:
        return decode_batch(batch.data)[1]
    except (CodecError, ValueError, IndexError, struct.error) as exc:
        raise CorruptRead(f"batch at offset {batch.header.base_offset}: cannot decode its records "
                          f"({exc})") from None


def _log_end(segment: LocalSegment) -> int:
    hot = HotFile(segment.log_path)
    try:
        last = None
        for header in _headers(hot):
            last = header.last_offset
        return segment.base_offset if last is None else last + 1
    finally:
        hot.close()


def _read_quietly(path: Path | None) -> bytes:
    """An index file's bytes; a missing one reads as empty (the walk starts at 0 then)."""
    if path is None:
        return b""
    try:
        return read_regular(path)     # never through a link, never a FIFO
    except FileNotFoundError:
        return b""


__all__ = ["Batch", "BadRemoteSegment", "CorruptRead", "Extent", "RawBatch", "TieredReader"]
