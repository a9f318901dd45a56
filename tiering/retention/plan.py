"""The retention planner: which segments leave which tier, and why the next one stays.

Pure: segments, limits and the time in; deletions out. Kafka's semantics (KIP-405):

- A segment expires by time exactly as Kafka decides it: locally when `now - largest timestamp
  > limit` (UnifiedLog.deleteRetentionMsBreachedSegments), in the store when `largest
  timestamp <= now - limit` (RemoteLogManager's cleanupUntilMs), so one millisecond apart at
  the boundary. The largest timestamp is Kafka's LogSegment.largestTimestamp (the file's mtime
  for a segment without record timestamps, resolved before the planner); a negative or unknown
  one never expires by time. By size while the partition is larger than the limit by at least
  that segment's size (Kafka never deletes below the limit). -1 is unlimited; the local limits' -2 (the same as the total one) is
  resolved by `Limits.of`.
- Deletions in each tier are always the oldest segments, a contiguous prefix: a log's start
  offset only moves forward, and a hole would break the broker (unlink) or cannot be asked for
  at all (DeleteRecords moves the log start offset).
- Time and size are applied in one walk that deletes a segment when either limit says so; this
  is the fixed point Kafka reaches with its separate time pass and size pass, repeated.
- Locally, a segment goes only when it is in the store (rule 1) and never the active segment;
  the first segment that may not go ends the walk, with the reason recorded for `status`.
- Total retention counts the store's segments plus the local segments the store does not hold
  yet (Kafka's RemoteLogManager does the same); a segment it expires goes from the store and,
  when one is still there, from the local disk as well.
"""

from __future__ import annotations

from dataclasses import dataclass

UNLIMITED = -1
LOCAL_TIME, LOCAL_SIZE, TOTAL_TIME, TOTAL_SIZE = "local-time", "local-size", "total-time", "total-size"


@dataclass(frozen=True)
class Limits:
    """Effective limits of one topic; -1 = unlimited (local -2 already resolved)."""

    local_ms: int = UNLIMITED
    local_bytes: int = UNLIMITED
    total_ms: int = UNLIMITED
    total_bytes: int = UNLIMITED

    @classmethod
    def of(cls, local_ms: int, local_bytes: int, total_ms: int, total_bytes: int) -> Limits:
        return cls(total_ms if local_ms == -2 else local_ms, total_bytes if local_bytes == -2 else local_bytes,
                   total_ms, total_bytes)


@dataclass(frozen=True)
class LocalCopy:
    base_offset: int
    next_offset: int | None          # None: the active segment
    size: int
    remote: bool = False             # its manifest is in the store (upload verified)
    max_timestamp: int | None = None # known once remote (from the manifest)
    not_remote_reason: str = "not in the store yet"
    # Already removed from the store by total retention (its reason): the local copy goes too.
    expired: str | None = None

    @property
    def active(self) -> bool:
        return self.next_offset is None


@dataclass(frozen=True)
class RemoteCopy:
    base_offset: int
    end_offset: int
    size: int                        # of the .log (Kafka's segment size)
    max_timestamp: int | None        # None: unknown (its manifest could not be read): never expires by time


@dataclass(frozen=True)
class PartitionInput:
    local: tuple[LocalCopy, ...]     # oldest first
    remote: tuple[RemoteCopy, ...]   # oldest first
    limits: Limits
    # Why nothing may be deleted locally at all (tiering off for the topic, local_delete =
    # "off", a partition that is never tiered), or None.
    local_hold: str | None = None
    # Why nothing may be deleted from the store (the topic's config not read from Kafka yet).
    remote_hold: str | None = None
    # Cluster mode: the store's copies are the partition's chain pieces, at other boundaries
    # than the local segments; total retention takes a local copy whose offsets all go.
    by_offsets: bool = False


@dataclass(frozen=True)
class Deletion:
    base_offset: int
    size: int
    reason: str                      # local-time, local-size, total-time, total-size


@dataclass(frozen=True)
class RetentionPlan:
    local: tuple[Deletion, ...] = ()     # oldest first: a prefix of the local segments
    remote: tuple[Deletion, ...] = ()    # oldest first: a prefix of the store's segments
    local_waiting: str | None = None     # why the oldest local segment left stays
    remote_waiting: str | None = None    # why the oldest remote segment left stays
    # The base offset of the first local segment kept once the planned ones are gone (the
    # offset DeleteRecords moves the log start offset to); None when nothing goes locally.
    local_keep_from: int | None = None


def plan_retention(partition: PartitionInput, now_ms: int) -> RetentionPlan:
    remote, remote_waiting = _plan_remote(partition, now_ms)
    expired = (_expired_by_end(partition, remote) if partition.by_offsets
               else {d.base_offset: d.reason for d in remote})
    local, local_waiting, keep_from = _plan_local(partition, now_ms, expired)
    return RetentionPlan(tuple(local), tuple(remote), local_waiting, remote_waiting,
                         keep_from if local else None)


def _expired_by_end(partition: PartitionInput, remote: list[Deletion]) -> dict[int, str]:
    """Cluster mode: the local copies total retention takes with the store's pieces, by base
    offset: each whose offsets all lie in pieces planned to go."""
    reasons = {d.base_offset: d.reason for d in remote}
    ends = [(c.end_offset, reasons[c.base_offset]) for c in partition.remote if c.base_offset in reasons]
    if not ends:
        return {}
    first = partition.remote[0].base_offset
    gone_to = max(end for end, _ in ends)
    found = {}
    for copy in partition.local:
        if copy.active or not copy.remote or copy.base_offset < first or copy.next_offset - 1 > gone_to:
            continue
        found[copy.base_offset] = reasons.get(copy.base_offset) or next(
            reason for end, reason in sorted(ends) if end >= copy.next_offset - 1)
    return found


def _expired_locally(max_timestamp: int | None, limit_ms: int, now_ms: int) -> bool:
    # UnifiedLog: startMs - segment.largestTimestamp > retentionMs
    return limit_ms >= 0 and max_timestamp is not None and max_timestamp >= 0 and now_ms - max_timestamp > limit_ms


def _expired_remotely(max_timestamp: int | None, limit_ms: int, now_ms: int) -> bool:
    # RemoteLogManager: metadata.maxTimestampMs() <= now - retentionMs
    return limit_ms >= 0 and max_timestamp is not None and max_timestamp >= 0 and max_timestamp <= now_ms - limit_ms


def _plan_remote(partition: PartitionInput, now_ms: int) -> tuple[list[Deletion], str | None]:
    limits = partition.limits
    if not partition.remote:
        return [], None
    if partition.remote_hold is not None:
        return [], partition.remote_hold
    highest = partition.remote[-1].end_offset
    only_local = sum(c.size for c in partition.local if c.base_offset > highest)
    excess = sum(r.size for r in partition.remote) + only_local - limits.total_bytes
    deletions = []
    for segment in partition.remote:
        if _expired_remotely(segment.max_timestamp, limits.total_ms, now_ms):
            reason = TOTAL_TIME
        elif limits.total_bytes >= 0 and excess - segment.size >= 0:
            reason = TOTAL_SIZE
        else:
            return deletions, _within("total", limits.total_ms, limits.total_bytes, segment.max_timestamp, now_ms)
        deletions.append(Deletion(segment.base_offset, segment.size, reason))
        excess -= segment.size
    return deletions, None


def _plan_local(partition: PartitionInput, now_ms: int,
                remote_expired: dict[int, str]) -> tuple[list[Deletion], str | None, int | None]:
    """(deletions, why the next one stays, base offset of the first one kept)."""
    if not partition.local:
        return [], None, None
    if partition.local_hold is not None:
        return [], partition.local_hold, None
    limits = partition.limits
    excess = sum(c.size for c in partition.local) - limits.local_bytes
    deletions: list[Deletion] = []
    for copy in partition.local:
        if copy.active:
            return deletions, f"segment {copy.base_offset} is the active segment (never deleted)", copy.base_offset
        if (copy.remote and copy.base_offset in remote_expired) or copy.expired:
            # Total retention takes the local copy too (now, or it did on an earlier pass); a
            # local segment that differs from the store's copy is not the one that expired.
            reason = remote_expired.get(copy.base_offset) or copy.expired or TOTAL_TIME
            deletions.append(Deletion(copy.base_offset, copy.size, reason))
            excess -= copy.size
            continue
        if _expired_locally(copy.max_timestamp, limits.local_ms, now_ms):
            reason = LOCAL_TIME
        elif limits.local_bytes >= 0 and excess - copy.size >= 0:
            reason = LOCAL_SIZE
        elif not copy.remote:
            return deletions, f"segment {copy.base_offset}: {copy.not_remote_reason}", copy.base_offset
        else:
            return deletions, _within("local", limits.local_ms, limits.local_bytes, copy.max_timestamp, now_ms), \
                copy.base_offset
        if not copy.remote:
            # Expired by size, but not safely in the store: rule 1 keeps it (and all after it).
            return deletions, f"segment {copy.base_offset}: {copy.not_remote_reason} ({reason} would delete it)", \
                copy.base_offset
        deletions.append(Deletion(copy.base_offset, copy.size, reason))
        excess -= copy.size
    last = partition.local[-1]
    return deletions, None, last.next_offset


def _within(tier: str, limit_ms: int, limit_bytes: int, max_timestamp: int | None, now_ms: int) -> str:
    if limit_ms < 0 and limit_bytes < 0:
        return f"{tier} retention is unlimited"
    parts = []
    if limit_ms >= 0 and max_timestamp is not None and max_timestamp >= 0:
        parts.append(f"expires by time in {_duration(limit_ms - (now_ms - max_timestamp))}")
    if limit_bytes >= 0:
        parts.append(f"within {tier} retention bytes ({limit_bytes})")
    return "; ".join(parts) or f"within {tier} retention"


def _duration(ms: int) -> str:
    seconds = max(0, ms) / 1000
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"
