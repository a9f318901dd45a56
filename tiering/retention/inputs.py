"""From what is on disk and in the journal to the planner's inputs, one partition at a time.

Pure: a log-dir scan, journal records and the configuration in. A partition is one topic
incarnation (topic id) and partition number; its remote segments are the journal's `uploaded`
rows (the journal is rebuilt from the store's manifests when lost). Partitions that exist only
in the store (a topic deleted or moved away) still get total retention.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Callable

from tiering.config import Config
from tiering.journal import SegmentId, SegmentRecord, SegmentState
from tiering.kafka.eligibility import TopicFilter, partition_reason, plan_partition
from tiering.kafka.logdir import LocalPartition, LocalSegment, LogDirScan, LogDirState
from tiering.kafka.topicconfig import EffectiveRetention, TopicConfigs, effective_retention
from tiering.retention.plan import Limits, LocalCopy, PartitionInput, RemoteCopy


@dataclass(frozen=True)
class PartitionView:
    topic: str
    topic_id: str | None
    partition: int
    local: LocalPartition | None
    state: LogDirState | None
    remote: dict[int, SegmentRecord]      # base offset -> the uploaded row
    expired: frozenset[int]               # base offsets total retention removed from the store
    input: PartitionInput
    local_delete: str
    retention: EffectiveRetention | None = None   # the limits and where each came from

    def segment_id(self, base_offset: int) -> SegmentId:
        assert self.topic_id is not None
        return SegmentId(self.topic, self.topic_id, self.partition, base_offset)


# The bytes Kafka counts for the active segment (tiering.kafka.validbytes.valid_bytes reads
# them; a preallocated file is longer); rolled segments count their file size.
ActiveSize = Callable[[LocalSegment], int]


def _file_size(segment: LocalSegment) -> int:
    return segment.size


def partition_views(config: Config, scan: LogDirScan, records: list[SegmentRecord],
                    disabled: frozenset[str], active_size: ActiveSize = _file_size,
                    configs: TopicConfigs = TopicConfigs()) -> list[PartitionView]:
    topic_filter = TopicFilter(config.kafka.include, config.kafka.exclude, configs)
    uploaded: dict[tuple[str, str, int], dict[int, SegmentRecord]] = defaultdict(dict)
    others: dict[tuple[str, str, int], dict[int, SegmentRecord]] = defaultdict(dict)   # failed, expired
    for record in records:
        key = (record.id.topic, record.id.topic_id, record.id.partition)
        if record.state is SegmentState.UPLOADED:
            uploaded[key][record.id.base_offset] = record
        elif record.state in (SegmentState.FAILED, SegmentState.EXPIRED):
            others[key][record.id.base_offset] = record
    views, seen = [], set()
    for partition in scan.partitions:
        key = (partition.topic, partition.topic_id or "", partition.partition)
        seen.add(key)
        state = scan.log_dir_state(partition.log_dir)
        views.append(_local_view(config, partition, state, topic_filter, disabled, uploaded.get(key, {}),
                                 others.get(key, {}), active_size))
    for key in sorted(uploaded.keys() - seen):
        topic, topic_id, number = key
        policy = config.retention_for(topic)
        remote = uploaded[key]
        retention = effective_retention(config, topic, configs)
        views.append(PartitionView(topic, topic_id, number, None, None, remote, frozenset(),
                                   PartitionInput((), _remote_copies(remote), _limits(retention),
                                                  remote_hold=retention.hold),
                                   policy.local_delete, retention))
    return views


def _limits(r: EffectiveRetention) -> Limits:
    return Limits.of(r.local_retention_ms, r.local_retention_bytes, r.retention_ms, r.retention_bytes)


def _remote_copies(remote: dict[int, SegmentRecord]) -> tuple[RemoteCopy, ...]:
    copies = []
    for base in sorted(remote):
        r = remote[base]
        end = r.end_offset if r.end_offset is not None else base
        copies.append(RemoteCopy(base, end, r.size_bytes or 0, r.max_timestamp))
    return tuple(copies)


def _local_view(config: Config, partition: LocalPartition, state: LogDirState, topic_filter: TopicFilter,
                disabled: frozenset[str], uploaded: dict[int, SegmentRecord],
                others: dict[int, SegmentRecord], active_size: ActiveSize = _file_size) -> PartitionView:
    """`others`: the partition's failed and expired rows."""
    policy = config.retention_for(partition.topic)
    retention = effective_retention(config, partition.topic, topic_filter.configs)
    problem = partition_reason(partition, state, topic_filter, disabled)
    hold = None
    if problem is not None:
        hold = f"not tiered: {problem}"
    elif retention.hold is not None:
        hold = retention.hold
    elif policy.local_delete == "off":
        hold = "local_delete = \"off\": local segments are left to the broker"
    copies = []
    failed = {b: r for b, r in others.items() if r.state is SegmentState.FAILED}
    # A row counts only for the very segment it describes (same end offset and size): one the
    # broker truncated and rewrote since is neither the copy in the store nor the one total
    # retention removed from it (that one's expiry must never delete the new data).
    on_disk = {s.base_offset: s for s in partition.segments if not s.is_active}
    expired = {b: r.expired_reason or "total-time" for b, r in others.items()
               if r.state is SegmentState.EXPIRED and b in on_disk and r.describes(on_disk[b].end_offset, on_disk[b].size)}
    for segment, verdict in plan_partition(partition, state, topic_filter, disabled):
        record = uploaded.get(segment.base_offset)
        remote = record is not None and not segment.is_active and record.describes(segment.end_offset, segment.size)
        if remote:
            why = ""
        elif segment.base_offset in expired:
            why = "removed from the store by total retention"
        elif segment.base_offset in others and others[segment.base_offset].state is SegmentState.EXPIRED:
            why = "differs from the copy total retention removed from the store (rewritten since); to be uploaded"
        elif not verdict.eligible:
            why = f"not eligible for upload ({verdict.reason})"
        elif segment.base_offset in failed and failed[segment.base_offset].last_error:
            why = f"upload failed: {failed[segment.base_offset].last_error}"
        elif record is not None:
            why = "differs from the copy in the store (size or end offset); not deleted"
        else:
            why = "not in the store yet (upload pending)"
        size = active_size(segment) if segment.is_active else segment.size
        copies.append(LocalCopy(segment.base_offset, segment.next_offset, size, remote,
                                record.max_timestamp if remote and record is not None else None, why,
                                expired.get(segment.base_offset) if not segment.is_active else None))
    return PartitionView(partition.topic, partition.topic_id, partition.partition, partition, state, uploaded,
                         frozenset(expired), PartitionInput(tuple(copies), _remote_copies(uploaded), _limits(retention),
                                        hold, retention.hold),
                         policy.local_delete, retention)
