"""Pins: hard links that keep an eligible segment's files alive until it is in the store.

The broker's own retention may delete a rolled segment we have not uploaded yet (it renames
the files to `.deleted` and unlinks them a minute later). A hard link made when the segment
became eligible keeps the inode, so the upload reads the same bytes from the pin whatever the
broker does meanwhile, and a segment the broker deleted is still offloaded. The pin goes once
the segment's manifest is in the store (or the partition itself is gone: a deleted topic).

A hard link only works on the same file system, and never inside the broker's log dir (the
broker takes any directory there for a partition). Each log dir uses the first of
`state.pin_dirs`, then `state.dir/pins`, that is on its file system; a log dir without one is
reported once and uploaded without pins.

Layout: `<pin root>/<topic id>/<partition>/<base offset>-<next offset>.<extension>`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tiering.kafka.logdir import LocalPartition, LocalSegment
from tiering.kafka.names import DELETED_SUFFIX
from tiering.statedir import private_dir

_PIN_NAME = re.compile(r"^(\d{20})-(\d{20})\.(log|index|timeindex|txnindex|snapshot)$")
_STAGING = ".staging"     # a link not yet renamed into place (left only by a crash)


@dataclass(frozen=True)
class Pin:
    base_offset: int
    next_offset: int
    files: tuple[tuple[str, Path], ...]     # (extension, path in the pin dir)

    @property
    def log_path(self) -> Path:
        return dict(self.files)["log"]

    def segment(self, partition: LocalPartition) -> LocalSegment:
        """The pinned segment as an upload reads it (every path inside the pin)."""
        files = dict(self.files)
        return LocalSegment(
            log_dir=partition.log_dir, topic=partition.topic, partition=partition.partition,
            base_offset=self.base_offset, next_offset=self.next_offset, size=_size(files["log"]),
            log_path=files["log"],
            index_paths=tuple((ext, files[ext]) for ext in ("index", "timeindex", "txnindex") if ext in files),
            snapshot_path=files.get("snapshot"))


class PinStore:
    """Owned by the upload coordinator's thread."""

    def __init__(self, roots: tuple[Path, ...], log: Any):
        self.roots = roots
        self.log = log
        self._root_of: dict[Path, Path | None] = {}            # log dir -> pin root (None: no pins)
        self._pins: dict[Path, dict[int, Pin]] = {}                # pin dir of a partition -> its pins
        # Kept as pins come and go: the daemon reads it every second for a gauge, and summing
        # the pin dicts of every partition (10,000 on a large broker) each time was its main
        # cost while idle.
        self._count = 0

    # -- lookups ---------------------------------------------------------------------------

    def pins(self, partition: LocalPartition) -> dict[int, Pin]:
        directory = self._directory(partition)
        if directory is None:
            return {}
        return self._pins[directory]

    def count(self) -> int:
        return self._count

    def rescued(self, partition: LocalPartition) -> list[LocalSegment]:
        """Pinned segments the broker has deleted meanwhile (they still need uploading)."""
        present = {s.base_offset for s in partition.segments}
        return [pin.segment(partition) for base, pin in sorted(self.pins(partition).items()) if base not in present]

    # -- changes ---------------------------------------------------------------------------

    def pin(self, partition: LocalPartition, segment: LocalSegment) -> LocalSegment:
        """Link the segment's files into its pin dir (once); returns the segment as read from
        the pin, or unchanged when it cannot be pinned.

        `segment` comes from a listing that may be stale: the broker can rename the files to
        `.deleted` (and unlink them) between the listing and this call. So a file is linked
        under its `.deleted` name when its own is gone, and a pin is only ever replaced by a
        whole new one: the new links are made under staging names first, then renamed over
        the old. A segment the broker deletes while we look keeps the pin it had."""
        assert segment.next_offset is not None
        directory = self._directory(partition)
        if directory is None:
            return segment
        pins = self._pins[directory]
        existing = pins.get(segment.base_offset)
        same_range = existing is not None and existing.next_offset == segment.next_offset
        if same_range and (_same_file(existing.log_path, segment.log_path)
                           or _same_file(existing.log_path, _deleted(segment.log_path))):
            return existing.segment(partition)
        files = [("log", segment.log_path), *segment.index_paths]
        if segment.snapshot_path is not None:
            files.append(("snapshot", segment.snapshot_path))
        stem = f"{segment.base_offset:020d}-{segment.next_offset:020d}"
        staged: list[tuple[str, Path]] = []
        try:
            private_dir(directory)
            for ext, source in files:
                # Only a pin being replaced needs staging names (the first one has nothing to lose).
                staging = directory / (f".{stem}.{ext}{_STAGING}" if existing is not None else f"{stem}.{ext}")
                if not _link_live(source, staging):
                    if ext == "log":
                        break   # the segment itself is gone already: nothing new to keep
                    continue    # an index or snapshot the broker removed: the upload goes without it
                if ext == "log" and os.stat(staging).st_size != segment.size:
                    _unlink(staging)     # a `.deleted` file of another size: not the listed segment
                    break
                staged.append((ext, staging))
        except OSError as exc:
            _unlink_all(staged)
            self._disable(partition.log_dir, directory, exc)
            return segment
        if not staged:
            # Gone before it could be linked. A pin made earlier under the same offsets is the
            # same segment and is all that is left of it; one of other offsets stays too (it is
            # rescued once the listing no longer shows the segment).
            if same_range:
                return existing.segment(partition)
            return segment
        linked = tuple((ext, directory / f"{stem}.{ext}") for ext, _ in staged)
        try:
            for (_, staging), (_, target) in zip(staged, linked):
                if staging != target:
                    os.replace(staging, target)
        except OSError as exc:
            _unlink_all(staged)
            self._disable(partition.log_dir, directory, exc)
            return segment
        if existing is not None:
            kept = {path for _, path in linked}
            _unlink_all([(ext, path) for ext, path in existing.files if path not in kept])
        pin = Pin(segment.base_offset, segment.next_offset, linked)
        pins[segment.base_offset] = pin
        if existing is None:
            self._count += 1
        return pin.segment(partition)

    def release(self, partition: LocalPartition, base_offset: int) -> None:
        directory = self._directory(partition)
        if directory is None:
            return
        pin = self._pins[directory].pop(base_offset, None)
        if pin is not None:
            self._count -= 1
            _unlink_all(list(pin.files))

    def release_partition(self, partition: LocalPartition) -> None:
        for base in list(self.pins(partition)):
            self.release(partition, base)

    # -- where pins live -------------------------------------------------------------------

    def _directory(self, partition: LocalPartition) -> Path | None:
        if partition.topic_id is None:
            return None
        root = self._root(partition.log_dir)
        if root is None:
            return None
        directory = root / partition.topic_id / str(partition.partition)
        if directory not in self._pins:
            self._pins[directory] = self._load(directory)
            self._count += len(self._pins[directory])
        return directory

    def _root(self, log_dir: Path) -> Path | None:
        if log_dir in self._root_of:
            return self._root_of[log_dir]
        chosen = None
        try:
            device = os.stat(log_dir).st_dev
            for root in self.roots:
                try:
                    private_dir(root)
                    if os.stat(root).st_dev == device:
                        chosen = root
                        break
                except OSError:
                    continue
        except OSError:
            return None    # the log dir is not there (yet): decide on a later scan
        if chosen is None:
            self.log.warning("segments of this log dir cannot be pinned: no pin dir on its file system; "
                             "the broker's retention could delete a segment before it is uploaded "
                             "(add a directory on that file system to state.pin_dirs)",
                             log_dir=str(log_dir), pin_dirs=[str(r) for r in self.roots])
        self._root_of[log_dir] = chosen
        return chosen

    def _disable(self, log_dir: Path, directory: Path, exc: OSError) -> None:
        self.log.warning("cannot pin segments of this log dir (hard link refused); uploading without pins",
                         log_dir=str(log_dir), pin_dir=str(directory), error=exc.strerror)
        self._root_of[log_dir] = None

    def _load(self, directory: Path) -> dict[int, Pin]:
        """The pins a previous run left in a partition's pin dir (read once)."""
        found: dict[int, dict[str, Any]] = {}
        pins: dict[int, Pin] = {}
        try:
            entries = list(os.scandir(directory))
        except OSError:
            return pins
        for entry in entries:
            if entry.name.startswith(".") and entry.name.endswith(_STAGING):
                _discard(Path(entry.path))   # a crash between linking and renaming into place
                continue
            match = _PIN_NAME.match(entry.name)
            if not match:
                continue
            base, next_offset, ext = int(match.group(1)), int(match.group(2)), match.group(3)
            found.setdefault(base, {"next": next_offset, "files": []})["files"].append((ext, Path(entry.path)))
        for base, item in found.items():
            files = tuple(sorted(item["files"]))
            if "log" not in dict(files):
                for _, path in files:
                    _discard(path)       # a pin interrupted before its .log: useless
                continue
            pins[base] = Pin(base, item["next"], files)
        return pins


def _same_file(a: Path, b: Path) -> bool:
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _deleted(path: Path) -> Path:
    """The name Kafka's retention gives a segment file before it unlinks it."""
    return path.with_name(path.name + DELETED_SUFFIX)


def _link_live(source: Path, target: Path) -> bool:
    """Hard-link `source`, or its `.deleted` name when the broker renamed it, to `target`;
    False when neither exists. Linking is the test: checking first would race the broker."""
    _unlink(target)
    for name in (source, _deleted(source)):
        try:
            os.link(name, target, follow_symlinks=False)
            return True
        except FileNotFoundError:
            continue
    return False


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _discard(path: Path) -> None:
    """Remove what a crash left, if it can be: something else under the name (a directory,
    say) is left for pin() to report when it needs the name."""
    try:
        os.unlink(path)
    except OSError:
        pass


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _unlink_all(files: list[tuple[str, Path]]) -> None:
    for _, path in files:
        _unlink(path)

