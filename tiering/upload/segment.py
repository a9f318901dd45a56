"""Offloading one segment: check it, upload its objects, verify them, write the manifest last.

Runs on a worker thread; touches no shared state but the store and the part buffers. The .log
is read once, part by part, into a pooled buffer, walked there (every batch checked) and the
same bytes sent with their CRC-32C for the store to verify; the manifest records a CRC-32C per
object (computed here from the local bytes) and the ETag the store reported, and is written
only after the store accepted every object (each PUT and part is checked for length and
checksum by the store; a multipart .log is also confirmed by a HEAD of its size), so a
manifest always describes complete, verified objects.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import crc32c

from tiering import __version__
from tiering.checksums import crc32c_combine
from tiering.files import NotRegularFile, open_regular, read_regular, read_regular_text
from tiering.kafka.batches import CorruptSegment, SegmentSummary
from tiering.kafka.walk import SegmentWalker
from tiering.kafka.checkpoints import (CheckpointError, format_leader_epoch_checkpoint,
                                       parse_leader_epoch_checkpoint)
from tiering.kafka.indexes import CorruptIndex, check_index
from tiering.kafka.logdir import LocalPartition, LocalSegment
from tiering.store.errors import ErrorClass, StoreError
from tiering.store.keys import OBJECT_SUFFIXES, PartitionPath, SegmentKeys
from tiering.store.manifest import (FORMAT_VERSION, MAX_TIMESTAMP_MS, ManifestError, ObjectEntry, SegmentManifest,
                                    fetch_manifest, parse_manifest)
from tiering.store.protocol import ObjectStore
from tiering.upload.buffers import PartBuffers

DEFAULT_PART_BYTES = 16 * 1024 * 1024
SMALL_OBJECT_CONCURRENCY = 3     # a segment's index files, snapshot and epochs, this many at once
WALK_WINDOW_BYTES = 1024 * 1024


class BadSegment(Exception):
    """The local segment is not fit to offload (corrupt, truncated, inconsistent); never retried
    while the file stays as it is. `read_error`: the disk failed to read it (counts towards the
    partition's circuit breaker)."""

    def __init__(self, message: str, read_error: bool = False):
        super().__init__(message)
        self.read_error = read_error


class UnsettledUpload(StoreError):
    """The manifest PUT failed and a HEAD could not tell whether it landed: the attempt may be
    visible. Its objects are kept (deleting them could break a visible segment) and the next
    attempt first settles this one (`previous`), so a segment is never visible twice."""

    def __init__(self, cause: StoreError, keys: SegmentKeys):
        super().__init__(cause.error_class, cause.operation, cause.key,
                         f"{cause.detail} (whether the manifest landed is not known yet)", cause.hint, cause.reason)
        self.keys = keys


@dataclass(frozen=True)
class UploadTarget:
    """Everything a worker needs to offload one segment; immutable, safe to hand to a thread."""

    segment: LocalSegment
    topic_id: str
    leader_epoch_path: Path
    broker_id: int | None
    keys: SegmentKeys
    leader_epoch: int | None = None     # ours when uploading as the partition's leader (cluster mode)


def target_for(segment: LocalSegment, partition: LocalPartition, prefix: str, hash_prefix: bool,
               broker_id: int | None, uid: str, leader_epoch: int | None = None) -> UploadTarget:
    assert partition.topic_id is not None
    path = PartitionPath(prefix, partition.topic, partition.topic_id, partition.partition, hash_prefix)
    return UploadTarget(segment, partition.topic_id, partition.leader_epoch_path, broker_id,
                        path.segment(segment.base_offset, uid), leader_epoch)


def offload_segment(target: UploadTarget, store: ObjectStore, now_ms: Callable[[], int],
                    previous: SegmentKeys | None = None, buffers: PartBuffers | None = None) -> SegmentManifest:
    """Upload one rolled segment and its manifest; raises BadSegment or StoreError.

    `previous`: an earlier attempt whose manifest may have landed (UnsettledUpload); when it
    did, that upload is the result and nothing is uploaded again. `buffers`: the process's
    part buffers (a private one of DEFAULT_PART_BYTES without)."""
    segment = target.segment
    assert segment.next_offset is not None, "the active segment is never offloaded"
    if previous is not None:
        adopted = settle_previous(store, previous)
        if adopted is not None:
            return adopted
    log_fd = _open(segment.log_path)
    try:
        return _offload(target, store, now_ms, log_fd, buffers or PartBuffers(1, DEFAULT_PART_BYTES))
    finally:
        os.close(log_fd)


def _offload(target: UploadTarget, store: ObjectStore, now_ms: Callable[[], int], log_fd: int,
             buffers: PartBuffers) -> SegmentManifest:
    segment, keys = target.segment, target.keys
    assert segment.next_offset is not None
    with _broker_file(segment.log_path):
        info = os.fstat(log_fd)
    size, mtime_ms = info.st_size, info.st_mtime_ns // 1_000_000
    small = _small_objects(target, size)
    walker = SegmentWalker(size, segment.base_offset, segment.next_offset)
    walked: list[SegmentSummary] = []

    def whole_crc() -> int:
        with _corrupt_is_bad(segment):
            walked.append(walker.finish())
        return walked[0].crc32c

    try:
        # The small objects go up beside the .log (a few at a time); the manifest, last.
        with ThreadPoolExecutor(SMALL_OBJECT_CONCURRENCY, thread_name_prefix="small-put") as small_puts:
            puts = [(kind, data, small_puts.submit(store.put_bytes, keys.object_key(kind), data))
                    for kind, data in small]
            with buffers.slab() as slab:
                etag = store.upload_parts(keys.object_key("log"), size,
                                          _parts(segment, log_fd, size, walker, slab), whole_crc)
            summary = walked[0]
            if size > len(slab):
                # A multipart upload: the store must hold every byte, and the ETag it lists
                # (the one `verify` compares) is not always the one its completion answered
                # (rclone's is the MD5 of the whole object). A single PUT's answer says both.
                log_info = store.head(keys.object_key("log"))
                if log_info is None or log_info.size != summary.size:
                    raise StoreError(ErrorClass.RETRYABLE, "verify", keys.object_key("log"),
                                     f"the store holds {log_info.size if log_info else 'no'} bytes, "
                                     f"expected {summary.size}")
                etag = log_info.etag
            entries = [ObjectEntry("log", keys.object_key("log"), summary.size, f"{summary.crc32c:08x}", etag)]
            entries += [ObjectEntry(kind, keys.object_key(kind), len(data), f"{crc32c.crc32c(data):08x}", put.result())
                        for kind, data, put in puts]
        # Kafka's LogSegment.largestTimestamp: the batches' largest timestamp, or the file's
        # mtime when no batch has one (-1: old produce requests up-converted); its remote segment
        # metadata takes the same value, so retention in both tiers goes by it.
        max_timestamp, source = ((summary.max_timestamp, "records") if summary.max_timestamp >= 0
                                 else (mtime_ms, "file-mtime"))
        manifest = SegmentManifest(
            format_version=FORMAT_VERSION, topic=segment.topic, topic_id=target.topic_id,
            partition=segment.partition, base_offset=segment.base_offset, end_offset=segment.next_offset - 1,
            last_batch_offset=summary.last_offset, size_bytes=summary.size, batch_count=summary.batch_count,
            # A producer's timestamp past year 9999 reads as "never expires by time" either way;
            # clamped, the manifest stays inside the range every reader accepts.
            record_count=summary.record_count, max_timestamp=min(max_timestamp, MAX_TIMESTAMP_MS),
            leader_epochs=summary.leader_epochs, objects=tuple(entries), uid=keys.uid,
            broker_id=target.broker_id, created_at_ms=now_ms(), tool_version=__version__,
            max_timestamp_source=source, leader_epoch=target.leader_epoch,
        )
        document = manifest.to_json()
        try:
            # What readers, rollback and a rebuilt journal will accept: a manifest they would
            # reject is never made visible (its segment would be remote in name only).
            parse_manifest(document, keys.manifest_key)
        except ManifestError as exc:
            raise BadSegment(f"its manifest would not be valid: {exc}") from None
        _put_manifest(store, keys, document)
    except UnsettledUpload:
        raise
    except BaseException:
        discard_attempt(store, keys)
        raise
    return manifest


def _parts(segment: LocalSegment, fd: int, size: int, walker: SegmentWalker,
           slab: memoryview) -> Iterator[tuple[memoryview, int]]:
    """The .log read once, part by part, into `slab` from the descriptor that was opened and
    checked (what is uploaded is exactly what was walked, whatever the name in the log dir
    points at meanwhile); each part walked before it is handed on."""
    offset = 0
    while offset < size:
        part = slab[:min(len(slab), size - offset)]
        with _broker_file(segment.log_path), _corrupt_is_bad(segment):
            filled = 0
            while filled < len(part):
                n = os.preadv(fd, [part[filled:]], offset + filled)
                if not n:
                    break
                filled += n
            # Walked a window at a time: the walk's per-batch lists stay small (1 KiB batches
            # fill a 16 MiB part with 16,000 of them); the part's CRC is combined from the windows'.
            crc = 0
            for at in range(0, filled, WALK_WINDOW_BYTES):
                window = part[at:min(filled, at + WALK_WINDOW_BYTES)]
                crc = crc32c_combine(crc, walker.feed(window), len(window))
            if filled < len(part):
                walker.finish()     # the file shrank while it was read: says so
        yield part, crc
        offset += len(part)


@contextmanager
def _corrupt_is_bad(segment: LocalSegment) -> Iterator[None]:
    try:
        yield
    except CorruptSegment as exc:
        raise BadSegment(f"corrupt segment {segment.log_path}: {exc}") from None


def _put_manifest(store: ObjectStore, keys: SegmentKeys, data: bytes) -> None:
    """The PUT that makes the segment visible. It can fail after the store stored it (the answer
    lost to a reset or a timeout, and botocore's retries then failing): ask the store before
    calling the attempt failed, or its cleanup would leave a manifest without its objects and
    the retry a second copy of the segment."""
    try:
        store.put_bytes(keys.manifest_key, data)
    except StoreError as exc:
        if not exc.retryable:
            raise
        try:
            landed = store.head(keys.manifest_key)
        except StoreError:
            raise UnsettledUpload(exc, keys) from None
        if landed is None or landed.size != len(data):
            raise
        # it landed: the upload is complete


def settle_previous(store: ObjectStore, keys: SegmentKeys) -> SegmentManifest | None:
    """An unsettled attempt: its manifest if it landed (raises UnsettledUpload while the store
    cannot say), otherwise its leftovers are removed and None returned."""
    try:
        landed = store.head(keys.manifest_key)
        if landed is not None:
            return fetch_manifest(store, keys.manifest_key)
    except StoreError as exc:
        raise UnsettledUpload(exc, keys) from None
    except ManifestError:
        # Ours but unreadable (cut short): it never described a complete upload; remove it first
        # so nobody sees it, then the objects.
        store.delete_objects([keys.manifest_key])
    discard_attempt(store, keys)
    return None


def discard_attempt(store: ObjectStore, keys: SegmentKeys) -> None:
    """Best effort: remove what a failed attempt left (it has no manifest, so nobody sees it).

    Whatever this misses (the store is down) is an orphan the cleanup finds later.
    """
    try:
        ours = {keys.object_key(kind) for kind in OBJECT_SUFFIXES}   # this attempt's keys exactly
        leftovers = [info.key for info in store.list_objects(keys.stem + ".") if info.key in ours]
        if leftovers:
            store.delete_objects(leftovers)
    except StoreError:
        pass


@contextmanager
def _broker_file(path: Path) -> Iterator[None]:
    """What goes wrong opening or reading one of the segment's files makes the segment bad
    (reported and skipped), never the daemon: a link, a FIFO, a file gone, a read error."""
    try:
        yield
    except NotRegularFile as exc:
        raise BadSegment(str(exc)) from None
    except FileNotFoundError:
        raise BadSegment(f"{path} disappeared before it was offloaded") from None
    except OSError as exc:
        raise BadSegment(f"cannot read {path}: {exc.strerror}", read_error=True) from None


def _open(path: Path) -> int:
    """A broker file, opened once as a regular file (never through a link, never a FIFO)."""
    with _broker_file(path):
        return open_regular(path)


def _small_objects(target: UploadTarget, log_size: int) -> list[tuple[str, bytes]]:
    """The index files, producer snapshot and leader-epoch entries, read and checked."""
    segment = target.segment
    assert segment.next_offset is not None
    objects = []
    for kind, path in segment.index_paths:
        data = _read(path)
        try:
            check_index(kind, data, log_size, segment.base_offset, segment.next_offset)
        except CorruptIndex as exc:
            raise BadSegment(f"corrupt index {path}: {exc}") from None
        objects.append((kind, data))
    if segment.snapshot_path is not None:
        try:
            objects.append(("snapshot", read_regular(segment.snapshot_path)))
        except FileNotFoundError:
            pass  # the broker cleans old snapshots; the segment is complete without it
        except NotRegularFile as exc:
            raise BadSegment(str(exc)) from None
        except OSError as exc:
            raise BadSegment(f"cannot read {segment.snapshot_path}: {exc.strerror}", read_error=True) from None
    try:
        entries = parse_leader_epoch_checkpoint(read_regular_text(target.leader_epoch_path))
        covered = [e for e in entries if e.start_offset <= segment.next_offset - 1]
        objects.append(("leader_epoch", format_leader_epoch_checkpoint(covered).encode()))
    except (OSError, UnicodeDecodeError, CheckpointError):
        pass  # the epochs seen in the batches are in the manifest either way
    return objects


def _read(path: Path) -> bytes:
    with _broker_file(path):
        return read_regular(path)
