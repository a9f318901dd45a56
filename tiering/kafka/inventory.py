"""The daemon's standing picture of the log dirs, kept current by cheap partial rescans.

A full reconcile lists every log dir but rescans a partition dir only when its mtime moved:
creating, deleting or renaming a file (a roll, a deletion) changes it; appends to the active
segment do not, and rolled segments never change size. So with 10,000 quiet partitions a
reconcile costs about one stat per partition. A dir changed in the last second is rescanned
anyway, because file-system timestamps are coarse (a change in the same tick as our previous
look would not move the mtime).
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path

from tiering.kafka.checkpoints import TopicPartition
from tiering.kafka.logdir import (Anomaly, LocalPartition, LogDirState, list_log_dir, partition_entry,
                                  read_log_dir_state, scan_partition)
from tiering.kafka.names import DirKind, parse_partition_dir

FRESH_SECONDS = 1.0


@dataclass(frozen=True)
class Changes:
    """What a (full or partial) scan found different from the picture before it."""

    updated: tuple[LocalPartition, ...] = ()     # new or rescanned partitions
    removed: tuple[Path, ...] = ()               # partition dirs that are gone
    anomalies: tuple[Anomaly, ...] = ()


class Inventory:
    def __init__(self, log_dirs: tuple[Path, ...]):
        self.log_dirs = tuple(Path(d) for d in log_dirs)
        self.states: dict[Path, LogDirState] = {}
        self.partitions: dict[Path, LocalPartition] = {}
        self._mtimes: dict[Path, int] = {}
        self._by_tp: dict[TopicPartition, Path] = {}
        self._anomalies: dict[Path, tuple[Anomaly, ...]] = {}

    def log_dir_of(self, path: Path) -> Path | None:
        for root in self.log_dirs:
            if path == root or root in path.parents:
                return root
        return None

    def full_scan(self, now: float) -> Changes:
        updated, anomalies = [], []
        seen: dict[TopicPartition, Path] = {}
        present: set[Path] = set()
        for root in self.log_dirs:
            problems: list[Anomaly] = []
            entries = list_log_dir(root, problems)
            if entries is None:
                anomalies += problems
                self.states.pop(root, None)
                continue
            self.states[root] = read_log_dir_state(root, problems)
            for entry in entries:
                named = partition_entry(entry, problems)
                if named is None:
                    continue
                path = Path(entry.path)
                tp = TopicPartition(*named)
                if tp in seen:
                    problems.append(Anomaly(str(path), f"{tp} is also in {seen[tp]}: skipped"))
                    continue
                seen[tp] = path
                present.add(path)
                try:
                    mtime = entry.stat(follow_symlinks=False).st_mtime_ns
                except OSError:
                    continue
                cached = self.partitions.get(path)
                if cached is not None and self._mtimes.get(path) == mtime and now - mtime / 1e9 > FRESH_SECONDS:
                    # unchanged: its anomalies stand (a full scan lists every one, so the
                    # daemon neither forgets nor repeats them)
                    problems += self._anomalies.get(path, ())
                    continue
                found: list[Anomaly] = []
                partition = scan_partition(root, path, named[0], named[1], found)
                self._anomalies[path] = tuple(found)
                problems += found
                self.partitions[path] = partition
                self._mtimes[path] = mtime
                updated.append(partition)
            anomalies += problems
        removed = [path for path in self.partitions if path not in present]
        for path in removed:
            self._forget(path)
        self._by_tp = {part.tp: path for path, part in self.partitions.items()}
        return Changes(tuple(updated), tuple(removed), tuple(anomalies))

    def rescan(self, path: Path) -> Changes:
        """Rescan one partition dir after an event named it (it may be new or gone)."""
        root = self.log_dir_of(path)
        if root is None or path.parent != root:
            return Changes()
        if root not in self.states:
            self.states[root] = read_log_dir_state(root, [])
        parsed = parse_partition_dir(path.name)
        try:
            info = path.lstat()
        except FileNotFoundError:
            info = None
        if info is None or parsed.kind is not DirKind.PARTITION or not stat.S_ISDIR(info.st_mode):
            if path in self.partitions:
                self._forget(path)
                return Changes(removed=(path,))
            return Changes()
        tp = TopicPartition(parsed.topic, parsed.partition)
        if self._by_tp.get(tp, path) != path:
            return Changes()  # a duplicate across log dirs; the full scan reports it
        problems: list[Anomaly] = []
        partition = scan_partition(root, path, parsed.topic, parsed.partition, problems)
        self._anomalies[path] = tuple(problems)
        self.partitions[path] = partition
        self._mtimes[path] = info.st_mtime_ns
        self._by_tp[tp] = path
        return Changes((partition,), (), tuple(problems))

    def reread_state(self, root: Path) -> tuple[LogDirState | None, LogDirState]:
        """Re-read a log dir's checkpoints after one changed; returns (before, after)."""
        before = self.states.get(root)
        after = read_log_dir_state(root, [])
        self.states[root] = after
        return before, after

    def _forget(self, path: Path) -> None:
        partition = self.partitions.pop(path, None)
        if partition is not None and self._by_tp.get(partition.tp) == path:
            del self._by_tp[partition.tp]
        self._mtimes.pop(path, None)
        self._anomalies.pop(path, None)
