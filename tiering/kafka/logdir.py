"""A snapshot of what the broker has on disk: partitions, segments and checkpoints.

Reads directory listings and the small checkpoint files only (never segment contents), so a
scan is cheap enough to run on every reconcile. Symlinks inside a log dir are never
followed: a partition dir or segment file that is a link is reported and skipped, and the
checkpoints, partition.metadata and meta.properties are read only when they are regular files
(opened O_NOFOLLOW and non-blocking, tiering.files): a link, FIFO or device there is reported,
never read, and what is reported never quotes the file's content.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from tiering.kafka.checkpoints import (CheckpointError, TopicPartition, broker_id_from_meta,
                                       parse_offset_checkpoint, parse_partition_metadata,
                                       parse_properties)
from tiering.files import file_kind, read_regular_text
from tiering.kafka.names import (PARTITION_FILES, DirKind, is_transient_file, parse_partition_dir,
                                 parse_segment_file, segment_file_name)

HIGH_WATERMARK_FILE = "replication-offset-checkpoint"
CLEANER_FILE = "cleaner-offset-checkpoint"
LOG_START_FILE = "log-start-offset-checkpoint"
# Log-dir root files the broker owns; anything else at the root that is not a directory is
# left alone silently (a root is a busy place: .lock, .kafka_cleanshutdown, bootstrap files).
INDEX_EXTENSIONS = ("index", "timeindex", "txnindex")


@dataclass(frozen=True)
class Anomaly:
    """Something in a log dir we skipped and an operator should look at."""

    path: str
    reason: str


@dataclass(frozen=True)
class LocalSegment:
    log_dir: Path
    topic: str
    partition: int
    base_offset: int
    next_offset: int | None        # the next segment's base offset; None: the active segment
    size: int
    log_path: Path
    index_paths: tuple[tuple[str, Path], ...] = ()   # ("index", path), ("timeindex", path) ...
    snapshot_path: Path | None = None                # producer snapshot taken at next_offset

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)

    @property
    def is_active(self) -> bool:
        return self.next_offset is None

    @property
    def end_offset(self) -> int | None:
        """Last offset the segment can hold (KIP-405: next segment's base offset - 1)."""
        return None if self.next_offset is None else self.next_offset - 1

    @property
    def name(self) -> str:
        return segment_file_name(self.base_offset, "log")


@dataclass(frozen=True)
class LocalPartition:
    log_dir: Path
    topic: str
    partition: int
    path: Path
    topic_id: str | None
    topic_id_problem: str | None
    segments: tuple[LocalSegment, ...]

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)

    @property
    def leader_epoch_path(self) -> Path:
        return self.path / "leader-epoch-checkpoint"


@dataclass(frozen=True)
class LogDirState:
    path: Path
    high_watermarks: dict[TopicPartition, int] = field(default_factory=dict)
    compacted: frozenset[TopicPartition] = frozenset()
    log_start_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    broker_id: int | None = None


@dataclass(frozen=True)
class LogDirScan:
    log_dirs: tuple[LogDirState, ...]
    partitions: tuple[LocalPartition, ...]
    anomalies: tuple[Anomaly, ...]

    def log_dir_state(self, path: Path) -> LogDirState:
        for state in self.log_dirs:
            if state.path == path:
                return state
        raise KeyError(path)


def scan_log_dirs(log_dirs: tuple[Path, ...] | list[Path]) -> LogDirScan:
    states, partitions, anomalies = [], [], []
    seen: dict[TopicPartition, Path] = {}
    for log_dir in log_dirs:
        state, found, problems = _scan_log_dir(Path(log_dir))
        anomalies += problems
        if state is None:
            continue
        states.append(state)
        for partition in found:
            if partition.tp in seen:
                anomalies.append(Anomaly(str(partition.path), f"{partition.tp} is also in {seen[partition.tp]}: skipped"))
                continue
            seen[partition.tp] = partition.path
            partitions.append(partition)
    partitions.sort(key=lambda p: (p.topic, p.partition))
    return LogDirScan(tuple(states), tuple(partitions), tuple(anomalies))


def read_log_dir_state(root: Path, anomalies: list[Anomaly]) -> LogDirState:
    """The log dir's checkpoints and broker id (a few small files)."""
    high_watermarks = _checkpoint(root / HIGH_WATERMARK_FILE, anomalies)
    log_starts = _checkpoint(root / LOG_START_FILE, anomalies)
    compacted = frozenset(_checkpoint(root / CLEANER_FILE, anomalies))
    broker_id = None
    try:
        broker_id = broker_id_from_meta(parse_properties(read_regular_text(root / "meta.properties")))
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError) as exc:
        anomalies.append(Anomaly(str(root / "meta.properties"), f"unreadable: {_why(exc)}"))
    return LogDirState(root, high_watermarks, compacted, log_starts, broker_id)


def list_log_dir(root: Path, anomalies: list[Anomaly]) -> list[os.DirEntry] | None:
    """The log dir's entries sorted by name, or None (with an anomaly) when it cannot be listed."""
    try:
        return sorted(os.scandir(root), key=lambda e: e.name)
    except FileNotFoundError:
        anomalies.append(Anomaly(str(root), "log dir does not exist (check kafka.log_dirs)"))
    except OSError as exc:
        anomalies.append(Anomaly(str(root), f"log dir cannot be listed: {exc.strerror}"))
    return None


def partition_entry(entry: os.DirEntry, anomalies: list[Anomaly]) -> tuple[str, int] | None:
    """(topic, partition) when a log-dir entry is a partition dir we may scan."""
    if entry.is_symlink():
        anomalies.append(Anomaly(entry.path, "symbolic link inside the log dir: not followed"))
        return None
    if not entry.is_dir(follow_symlinks=False):
        return None
    parsed = parse_partition_dir(entry.name)
    if parsed.kind is DirKind.IGNORED:
        return None
    if parsed.kind is DirKind.UNKNOWN:
        anomalies.append(Anomaly(entry.path, f"skipped: {parsed.reason}"))
        return None
    return parsed.topic, parsed.partition


def _scan_log_dir(root: Path) -> tuple[LogDirState | None, list[LocalPartition], list[Anomaly]]:
    anomalies: list[Anomaly] = []
    entries = list_log_dir(root, anomalies)
    if entries is None:
        return None, [], anomalies
    state = read_log_dir_state(root, anomalies)
    partitions = []
    for entry in entries:
        named = partition_entry(entry, anomalies)
        if named is not None:
            partitions.append(scan_partition(root, Path(entry.path), named[0], named[1], anomalies))
    return state, partitions, anomalies


def scan_partition(root: Path, path: Path, topic: str, partition: int,
                    anomalies: list[Anomaly]) -> LocalPartition:
    logs: dict[int, int] = {}          # base offset -> size
    companions: dict[int, dict[str, Path]] = {}
    snapshots: dict[int, Path] = {}
    try:
        entries = list(os.scandir(path))
    except OSError as exc:
        anomalies.append(Anomaly(str(path), f"partition dir cannot be listed: {exc.strerror}"))
        entries = []
    for entry in entries:
        name = entry.name
        if name in PARTITION_FILES or is_transient_file(name):
            continue
        if entry.is_symlink():
            anomalies.append(Anomaly(entry.path, "symbolic link inside the log dir: not followed"))
            continue
        parsed = parse_segment_file(name)
        if parsed is None:
            anomalies.append(Anomaly(entry.path, "skipped: not a well-formed segment file name"))
            continue
        if not entry.is_file(follow_symlinks=False):
            try:
                kind = file_kind(entry.stat(follow_symlinks=False).st_mode)
            except OSError:
                continue   # gone since the listing
            anomalies.append(Anomaly(entry.path, f"{kind}, not a regular file: skipped, never read"))
            continue
        if parsed.extension == "log":
            try:
                logs[parsed.base_offset] = entry.stat(follow_symlinks=False).st_size
            except FileNotFoundError:
                continue   # deleted since the listing (the broker's retention, or ours)
        elif parsed.extension == "snapshot":
            snapshots[parsed.base_offset] = Path(entry.path)
        else:
            companions.setdefault(parsed.base_offset, {})[parsed.extension] = Path(entry.path)
    for base in sorted(set(companions) - set(logs)):
        # An index without its .log is what an interrupted deletion (ours or the broker's)
        # leaves; harmless, but worth a line. Unless the index files are gone too by now: a
        # deletion that ran while we listed, not a leftover.
        if not any(os.path.lexists(companion) for companion in companions[base].values()):
            continue
        anomalies.append(Anomaly(str(path / segment_file_name(base, "log")), "index files without a .log: skipped"))
    bases = sorted(logs)
    segments = []
    for i, base in enumerate(bases):
        next_offset = bases[i + 1] if i + 1 < len(bases) else None
        indexes = tuple((ext, companions[base][ext]) for ext in INDEX_EXTENSIONS if ext in companions.get(base, {}))
        segments.append(LocalSegment(
            log_dir=root, topic=topic, partition=partition, base_offset=base, next_offset=next_offset,
            size=logs[base], log_path=path / segment_file_name(base, "log"), index_paths=indexes,
            snapshot_path=snapshots.get(next_offset) if next_offset is not None else None,
        ))
    topic_id, problem = None, None
    try:
        topic_id = parse_partition_metadata(read_regular_text(path / "partition.metadata"))
    except FileNotFoundError:
        problem = "partition.metadata is missing, so the topic id is unknown"
    except (OSError, UnicodeDecodeError, CheckpointError) as exc:
        problem = f"partition.metadata is unreadable: {_why(exc)}"
    return LocalPartition(root, topic, partition, path, topic_id, problem, tuple(segments))


def _checkpoint(path: Path, anomalies: list[Anomaly]) -> dict[TopicPartition, int]:
    try:
        return parse_offset_checkpoint(read_regular_text(path))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, CheckpointError) as exc:
        anomalies.append(Anomaly(str(path), f"unreadable checkpoint: {_why(exc)}"))
        return {}


def _why(exc: Exception) -> str:
    """What is wrong with a small broker file, without quoting it."""
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    return str(exc)
