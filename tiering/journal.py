"""The local journal: each segment's offload state in SQLite (WAL) under `state.dir`.

It lets a restart resume work without listing the bucket; the store stays the source of
truth: a journal that is lost or new is rebuilt from the manifests in the store. One owner
(the coordinator thread) reads and writes it.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from tiering.errors import TieringError
from tiering.statedir import FILE_MODE, private_dir, private_file, tighten

SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS segments (
    topic TEXT NOT NULL,
    topic_id TEXT NOT NULL,
    partition INTEGER NOT NULL,
    base_offset INTEGER NOT NULL,
    state TEXT NOT NULL,
    uid TEXT,
    end_offset INTEGER,
    size_bytes INTEGER,
    remote_bytes INTEGER,
    manifest_key TEXT,
    last_error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    updated_at_ms INTEGER NOT NULL,
    max_timestamp INTEGER,
    expired_reason TEXT,
    PRIMARY KEY (topic_id, partition, base_offset)
);
CREATE INDEX IF NOT EXISTS segments_by_topic ON segments (topic, partition);
CREATE TABLE IF NOT EXISTS disabled_topics (topic TEXT PRIMARY KEY, since_ms INTEGER NOT NULL, reason TEXT NOT NULL);
"""
# Version 1 had no max_timestamp (time retention needs it; rows from v1 read it from their
# manifest once) and no disabled_topics.
_MIGRATIONS = {1: "ALTER TABLE segments ADD COLUMN max_timestamp INTEGER; "
                  "ALTER TABLE segments ADD COLUMN expired_reason TEXT"}


class SegmentState(str, Enum):
    UPLOADING = "uploading"   # objects may be in the store, the manifest is not (yet)
    UPLOADED = "uploaded"     # manifest written after every object verified
    FAILED = "failed"         # last attempt failed (reason in last_error); retried later
    EXPIRED = "expired"       # removed from the store by total retention; never uploaded again


@dataclass(frozen=True)
class SegmentId:
    topic: str
    topic_id: str
    partition: int
    base_offset: int


@dataclass(frozen=True)
class SegmentRecord:
    id: SegmentId
    state: SegmentState
    uid: str | None
    end_offset: int | None
    size_bytes: int | None
    remote_bytes: int | None
    manifest_key: str | None
    last_error: str | None
    attempts: int
    updated_at_ms: int
    max_timestamp: int | None = None
    expired_reason: str | None = None     # total-time or total-size, once EXPIRED

    def describes(self, end_offset: int | None, size_bytes: int) -> bool:
        """Whether this row is about the segment now on disk under its base offset: a segment
        the broker truncated and rewrote since (an unclean leader election) has another end
        offset or size, and is not the one that was uploaded or expired."""
        return self.end_offset is not None and self.end_offset == end_offset and self.size_bytes == size_bytes


class JournalError(TieringError):
    pass


class Journal:
    def __init__(self, state_dir: Path):
        self.path = state_dir / "journal.sqlite"
        try:
            private_dir(state_dir)
            private_file(self.path)    # 0600 before SQLite writes a byte; -wal and -shm inherit it
            for companion in ("-wal", "-shm"):
                tighten(Path(f"{self.path}{companion}"), FILE_MODE)   # left wider by an older run
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # an "uploaded" row must survive power loss
            version = self._existing_version()
            if version is not None and version in _MIGRATIONS:
                self._db.executescript(_MIGRATIONS[version])
                version = SCHEMA_VERSION
            self._db.executescript(_SCHEMA)
            if version is None or version == SCHEMA_VERSION:
                self.set_meta("schema_version", str(SCHEMA_VERSION))
            else:
                raise JournalError(f"{self.path}: journal schema {version} is not {SCHEMA_VERSION}; "
                                   "move it aside and tiering rebuilds it from the store")
        except sqlite3.Error as exc:
            raise JournalError(f"{self.path}: cannot open the journal ({exc}); check state.dir "
                               "is writable and has free space") from None
        except OSError as exc:
            raise JournalError(f"{state_dir}: cannot create state.dir ({exc.strerror}); "
                               "create it or fix state.dir") from None

    def close(self) -> None:
        self._db.close()

    def _existing_version(self) -> int | None:
        has_meta = self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
        if not has_meta:
            return None
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row and row[0].isdigit() else None

    # -- meta ----------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self._write("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (key, value))

    # -- segments ------------------------------------------------------------------------

    def get(self, segment: SegmentId) -> SegmentRecord | None:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM segments WHERE topic_id = ? AND partition = ? AND base_offset = ?",
                               (segment.topic_id, segment.partition, segment.base_offset)).fetchone()
        return _record(row) if row else None

    def in_state(self, state: SegmentState) -> list[SegmentRecord]:
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM segments WHERE state = ? ORDER BY topic, partition, base_offset",
                                (state.value,)).fetchall()
        return [_record(r) for r in rows]

    def topics(self) -> set[str]:
        """Every topic with a row (one indexed scan, not every row as a record)."""
        return {row[0] for row in self._db.execute("SELECT DISTINCT topic FROM segments").fetchall()}

    def all(self) -> list[SegmentRecord]:
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM segments ORDER BY topic, partition, base_offset").fetchall()
        return [_record(r) for r in rows]

    def mark_uploading(self, segment: SegmentId, uid: str, size_bytes: int, now_ms: int) -> None:
        self._upsert(segment, SegmentState.UPLOADING, now_ms, uid=uid, size_bytes=size_bytes, bump_attempts=True)

    def mark_uploaded(self, segment: SegmentId, uid: str, end_offset: int, size_bytes: int, remote_bytes: int,
                      manifest_key: str, now_ms: int, max_timestamp: int | None = None) -> None:
        self._upsert(segment, SegmentState.UPLOADED, now_ms, uid=uid, end_offset=end_offset, size_bytes=size_bytes,
                     remote_bytes=remote_bytes, manifest_key=manifest_key, last_error=None,
                     max_timestamp=max_timestamp)

    def mark_expired(self, segment: SegmentId, reason: str, now_ms: int) -> None:
        self._upsert(segment, SegmentState.EXPIRED, now_ms, expired_reason=reason)

    def set_max_timestamp(self, segment: SegmentId, max_timestamp: int) -> None:
        self._write("UPDATE segments SET max_timestamp = ? WHERE topic_id = ? AND partition = ? AND base_offset = ?",
                    (max_timestamp, segment.topic_id, segment.partition, segment.base_offset))

    def forget(self, segment: SegmentId) -> None:
        self._write("DELETE FROM segments WHERE topic_id = ? AND partition = ? AND base_offset = ?",
                    (segment.topic_id, segment.partition, segment.base_offset))

    # -- topics with tiering turned off (rollback) ------------------------------------------

    def disabled_topics(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT topic, reason FROM disabled_topics").fetchall())

    def disable_topic(self, topic: str, reason: str, now_ms: int) -> None:
        self._write("INSERT OR REPLACE INTO disabled_topics (topic, since_ms, reason) VALUES (?, ?, ?)",
                    (topic, now_ms, reason))

    def enable_topic(self, topic: str) -> bool:
        """Turn tiering back on for `topic`; False when it was not turned off."""
        was_off = topic in self.disabled_topics()
        self._write("DELETE FROM disabled_topics WHERE topic = ?", (topic,))
        return was_off

    def mark_failed(self, segment: SegmentId, error: str, now_ms: int) -> None:
        self._upsert(segment, SegmentState.FAILED, now_ms, last_error=error)

    def _upsert(self, segment: SegmentId, state: SegmentState, now_ms: int, *, bump_attempts: bool = False,
                **fields: object) -> None:
        existing = self.get(segment)
        values = {
            "uid": None, "end_offset": None, "size_bytes": None, "remote_bytes": None, "manifest_key": None,
            "last_error": None, "attempts": 0, "max_timestamp": None, "expired_reason": None,
        }
        if existing:
            values.update(uid=existing.uid, end_offset=existing.end_offset, size_bytes=existing.size_bytes,
                          remote_bytes=existing.remote_bytes, manifest_key=existing.manifest_key,
                          last_error=existing.last_error, attempts=existing.attempts,
                          max_timestamp=existing.max_timestamp, expired_reason=existing.expired_reason)
        values.update(fields)
        if bump_attempts:
            values["attempts"] = int(values["attempts"]) + 1  # type: ignore[call-overload]
        self._write(
            "INSERT OR REPLACE INTO segments (topic, topic_id, partition, base_offset, state, uid, end_offset, "
            "size_bytes, remote_bytes, manifest_key, last_error, attempts, updated_at_ms, max_timestamp, "
            "expired_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (segment.topic, segment.topic_id, segment.partition, segment.base_offset, state.value, values["uid"],
             values["end_offset"], values["size_bytes"], values["remote_bytes"], values["manifest_key"],
             values["last_error"], values["attempts"], now_ms, values["max_timestamp"], values["expired_reason"]))

    def _write(self, sql: str, params: tuple) -> None:
        try:
            self._db.execute(sql, params)
        except sqlite3.Error as exc:
            raise JournalError(f"{self.path}: cannot write the journal ({exc}); check free space in state.dir") from None


_COLUMNS = ("topic, topic_id, partition, base_offset, state, uid, end_offset, size_bytes, remote_bytes, "
            "manifest_key, last_error, attempts, updated_at_ms, max_timestamp, expired_reason")


def read_disabled_topics(state_dir: Path) -> frozenset[str]:
    """The topics tiering is turned off for, read on a connection of its own (from any
    thread, read-only; no journal yet means none). Retention asks this again right before it
    deletes anything, so a rollback that turned a topic off a moment ago is always seen."""
    path = state_dir / "journal.sqlite"
    if not path.exists():
        return frozenset()
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
        try:
            return frozenset(row[0] for row in db.execute("SELECT topic FROM disabled_topics"))
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise JournalError(f"{path}: cannot read the journal ({exc})") from None


def _record(row: tuple) -> SegmentRecord:
    return SegmentRecord(SegmentId(row[0], row[1], row[2], row[3]), SegmentState(row[4]), *row[5:])
