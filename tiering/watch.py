"""File-system hints from inotify (through watchdog): which partition dirs or log-dir
checkpoints changed. Hints only: the periodic reconcile scan catches whatever they miss
(a queue overflow, a watch added late, a restart), so a lost event delays, never loses.

Only creations, deletions and renames are asked for: the broker appends to the active
segment all the time, and a modify event per append would cost more than it tells.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from watchdog.events import (DirCreatedEvent, DirDeletedEvent, DirMovedEvent, FileCreatedEvent,
                             FileDeletedEvent, FileMovedEvent, FileSystemEvent, FileSystemEventHandler)
from watchdog.observers import Observer

EVENTS = [FileCreatedEvent, FileDeletedEvent, FileMovedEvent, DirCreatedEvent, DirDeletedEvent, DirMovedEvent]


class _Forward(FileSystemEventHandler):
    def __init__(self, hint: Callable[[Path], None]):
        self._hint = hint

    def on_any_event(self, event: FileSystemEvent) -> None:
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            if raw:
                self._hint(Path(raw.decode() if isinstance(raw, bytes) else raw))


class LogDirWatcher:
    """Watches each log dir recursively; `hint(path)` is called from watchdog's thread."""

    def __init__(self, hint: Callable[[Path], None], log: object):
        self._observer = Observer()
        self._handler = _Forward(hint)
        self._watched: set[Path] = set()
        self._log = log
        self._started = False

    def watch(self, log_dirs: tuple[Path, ...]) -> None:
        """Add a watch for each existing log dir not yet watched (call again after reconciles:
        a log dir that appears later gets its watch then)."""
        for root in log_dirs:
            if root in self._watched or not root.is_dir():
                continue
            try:
                self._observer.schedule(self._handler, str(root), recursive=True, event_filter=EVENTS)
            except OSError as exc:
                # ENOSPC: fs.inotify.max_user_watches reached. The reconcile scan still works.
                self._log.warning("cannot watch log dir; relying on the reconcile scan", path=str(root),
                                  error=exc.strerror or str(exc))
                continue
            self._watched.add(root)
        if not self._started:
            self._observer.start()
            self._started = True

    def stop(self) -> None:
        if self._started:
            self._observer.stop()
            self._observer.join(timeout=2)
