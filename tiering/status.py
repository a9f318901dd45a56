"""What `tiering status` shows: per partition, what is local, what is remote, what is pending
and why anything is not tiered."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable

from tiering.journal import SegmentRecord, SegmentState
from tiering.kafka.eligibility import TopicFilter, partition_reason, plan_partition
from tiering.kafka.logdir import LogDirScan
from tiering.retention.plan import RetentionPlan
from tiering.store.keys import ParsedKey
from tiering.store.protocol import ObjectInfo


# End offset of a remote segment read from its manifest, for segments the journal does not know.
EndOffsetLookup = Callable[[str], "int | None"]


@dataclass(frozen=True)
class SkippedSegment:
    base_offset: int
    reason: str


@dataclass(frozen=True)
class PartitionStatus:
    topic: str
    partition: int
    topic_id: str | None
    local_segments: int = 0
    local_bytes: int = 0
    remote_segments: int | None = 0
    remote_bytes: int | None = 0
    pending_segments: int = 0
    highest_remote_offset: int | None = None
    tiering_enabled: bool = True
    last_error: str | None = None
    not_tiered: tuple[SkippedSegment, ...] = field(default_factory=tuple)
    local_start_offset: int | None = None       # base offset of the oldest local segment
    remote_start_offset: int | None = None      # base offset of the oldest segment in the store
    retention: RetentionPlan | None = None      # what the next retention pass would do
    # The topic's effective limits, each {"value", "source"} (kafka:<config source>, toml:..., default)
    retention_config: dict | None = None
    # Cluster mode: role, chain and why not uploading (tiering.cluster.report); None in single mode
    cluster: dict | None = None

    def retention_json(self) -> dict | None:
        plan = self.retention
        if plan is None:
            return None
        return {
            "next": [{"tier": tier, "base_offset": d.base_offset, "bytes": d.size, "reason": d.reason}
                     for tier, deletions in (("remote", plan.remote), ("local", plan.local)) for d in deletions],
            "local_waiting": plan.local_waiting,
            "remote_waiting": plan.remote_waiting,
        }

    def to_json(self) -> dict:
        return {
            "topic": self.topic, "partition": self.partition, "topic_id": self.topic_id,
            "local_segments": self.local_segments, "local_bytes": self.local_bytes,
            "remote_segments": self.remote_segments, "remote_bytes": self.remote_bytes,
            "pending_segments": self.pending_segments, "highest_remote_offset": self.highest_remote_offset,
            "tiering_enabled": self.tiering_enabled, "last_error": self.last_error,
            "not_tiered": [{"base_offset": s.base_offset, "reason": s.reason} for s in self.not_tiered],
            "local_start_offset": self.local_start_offset, "remote_start_offset": self.remote_start_offset,
            "retention": self.retention_json(),
            "retention_config": self.retention_config,
            "mode": "single" if self.cluster is None else "cluster",
            "cluster": self.cluster,
        }


@dataclass(frozen=True)
class RemoteSegments:
    """The store's view of one partition incarnation, from a listing (no GETs)."""

    segments: dict[int, str]        # base offset -> manifest key
    bytes: int


def group_remote(listing: list[tuple[ParsedKey, ObjectInfo]]) -> dict[tuple[str, str, int], RemoteSegments]:
    """Group a listing of our keys (tiering.store.owned) by (topic, topic id, partition); only
    segments with a manifest count."""
    by_stem: dict[str, list[ObjectInfo]] = defaultdict(list)
    manifests: dict[str, tuple] = {}
    for parsed, info in listing:
        by_stem[parsed.stem].append(info)
        if parsed.is_manifest:
            manifests[parsed.stem] = (parsed, info.key)
    segments: dict[tuple[str, str, int], dict[int, str]] = defaultdict(dict)
    sizes: dict[tuple[str, str, int], int] = defaultdict(int)
    for stem, (parsed, key) in manifests.items():
        partition = (parsed.topic, parsed.topic_id, parsed.partition)
        if parsed.base_offset in segments[partition]:
            continue  # a duplicate manifest for the same segment: counted once
        segments[partition][parsed.base_offset] = key
        sizes[partition] += sum(o.size for o in by_stem[stem])
    return {partition: RemoteSegments(found, sizes[partition]) for partition, found in segments.items()}


PlanKey = tuple[str, str, int]    # (topic, topic id or "", partition)


def build_status(scan: LogDirScan, records: list[SegmentRecord], listing: list[tuple[ParsedKey, ObjectInfo]] | None,
                 topic_filter: TopicFilter, end_offset_of: EndOffsetLookup,
                 plans: dict[PlanKey, RetentionPlan] | None = None,
                 disabled: frozenset[str] = frozenset(),
                 retention_configs: dict[str, dict] | None = None) -> list[PartitionStatus]:
    plans = plans or {}
    retention_configs = retention_configs or {}
    remote = group_remote(listing) if listing is not None else {}
    by_partition: dict[tuple[str, int], list[SegmentRecord]] = defaultdict(list)
    for record in records:
        by_partition[(record.id.topic, record.id.partition)].append(record)
    rows, seen = [], set()
    for partition in scan.partitions:
        state = scan.log_dir_state(partition.log_dir)
        plan = plan_partition(partition, state, topic_filter, disabled)
        journal = {r.id.base_offset: r for r in by_partition[(partition.topic, partition.partition)]
                   if r.id.topic_id == partition.topic_id}
        key = (partition.topic, partition.topic_id or "", partition.partition)
        seen.add(key)
        group = remote.get(key, RemoteSegments({}, 0))
        pending, not_tiered = 0, []
        for segment, verdict in plan:
            if not verdict.eligible:
                not_tiered.append(SkippedSegment(segment.base_offset, verdict.reason))
            elif segment.base_offset not in group.segments:
                pending += 1
        failed = [r for r in journal.values() if r.state is SegmentState.FAILED and r.last_error]
        last_error = max(failed, key=lambda r: r.updated_at_ms).last_error if failed else None
        rows.append(PartitionStatus(
            topic=partition.topic, partition=partition.partition, topic_id=partition.topic_id,
            local_segments=len(partition.segments), local_bytes=sum(s.size for s in partition.segments),
            remote_segments=len(group.segments) if listing is not None else None,
            remote_bytes=group.bytes if listing is not None else None,
            pending_segments=pending,
            highest_remote_offset=_highest(group, journal, end_offset_of),
            tiering_enabled=partition_reason(partition, state, topic_filter, disabled) is None,
            last_error=last_error, not_tiered=tuple(not_tiered),
            local_start_offset=partition.segments[0].base_offset if partition.segments else None,
            remote_start_offset=min(group.segments) if group.segments else None,
            retention=plans.get(key), retention_config=retention_configs.get(partition.topic)))
    for (topic, topic_id, number), group in sorted(remote.items()):
        if (topic, topic_id, number) in seen:
            continue
        journal = {r.id.base_offset: r for r in by_partition[(topic, number)] if r.id.topic_id == topic_id}
        rows.append(PartitionStatus(topic=topic, partition=number, topic_id=topic_id,
                                    remote_segments=len(group.segments), remote_bytes=group.bytes,
                                    highest_remote_offset=_highest(group, journal, end_offset_of),
                                    tiering_enabled=False, last_error=None,
                                    remote_start_offset=min(group.segments) if group.segments else None,
                                    retention=plans.get((topic, topic_id, number)),
                                    retention_config=retention_configs.get(topic)))
    rows.sort(key=lambda r: (r.topic, r.partition, r.topic_id or ""))
    return rows


def _highest(group: RemoteSegments, journal: dict[int, SegmentRecord], end_offset_of: EndOffsetLookup) -> int | None:
    """The end offset of the newest remote segment: from the journal where it knows the
    manifests listed (it took them only after checking them), otherwise from the newest
    manifest that can be read."""
    if not group.segments:
        return None
    known = [r.end_offset for base, r in journal.items()
             if r.end_offset is not None and r.manifest_key is not None and group.segments.get(base) == r.manifest_key]
    if known:
        return max(known)
    for base in sorted(group.segments, reverse=True):
        end = end_offset_of(group.segments[base])
        if end is not None:
            return end
    return None
