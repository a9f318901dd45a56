"""Carrying out retention plans: deletions in the store, then on the local disk.

- **Store** (total retention): every expiring segment's manifest goes first, in one batched
  DeleteObjects, and its data objects after, so a crash in between leaves orphans (deleted
  again on the next pass, or by the sweep), never a manifest without its data.
- **Local disk**, by `local_delete`:
  - `unlink`: only while no broker holds the log dir's lock (held by us meanwhile); the
    segment's index files go first and its `.log` last, so a crash in between leaves a
    segment the next pass finishes, never index files without a `.log`;
  - `kafka-admin`: DeleteRecords up to the first segment kept; the broker deletes the files;
  - `off`: nothing.
  A segment leaving the local disk by local retention is checked against the store first:
  manifest present, every object there with the size and ETag the manifest recorded, and the
  manifest describing this very segment (end offset, size).
- **Only our keys.** A journal row whose manifest key is not this deployment's
  (`KeyLayout.parse`: a journal rebuilt by an older version from another deployment's keys
  nested under our prefix, or a prefix or hash_prefix changed since) is left out of planning:
  never deleted, never counted, one warning per pass.

The runner reads the journal's records but does not write them: it returns what changed
(segments expired, timestamps learned) for the journal's owner to record.

**In a cluster** (`leadership` given) every partition's store copy is its chain, read from the
store on each pass (manifests are fetched once and kept: they never change): a local segment
may go when the chain covers its offsets, whoever uploaded them, after the same check of every
upload serving them; with `kafka-admin` only the leader's sidecar sends DeleteRecords (the
broker applies it to every replica), and only the leader's sidecar expires the store's copies,
every broker's, by the chain's pieces (an upload goes when all the offsets it serves do, and
an upload that serves none, overlapped by others, with the last piece it lies under).
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from tiering.cluster.chain import ChainLink
from tiering.config import Config
from tiering.errors import TieringError
from tiering.files import fsync_dir
from tiering.journal import SegmentId, SegmentRecord, SegmentState
from tiering.kafka.lock import BrokerRunning, broker_stopped
from tiering.kafka.logdir import LocalSegment, LogDirScan
from tiering.kafka.names import segment_file_name
from tiering.kafka.topicconfig import TopicConfigs
from tiering.kafka.validbytes import ValidBytes
from tiering.read.remote_chain import RemoteChain, partition_manifest_keys
from tiering.retention.admin import AdminError, RecordDeleter
from tiering.retention.inputs import ChainInputs, PartitionView, partition_views
from tiering.retention.plan import Deletion, RetentionPlan, plan_retention
from tiering.store.errors import StoreError
from tiering.store.keys import OBJECT_SUFFIXES, KeyLayout
from tiering.store.manifest import ManifestError, SegmentManifest, fetch_manifest
from tiering.store.owned import owned_objects
from tiering.store.protocol import ObjectStore

if TYPE_CHECKING:    # prometheus_client is imported where metrics are made: `run --once` makes none
    from tiering.observability.metrics import Metrics


@dataclass(frozen=True)
class Deleted:
    segment: SegmentId
    tier: str           # "local" or "remote"
    reason: str
    size: int


@dataclass(frozen=True)
class RetentionReport:
    deleted: tuple[Deleted, ...] = ()
    blocked: tuple[tuple[str, str], ...] = ()         # (log dir, why) where unlink was refused
    failures: tuple[str, ...] = ()
    expired: tuple[tuple[SegmentId, str], ...] = ()   # removed from the store (reason): journal -> expired
    max_timestamps: tuple[tuple[SegmentId, int], ...] = ()   # learned from manifests (older journals)
    forgotten: tuple[SegmentId, ...] = ()             # expired rows with no local copy left

    def count(self, tier: str) -> int:
        return sum(1 for d in self.deleted if d.tier == tier)


@dataclass
class _Pass:
    layout: KeyLayout
    deleted: list[Deleted] = field(default_factory=list)
    blocked: list[tuple[str, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    expired: list[tuple[SegmentId, str]] = field(default_factory=list)
    # Cluster mode: partitions (topic id, partition) whose planned store deletions went through
    chain_expired: set[tuple[str | None, int]] = field(default_factory=set)


class RetentionRunner:
    def __init__(self, store: ObjectStore, log: Any, now_ms: Callable[[], int], *,
                 deleter_factory: Callable[[str], RecordDeleter] | None = None,
                 metrics: Metrics | None = None,
                 disabled_now: Callable[[], frozenset[str]] = frozenset):
        self.store = store
        # Asked again right before local deletion (under the broker's lock for `unlink`): a
        # pass planned before a rollback turned a topic off must not delete what it restored.
        self.disabled_now = disabled_now
        self.log = log
        self.now_ms = now_ms
        self.deleter_factory = deleter_factory
        self.metrics = metrics
        self._deleter: RecordDeleter | None = None
        self._manifests: dict[str, SegmentManifest] = {}     # cluster mode: immutable, kept
        self._active_sizes = ValidBytes()                    # what each active segment holds, per file

    def close(self) -> None:
        if self._deleter is not None:
            self._deleter.close()
            self._deleter = None

    def run(self, config: Config, scan: LogDirScan, records: list[SegmentRecord],
            disabled: frozenset[str], configs: TopicConfigs = TopicConfigs(),
            leadership: Any = None) -> RetentionReport:
        """`leadership`: cluster mode (a tiering.cluster.leadership.LeadershipView: this
        broker's role per partition); None: single mode."""
        layout = config.store.layout
        ours, foreign = [], []
        for record in records:
            owned = record.manifest_key is None or layout.parse(record.manifest_key) is not None
            (ours if owned else foreign).append(record)
        if foreign:
            self.log.warning("journal rows name store keys outside this deployment's layout; retention leaves "
                             "them alone", rows=len(foreign), example=foreign[0].manifest_key, prefix=layout.prefix,
                             hint="they are another deployment's keys nested under store.prefix, or of an earlier "
                                  "store.prefix or store.hash_prefix; check those two settings")
            records = ours
        learned = self._fill_max_timestamps(records)
        if learned:
            updated = dict(learned)
            records = [_with_timestamp(r, updated.get(r.id)) for r in records]
        now = self.now_ms()
        work = _Pass(layout)
        chains = self._chains(scan, layout, leadership, work) if leadership is not None else None
        views = partition_views(config, scan, records, disabled, self._active_sizes, configs, chains)
        self._active_sizes.forget_unused()
        plans = [(view, plan_retention(view.input, now)) for view in views]
        self._delete_remote(plans, work)
        self._delete_local(config, plans, work)
        local_left = {(s.topic, s.partition, s.base_offset) for p in scan.partitions for s in p.segments}
        deleted_local = {d.segment for d in work.deleted if d.tier == "local"}
        forgotten = tuple(r.id for r in records if r.state is SegmentState.EXPIRED
                          and ((r.id.topic, r.id.partition, r.id.base_offset) not in local_left or r.id in deleted_local))
        return RetentionReport(tuple(work.deleted), tuple(work.blocked), tuple(work.failures), tuple(work.expired),
                               tuple(learned), forgotten)

    # -- the store ---------------------------------------------------------------------------

    def _chains(self, scan: LogDirScan, layout: KeyLayout, leadership: Any, work: _Pass) -> ChainInputs:
        """Each local partition's chain; one that cannot be read is held (nothing deleted)."""
        chains, unreadable = {}, {}
        listed: set[str] = set()
        for partition in scan.partitions:
            if partition.topic_id is None:
                continue
            key = (partition.topic, partition.topic_id, partition.partition)
            root = layout.partition(*key).root
            try:
                keys = [info.key for _, info in partition_manifest_keys(self.store, layout, root)]
                manifests = [(k, self._manifest(k)) for k in keys]
            except (StoreError, ManifestError) as exc:
                unreadable[key] = str(exc)
                self._fail(work, f"{partition.topic}-{partition.partition}: the partition's chain could not be read "
                                 f"from the store, nothing of it deleted: {exc}")
                continue
            listed.update(keys)
            chains[key] = RemoteChain.of(manifests)
        for gone in set(self._manifests) - listed:
            del self._manifests[gone]
        return ChainInputs(chains, leadership.role, unreadable)

    def _manifest(self, key: str) -> SegmentManifest:
        manifest = self._manifests.get(key)
        if manifest is None:
            manifest = self._manifests[key] = fetch_manifest(self.store, key)
        return manifest

    def _doomed_links(self, view: PartitionView, plan: RetentionPlan) -> list[tuple[ChainLink, Deletion]]:
        """Cluster mode: the uploads total retention removes, each with the deletion of its
        last piece: those whose every piece is planned to go, and those serving no offset
        that lie wholly below the last offset going."""
        assert view.chain is not None and view.pieces is not None
        going = {d.base_offset: d for d in plan.remote}
        if not going:
            return []
        pieces_of: dict[str, list[int]] = defaultdict(list)
        for piece in view.chain.pieces:
            pieces_of[piece.link.manifest_key].append(piece.first)
        doomed = []
        for key, firsts in pieces_of.items():
            if all(first in going for first in firsts):
                doomed.append((view.pieces[firsts[-1]], going[firsts[-1]]))
        last = max(going)
        gone_to = next(p.last for p in view.chain.pieces if p.first == last)
        for link in view.chain.shadowed():
            if link.end_offset <= gone_to:
                deletion = going[max(f for f in going if f <= link.end_offset)]
                doomed.append((link, Deletion(link.base_offset, 0, deletion.reason)))
        return doomed

    def _fill_max_timestamps(self, records: list[SegmentRecord]) -> list[tuple[SegmentId, int]]:
        """Rows written before the journal kept timestamps, or kept a segment's missing one
        (-1): read the effective one from the manifests once."""
        learned = []
        for record in records:
            if record.state is SegmentState.UPLOADED and (record.max_timestamp is None or record.max_timestamp < 0) \
                    and record.manifest_key:
                try:
                    manifest = fetch_manifest(self.store, record.manifest_key)
                except (StoreError, ManifestError) as exc:
                    self.log.warning("cannot read a manifest for its timestamp; time retention skips the segment",
                                     key=record.manifest_key, error=str(exc))
                    continue
                learned.append((record.id, manifest.effective_max_timestamp))
        return learned

    def _delete_remote(self, plans: list[tuple[PartitionView, RetentionPlan]], work: _Pass) -> None:
        doomed: list[tuple[PartitionView, Deletion, SegmentRecord | ChainLink]] = []
        for view, plan in plans:
            if view.chain is not None:
                doomed += [(view, deletion, link) for link, deletion in self._doomed_links(view, plan)]
                continue
            for deletion in plan.remote:
                doomed.append((view, deletion, view.remote[deletion.base_offset]))
        if not doomed:
            return
        manifests, data = [], []
        for _, _, record in doomed:
            parsed = work.layout.parse(record.manifest_key or "")
            if parsed is not None and parsed.is_manifest:   # run() left out every other row
                manifests.append(record.manifest_key)
                data += [f"{parsed.stem}.{suffix}" for suffix in OBJECT_SUFFIXES.values()]
        try:
            self.store.delete_objects(manifests)      # first: the segment stops existing for readers
        except StoreError as exc:
            self._fail(work, f"total retention: cannot delete {len(manifests)} manifest(s) from the store: {exc}")
            return
        for view, deletion, record in doomed:
            sid = view.segment_id(deletion.base_offset)
            if isinstance(record, ChainLink):
                work.chain_expired.add((view.topic_id, view.partition))
                sid = view.segment_id(record.base_offset)
                if view.local is not None and record.broker_id == view.state.broker_id:
                    work.expired.append((sid, deletion.reason))     # our own upload: the journal's row
            else:
                work.expired.append((sid, deletion.reason))
            work.deleted.append(Deleted(sid, "remote", deletion.reason, deletion.size))
            self._count("remote", deletion)
            self.log.info("segment deleted from the store", topic=view.topic, partition=view.partition,
                          base_offset=deletion.base_offset, reason=deletion.reason, bytes=deletion.size,
                          key=record.manifest_key)
        try:
            self.store.delete_objects(data)           # then its data (missing keys are no error)
        except StoreError as exc:
            self._fail(work, f"total retention: manifests deleted, their data objects not (left for the sweep): {exc}")

    # -- the local disk ----------------------------------------------------------------------

    def _delete_local(self, config: Config, plans: list[tuple[PartitionView, RetentionPlan]], work: _Pass) -> None:
        by_dir: dict[Path, list[tuple[PartitionView, RetentionPlan]]] = defaultdict(list)
        admin: list[tuple[PartitionView, RetentionPlan]] = []
        for view, plan in plans:
            if not plan.local or view.local is None:
                continue
            if view.local_delete == "unlink":
                by_dir[view.local.log_dir].append((view, plan))
            elif view.local_delete == "kafka-admin" and view.leads:
                # In a cluster the leader's DeleteRecords trims every replica; another sidecar
                # asking would be a second voice for the same partition.
                admin.append((view, plan))
        for log_dir, items in sorted(by_dir.items()):
            try:
                with broker_stopped(log_dir):
                    disabled = self._disabled_now(work)
                    for view, plan in items:
                        if disabled is not None and view.topic not in disabled:
                            self._unlink_partition(view, plan, work)
            except BrokerRunning as exc:
                work.blocked.append((str(log_dir), exc.state.detail))
        if admin:
            disabled = self._disabled_now(work)
            admin = [(view, plan) for view, plan in admin if disabled is not None and view.topic not in disabled]
            if admin:
                self._delete_records(config, admin, work)

    def _disabled_now(self, work: _Pass) -> frozenset[str] | None:
        """Topics turned off now; None (delete nothing locally) when that cannot be read."""
        try:
            return self.disabled_now()
        except TieringError as exc:
            self._fail(work, f"local deletion skipped: {exc}")
            return None

    def _deletable(self, view: PartitionView, plan: RetentionPlan, work: _Pass) -> list[tuple[Deletion, LocalSegment]]:
        """The planned local deletions that pass the check against the store, in order, up to
        the first that does not (deletion stays a prefix)."""
        assert view.local is not None
        segments = {s.base_offset: s for s in view.local.segments}
        expired_now = {sid.base_offset for sid, _ in work.expired if sid.topic_id == view.topic_id
                       and sid.partition == view.partition} | view.expired
        ready = []
        for deletion in plan.local:
            segment = segments[deletion.base_offset]
            if deletion.reason.startswith("total-"):
                chain_gone = view.chain is not None and (view.topic_id, view.partition) in work.chain_expired
                if deletion.base_offset not in expired_now and not chain_gone:
                    break   # its store copy could not be deleted: keep the local one in step
            elif view.chain is not None:
                problem = self._check_chain(view.chain, segment, work.layout)
                if problem is not None:
                    self._fail(work, f"{segment.log_path}: not deleted: {problem}")
                    break
            else:
                problem = self._check_remote(view.remote[deletion.base_offset], segment, work.layout)
                if problem is not None:
                    self._fail(work, f"{segment.log_path}: not deleted: {problem}")
                    break
            ready.append((deletion, segment))
        return ready

    def _check_remote(self, record: SegmentRecord, segment: LocalSegment, layout: KeyLayout) -> str | None:
        key = record.manifest_key or ""
        parsed = layout.parse(key)
        if parsed is None:
            return f"the journal names no valid manifest ({key!r})"
        try:
            listing = {info.key: info for _, info in owned_objects(self.store, layout, under=parsed.stem + ".")}
            if key not in listing:
                return f"its manifest {key} is not in the store"
            manifest = fetch_manifest(self.store, key)
        except StoreError as exc:
            return f"the store could not be checked: {exc}"
        except ManifestError as exc:
            return f"its manifest {key} is invalid: {exc}"
        if manifest.end_offset != segment.end_offset or manifest.size_bytes != segment.size:
            return (f"the store's copy covers {manifest.base_offset}..{manifest.end_offset} in {manifest.size_bytes} "
                    f"bytes, the local one {segment.base_offset}..{segment.end_offset} in {segment.size}")
        return _objects_unlike(manifest, listing)

    def _check_chain(self, chain: RemoteChain, segment: LocalSegment, layout: KeyLayout) -> str | None:
        """Every upload serving the segment's offsets is in the store as its manifest says."""
        assert segment.end_offset is not None
        if not chain.chain.covers(segment.base_offset, segment.end_offset):
            return f"the partition's chain does not cover {segment.base_offset}..{segment.end_offset}"
        for link in chain.links_serving(segment.base_offset, segment.end_offset):
            manifest = chain.manifests[link.manifest_key]
            parsed = layout.parse(link.manifest_key)
            if parsed is None:
                return f"{link.manifest_key!r} is not this deployment's key"
            try:
                listing = {info.key: info for _, info in owned_objects(self.store, layout, under=parsed.stem + ".")}
            except StoreError as exc:
                return f"the store could not be checked: {exc}"
            if link.manifest_key not in listing:
                return f"its manifest {link.manifest_key} is not in the store"
            unlike = _objects_unlike(manifest, listing)
            if unlike is not None:
                return unlike
        return None

    def _unlink_partition(self, view: PartitionView, plan: RetentionPlan, work: _Pass) -> None:
        for deletion, segment in self._deletable(view, plan, work):
            try:
                for _, path in segment.index_paths:
                    _unlink(path)
                if segment.index_paths:
                    fsync_dir(segment.log_path.parent)   # the index files are gone before the .log goes
                _unlink(segment.log_path)
                # As Kafka's deleteSegments (ProducerStateManager.removeAndMarkSnapshotForDeletion
                # of each deleted segment's base offset): the producer snapshot taken at this
                # segment's start goes with it; the one at the new log start stays. After the
                # .log: a crash in between leaves a stale snapshot, which the broker's load
                # removes (below the log start), never a segment without its snapshot.
                _unlink(segment.log_path.parent / segment_file_name(segment.base_offset, "snapshot"))
                fsync_dir(segment.log_path.parent)
            except OSError as exc:
                self._fail(work, f"{segment.log_path}: cannot delete ({exc.strerror}); check the permissions "
                                 "of the partition directory")
                return
            self._deleted(work, view, deletion, "segment deleted locally", path=str(segment.log_path))

    def _delete_records(self, config: Config, items: list[tuple[PartitionView, RetentionPlan]], work: _Pass) -> None:
        offsets: dict[tuple[str, int], int] = {}
        chosen: dict[tuple[str, int], tuple[PartitionView, list[Deletion]]] = {}
        for view, plan in items:
            ready = self._deletable(view, plan, work)
            if not ready:
                continue
            last = ready[-1][1]
            assert last.next_offset is not None and view.state is not None and view.local is not None
            keep_from = last.next_offset
            start = view.state.log_start_offsets.get(view.local.tp)
            if start is not None and start >= keep_from:
                continue   # already asked; the broker deletes the files at its next retention check
            offsets[(view.topic, view.partition)] = keep_from
            chosen[(view.topic, view.partition)] = (view, [d for d, _ in ready])
        if not offsets:
            return
        try:
            if self._deleter is None:
                if self.deleter_factory is None or not config.kafka.bootstrap_servers:
                    raise AdminError("kafka.bootstrap_servers is not set")
                self._deleter = self.deleter_factory(config.kafka.bootstrap_servers)
            results = self._deleter.delete_records(offsets)
        except AdminError as exc:
            self._fail(work, f"local_delete = kafka-admin: {exc}")
            return
        for key, error in sorted(results.items()):
            view, deletions = chosen[key]
            if error is not None:
                self._fail(work, f"{key[0]}-{key[1]}: DeleteRecords to offset {offsets[key]} failed: {error}")
                continue
            for deletion in deletions:
                self._deleted(work, view, deletion, "broker asked to delete segment (DeleteRecords)",
                              log_start_offset=offsets[key])

    # -- bookkeeping -------------------------------------------------------------------------

    def _deleted(self, work: _Pass, view: PartitionView, deletion: Deletion, event: str, **fields: object) -> None:
        work.deleted.append(Deleted(view.segment_id(deletion.base_offset), "local", deletion.reason, deletion.size))
        self._count("local", deletion)
        self.log.info(event, topic=view.topic, partition=view.partition, base_offset=deletion.base_offset,
                      reason=deletion.reason, bytes=deletion.size, **fields)

    def _count(self, tier: str, deletion: Deletion) -> None:
        if self.metrics:
            self.metrics.retention_deleted_segments.labels(tier, deletion.reason).inc()
            self.metrics.retention_deleted_bytes.labels(tier, deletion.reason).inc(deletion.size)

    def _fail(self, work: _Pass, line: str) -> None:
        work.failures.append(line)
        self.log.error("retention step failed", detail=line)
        if self.metrics:
            self.metrics.retention_failures.inc()


def _with_timestamp(record: SegmentRecord, max_timestamp: int | None) -> SegmentRecord:
    return record if max_timestamp is None else replace(record, max_timestamp=max_timestamp)


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def log_blocked(log: Any, log_dir: str, detail: str) -> None:
    """The one error line for a log dir whose broker lock refused `unlink`."""
    log.error("local retention refused: a broker holds the log dir's lock; nothing unlinked",
              log_dir=log_dir, detail=detail,
              hint="stop the broker, or use local_delete = \"kafka-admin\" while it runs")


def record_report(journal: Any, report: RetentionReport, now_ms: int) -> None:
    """Write what a retention pass changed into the journal (by the journal's owner)."""
    for sid, max_timestamp in report.max_timestamps:
        journal.set_max_timestamp(sid, max_timestamp)
    for sid, reason in report.expired:
        journal.mark_expired(sid, reason, now_ms)
    for sid in report.forgotten:
        journal.forget(sid)


def _objects_unlike(manifest: SegmentManifest, listing: dict) -> str | None:
    """Why the store's listing does not hold the manifest's objects as it recorded them."""
    for entry in manifest.objects:
        info = listing.get(entry.key)
        if info is None:
            return f"object {entry.key} is missing from the store"
        if info.size != entry.size or (entry.etag and info.etag != entry.etag):
            return (f"object {entry.key} is {info.size} bytes (ETag {info.etag}) in the store, the manifest "
                    f"recorded {entry.size} (ETag {entry.etag})")
    return None
