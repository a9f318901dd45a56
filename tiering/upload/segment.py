"""Offloading one segment: check it, upload its objects, verify them, write the manifest last.

Runs on a worker thread; touches no shared state but the store. The segment's bytes go up
unchanged; the manifest records a CRC-32C per object (computed here from the local bytes)
and the size and ETag the store reported, and is written only after the store accepted every
object (a small PUT is checked for length and checksum by the store; the multipart .log is
also confirmed by a HEAD of its size), so a manifest always describes complete, verified objects.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import crc32c

from tiering import __version__
from tiering.files import NotRegularFile, open_regular, read_regular, read_regular_text
from tiering.kafka.batches import CorruptSegment, SegmentSummary, scan_segment
from tiering.kafka.checkpoints import (CheckpointError, format_leader_epoch_checkpoint,
                                       parse_leader_epoch_checkpoint)
from tiering.kafka.indexes import CorruptIndex, check_index
from tiering.kafka.logdir import LocalPartition, LocalSegment
from tiering.store.errors import ErrorClass, StoreError
from tiering.store.keys import OBJECT_SUFFIXES, PartitionPath, SegmentKeys
from tiering.store.manifest import (FORMAT_VERSION, MAX_TIMESTAMP_MS, ManifestError, ObjectEntry, SegmentManifest,
                                    fetch_manifest, parse_manifest)
from tiering.store.protocol import ObjectStore


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
                    previous: SegmentKeys | None = None) -> SegmentManifest:
    """Upload one rolled segment and its manifest; raises BadSegment or StoreError.

    `previous`: an earlier attempt whose manifest may have landed (UnsettledUpload); when it
    did, that upload is the result and nothing is uploaded again."""
    segment = target.segment
    assert segment.next_offset is not None, "the active segment is never offloaded"
    if previous is not None:
        adopted = settle_previous(store, previous)
        if adopted is not None:
            return adopted
    log_fd = _open(segment.log_path)
    try:
        return _offload(target, store, now_ms, log_fd)
    finally:
        os.close(log_fd)


def _offload(target: UploadTarget, store: ObjectStore, now_ms: Callable[[], int], log_fd: int) -> SegmentManifest:
    segment, keys = target.segment, target.keys
    assert segment.next_offset is not None
    summary, mtime_ms = _check_log(segment, log_fd)
    small = _small_objects(target, summary)
    # Kafka's LogSegment.largestTimestamp: the batches' largest timestamp, or the file's
    # mtime when no batch has one (-1: old produce requests up-converted); its remote segment
    # metadata takes the same value, so retention in both tiers goes by it.
    max_timestamp, source = (summary.max_timestamp, "records") if summary.max_timestamp >= 0 else (mtime_ms, "file-mtime")

    try:
        store.upload_files([(keys.object_key("log"), _by_descriptor(log_fd, segment.log_path))])
        log_info = store.head(keys.object_key("log"))
        if log_info is None or log_info.size != summary.size:
            raise StoreError(ErrorClass.RETRYABLE, "verify", keys.object_key("log"),
                             f"the store holds {log_info.size if log_info else 'no'} bytes, expected {summary.size}")
        entries = [ObjectEntry("log", log_info.key, summary.size, f"{summary.crc32c:08x}", log_info.etag)]
        for kind, data in small:
            etag = store.put_bytes(keys.object_key(kind), data)
            entries.append(ObjectEntry(kind, keys.object_key(kind), len(data), f"{crc32c.crc32c(data):08x}", etag))
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


def _by_descriptor(fd: int, path: Path) -> Path:
    """The name the store adapter opens the .log by: the descriptor we opened and checked
    (`/proc/self/fd/N` reopens that very file, whatever the name in the log dir is now), so
    what is uploaded is what was walked, never what a link swapped in meanwhile points at.
    The adapter streams by name (part by part, flat memory); without /proc, the path itself,
    checked again to be the same file."""
    by_fd = Path(f"/proc/self/fd/{fd}")
    try:
        if os.path.samestat(os.stat(by_fd), os.fstat(fd)):
            return by_fd
    except OSError:
        pass
    try:
        named = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        raise BadSegment(f"{path} disappeared before it was offloaded") from None
    if not os.path.samestat(named, os.fstat(fd)):
        raise BadSegment(f"{path} was replaced while it was offloaded; it is looked at again at the next scan")
    return path


def _check_log(segment: LocalSegment, fd: int) -> tuple[SegmentSummary, int]:
    """The segment's summary and the file's mtime in ms (Java's File.lastModified) at the scan."""
    assert segment.next_offset is not None
    with _broker_file(segment.log_path):
        try:
            with os.fdopen(os.dup(fd), "rb", buffering=0) as stream:
                info = os.fstat(stream.fileno())
                return scan_segment(stream, info.st_size, segment.base_offset, segment.next_offset), \
                    info.st_mtime_ns // 1_000_000
        except CorruptSegment as exc:
            raise BadSegment(f"corrupt segment {segment.log_path}: {exc}") from None


def _small_objects(target: UploadTarget, summary: SegmentSummary) -> list[tuple[str, bytes]]:
    """The index files, producer snapshot and leader-epoch entries, read and checked."""
    segment = target.segment
    assert segment.next_offset is not None
    objects = []
    for kind, path in segment.index_paths:
        data = _read(path)
        try:
            check_index(kind, data, summary.size, segment.base_offset, segment.next_offset)
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
