"""From what is on disk and in the journal to the planner's inputs, one partition at a time.

Pure: a log-dir scan, journal records and the configuration in. A partition is one topic
incarnation (topic id) and partition number; its remote segments are the journal's `uploaded`
rows (the journal is rebuilt from the store's manifests when lost). Partitions that exist only
in the store (a topic deleted or moved away) still get total retention.

In a cluster (`chains` given: each local partition's chain, read from the store) the store's
copy of a partition is its chain, whoever uploaded it: a local segment is in the store when
the chain covers all its offsets (its time, for local retention, the largest of the uploads
serving them), and total retention, planned over the chain's pieces, is the leader's sidecar's
alone (every other role holds it), as DeleteRecords is.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Callable

from tiering.cluster.chain import ChainLink
from tiering.cluster.leadership import LEADER
from tiering.config import Config
from tiering.journal import SegmentId, SegmentRecord, SegmentState
from tiering.kafka.eligibility import TopicFilter, partition_reason, plan_partition
from tiering.kafka.logdir import LocalPartition, LocalSegment, LogDirScan, LogDirState
from tiering.kafka.topicconfig import EffectiveRetention, TopicConfigs, effective_retention
from tiering.read.remote_chain import RemoteChain
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
    # Cluster mode: the partition's chain, this broker's role for it, and the link each
    # planned remote copy (a chain piece, by its first offset) is read from.
    chain: RemoteChain | None = None
    role: str | None = None
    pieces: dict[int, ChainLink] | None = None

    @property
    def leads(self) -> bool:
        """Whether this sidecar may act for the whole partition (DeleteRecords, total
        retention): always in single mode, only as the leader's sidecar in a cluster."""
        return self.chain is None or self.role == LEADER

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
                    configs: TopicConfigs = TopicConfigs(),
                    chains: ChainInputs | None = None) -> list[PartitionView]:
    """`chains`: cluster mode (None: single mode, as before)."""
    topic_filter = TopicFilter(config.kafka.include, config.kafka.exclude, configs)
    uploaded: dict[tuple[str, str, int], dict[int, SegmentRecord]] = defaultdict(dict)
    others: dict[tuple[str, str, int], dict[int, SegmentRecord]] = defaultdict(dict)   # failed, expired
    for record in records:
        key = (record.id.topic, record.id.topic_id, record.id.partition)
        if record.state is SegmentState.UPLOADED:
            uploaded[key][record.id.base_offset] = record
        elif record.state in (SegmentState.FAILED, SegmentState.EXPIRED):
            others[key][record.id.base_offset] = record
    # Once per topic, not per partition: it is the same for all of a topic's partitions, and a
    # broker with 100 topics of 100 partitions would work it out 10,000 times a pass.
    retention_of: Callable[[str], EffectiveRetention] = functools.cache(
        lambda topic: effective_retention(config, topic, configs))

    views, seen = [], set()
    for partition in scan.partitions:
        key = (partition.topic, partition.topic_id or "", partition.partition)
        seen.add(key)
        state = scan.log_dir_state(partition.log_dir)
        view = _local_view(config, partition, state, topic_filter, disabled, uploaded.get(key, {}),
                           others.get(key, {}), retention_of(partition.topic), active_size)
        if chains is not None:
            view = _chain_view(view, chains, partition, active_size)
        views.append(view)
    for key in sorted(uploaded.keys() - seen):
        topic, topic_id, number = key
        policy = config.retention_for(topic)
        remote = uploaded[key]
        retention = retention_of(topic)
        hold = retention.hold
        if chains is not None and hold is None:
            # This broker's uploads of a partition it no longer holds are links of a chain that
            # may live on elsewhere (a reassignment): its leader's sidecar expires them with
            # the rest; by the journal's rows alone they would go out of turn.
            hold = "not on this broker: in a cluster its chain's total retention is its leader's sidecar's"
        views.append(PartitionView(topic, topic_id, number, None, None, remote, frozenset(),
                                   PartitionInput((), _remote_copies(remote), _limits(retention),
                                                  remote_hold=hold),
                                   policy.local_delete, retention))
    return views


@dataclass(frozen=True)
class ChainInputs:
    """Cluster mode's inputs: each partition's chain ((topic, topic id, partition) -> chain;
    missing: it could not be read, the reason in `unreadable`) and this broker's roles."""

    chains: dict[tuple[str, str, int], RemoteChain]
    roles: Callable[[str, int], str]
    unreadable: dict[tuple[str, str, int], str] | None = None


def _chain_view(view: PartitionView, inputs: ChainInputs, partition: LocalPartition,
                active_size: ActiveSize) -> PartitionView:
    key = (partition.topic, partition.topic_id or "", partition.partition)
    role = inputs.roles(partition.topic, partition.partition)
    chain = inputs.chains.get(key)
    base = view.input
    if chain is None:
        why = (inputs.unreadable or {}).get(key, "not read from the store")
        hold = base.local_hold or f"the partition's chain could not be read ({why})"
        return replace(view, role=role, input=replace(base, local_hold=hold, remote=(),
                                                      remote_hold=f"the partition's chain could not be read ({why})"))
    copies = []
    for copy in base.local:
        if copy.active:
            copies.append(copy)
            continue
        last = copy.next_offset - 1
        if chain.chain.covers(copy.base_offset, last):
            stamps = [chain.manifests[link.manifest_key].effective_max_timestamp
                      for link in chain.links_serving(copy.base_offset, last)]
            copies.append(replace(copy, remote=True, max_timestamp=max(stamps), not_remote_reason=""))
        else:
            missing = _first_missing(chain, copy.base_offset, last)
            why = copy.not_remote_reason if copy.expired else (
                f"offsets from {missing} not in the partition's chain in the store yet (uploaded by the leader's "
                "sidecar)")
            copies.append(replace(copy, remote=False, max_timestamp=None, not_remote_reason=why))
    remote: tuple[RemoteCopy, ...] = ()
    pieces: dict[int, ChainLink] = {}
    remote_hold = base.remote_hold
    if role == LEADER:
        remote, pieces = _piece_copies(chain)
    else:
        remote_hold = remote_hold or f"total retention is the leader's sidecar's (this broker: {role})"
    return replace(view, chain=chain, role=role, pieces=pieces,
                   input=replace(base, local=tuple(copies), remote=remote, remote_hold=remote_hold, by_offsets=True))


def _first_missing(chain: RemoteChain, first: int, last: int) -> int:
    for piece in chain.chain.pieces_within(first, last):
        if piece.first > first:
            return first
        first = piece.last + 1
    return first


def _piece_copies(chain: RemoteChain) -> tuple[tuple[RemoteCopy, ...], dict[int, ChainLink]]:
    """The chain's pieces as the planner's remote copies, oldest first. A link's bytes count
    once (with its first piece); every piece carries its link's time. A link leaves the store
    only when all its pieces are planned to go (tiering.retention.run)."""
    copies, links, counted = [], {}, set()
    for piece in chain.pieces:
        manifest = chain.manifests[piece.link.manifest_key]
        size = 0 if piece.link.manifest_key in counted else manifest.size_bytes
        counted.add(piece.link.manifest_key)
        copies.append(RemoteCopy(piece.first, piece.last, size, manifest.effective_max_timestamp))
        links[piece.first] = piece.link
    return tuple(copies), links


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
                others: dict[int, SegmentRecord], retention: EffectiveRetention,
                active_size: ActiveSize = _file_size) -> PartitionView:
    """`others`: the partition's failed and expired rows; `retention`: its topic's."""
    policy = config.retention_for(partition.topic)
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
