"""`tiering run` without --once: the long-running sidecar.

One loop on the main thread owns every piece of mutable state (the journal, the inventory,
the upload coordinator). Other threads only leave it messages: watchdog's thread adds path
hints, finished uploads and signal handlers set the wake-up event. The loop:

- prepares the journal once (rebuild from the store when new; abort uploads a crash left);
- runs a full reconcile every `daemon.reconcile_interval_ms` (ready after the first one);
- in between, rescans just the partitions inotify named;
- keeps the coordinator's workers busy, updates the gauges, pings systemd's watchdog;
- sweeps stale multipart uploads and orphans every `daemon.sweep_interval_ms` in the
  background (a listing of a big bucket must not stall the loop);
- runs retention every `daemon.retention_interval_ms` in the background on a snapshot of the
  inventory and the journal; the loop records what it changed when it finishes;
- after each retention pass, on the same thread, checks the rollbacks waiting for the cluster
  to confirm their restored log start (`rollback --delete-remote`) and removes the store
  copies of those confirmed, never of a replicated partition (tiering.rollback.deletion);
  the loop records the outcome.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from tiering.clock import Clock
from tiering.cluster.gate import open_gate
from tiering.cluster.leadership import LeadershipView
from tiering.cluster.leadership import LeadershipSource
from tiering.config import Config, load_config
from tiering.errors import ConfigError, TieringError
from tiering.journal import Journal, read_disabled_topics
from tiering.kafka.eligibility import TopicFilter
from tiering.kafka.inventory import Changes, Inventory
from tiering.kafka.logdir import CLEANER_FILE, HIGH_WATERMARK_FILE, LOG_START_FILE, LocalPartition, LogDirScan
from tiering.observability.http import HealthServer
from tiering.observability.metrics import Metrics
from tiering.observability.sdnotify import Notifier
from tiering.kafka.topicconfig import TopicConfigs, TopicConfigSource
from tiering.retention.admin import KafkaAdminDeleter, KafkaConfigReader, KafkaLogStarts, RecordDeleter
from tiering.retention.configs import last_seen, read_configs, remember
from tiering.retention.run import RetentionReport, RetentionRunner, log_blocked, record_report
from tiering.rollback import confirm
from tiering.rollback.deletion import DeletionOutcome, EarliestOffsets, record, settle_pending
from tiering.rollback.replicas import KafkaReplicaSource, ReplicaSource
from tiering.store.errors import StoreError
from tiering.store.protocol import ObjectStore
from tiering.sweep import sweep
from tiering.upload.breaker import BreakerPolicy
from tiering.upload.coordinator import UploadCoordinator
from tiering.upload.offload_pass import prepare_journal
from tiering.upload.pins import PinStore
from tiering.upload.ratelimit import RateLimiter
from tiering.watch import LogDirWatcher

CHECKPOINT_FILES = {HIGH_WATERMARK_FILE, CLEANER_FILE, LOG_START_FILE}
TICK_SECONDS = 1.0                 # the loop wakes at least this often (watchdog, gauges, timers)
STALLED_SECONDS = 30.0             # /healthz fails when the loop has not ticked for this long
PREPARE_BACKOFF_CAP_SECONDS = 60.0


class Daemon:
    def __init__(self, config_path: str | Path, config: Config, store: ObjectStore, journal: Journal,
                 clock: Clock, log: Any, metrics: Metrics, limiter: RateLimiter, *,
                 notifier: Notifier | None = None, wall: Callable[[], float] = time.time,
                 breaker: BreakerPolicy | None = None,
                 deleter_factory: Callable[[str], RecordDeleter] = KafkaAdminDeleter,
                 config_source_factory: Callable[[str], TopicConfigSource] = KafkaConfigReader,
                 leadership_factory: Callable[[str], LeadershipSource] | None = None,
                 log_starts_factory: Callable[[str], EarliestOffsets] = KafkaLogStarts,
                 replica_source_factory: Callable[[str], ReplicaSource] = KafkaReplicaSource):
        self.config_path = config_path
        self.config = config
        self.store = store
        self.journal = journal
        self.clock = clock
        self.log = log
        self.metrics = metrics
        self.limiter = limiter
        self.notifier = notifier or Notifier({})
        self.wall = wall
        self.inventory = Inventory(config.kafka.log_dirs)
        self.pins = PinStore(config.state.pin_roots, log)
        self._disabled: frozenset[str] = frozenset(journal.disabled_topics())
        # Cluster mode (kafka.bootstrap_servers): uploads only what this broker leads.
        self.gate = open_gate(config, store, clock.now_ms, log, leadership_factory, metrics)
        self.coordinator = UploadCoordinator(config, store, journal, clock, log, metrics=metrics,
                                             breaker=breaker or BreakerPolicy(), wall=wall,
                                             stop_on_fatal=False, keep_results=False, on_done=self.wake,
                                             pins=self.pins, disabled_topics=lambda: self._disabled,
                                             gate=self.gate)
        self.retention = RetentionRunner(store, log, clock.now_ms, deleter_factory=deleter_factory, metrics=metrics,
                                         disabled_now=lambda: read_disabled_topics(config.state.dir))
        self._retainer: threading.Thread | None = None
        self._retention_done: RetentionReport | None = None
        # Kafka's topic configs: the last ones seen at start, read again before each
        # retention pass (on the retention thread), kept in the journal by this thread.
        self._configs: TopicConfigs = last_seen(config, journal)
        self._configs_read: TopicConfigs | None = None
        self.config_source_factory = config_source_factory
        self._config_source: TopicConfigSource | None = None
        self._blocked: set[tuple[str, str]] = set()
        self.log_starts_factory = log_starts_factory
        self.replica_source_factory = replica_source_factory
        self._settled: DeletionOutcome | None = None
        self._rollback_gauges(confirm.load(journal.get_meta(confirm.JOURNAL_KEY)))
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._hints: set[Path] = set()
        self._stop = False
        self._reload = False
        self._ready = False
        self._last_tick = clock.monotonic()
        self._awaiting_hw: set[Path] = set()
        self._reported: set[tuple[str, str]] = set()
        self._sweeper: threading.Thread | None = None
        self.http: HealthServer | None = None
        self.serve: Any = None
        self.watcher: LogDirWatcher | None = None

    # -- messages from other threads ------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def hint(self, path: Path) -> None:
        with self._lock:
            self._hints.add(path)
        self._wake.set()

    def request_stop(self) -> None:
        self._stop = True
        self._wake.set()

    def request_reload(self) -> None:
        self._reload = True
        self._wake.set()

    def healthy(self) -> tuple[bool, str]:
        age = self.clock.monotonic() - self._last_tick
        if age > STALLED_SECONDS:
            return False, f"stalled: the work loop last ran {age:.0f} s ago"
        return True, f"ok: the work loop ran {age:.1f} s ago"

    def ready(self) -> tuple[bool, str]:
        if not self._ready:
            return False, "not ready: the first reconcile of the log dirs with the store has not finished"
        if self.coordinator.fatal is not None:
            return False, f"not ready: the store refused uploads: {self.coordinator.fatal}"
        if self.gate is not None and not self.gate.view().reachable:
            # Still ready (reads, retention of what is known go on); the detail says what is held.
            return True, (f"ready; cluster unreachable ({self.gate.tracker.error or 'no answer yet'}): nothing new "
                          "is uploaded for partitions not known to be led by this broker")
        return True, "ready"

    # -- the loop -------------------------------------------------------------------------------

    def start_endpoints(self) -> None:
        """Bind the metrics/health listener (before the loop, so a port clash fails at start)."""
        if self.config.metrics.listen:
            self.http = HealthServer(self.config.metrics.listen, self.metrics.registry, self.healthy, self.ready)
            self.http.start()
        if self.config.serve.listen:
            # issue 20: the Kafka-protocol endpoint on its own loop thread, on the daemon's registry
            from tiering.serve.wiring import start_in_daemon
            try:
                self.serve = start_in_daemon(self.config, self.metrics.registry, self.clock, self.log)
            except OSError as exc:
                raise TieringError(f"serve.listen {self.config.serve.listen}: cannot listen ({exc.strerror or exc}); "
                                   "free the port or change serve.listen (\"\" disables it)") from None

    def run(self) -> bool:
        """Work until asked to stop; returns True when every upload ended before exit."""
        daemon = self.config.daemon
        if daemon.watch:
            self.watcher = LogDirWatcher(self.hint, self.log)
        self.log.info("tiering started", log_dirs=[str(d) for d in self.config.kafka.log_dirs],
                      bucket=self.config.store.bucket, prefix=self.config.store.prefix,
                      watch=daemon.watch, reconcile_interval_ms=daemon.reconcile_interval_ms,
                      rate_limit_bytes_per_second=self.config.upload.rate_limit_bytes_per_second,
                      metrics_listen=self.config.metrics.listen or None)
        prepared = False
        prepare_failures = 0
        now = self.clock.monotonic()
        next_prepare = next_reconcile = next_sweep = next_gauges = next_ping = next_retention = now
        next_leadership = now
        while not self._stop:
            now = self.clock.monotonic()
            self._last_tick = now
            if now >= next_ping:
                self.notifier.watchdog()
                next_ping = now + TICK_SECONDS
            if self._reload:
                self._reload = False
                self._apply_reload()
            if not prepared and now >= next_prepare:
                try:
                    prepare_journal(self.config, self.store, self.journal, self.clock, self.log)
                    prepared = True
                except StoreError as exc:
                    prepare_failures += 1
                    delay = min(PREPARE_BACKOFF_CAP_SECONDS, 2.0 ** prepare_failures)
                    self.log.error("store unavailable at start; will retry", error=str(exc),
                                   error_class=exc.error_class.value, retry_in_seconds=delay)
                    next_prepare = now + delay
            if prepared:
                if now >= next_reconcile:
                    self._reconcile_all()
                    next_reconcile = self.clock.monotonic() + daemon.reconcile_interval_ms / 1000
                else:
                    self._process_hints()
                if self._ready and now >= next_leadership:
                    next_leadership = now + TICK_SECONDS
                    if self.coordinator.leadership_tick(self._topics):
                        self._apply((), self.inventory.partitions.values())   # leadership moved: plan again
                if now >= next_sweep:
                    self._start_sweep()
                    next_sweep = now + daemon.sweep_interval_ms / 1000
                if self._retention_done is not None:
                    self._record_retention()
                if self._settled is not None:
                    self._record_settled()
                if self._ready and now >= next_retention:
                    self._start_retention()
                    next_retention = now + self.config.daemon.retention_interval_ms / 1000
                self.coordinator.settle_done(0)
                self.coordinator.pump()
            if now >= next_gauges:
                if prepared and self._refresh_disabled():
                    next_reconcile = now   # re-plan every partition under the new set at once
                self._update_gauges()
                next_gauges = now + TICK_SECONDS
            timeout = max(0.0, min(next_reconcile if prepared else next_prepare, now + TICK_SECONDS)
                          - self.clock.monotonic())
            start_at = self.coordinator.next_start_at(now) if prepared else None
            if start_at is not None:
                timeout = min(timeout, max(0.0, start_at - now))
            self._wake.wait(timeout)
            self._wake.clear()
        return self._shutdown()

    def _shutdown(self) -> bool:
        grace = self.config.daemon.shutdown_grace_ms / 1000
        self.notifier.stopping()
        self.log.info("stopping: no new uploads; waiting for uploads in flight",
                      in_flight=self.coordinator.in_flight, grace_seconds=grace)
        finished = self.coordinator.shutdown(grace)
        if self._retainer is not None:
            # Every retention step is safe to interrupt (as a kill -9 is); a short wait only
            # lets a pass that is nearly done record itself, within the 10 s exit promise.
            self._retainer.join(timeout=0.5)
        if self._retention_done is not None:
            self._record_retention()
        if self._settled is not None:
            self._record_settled()
        self.retention.close()
        if self.gate is not None:
            self.gate.close()
        if self._config_source is not None:
            self._config_source.close()
        if self.watcher is not None:
            self.watcher.stop()
        if self.http is not None:
            self.http.close()
        if self.serve is not None:
            self.serve.close()
        self.log.info("tiering stopped", uploads_left_running=not finished)
        return finished

    # -- scanning ---------------------------------------------------------------------------------

    def _reconcile_all(self) -> None:
        started = self.clock.monotonic()
        self._refresh_disabled()
        changes = self.inventory.full_scan(self.wall())
        self._report(changes, full=True)
        self.coordinator.leadership_tick(self._topics)
        self._apply(changes.removed, self.inventory.partitions.values())
        if self.watcher is not None:
            self.watcher.watch(self.config.kafka.log_dirs)
        seconds = self.clock.monotonic() - started
        self.metrics.reconciles.inc()
        self.metrics.reconcile_duration.set(seconds)
        self.metrics.partitions.set(len(self.inventory.partitions))
        backlog = self.coordinator.queue.backlog()
        if changes.updated or changes.removed or not self._ready:
            self.log.info("reconcile finished", partitions=len(self.inventory.partitions),
                          rescanned=len(changes.updated), removed=len(changes.removed),
                          backlog_segments=backlog.segments, seconds=round(seconds, 3))
        if not self._ready:
            self._ready = True
            self.metrics.ready.set(1)
            self.notifier.ready(f"watching {len(self.inventory.partitions)} partitions")

    def _topics(self) -> set[str]:
        return {p.topic for p in self.inventory.partitions.values()}

    def _process_hints(self) -> None:
        with self._lock:
            hints, self._hints = self._hints, set()
        if not hints:
            return
        partition_dirs: set[Path] = set()
        roots: set[Path] = set()
        for path in hints:
            root = self.inventory.log_dir_of(path)
            if root is None or path == root:
                continue
            parts = path.relative_to(root).parts
            if len(parts) == 1 and parts[0] in CHECKPOINT_FILES:
                roots.add(root)
            elif len(parts) >= 1:
                partition_dirs.add(root / parts[0])
        updated: list[LocalPartition] = []
        removed: list[Path] = []
        for path in partition_dirs:
            changes = self.inventory.rescan(path)
            self._report(changes, full=False)
            updated += changes.updated
            removed += changes.removed
        for root in roots:
            self.inventory.reread_state(root)
            updated += [self.inventory.partitions[p] for p in self._awaiting_hw
                        if p.parent == root and p in self.inventory.partitions]
        self._apply(removed, updated)

    def _apply(self, removed: tuple[Path, ...] | list[Path], partitions: Any) -> None:
        for path in removed:
            self.coordinator.forget(path)
            self._awaiting_hw.discard(path)
            self.log.info("partition dir gone; its backlog dropped", path=str(path))
        topic_filter = TopicFilter(self.config.kafka.include, self.config.kafka.exclude, self._configs)
        for partition in partitions:
            state = self.inventory.states.get(partition.log_dir)
            if state is None:
                continue
            offered = self.coordinator.offer(partition, state, topic_filter)
            if offered.awaits_high_watermark:
                self._awaiting_hw.add(partition.path)
            else:
                self._awaiting_hw.discard(partition.path)

    def _report(self, changes: Changes, full: bool) -> None:
        """Log each anomaly once (not on every reconcile), until it goes away."""
        current = {(a.path, a.reason) for a in changes.anomalies}
        for path, reason in sorted(current - self._reported):
            self.log.warning("log dir entry skipped", path=path, reason=reason)
        if full:
            self._reported = current
            self.metrics.anomalies.set(len(current))
        else:
            self._reported |= current

    # -- background sweep -----------------------------------------------------------------------

    def _start_sweep(self) -> None:
        if self._sweeper is not None and self._sweeper.is_alive():
            return
        busy = self.coordinator.busy_stems()
        self._sweeper = threading.Thread(target=self._sweep, args=(busy,), name="sweep", daemon=True)
        self._sweeper.start()

    def _sweep(self, busy: set[str]) -> None:
        daemon = self.config.daemon
        try:
            plan = sweep(self.store, self.config.store.layout, busy, self.wall(),
                         daemon.stale_multipart_ms / 1000, daemon.orphan_ms / 1000, self.log)
        except StoreError as exc:
            self.log.warning("sweep of stale uploads and orphans failed; will retry", error=str(exc))
            return
        self.metrics.swept.labels("multipart_upload").inc(len(plan.aborts))
        self.metrics.swept.labels("orphan_object").inc(len(plan.orphans))
        if plan.aborts or plan.orphans:
            self.log.info("sweep finished", multipart_aborted=len(plan.aborts), orphans_deleted=len(plan.orphans))

    # -- background retention ---------------------------------------------------------------------

    def _start_retention(self) -> None:
        if self._retainer is not None and self._retainer.is_alive():
            return
        partitions = tuple(sorted(self.inventory.partitions.values(), key=lambda p: (p.topic, p.partition)))
        scan = LogDirScan(tuple(self.inventory.states.values()), partitions, ())
        # This broker's roles as of now, taken on the loop thread that owns the gate (cluster
        # mode; None in single mode): the pass decides who deletes what by them.
        leadership = self.gate.view() if self.gate is not None else None
        pending = confirm.load(self.journal.get_meta(confirm.JOURNAL_KEY))
        args = (self.config, scan, self.journal.all(), self._disabled, self._configs, pending, leadership)
        self._retainer = threading.Thread(target=self._retain, args=args, name="retention", daemon=True)
        self._retainer.start()

    def _retain(self, config: Config, scan: LogDirScan, records: list, disabled: frozenset[str],
                previous: TopicConfigs, pending: dict[str, confirm.PendingDeletion],
                leadership: LeadershipView | None = None) -> None:
        report = None
        try:
            configs = previous
            if config.kafka.bootstrap_servers:
                if self._config_source is None:
                    self._config_source = self.config_source_factory(config.kafka.bootstrap_servers)
                topics = {p.topic for p in scan.partitions} | {r.id.topic for r in records}
                configs = read_configs(config, self._config_source, topics, previous, self.clock.now_ms(), self.log)
                self._configs_read = configs
            report = self.retention.run(config, scan, records, disabled, configs, leadership)
        except Exception as exc:   # a bug must not kill retention for good; the loop goes on
            self.log.exception("retention pass failed", error=str(exc))
        if pending:
            # After retention (the next pass's journal snapshot then has this one's outcome).
            self._settled = self._settle(config, pending)
        self._retention_done = report
        self.wake()

    def _settle(self, config: Config, pending: dict[str, confirm.PendingDeletion]) -> DeletionOutcome | None:
        try:
            earliest = self.log_starts_factory(config.kafka.bootstrap_servers) \
                if config.kafka.bootstrap_servers else None
            replicas = self.replica_source_factory(config.kafka.bootstrap_servers) \
                if config.kafka.bootstrap_servers else None
            return settle_pending(config, self.store, self.log, pending, lambda: read_disabled_topics(config.state.dir),
                                  earliest, self.clock.now_ms, replicas)
        except StoreError as exc:
            self.log.warning("rollback confirmation could not read the store; will retry", error=str(exc))
        except Exception as exc:   # a bug must not kill the retention thread's pass for good
            self.log.exception("rollback confirmation failed", error=str(exc))
        return None

    def _record_settled(self) -> None:
        """Record what the confirmation step did; say an undone rollback loudly, once."""
        outcome, self._settled = self._settled, None
        assert outcome is not None
        before = confirm.load(self.journal.get_meta(confirm.JOURNAL_KEY))
        pending = record(self.journal, outcome)
        for name, checked in sorted(outcome.checked.items()):
            was = before.get(name)
            fields = dict(topic=checked.topic, partition=checked.partition, log_start=checked.first_offset,
                          detail=checked.detail)
            if checked.state == confirm.UNDONE and (was is None or was.state != confirm.UNDONE):
                self.log.error("rollback undone by Kafka; store copies kept", **fields)
            elif checked.state == confirm.WAITING and (was is None or was.detail != checked.detail):
                self.log.warning("store copies kept until the cluster confirms", error=outcome.asked_error, **fields)
        for line in outcome.failures:
            self.log.error("store copies of a rollback not removed", detail=line)
        self._rollback_gauges(pending)

    def _rollback_gauges(self, pending: dict[str, confirm.PendingDeletion]) -> None:
        self.metrics.rollback_pending.set(len(pending))
        self.metrics.rollback_undone.set(sum(1 for p in pending.values() if p.state == confirm.UNDONE))

    def _record_retention(self) -> None:
        report, self._retention_done = self._retention_done, None
        assert report is not None
        configs, self._configs_read = self._configs_read, None
        if configs is not None:
            remember(self.journal, configs)
            if configs != self._configs:
                self._configs = configs
                # re-plan every partition with what Kafka now says (compaction)
                self._apply((), self.inventory.partitions.values())
        self.metrics.retention_passes.inc()
        record_report(self.journal, report, self.clock.now_ms())
        blocked = set(report.blocked)
        for log_dir, detail in sorted(blocked - self._blocked):
            log_blocked(self.log, log_dir, detail)
        for log_dir, _ in sorted(self._blocked - blocked):
            self.log.info("local retention no longer blocked", log_dir=log_dir)
        self._blocked = blocked
        self.metrics.retention_blocked_log_dirs.set(len({d for d, _ in blocked}))
        if report.deleted or report.failures:
            self.log.info("retention pass finished", deleted_local=report.count("local"),
                          deleted_remote=report.count("remote"), failures=len(report.failures))

    def _refresh_disabled(self) -> bool:
        """Pick up `tiering rollback` and `tiering resume` from the journal (a small read each
        tick, so a rollback's turn-off reaches a running daemon within a second); True when the
        set changed."""
        disabled = frozenset(self.journal.disabled_topics())
        if disabled == self._disabled:
            return False
        for topic in sorted(disabled - self._disabled):
            self.log.warning("tiering turned off for topic: no uploads, no local deletion", topic=topic)
        for topic in sorted(self._disabled - disabled):
            self.log.info("tiering turned back on for topic", topic=topic)
        self.coordinator.forget_cached(disabled ^ self._disabled)
        self._disabled = disabled
        return True

    # -- gauges, reload ---------------------------------------------------------------------------

    def _update_gauges(self) -> None:
        backlog = self.coordinator.backlog()
        m = self.metrics
        m.backlog_segments.set(backlog.segments)
        m.backlog_bytes.set(backlog.bytes)
        oldest = backlog.oldest_rolled_at
        m.oldest_pending_age.set(max(0.0, self.wall() - oldest) if oldest else 0.0)
        m.in_flight.set(self.coordinator.in_flight)
        m.muted_partitions.set(self.coordinator.muted_partitions())
        m.pinned_segments.set(self.pins.count())
        m.disabled_topics.set(len(self._disabled))

    def _apply_reload(self) -> None:
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            self.metrics.config_reloads.labels("rejected").inc()
            self.log.error("config reload rejected; the running config stays", problems=list(exc.problems))
            return
        old = self.config
        needs_restart = [name for name, before, after in (
            ("kafka.log_dirs", old.kafka.log_dirs, new.kafka.log_dirs),
            ("kafka.bootstrap_servers", old.kafka.bootstrap_servers, new.kafka.bootstrap_servers),
            ("store", old.store, new.store),
            ("state", old.state, new.state),
            ("metrics", old.metrics, new.metrics),
            ("serve", old.serve, new.serve),
            ("upload.concurrency", old.upload.concurrency, new.upload.concurrency),
            ("upload.part_size_bytes", old.upload.part_size_bytes, new.upload.part_size_bytes),
        ) if before != after]
        applied = replace(new, kafka=replace(new.kafka, log_dirs=old.kafka.log_dirs,
                                             bootstrap_servers=old.kafka.bootstrap_servers),
                          store=old.store, state=old.state, metrics=old.metrics, serve=old.serve,
                          upload=replace(new.upload, concurrency=old.upload.concurrency,
                                         part_size_bytes=old.upload.part_size_bytes))
        self.config = applied
        self.coordinator.config = applied
        self.limiter.set_rate(applied.upload.rate_limit_bytes_per_second)
        self.metrics.config_reloads.labels("applied").inc()
        self.log.info("config reloaded", rate_limit_bytes_per_second=applied.upload.rate_limit_bytes_per_second,
                      include=list(applied.kafka.include), exclude=list(applied.kafka.exclude),
                      needs_restart=needs_restart or None)
