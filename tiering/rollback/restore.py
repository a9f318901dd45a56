"""Restoring one partition's segments from the store into its directory, and putting its
checkpoints right afterwards.

Each file is written under a temporary name (`<name>.restore.tmp`, which neither the broker
nor our scanner takes for a segment), fsynced, checked against the manifest's CRC-32C, and
only then renamed into place: index files first, the `.log` last, with the directory fsynced
in between, so a segment's `.log` is never visible before its indexes and no file is ever
visible half-written. A file already in place with the manifest's size and checksum (an
interrupted run got that far) is kept, not downloaded again. Segments go newest first, so
what is restored always joins the local log without a gap, wherever a run stops.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tiering.errors import TieringError
from tiering.files import (LOCAL_DISK_ERRNOS, drop_cached_pages, file_crc32c, fsync_dir, give_to_owner,
                           replace_file)
from tiering.kafka.checkpoints import (CheckpointError, EpochEntry, TopicPartition, format_leader_epoch_checkpoint,
                                       parse_leader_epoch_checkpoint, parse_offset_checkpoint,
                                       rewrite_offset_checkpoint)
from tiering.kafka.logdir import LOG_START_FILE
from tiering.rollback.plan import PartitionPlan, RestoreFile, SegmentRestore, merge_leader_epochs
from tiering.rollback.progress import Progress
from tiering.store.errors import ErrorClass, StoreError
from tiering.store.manifest import ObjectEntry, SegmentManifest
from tiering.store.protocol import ObjectStore

TEMP_SUFFIX = ".restore.tmp"
_OUR_TEMP = re.compile(r"^\d{20}\.(log|index|timeindex|txnindex|snapshot)" + re.escape(TEMP_SUFFIX) + "$")
DOWNLOAD_ATTEMPTS = 2     # a checksum mismatch is retried once (a bad transfer), then reported


class _Stopped(Exception):
    """The run is being interrupted; the segment in progress is abandoned cleanly."""


class _Failed(Exception):
    pass


@dataclass
class PartitionResult:
    plan: PartitionPlan
    restored: list[SegmentManifest] = field(default_factory=list)   # this run, verified and in place
    bytes_written: int = 0
    files_kept: int = 0            # already in place and verified: not downloaded again
    failure: str | None = None     # one line for the operator
    disk_full: bool = False        # the disk refused a write (every partition stops: they share it)
    interrupted: bool = False

    @property
    def first_offset(self) -> int | None:
        """The first offset on disk now."""
        if self.restored:
            return min(m.base_offset for m in self.restored)
        return self.plan.local_first


class PartitionRestorer:
    def __init__(self, store: ObjectStore, progress: Progress, log: Any, stop: threading.Event):
        self.store = store
        self.progress = progress
        self.log = log
        self.stop = stop

    def restore(self, plan: PartitionPlan) -> PartitionResult:
        """Restore what the plan says, newest first, until done, a failure, or a stop."""
        result = PartitionResult(plan)
        log = self.log.bind(topic=plan.topic, partition=plan.partition)
        try:
            remove_temporary_files(plan.path)
            for segment in plan.restore:
                if self.stop.is_set():
                    raise _Stopped()
                self._segment(plan.path, segment, result)
                result.restored.append(segment.manifest)
                self.progress.segment_done()
                log.info("segment restored", base_offset=segment.base_offset, end_offset=segment.manifest.end_offset,
                         bytes=segment.bytes)
        except _Stopped:
            result.interrupted = True
        except _Failed as exc:
            result.failure = f"{plan.name}: {exc}"
        except OSError as exc:
            where = exc.filename or plan.path
            if exc.errno in LOCAL_DISK_ERRNOS:
                result.disk_full = True
                self.stop.set()
                result.failure = (f"{plan.name}: cannot write {where} ({exc.strerror}); free space on the log dir's "
                                  "disk and rerun the same command (what is restored stays; nothing half-written "
                                  "is visible)")
            else:
                result.failure = f"{plan.name}: {where}: {exc.strerror}"
        return result

    def _segment(self, directory: Path, segment: SegmentRestore, result: PartitionResult) -> None:
        pending: list[tuple[Path, Path, RestoreFile]] = []
        try:
            for file in segment.files:
                final = directory / file.name
                if final.parent != directory:   # names are built from integers; never let one escape
                    raise _Failed(f"refusing to write {final}: outside {directory}")
                if _in_place(final, file):
                    result.files_kept += 1
                    self.progress.add(file.entry.size)
                    continue
                temporary = directory / (file.name + TEMP_SUFFIX)
                self._download(file, temporary, segment.base_offset)
                result.bytes_written += file.entry.size
                pending.append((temporary, final, file))
            _install(directory, pending, segment.manifest)
            pending.clear()
        finally:
            for temporary, _, _ in pending:
                _remove(temporary)

    def _download(self, file: RestoreFile, temporary: Path, base_offset: int) -> None:
        entry = file.entry
        for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
            written = 0

            def count(n: int) -> None:
                nonlocal written
                written += n
                self.progress.add(n)

            try:
                self._fetch(entry, temporary, count)
                found = file_crc32c(temporary)
            except BaseException:
                _remove(temporary)
                raise
            if found == (entry.size, entry.crc32c):
                return
            self.progress.add(-written)
            self.log.warning("restored file does not match its manifest; downloading it again",
                             key=entry.key, attempt=attempt, size=found and found[0], crc32c=found and found[1],
                             expected_size=entry.size, expected_crc32c=entry.crc32c)
        size, crc = found if found else (0, "")
        raise _Failed(f"{entry.key}: the store returned {size} bytes with CRC-32C {crc} twice, its manifest says "
                      f"{entry.size} bytes with {entry.crc32c}; the store's copy is damaged (run 'tiering verify'); "
                      f"segment {base_offset} and the older ones stay in the store")


    def _fetch(self, entry: ObjectEntry, temporary: Path, count: Callable[[int], None]) -> None:
        fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "w+b") as target:
            give_to_owner(target.fileno(), os.stat(temporary.parent))
            try:
                self.store.download_into(entry.key, target, entry.size, count)
            except OSError as exc:
                # s3transfer's writer thread raises it without the file's name: add it.
                raise OSError(exc.errno, exc.strerror, str(temporary)) from None
            except StoreError as exc:
                if self.stop.is_set():
                    raise _Stopped() from None
                if exc.error_class is ErrorClass.NOT_FOUND:
                    raise _Failed(f"{entry.key} is gone from the store (total retention may have removed it "
                                  "since the plan was made); rerun the same command to plan again") from None
                raise _Failed(f"{exc}; rerun the same command to continue") from None
            target.flush()
            os.fsync(target.fileno())


def _in_place(final: Path, file: RestoreFile) -> bool:
    """A file already at its final name that can stay."""
    if not os.path.lexists(final):
        return False
    if final.is_symlink():
        raise _Failed(f"{final} is a symbolic link; refusing to write through it")
    if file.entry.kind == "snapshot":
        return True   # the broker's own producer snapshot at that offset wins
    return file_crc32c(final) == (file.entry.size, file.entry.crc32c)


def _install(directory: Path, pending: list[tuple[Path, Path, RestoreFile]], manifest: SegmentManifest) -> None:
    """Rename the verified files into place, the .log last, each step durable."""
    logs = [p for p in pending if p[2].entry.kind == "log"]
    others = [p for p in pending if p[2].entry.kind != "log"]
    for temporary, final, _ in others:
        os.replace(temporary, final)
    if others:
        fsync_dir(directory)
    for temporary, final, _ in logs:
        if manifest.max_timestamp > 0:
            # The broker falls back to a segment's mtime for time retention when it has no
            # timestamps; the restored file should not look brand new.
            os.utime(temporary, (manifest.max_timestamp / 1000, manifest.max_timestamp / 1000))
        os.replace(temporary, final)
        fsync_dir(directory)
        drop_cached_pages(final)


def remove_temporary_files(directory: Path) -> int:
    """Remove what an interrupted restore left in `directory` (our temporary names only)."""
    removed = 0
    for entry in os.scandir(directory):
        if _OUR_TEMP.match(entry.name) and entry.is_file(follow_symlinks=False):
            _remove(Path(entry.path))
            removed += 1
    return removed


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# -- checkpoints ---------------------------------------------------------------------------------


def update_log_start(log_dir: Path, first_offsets: dict[TopicPartition, int]) -> dict[TopicPartition, tuple[int, int]]:
    """Lower the log-start-offset-checkpoint entries that are above a partition's first
    offset on disk (the broker would otherwise delete the restored segments as below its log
    start); every other line stays as it was. Returns {partition: (old, new)} for the lines
    changed. A missing file is left missing: the broker then starts from the first segment."""
    path = log_dir / LOG_START_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    try:
        current = parse_offset_checkpoint(text)
    except CheckpointError as exc:
        raise TieringError(f"{path}: cannot parse it ({exc}); the restored segments are in place but the broker "
                           "would delete them at start-up: fix the file by hand (it lists 'topic partition "
                           "offset'), then rerun") from None
    changes = {tp: (current[tp], first) for tp, first in first_offsets.items() if tp in current and current[tp] > first}
    if changes:
        replace_file(path, rewrite_offset_checkpoint(text, {tp: new for tp, (_, new) in changes.items()}).encode())
    return changes


def update_leader_epochs(partition_dir: Path, manifests: list[SegmentManifest]) -> tuple[tuple[EpochEntry, ...], tuple[EpochEntry, ...]] | None:
    """Merge the restored segments' leader epochs into the partition's checkpoint; returns
    (before, after) when the file changed."""
    path = partition_dir / "leader-epoch-checkpoint"
    try:
        current = parse_leader_epoch_checkpoint(path.read_text())
    except FileNotFoundError:
        current = ()
    except (OSError, UnicodeDecodeError, CheckpointError) as exc:
        raise TieringError(f"{path}: cannot read it ({exc}); move it aside (the broker rebuilds it from the "
                           "segments) and rerun") from None
    merged = merge_leader_epochs(current, manifests)
    if merged == tuple(current):
        return None
    replace_file(path, format_leader_epoch_checkpoint(merged).encode())
    return tuple(current), merged
