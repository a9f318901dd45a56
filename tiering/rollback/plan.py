"""What a rollback of one partition restores, worked out from the log dir and the manifests.

Pure: the partition's local segments, its checkpoints and the manifests found in the store
in; the segments to download (newest first), the checkpoint changes and any reason to refuse
out. The restored segments must join the local ones without a gap or an overlap, so the
chain is followed down from the first local segment and stops at the first break: a broker
loading the result sees one contiguous log.

In a cluster (the manifests come from more than one broker, or carry leader epochs) the
store's segments are the partition's chain, whose uploads have other boundaries than this
broker's segments, and may overlap. What is restored is then the chain's pieces
(tiering.cluster.chain), cut at the first local offset, newest first: each piece becomes one
segment file named for its first offset, holding exactly the batches of its offsets from the
upload that serves them (the newer leader epoch's copy). A piece that is a whole upload is
restored with all its files, as in single mode; a piece cut from an upload (its head served by
another upload, or its tail by a newer one or by the local log) is restored as its `.log`
alone, cut at batch boundaries (piece boundaries are batch boundaries in every replica's copy
below the high watermark), and without index files or producer snapshot, which would describe
the whole upload: the broker rebuilds a segment's missing indexes when it loads the log
(LogLoader: no offset index -> recoverSegment), as it does after an unclean shutdown. So the
result is a log Kafka loads: segments in offset order, no offset twice, no gap.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from tiering.kafka.checkpoints import EpochEntry
from tiering.kafka.logdir import LocalPartition
from tiering.kafka.names import segment_file_name
from tiering.read.remote_chain import RemoteChain
from tiering.store.manifest import ObjectEntry, SegmentManifest

# Remote object kind -> local file extension. The leader-epoch object is not a file of the
# segment: the epochs go back into the partition's checkpoint instead (merge_leader_epochs).
_FILE_KINDS = ("index", "timeindex", "txnindex", "snapshot", "log")   # the .log is renamed last


@dataclass(frozen=True)
class RestoreFile:
    name: str              # the file's name inside the partition directory
    entry: ObjectEntry


@dataclass(frozen=True)
class SegmentRestore:
    manifest: SegmentManifest
    files: tuple[RestoreFile, ...]       # the .log last
    # A chain piece cut from its upload: the offsets first..last of it (None: the whole upload)
    cut: tuple[int, int] | None = None

    @property
    def base_offset(self) -> int:
        return self.manifest.base_offset if self.cut is None else self.cut[0]

    @property
    def end_offset(self) -> int:
        return self.manifest.end_offset if self.cut is None else self.cut[1]

    @property
    def bytes(self) -> int:
        return sum(f.entry.size for f in self.files)


def restore_files(manifest: SegmentManifest) -> tuple[RestoreFile, ...]:
    """The local files a segment's objects become. Names come from the manifest's offsets
    (integers), never from its keys, so no manifest can name a path outside the partition."""
    files = []
    for kind in _FILE_KINDS:
        entry = manifest.object(kind)
        if entry is None:
            continue
        # The producer snapshot taken when the segment rolled is named for the next segment's base.
        offset = manifest.end_offset + 1 if kind == "snapshot" else manifest.base_offset
        files.append(RestoreFile(segment_file_name(offset, kind), entry))
    return tuple(files)


@dataclass(frozen=True)
class PartitionPlan:
    topic: str
    partition: int
    topic_id: str | None
    log_dir: Path
    path: Path
    local_first: int | None                   # base offset of the first local segment now
    restore: tuple[SegmentRestore, ...]       # newest first: the order they are restored in
    local_copies: tuple[SegmentManifest, ...]  # store copies of segments that are local already
    log_start: int | None                     # the broker's log-start-offset-checkpoint entry
    refused: str | None = None                # why nothing is written to this partition
    left: str | None = None                   # what stays in the store and why (a gap)
    duplicates: tuple[SegmentManifest, ...] = ()   # second uploads of a segment (not the chosen one)

    @property
    def name(self) -> str:
        return f"{self.topic}-{self.partition}"

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.restore)

    @property
    def first_offset(self) -> int | None:
        """The first offset on disk once the plan is carried out."""
        return self.restore[-1].base_offset if self.restore else self.local_first

    @property
    def new_log_start(self) -> int | None:
        """The log start the checkpoint must say after the restore, when it says more now (the
        broker would delete the restored segments as being below its log start)."""
        first = self.first_offset
        if self.refused or first is None or self.log_start is None or self.log_start <= first:
            return None
        return first

    @property
    def has_work(self) -> bool:
        return bool(self.restore) or self.new_log_start is not None or self.refused is not None \
            or self.left is not None


def plan_partition(local: LocalPartition, manifests: Iterable[SegmentManifest],
                   invalid: Sequence[tuple[str, str]], log_start: int | None) -> PartitionPlan:
    """`invalid`: (manifest key, why) for manifests that failed validation."""
    duplicates: list[SegmentManifest] = []

    def plan(restore: tuple[SegmentRestore, ...] = (), copies: tuple[SegmentManifest, ...] = (),
             refused: str | None = None, left: str | None = None) -> PartitionPlan:
        return PartitionPlan(local.topic, local.partition, local.topic_id, local.log_dir, local.path, local_first,
                             restore, copies, log_start, refused, left, tuple(duplicates))

    local_first = local.segments[0].base_offset if local.segments else None
    if local.topic_id is None:
        return plan(refused=f"{local.topic_id_problem}; the store's keys for it cannot be found")
    if invalid:
        key, why = invalid[0]
        more = f" (and {len(invalid) - 1} more)" if len(invalid) > 1 else ""
        return plan(refused=f"manifest {key} is not usable: {why}{more}; nothing is restored from a store that "
                            "holds it: check it with 'tiering verify', move it aside, then rerun")
    if local_first is None:
        return plan(refused="the partition directory holds no segment (not even the active one); "
                            "start the broker once so it creates it, stop it, then rerun")
    manifests = list(manifests)
    if _is_cluster_chain(manifests):
        return _plan_chain(local, manifests, local_first, plan, duplicates)
    by_base: dict[int, SegmentManifest] = {}
    for manifest in manifests:
        known = by_base.get(manifest.base_offset)
        # Two complete uploads of one segment: the newer one (their content is the same
        # unless the broker rewrote the segment in between, and then the newer one is right).
        if known is None or manifest.created_at_ms > known.created_at_ms:
            by_base[manifest.base_offset] = manifest
            if known is not None:
                duplicates.append(known)
        else:
            duplicates.append(manifest)
    copies = tuple(m for b, m in sorted(by_base.items()) if b >= local_first)
    below = [m for b, m in sorted(by_base.items(), reverse=True) if b < local_first]
    chain: list[SegmentRestore] = []
    expected_end = local_first - 1
    left = None
    for manifest in below:
        if manifest.end_offset >= local_first:
            return plan(copies=copies, refused=(
                f"the store's segment {manifest.base_offset}..{manifest.end_offset} overlaps the local segment "
                f"at {local_first} (the broker rewrote its log since the upload); restoring it would duplicate "
                "offsets, so nothing is restored"))
        if manifest.end_offset != expected_end:
            skipped = sum(1 for m in below if m.base_offset <= manifest.base_offset)
            left = (f"offsets {manifest.end_offset + 1}..{expected_end} are in neither tier; the {skipped} "
                    f"segment(s) below offset {manifest.end_offset + 1} stay in the store (a restored log "
                    "must not have a gap)")
            break
        chain.append(SegmentRestore(manifest, restore_files(manifest)))
        expected_end = manifest.base_offset - 1
    return plan(tuple(chain), copies, left=left)


def _is_cluster_chain(manifests: list[SegmentManifest]) -> bool:
    """Uploads by more than one broker, or under leader epochs: a cluster's chain."""
    return len({m.broker_id for m in manifests}) > 1 or any(m.leader_epoch is not None for m in manifests)


def _plan_chain(local: LocalPartition, manifests: list[SegmentManifest], local_first: int, plan,
                duplicates: list[SegmentManifest]) -> PartitionPlan:
    """The chain's pieces below the first local offset, newest first, down to the first gap."""
    chain = RemoteChain.of((_key(m), m) for m in manifests)
    duplicates += [chain.manifests[link.manifest_key] for link in chain.shadowed()]
    copies = tuple(m for m in manifests if m.base_offset >= local_first and _key(m) not in
                   {link.manifest_key for link in chain.shadowed()})
    pieces = list(chain.chain.pieces_within(0, local_first - 1)) if local_first > 0 else []
    restore: list[SegmentRestore] = []
    expected_end = local_first - 1
    left = None
    for piece in reversed(pieces):
        manifest = chain.manifests[piece.link.manifest_key]
        if piece.last != expected_end:
            below = sum(1 for p in pieces if p.last < piece.first)
            left = (f"offsets {piece.last + 1}..{expected_end} are in neither tier; the {below + 1} piece(s) of "
                    f"the chain below offset {piece.last + 1} stay in the store (a restored log must not have "
                    "a gap)")
            break
        whole = piece.first == manifest.base_offset and piece.last == manifest.end_offset
        if whole:
            restore.append(SegmentRestore(manifest, restore_files(manifest)))
        else:
            log = manifest.object("log")
            assert log is not None   # parse_manifest guarantees a log object
            restore.append(SegmentRestore(manifest, (RestoreFile(segment_file_name(piece.first, "log"), log),),
                                          (piece.first, piece.last)))
        expected_end = piece.first - 1
    return plan(tuple(restore), copies, left=left)


def _key(manifest: SegmentManifest) -> str:
    return f"{manifest.base_offset:020d}-{manifest.uid}"


def merge_leader_epochs(current: Sequence[EpochEntry], manifests: Iterable[SegmentManifest]) -> tuple[EpochEntry, ...]:
    """The partition's leader-epoch checkpoint with the epochs of restored segments put back.

    The broker trims the checkpoint from the start as its log start moves (dropping earlier
    epochs and moving the first kept one up to the new log start), so the entries to put back
    are those that start below the checkpoint's first entry. Each epoch starts at the lowest
    offset any source gives it; epochs and start offsets must both rise.
    """
    starts: dict[int, int] = {}
    for manifest in manifests:
        for epoch, start in manifest.leader_epochs:
            starts[epoch] = min(start, starts.get(epoch, start))
    if current:
        first = current[0]
        starts = {e: s for e, s in starts.items() if e <= first.epoch and s < first.start_offset}
        merged = dict(starts)
        merged[first.epoch] = min(first.start_offset, starts.get(first.epoch, first.start_offset))
        for entry in current[1:]:
            merged[entry.epoch] = entry.start_offset
    else:
        merged = starts
    result: list[EpochEntry] = []
    for epoch in sorted(merged, reverse=True):   # from the newest down, keeping both orders strict
        start = merged[epoch]
        if result and start >= result[-1].start_offset:
            continue
        result.append(EpochEntry(epoch, start))
    return tuple(reversed(result))
