"""A confirmed rollback, start to end: the safety checks, turning tiering off, the restores,
the checkpoints, and (when asked) removing the store's copies once every file is verified.

Order matters and is the point of this module:
1. every log dir the plan writes to is locked against the broker (refused with exit 3 if a
   broker holds one) and its disk checked for room (exit 3 with the numbers), before anything
   changes;
2. tiering is turned off for the topics, durably, in the journal: a running daemon stops
   uploading them and deleting them locally within a second, and after any restart;
3. partitions are restored in parallel (each newest segment first), with the locks held;
4. the checkpoints of each partition are put right for whatever was restored, also after a
   failure or an interrupt;
5. `--delete-remote`: the store's copies of a partition go only when all of its segments are
   on disk and verified against the manifests, and only once the running cluster confirms
   the restored log start (tiering.rollback.confirm): never in the command that restores
   (the broker is stopped then), so a rollback Kafka undoes on restart loses nothing.
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tiering.errors import RefusedError, TieringError
from tiering.journal import Journal
from tiering.kafka.checkpoints import TopicPartition
from tiering.kafka.lock import BrokerRunning, broker_stopped
from tiering.rollback import confirm
from tiering.rollback.deletion import EarliestOffsets, RemoteCopies, record
from tiering.rollback.plan import PartitionPlan
from tiering.rollback.progress import Progress
from tiering.rollback.restore import PartitionResult, PartitionRestorer, update_leader_epochs, update_log_start
from tiering.store.protocol import ObjectStore
from tiering.units import format_bytes

LOCK_ATTEMPTS = 10
LOCK_RETRY_SECONDS = 0.3


@dataclass(frozen=True)
class DiskSpace:
    """One file system under the log dirs a plan writes to."""

    log_dirs: tuple[Path, ...]
    free: int            # bytes available to the broker's user
    needed: int          # bytes the plan writes there

    @property
    def free_after(self) -> int:
        return self.free - self.needed


def disk_space(plans: list[PartitionPlan]) -> dict[Path, DiskSpace]:
    """Free space per log dir, summed per file system (two log dirs on one disk share it)."""
    by_device: dict[int, list[Path]] = defaultdict(list)
    needed: dict[int, int] = defaultdict(int)
    free: dict[int, int] = {}
    for plan in plans:
        device = os.stat(plan.log_dir).st_dev
        if plan.log_dir not in by_device[device]:
            by_device[device].append(plan.log_dir)
        if not plan.refused:
            needed[device] += plan.bytes
        if device not in free:
            stats = os.statvfs(plan.log_dir)
            free[device] = stats.f_bavail * stats.f_frsize
    result = {}
    for device, dirs in by_device.items():
        space = DiskSpace(tuple(dirs), free[device], needed[device])
        for d in dirs:
            result[d] = space
    return result


@dataclass
class RollbackReport:
    results: list[PartitionResult] = field(default_factory=list)
    log_starts: dict[TopicPartition, tuple[int, int]] = field(default_factory=dict)
    epochs_merged: list[str] = field(default_factory=list)          # partitions whose checkpoint changed
    remote_deleted: dict[str, int] = field(default_factory=dict)    # partition -> segments removed from the store
    failures: list[str] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0
    # --delete-remote: partitions whose store copies wait for the cluster to confirm the
    # restored log start (restored now, or the cluster could not say), one line each
    kept: list[str] = field(default_factory=list)
    undone: list[str] = field(default_factory=list)                 # rollbacks Kafka undid (copies kept)

    @property
    def segments(self) -> int:
        return sum(len(r.restored) for r in self.results)

    @property
    def bytes(self) -> int:
        return sum(r.bytes_written for r in self.results)

    @property
    def files_kept(self) -> int:
        return sum(r.files_kept for r in self.results)


class Rollback:
    def __init__(self, store: ObjectStore, journal: Journal, log: Any, *, prefix: str, hash_prefix: bool,
                 concurrency: int, now_ms: Callable[[], int], monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.store = store
        self.journal = journal
        self.log = log
        self.prefix = prefix
        self.hash_prefix = hash_prefix
        self.concurrency = concurrency
        self.now_ms = now_ms
        self.monotonic = monotonic
        self.sleep = sleep
        self.stop = threading.Event()

    def run(self, plans: list[PartitionPlan], topics: list[str], keep_free: int, delete_remote: bool,
            progress_for: Callable[[int, int], Progress], command: str,
            earliest_offsets: EarliestOffsets | None = None) -> RollbackReport:
        """Raises RefusedError (nothing changed) or returns what was done.

        `earliest_offsets`: the cluster's ListOffsets earliest per (topic, partition) (raises
        TieringError when it cannot be asked); --delete-remote deletes only what it confirms."""
        # Only local writes need the broker stopped; deleting confirmed store copies does not.
        writes = [p for p in plans if not p.refused and (p.restore or p.new_log_start is not None)]
        with ExitStack() as locks:
            for log_dir in sorted({p.log_dir for p in writes}):
                try:
                    self._lock(locks, log_dir)
                except BrokerRunning as exc:
                    if delete_remote and self._all_pending(writes):
                        # Run again with the broker up, as the procedure says, after Kafka
                        # took the restored segments away again: the confirmation step says
                        # "undone" (exit 1) and keeps the copies; restoring needs the broker
                        # stopped and is not what was asked.
                        locks.close()
                        report = RollbackReport()
                        self._delete_remote_confirmed(plans, report, earliest_offsets)
                        return report
                    raise RefusedError(f"{log_dir}: {exc.state.detail}; stop the broker on this log dir before a "
                                       "rollback (nothing was changed)") from None
            for space in sorted(set(disk_space(writes).values()), key=lambda s: s.log_dirs):
                if space.free_after < keep_free:
                    raise RefusedError(
                        f"{', '.join(map(str, space.log_dirs))}: not enough free disk space: the restore needs "
                        f"{format_bytes(space.needed)} ({space.needed} bytes), {format_bytes(space.free)} is free, and "
                        f"{format_bytes(keep_free)} must stay free (--keep-free); free space or roll back fewer "
                        "partitions (--partition); nothing was changed")
            for topic in topics:
                self.journal.disable_topic(topic, f"rolled back to local storage ({command})", self.now_ms())
                self.log.info("tiering turned off for topic", topic=topic)
            report = self._restore(plans, writes, delete_remote, progress_for)
        if delete_remote and not report.interrupted:
            self._delete_remote_confirmed(plans, report, earliest_offsets)
        return report

    def _all_pending(self, writes: list[PartitionPlan]) -> bool:
        """Whether every partition this run would write was restored before with --delete-remote
        and still waits for the cluster's confirmation."""
        pending = confirm.load(self.journal.get_meta(confirm.JOURNAL_KEY))
        return bool(writes) and all(p.name in pending for p in writes)

    def _lock(self, locks: ExitStack, log_dir: Path) -> None:
        """Take the log dir's lock for the whole rollback. A tiering daemon holds it for a few
        milliseconds while its retention deletes; a lock still held after a few seconds is a
        broker's."""
        for attempt in range(1, LOCK_ATTEMPTS + 1):
            try:
                locks.enter_context(broker_stopped(log_dir))
                return
            except BrokerRunning:
                if attempt == LOCK_ATTEMPTS:
                    raise
                self.sleep(LOCK_RETRY_SECONDS)

    def _restore(self, plans: list[PartitionPlan], writes: list[PartitionPlan], delete_remote: bool,
                 progress_for: Callable[[int, int], Progress]) -> RollbackReport:
        started = self.monotonic()
        report = RollbackReport()
        report.failures += [f"{p.name}: {p.refused}" for p in plans if p.refused]
        report.failures += [f"{p.name}: {p.left}" for p in plans if p.left and not p.refused]
        progress = progress_for(sum(p.bytes for p in writes), sum(len(p.restore) for p in writes))
        restorer = PartitionRestorer(self.store, progress, self.log, self.stop)
        workers = max(1, min(self.concurrency, len(writes)))
        with ThreadPoolExecutor(workers, thread_name_prefix="restore") as pool:
            futures = [pool.submit(restorer.restore, plan) for plan in writes]
            try:
                for future in futures:
                    report.results.append(future.result())
            except KeyboardInterrupt:
                report.interrupted = True
                self.stop.set()
                self.store.cancel_transfers()
                report.results += [f.result() for f in futures[len(report.results):]]
        report.interrupted = report.interrupted or any(r.interrupted for r in report.results)
        report.failures += [r.failure for r in report.results if r.failure]
        self._checkpoints(report)
        report.seconds = self.monotonic() - started
        return report

    # -- checkpoints --------------------------------------------------------------------------

    def _checkpoints(self, report: RollbackReport) -> None:
        """Put each partition's checkpoints right for what is on disk now (also after a
        failure or an interrupt: the restored segments join the log without a gap)."""
        by_dir: dict[Path, dict[TopicPartition, int]] = defaultdict(dict)
        for result in report.results:
            plan = result.plan
            first = result.first_offset
            if first is None:
                continue
            by_dir[plan.log_dir][TopicPartition(plan.topic, plan.partition)] = first
            on_disk = [m for m in (*(s.manifest for s in plan.restore), *plan.local_copies) if m.base_offset >= first]
            try:
                changed = update_leader_epochs(plan.path, on_disk)
            except (TieringError, OSError) as exc:
                report.failures.append(f"{plan.name}: leader-epoch-checkpoint not updated: {exc}")
                continue
            if changed is not None:
                report.epochs_merged.append(plan.name)
                self.log.info("leader epochs merged", topic=plan.topic, partition=plan.partition,
                              before=[[e.epoch, e.start_offset] for e in changed[0]],
                              after=[[e.epoch, e.start_offset] for e in changed[1]])
        for log_dir, firsts in sorted(by_dir.items()):
            try:
                changes = update_log_start(log_dir, firsts)
            except (TieringError, OSError) as exc:
                report.failures.append(f"{log_dir}: log-start-offset-checkpoint not updated: {exc}")
                continue
            for tp, (old, new) in sorted(changes.items(), key=lambda item: (item[0].topic, item[0].partition)):
                report.log_starts[tp] = (old, new)
                self.log.info("log start offset lowered", topic=tp.topic, partition=tp.partition, log_dir=str(log_dir),
                              before=old, after=new)

    # -- the store's copies -------------------------------------------------------------------

    def _delete_remote_confirmed(self, plans: list[PartitionPlan], report: RollbackReport,
                                 earliest_offsets: EarliestOffsets | None) -> None:
        """Record what this run restored as waiting for the cluster; delete the store copies of
        the partitions restored before, where the cluster now confirms their log start."""
        pending = confirm.load(self.journal.get_meta(confirm.JOURNAL_KEY))
        now = self.now_ms()
        changed = {r.plan.name for r in report.results if r.restored}
        changed |= {f"{tp.topic}-{tp.partition}" for tp in report.log_starts}
        for result in report.results:
            plan = result.plan
            if plan.name not in changed or result.failure or plan.left or plan.topic_id is None \
                    or result.first_offset is None:
                continue
            pending[plan.name] = confirm.PendingDeletion(plan.topic, plan.topic_id, plan.partition,
                                                         result.first_offset, now)
            line = (f"{plan.name}: the store's copies are kept until the running cluster confirms log start "
                    f"{result.first_offset}; start the broker, then run this command again")
            report.kept.append(line)
            self.log.info("store copies kept until the cluster confirms", topic=plan.topic, partition=plan.partition,
                          log_start=result.first_offset)
        candidates = [p for p in plans if p.name not in changed and not p.refused and not p.left
                      and p.topic_id is not None and _remote_copies(p) and p.first_offset is not None]
        for plan in candidates:
            if plan.name not in pending:
                pending[plan.name] = confirm.PendingDeletion(plan.topic, plan.topic_id, plan.partition,
                                                             plan.first_offset, now)
        self.journal.set_meta(confirm.JOURNAL_KEY, confirm.dump(pending))
        copies = RemoteCopies(self.store, self.log, prefix=self.prefix, hash_prefix=self.hash_prefix,
                              now_ms=self.now_ms)
        outcome = copies.settle(candidates, pending, earliest_offsets)
        if outcome.asked_error:
            self.log.warning("the cluster could not be asked for the log start", error=outcome.asked_error)
        report.failures += outcome.failures
        report.remote_deleted.update(outcome.removed)
        for name, checked in sorted(outcome.checked.items()):
            if checked.state == confirm.UNDONE:
                report.undone.append(f"{name}: {checked.detail}")
                self.log.error("rollback undone by Kafka; store copies kept", topic=checked.topic,
                               partition=checked.partition, detail=checked.detail)
            elif checked.state == confirm.WAITING:
                report.kept.append(f"{name}: {checked.detail}")
                self.log.warning("store copies kept", topic=checked.topic, partition=checked.partition,
                                 detail=checked.detail)
        record(self.journal, outcome)


def _remote_copies(plan: PartitionPlan) -> bool:
    return bool(plan.restore or plan.local_copies or plan.duplicates)

