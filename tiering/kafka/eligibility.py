"""Which local segments may be offloaded, and why not (KIP-405's rules, as a sidecar sees them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from tiering.kafka.logdir import LocalPartition, LocalSegment, LogDirState
from tiering.kafka.names import is_internal_topic
from tiering.kafka.topicconfig import TopicConfigs


@dataclass(frozen=True)
class TopicFilter:
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    # What Kafka says of each topic (compaction); without bootstrap servers the cleaner
    # checkpoint stands in.
    configs: TopicConfigs = field(default_factory=TopicConfigs)

    def reason_excluded(self, topic: str) -> str | None:
        for pattern in self.exclude:
            if fnmatchcase(topic, pattern):
                return f"excluded by kafka.exclude {pattern!r}"
        if not any(fnmatchcase(topic, pattern) for pattern in self.include):
            return "not matched by kafka.include"
        return None


@dataclass(frozen=True)
class Verdict:
    eligible: bool
    reason: str = ""
    # Rolled but not yet below the high watermark: becomes eligible when the broker's
    # next replication-offset-checkpoint moves past it.
    awaits_high_watermark: bool = False


ELIGIBLE = Verdict(True)


def partition_reason(partition: LocalPartition, state: LogDirState, topic_filter: TopicFilter,
                     disabled_topics: frozenset[str] = frozenset()) -> str | None:
    """Why no segment of this partition may be offloaded, or None."""
    if is_internal_topic(partition.topic):
        return "internal topic (never tiered)"
    excluded = topic_filter.reason_excluded(partition.topic)
    if excluded:
        return excluded
    if partition.topic in disabled_topics:
        return "tiering turned off for this topic (tiering resume re-enables it)"
    compacted = topic_filter.configs.not_tiered_reason(partition.tp, state)
    if compacted:
        return compacted
    if partition.topic_id is None:
        return f"{partition.topic_id_problem}; keys need it to keep re-created topics apart"
    return None


def segment_verdict(segment: LocalSegment, partition_problem: str | None,
                    high_watermark: int | None) -> Verdict:
    if partition_problem:
        return Verdict(False, partition_problem)
    if segment.is_active:
        return Verdict(False, "active segment (still being written)")
    if high_watermark is None:
        return Verdict(False, "no high watermark for this partition in replication-offset-checkpoint", True)
    assert segment.end_offset is not None
    if segment.end_offset >= high_watermark:
        return Verdict(False, f"above the high watermark (end offset {segment.end_offset} >= {high_watermark})", True)
    return ELIGIBLE


def plan_partition(partition: LocalPartition, state: LogDirState, topic_filter: TopicFilter,
                   disabled_topics: frozenset[str] = frozenset()) -> list[tuple[LocalSegment, Verdict]]:
    problem = partition_reason(partition, state, topic_filter, disabled_topics)
    high_watermark = state.high_watermarks.get(partition.tp)
    plan = [(segment, segment_verdict(segment, problem, high_watermark)) for segment in partition.segments]
    # Kafka takes the producer snapshot at the new segment's base offset just after creating
    # that segment (UnifiedLog.roll), so the newest rolled segment can be seen before its
    # snapshot exists; it waits for it rather than going without (seen on a real broker).
    if len(plan) >= 2 and plan[-1][0].is_active:
        segment, verdict = plan[-2]
        if verdict.eligible and segment.snapshot_path is None:
            plan[-2] = (segment, Verdict(False, "producer snapshot not written yet (the broker takes it just "
                                                "after the roll)", True))
    return plan
