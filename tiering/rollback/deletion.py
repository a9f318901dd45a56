"""Removing a rolled-back partition's store copies once the running cluster confirms the
restored log start: the step `rollback --delete-remote` and the daemon share.

`RemoteCopies.settle` asks the cluster (ListOffsets earliest, answered by the leader) about
the pending partitions, decides each with tiering.rollback.confirm.decide against this
broker's own replica, deletes the verified store copies of the confirmed ones and returns
what happened. It writes no journal: its owner records the outcome (`record`), so the daemon
runs the step on a background thread and records it on its loop, as it does for retention.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable

from tiering.config import Config
from tiering.errors import TieringError
from tiering.files import file_crc32c
from tiering.journal import SegmentId
from tiering.kafka.logdir import scan_log_dirs
from tiering.kafka.names import segment_file_name
from tiering.rollback import confirm
from tiering.rollback.confirm import PendingDeletion
from tiering.rollback.inputs import gather_plans
from tiering.rollback.plan import PartitionPlan
from tiering.rollback.replicas import ReplicaSource, ReplicaSourceError
from tiering.store.errors import StoreError
from tiering.store.keys import PartitionPath
from tiering.store.manifest import SegmentManifest
from tiering.store.protocol import ObjectStore

# The cluster's ListOffsets earliest per (topic, partition); raises TieringError when it
# cannot be asked (tiering.retention.admin.KafkaLogStarts).
EarliestOffsets = Callable[[list[tuple[str, int]]], dict[tuple[str, int], int]]


@dataclass
class DeletionOutcome:
    removed: dict[str, int] = field(default_factory=dict)        # partition -> segments removed
    forgotten: list[SegmentId] = field(default_factory=list)     # journal rows of the removed copies
    checked: dict[str, PendingDeletion] = field(default_factory=dict)   # each record with its verdict
    failures: list[str] = field(default_factory=list)
    asked_error: str | None = None                                # why the cluster gave no answer

    def lines(self, state: str) -> list[str]:
        return [f"{name}: {p.detail}" for name, p in sorted(self.checked.items()) if p.state == state]


def replica_log_start(plan: PartitionPlan) -> int | None:
    """This broker's log start for the partition as Kafka loads it: the checkpoint's entry,
    never below the first segment on disk (Kafka writes no entry while they are equal, and a
    follower that adopted the leader's log start deleted the segments below it)."""
    known = [x for x in (plan.log_start, plan.local_first) if x is not None]
    return max(known) if known else None


RESUMED = ("tiering is on for the topic again (tiering resume): the store's copies are its remote copies now and "
           "the daemon removes nothing; 'tiering rollback --confirm --delete-remote' turns it off and removes them")


class RemoteCopies:
    def __init__(self, store: ObjectStore, log: Any, *, prefix: str, hash_prefix: bool, now_ms: Callable[[], int]):
        self.store = store
        self.log = log
        self.prefix = prefix
        self.hash_prefix = hash_prefix
        self.now_ms = now_ms

    def settle(self, plans: Iterable[PartitionPlan], pending: dict[str, PendingDeletion],
               earliest_offsets: EarliestOffsets | None,
               still_off: Callable[[str], bool] = lambda topic: True) -> DeletionOutcome:
        """Decide and carry out each pending partition that has a plan. `still_off(topic)`:
        asked right before a partition's copies go; a topic turned back on meanwhile (`tiering
        resume`) keeps them (they are its remote copies again)."""
        outcome = DeletionOutcome()
        candidates = [p for p in plans if p.name in pending]
        if not candidates:
            return outcome
        earliest: dict[tuple[str, int], int] = {}
        if earliest_offsets is None:
            outcome.asked_error = "kafka.bootstrap_servers is not set, so the cluster cannot be asked"
        else:
            try:
                earliest = earliest_offsets([(p.topic, p.partition) for p in candidates])
            except TieringError as exc:
                outcome.asked_error = str(exc)
        now = self.now_ms()
        for plan in candidates:
            record = pending[plan.name]
            if plan.refused or plan.left or plan.topic_id is None:
                why = plan.refused or plan.left or "no topic id"
                decision = confirm.Decision(confirm.WAIT, f"the partition cannot be checked ({why}); the store's "
                                                          "copies are kept")
            elif plan.topic_id != record.topic_id:
                decision = confirm.Decision(confirm.WAIT, f"the topic was re-created since the rollback (topic id "
                                                          f"{plan.topic_id}, not {record.topic_id}); the store's "
                                                          "copies are kept")
            else:
                decision = confirm.decide(record, earliest.get((plan.topic, plan.partition)), replica_log_start(plan))
            if decision.action == confirm.DELETE and not still_off(plan.topic):
                decision = confirm.Decision(confirm.WAIT, RESUMED)
            if decision.action == confirm.DELETE and self._delete(plan, outcome):
                outcome.checked[plan.name] = replace(record, state=confirm.CONFIRMED, detail=decision.reason,
                                                     checked_at_ms=now)
                continue
            state = confirm.UNDONE if decision.action == confirm.UNDONE else confirm.WAITING
            detail = decision.reason if decision.action != confirm.DELETE else \
                f"{decision.reason}, but not every store copy could be removed; retried"
            outcome.checked[plan.name] = replace(record, state=state, detail=detail, checked_at_ms=now)
        return outcome

    def _delete(self, plan: PartitionPlan, outcome: DeletionOutcome) -> bool:
        """Delete the store copies of the segments on disk, each verified against its manifest
        first; True when every copy went (or none was left)."""
        assert plan.topic_id is not None
        verified: list[SegmentManifest] = []
        ok = True
        for manifest in (*plan.local_copies, *plan.duplicates):
            log_entry = manifest.object("log")
            local = plan.path / segment_file_name(manifest.base_offset, "log")
            try:
                local_sum = file_crc32c(local)
            except OSError:
                local_sum = None    # a link, FIFO or unreadable file is no verified copy
            if log_entry is None or local_sum != (log_entry.size, log_entry.crc32c):
                outcome.failures.append(f"{plan.name}: the store's copy of segment {manifest.base_offset} differs "
                                        f"from the local {local} (or it is gone); that copy stays in the store")
                ok = False
                continue
            verified.append(manifest)
        if not verified:
            return ok
        path = PartitionPath(self.prefix, plan.topic, plan.topic_id, plan.partition, self.hash_prefix)
        manifest_keys = [path.segment(m.base_offset, m.uid).manifest_key for m in verified]
        data_keys = [o.key for m in verified for o in m.objects]
        try:
            # Manifests first: a segment without one no longer exists for anybody, so a stop
            # between the two calls leaves only orphans, which the daemon's sweep removes.
            self.store.delete_objects(manifest_keys)
            self.store.delete_objects(data_keys)
        except StoreError as exc:
            outcome.failures.append(f"{plan.name}: removing the store's copies failed: {exc}; rerun to finish")
            return False
        outcome.forgotten += [SegmentId(plan.topic, plan.topic_id, plan.partition, m.base_offset) for m in verified]
        outcome.removed[plan.name] = len(verified)
        self.log.info("store copies removed", topic=plan.topic, partition=plan.partition, segments=len(verified))
        return ok


def settle_pending(config: Config, store: ObjectStore, log: Any, pending: dict[str, PendingDeletion],
                   disabled_now: Callable[[], frozenset[str]], earliest_offsets: EarliestOffsets | None,
                   now_ms: Callable[[], int], replica_source: ReplicaSource | None = None) -> DeletionOutcome:
    """The daemon's step: the pending partitions' plans from a fresh scan (their checkpoints
    as the broker last wrote them) and the store, then `settle`. Raises StoreError when the
    store cannot be listed (retried at the next pass).

    A partition with replicas on other brokers is left to the command: the check sees the
    leader (ListOffsets) and this broker, not the other followers, and a follower that was
    not rolled back keeps its higher log start; should it lead later, every replica adopts
    it. Only the operator, having rolled back every replica, can say the copies may go."""
    if not pending:
        return DeletionOutcome()
    disabled = disabled_now()
    scan = scan_log_dirs(config.kafka.log_dirs)
    wanted = {name: p for name, p in pending.items() if p.topic in disabled}
    held: dict[str, str] = {}
    if replica_source is not None and wanted:
        try:
            sets = replica_source.replicas(sorted({p.topic for p in wanted.values()}))
        except ReplicaSourceError as exc:
            sets = {}
            held = {name: f"the cluster could not be asked for the partition's replicas ({exc}); the store's copies "
                          "are kept" for name in wanted}
        for name, waiting in wanted.items():
            found = sets.get((waiting.topic, waiting.partition))
            if found is not None and len(found.brokers) > 1:
                held[name] = (f"replicas on brokers {', '.join(map(str, found.brokers))}: the daemon never removes "
                              "the store's copies of a replicated partition; once every replica is rolled back and "
                              "consumers read from the restored offsets, run 'tiering rollback --topic "
                              f"{waiting.topic} --confirm --delete-remote' (README \"A replicated topic\")")
        wanted = {name: p for name, p in wanted.items() if name not in held}
    partitions = [p for p in scan.partitions if f"{p.topic}-{p.partition}" in wanted]
    plans = gather_plans(store, scan, partitions, config.store.prefix, config.store.hash_prefix)
    copies = RemoteCopies(store, log, prefix=config.store.prefix, hash_prefix=config.store.hash_prefix, now_ms=now_ms)
    outcome = copies.settle(plans, wanted, earliest_offsets, lambda topic: topic in disabled_now())
    now = now_ms()
    for name, waiting in pending.items():
        if name not in outcome.checked:
            detail = RESUMED if waiting.topic not in disabled else held.get(name) or (
                "the partition is not in this broker's log dirs; the store's copies are kept")
            outcome.checked[name] = replace(waiting, state=confirm.WAITING, detail=detail, checked_at_ms=now)
    return outcome


def record(journal: Any, outcome: DeletionOutcome) -> dict[str, PendingDeletion]:
    """Write an outcome into the journal (by its owner): the removed copies' rows go, a
    confirmed partition's record goes, the others keep their verdict. Read again first: a
    rollback run meanwhile may have replaced a record (a newer restore), and that one stays."""
    for sid in outcome.forgotten:
        journal.forget(sid)
    pending = confirm.load(journal.get_meta(confirm.JOURNAL_KEY))
    for name, checked in outcome.checked.items():
        now = pending.get(name)
        if now is None or (now.first_offset, now.requested_at_ms) != (checked.first_offset, checked.requested_at_ms):
            continue
        if checked.state == confirm.CONFIRMED:
            del pending[name]
        else:
            pending[name] = checked
    journal.set_meta(confirm.JOURNAL_KEY, confirm.dump(pending))
    return pending
