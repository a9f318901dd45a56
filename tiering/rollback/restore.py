"""Restoring one partition's segments from the store into its directory, and putting its
checkpoints right afterwards.

Each file is written under a temporary name (`<name>.restore.tmp`, which neither the broker
nor our scanner takes for a segment), fsynced, checked against the manifest's CRC-32C, and
only then renamed into place: index files first, the `.log` last, with the directory fsynced
in between, so a segment's `.log` is never visible before its indexes and no file is ever
visible half-written. A file already in place with the manifest's size and checksum (an
interrupted run got that far) is kept, not downloaded again. Segments go newest first, so
what is restored always joins the local log without a gap, wherever a run stops.

A chain piece cut from an upload (tiering.rollback.plan) is downloaded whole and checked
against its manifest like any other, then cut to the batches of its offsets under its
temporary name (a piece boundary that falls inside a batch refuses the piece: the copies
disagree there) and checked again as Kafka batches of exactly those offsets before it is
renamed into place.
"""

from __future__ import annotations

import os
import re
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable

from tiering.errors import TieringError
from tiering.files import (LOCAL_DISK_ERRNOS, NotRegularFile, create_fresh, drop_cached_pages_fd, fd_crc32c,
                           file_crc32c, file_kind, give_to_owner, open_dir, read_regular_text, replace_file,
                           same_file, unlink_name)
from tiering.kafka.batches import HEADER_SIZE, BatchHeader, CorruptSegment, parse_header, scan_segment
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
    restored_from: list[int] = field(default_factory=list)   # the first offset of each (a cut piece's own)
    bytes_written: int = 0
    files_kept: int = 0            # already in place and verified: not downloaded again
    failure: str | None = None     # one line for the operator
    disk_full: bool = False        # the disk refused a write (every partition stops: they share it)
    interrupted: bool = False

    @property
    def first_offset(self) -> int | None:
        """The first offset on disk now."""
        if self.restored_from:
            return min(self.restored_from)
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
        directory: int | None = None
        try:
            # Every name below is opened relative to this descriptor: the partition dir is the
            # broker's user's to change, so neither it nor anything in it is ever followed.
            directory = open_dir(plan.path)
            remove_temporary_files(directory, plan.path)
            for segment in plan.restore:
                if self.stop.is_set():
                    raise _Stopped()
                self._segment(directory, plan.path, segment, result)
                result.restored.append(segment.manifest)
                result.restored_from.append(segment.base_offset)
                self.progress.segment_done()
                log.info("segment restored", base_offset=segment.base_offset, end_offset=segment.manifest.end_offset,
                         bytes=segment.bytes)
        except _Stopped:
            result.interrupted = True
        except _Failed as exc:
            result.failure = f"{plan.name}: {exc}"
        except OSError as exc:
            where = exc.filename or plan.path
            if isinstance(exc, (NotRegularFile, NotADirectoryError, IsADirectoryError, FileExistsError)):
                result.failure = (f"{plan.name}: {where} {exc.strerror}; refusing to write there (move it aside, "
                                  "make sure nothing else writes the partition dir, and rerun)")
            elif exc.errno in LOCAL_DISK_ERRNOS:
                result.disk_full = True
                self.stop.set()
                result.failure = (f"{plan.name}: cannot write {where} ({exc.strerror}); free space on the log dir's "
                                  "disk and rerun the same command (what is restored stays; nothing half-written "
                                  "is visible)")
            else:
                result.failure = f"{plan.name}: {where}: {exc.strerror}"
        finally:
            if directory is not None:
                os.close(directory)
        return result

    def _segment(self, directory: int, path: Path, segment: SegmentRestore, result: PartitionResult) -> None:
        pending: list[_Temporary] = []
        try:
            for file in segment.files:
                if "/" in file.name or file.name in (".", ".."):   # built from integers; never let one escape
                    raise _Failed(f"refusing to write {path / file.name}: outside {path}")
                if _in_place(directory, path, file):
                    result.files_kept += 1
                    self.progress.add(file.entry.size)
                    continue
                temporary = _Temporary(file.name + TEMP_SUFFIX, file, None)
                pending.append(temporary)
                self._download(directory, path, temporary, segment)
                result.bytes_written += file.entry.size
            _install(directory, path, pending, segment.manifest)
            for temporary in pending:
                temporary.close()
            pending.clear()
        finally:
            for temporary in pending:
                temporary.discard(directory)

    def _download(self, directory: int, path: Path, temporary: _Temporary, segment: SegmentRestore) -> None:
        entry = temporary.file.entry
        shown = path / temporary.name
        try:
            fd = create_fresh(directory, temporary.name)
        except FileExistsError:
            raise _Failed(f"{shown} was created again while we created it: another process writes {path}; "
                          "stop it and rerun") from None
        temporary.target = os.fdopen(fd, "w+b")
        give_to_owner(fd, os.fstat(directory))
        for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
            written = 0

            def count(n: int) -> None:
                nonlocal written
                written += n
                self.progress.add(n)

            if attempt > 1:
                temporary.target.seek(0)
                temporary.target.truncate(0)
            self._fetch(entry, temporary.target, shown, count)
            found = fd_crc32c(fd)
            if found == (entry.size, entry.crc32c):
                if entry.kind == "log":
                    manifest = segment.manifest
                    _walk_batches(temporary.target, shown, entry, segment, entry.size, manifest.base_offset,
                                  manifest.end_offset + 1)
                    if segment.cut is not None:
                        size = _cut(temporary.target, shown, entry, segment)
                        _walk_batches(temporary.target, shown, entry, segment, size, segment.cut[0],
                                      segment.cut[1] + 1)
                return
            self.progress.add(-written)
            self.log.warning("restored file does not match its manifest; downloading it again",
                             key=entry.key, attempt=attempt, size=found[0], crc32c=found[1],
                             expected_size=entry.size, expected_crc32c=entry.crc32c)
        size, crc = found
        raise _Failed(f"{entry.key}: the store returned {size} bytes with CRC-32C {crc} twice, its manifest says "
                      f"{entry.size} bytes with {entry.crc32c}; the store's copy is damaged (run 'tiering verify'); "
                      f"segment {segment.base_offset} and the older ones stay in the store")

    def _fetch(self, entry: ObjectEntry, target: BinaryIO, shown: Path, count: Callable[[int], None]) -> None:
        try:
            self.store.download_into(entry.key, target, entry.size, count)
        except OSError as exc:
            # s3transfer's writer thread raises it without the file's name: add it.
            raise OSError(exc.errno, exc.strerror, str(shown)) from None
        except StoreError as exc:
            if self.stop.is_set():
                raise _Stopped() from None
            if exc.error_class is ErrorClass.NOT_FOUND:
                raise _Failed(f"{entry.key} is gone from the store (total retention may have removed it "
                              "since the plan was made); rerun the same command to plan again") from None
            raise _Failed(f"{exc}; rerun the same command to continue") from None
        target.flush()
        os.fsync(target.fileno())


@dataclass
class _Temporary:
    """A file being restored under its temporary name, open as we created it."""

    name: str
    file: RestoreFile
    target: BinaryIO | None

    @property
    def final(self) -> str:
        return self.file.name

    def close(self) -> None:
        if self.target is not None:
            self.target.close()
            self.target = None

    def discard(self, directory: int) -> None:
        """Remove the temporary name, if it is still ours (never whatever replaced it)."""
        if self.target is not None:
            try:
                if same_file(directory, self.name, self.target.fileno()):
                    unlink_name(directory, self.name)
            except OSError:
                pass
        self.close()


def _walk_batches(target: BinaryIO, shown: Path, entry: ObjectEntry, segment: SegmentRestore, size: int,
                  base_offset: int, next_offset: int) -> None:
    """A .log must be Kafka batches, whatever its checksum says: the manifest is the store's
    word, and a hostile or broken one can vouch for any bytes. The broker would take a bad
    .log for a corrupt log dir at start-up, so it is refused before it gets a real name."""
    target.seek(0)
    try:
        scan_segment(target, size, base_offset, next_offset)
    except CorruptSegment as exc:
        raise _Failed(f"{shown}: the bytes of {entry.key} match its manifest's CRC-32C but are not valid Kafka "
                      f"batches of offsets {base_offset}..{next_offset - 1} ({exc}); nothing was put in place; "
                      f"segment {segment.base_offset} and the older ones stay in the store (run 'tiering "
                      "verify')") from None


_CUT_BLOCK = 1 << 20


def _cut(target: BinaryIO, shown: Path, entry: ObjectEntry, segment: SegmentRestore) -> int:
    """Keep only the batches of the piece's offsets (moved to the start of the file); returns
    the new size. Written in place under the temporary name, fsynced before it is renamed."""
    assert segment.cut is not None
    first, last = segment.cut
    start = stop = None
    position = 0
    while position < entry.size:
        target.seek(position)
        header = parse_header(target.read(HEADER_SIZE))
        if start is None and header.last_offset >= first:
            if header.base_offset != first:
                raise _Failed(_inside(shown, entry, segment, first, header))
            start = position
        if header.base_offset > last:
            stop = position
            break
        if header.base_offset <= last < header.last_offset:
            raise _Failed(_inside(shown, entry, segment, last + 1, header))
        position += header.size
    stop = entry.size if stop is None else stop
    if start is None:
        raise _Failed(f"{shown}: {entry.key} holds no batch of offsets {first}..{last}; segment {first} and the "
                      "older ones stay in the store (run 'tiering verify')")
    if start:
        read, write = start, 0
        while read < stop:
            target.seek(read)
            block = target.read(min(_CUT_BLOCK, stop - read))
            target.seek(write)
            target.write(block)
            read, write = read + len(block), write + len(block)
    target.truncate(stop - start)
    target.flush()
    os.fsync(target.fileno())
    return stop - start


def _inside(shown: Path, entry: ObjectEntry, segment: SegmentRestore, offset: int, header: BatchHeader) -> str:
    return (f"{shown}: offset {offset}, where the chain passes from one upload to another, is inside the batch "
            f"{header.base_offset}..{header.last_offset} of {entry.key} (the brokers' copies disagree there); "
            f"segment {segment.base_offset} and the older ones stay in the store (run 'tiering verify')")


def _in_place(directory: int, path: Path, file: RestoreFile) -> bool:
    """A file already at its final name that can stay."""
    try:
        info = os.stat(file.name, dir_fd=directory, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(info.st_mode):
        raise _Failed(f"{path / file.name} is {file_kind(info.st_mode)}; refusing to read it or write over it "
                      "(move it aside and rerun)")
    if file.entry.kind == "snapshot":
        return True   # the broker's own producer snapshot at that offset wins
    try:
        found = file_crc32c(Path(file.name), dir_fd=directory)
    except NotRegularFile as exc:
        raise _Failed(f"{path / file.name} {exc.strerror}; refusing to write over it (move it aside and rerun)") from None
    return found == (file.entry.size, file.entry.crc32c)


def _install(directory: int, path: Path, pending: list[_Temporary], manifest: SegmentManifest) -> None:
    """Rename the verified files into place, the .log last, each step durable. Names are
    renamed inside the directory's descriptor (rename never follows a link), and only while
    the temporary name is still the file we wrote."""
    logs = [p for p in pending if p.file.entry.kind == "log"]
    others = [p for p in pending if p.file.entry.kind != "log"]
    for temporary in others:
        _rename(directory, path, temporary)
    if others:
        os.fsync(directory)
    for temporary in logs:
        assert temporary.target is not None
        if manifest.max_timestamp > 0:
            # The broker falls back to a segment's mtime for time retention when it has no
            # timestamps; the restored file should not look brand new.
            os.utime(temporary.target.fileno(), (manifest.max_timestamp / 1000, manifest.max_timestamp / 1000))
        _rename(directory, path, temporary)
        os.fsync(directory)
        drop_cached_pages_fd(temporary.target.fileno())


def _rename(directory: int, path: Path, temporary: _Temporary) -> None:
    assert temporary.target is not None
    if not same_file(directory, temporary.name, temporary.target.fileno()):
        raise _Failed(f"{path / temporary.name} was replaced while it was restored: another process writes {path}; "
                      "stop it and rerun")
    os.replace(temporary.name, temporary.final, src_dir_fd=directory, dst_dir_fd=directory)


def remove_temporary_files(directory: int, path: Path) -> int:
    """Remove what an interrupted restore left in the directory (our temporary names only).
    Whatever is under such a name goes (unlink removes a link, never its target), except a
    directory, which is refused."""
    removed = 0
    with os.scandir(directory) as entries:
        names = [entry.name for entry in entries if _OUR_TEMP.match(entry.name)]
    for name in names:
        try:
            removed += unlink_name(directory, name)
        except IsADirectoryError:
            raise _Failed(f"{path / name} is a directory under a name rollback uses for its temporary files; "
                          "remove it and rerun") from None
    return removed


# -- checkpoints ---------------------------------------------------------------------------------


def update_log_start(log_dir: Path, first_offsets: dict[TopicPartition, int]) -> dict[TopicPartition, tuple[int, int]]:
    """Lower the log-start-offset-checkpoint entries that are above a partition's first
    offset on disk (the broker would otherwise delete the restored segments as below its log
    start); every other line stays as it was. Returns {partition: (old, new)} for the lines
    changed. A missing file is left missing: the broker then starts from the first segment."""
    path = log_dir / LOG_START_FILE
    try:
        text = read_regular_text(path)
    except FileNotFoundError:
        return {}
    except UnicodeDecodeError:
        text = "\ufffd"    # not text: refused below like any other unparsable file
    try:
        current = parse_offset_checkpoint(text)
    except CheckpointError as exc:
        raise TieringError(f"{path}: cannot parse it ({exc}); the restored segments are in place but the broker "
                           "would delete them at start-up: fix the file by hand (it lists 'topic partition "
                           "offset'), then rerun") from None
    changes = {tp: (current[tp], first) for tp, first in first_offsets.items() if tp in current and current[tp] > first}
    if changes:
        replace_file(path, rewrite_offset_checkpoint(text, {tp: new for tp, (_, new) in changes.items()}).encode(),
                     follow_dir=True)   # the log dir as configured; the file in it is never followed
    return changes


def update_leader_epochs(partition_dir: Path, manifests: list[SegmentManifest]) -> tuple[tuple[EpochEntry, ...], tuple[EpochEntry, ...]] | None:
    """Merge the restored segments' leader epochs into the partition's checkpoint; returns
    (before, after) when the file changed."""
    path = partition_dir / "leader-epoch-checkpoint"
    try:
        current = parse_leader_epoch_checkpoint(read_regular_text(path))
    except FileNotFoundError:
        current = ()
    except (OSError, UnicodeDecodeError, CheckpointError) as exc:
        why = (exc.strerror if isinstance(exc, OSError) else "not UTF-8 text" if isinstance(exc, UnicodeDecodeError)
               else exc)
        raise TieringError(f"{path}: cannot read it ({why}); move it aside (the broker rebuilds it from the "
                           "segments) and rerun") from None
    merged = merge_leader_epochs(current, manifests)
    if merged == tuple(current):
        return None
    replace_file(path, format_leader_epoch_checkpoint(merged).encode())
    return tuple(current), merged
