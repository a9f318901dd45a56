"""One full offload pass (`run --once`): scan the log dirs, upload every eligible segment not
yet remote, report. The daemon keeps the same coordinator running instead."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable

from tiering.clock import Clock
from tiering.cluster.gate import open_gate
from tiering.cluster.identity import broker_identity
from tiering.cluster.leadership import LeadershipSource, LeadershipView
from tiering.config import Config
from tiering.journal import Journal, SegmentId, read_disabled_topics
from tiering.kafka.eligibility import TopicFilter
from tiering.kafka.logdir import Anomaly, scan_log_dirs
from tiering.reconcile import STORE_SYNCED, RemoteProblem, rebuild_journal, recover_interrupted
from tiering.kafka.topicconfig import TopicConfigs, TopicConfigSource
from tiering.retention.admin import KafkaAdminDeleter, KafkaConfigReader, RecordDeleter
from tiering.retention.configs import last_seen, read_configs, remember
from tiering.retention.run import RetentionReport, RetentionRunner, log_blocked, record_report
from tiering.store.errors import StoreError
from tiering.store.keys import PartitionPath
from tiering.store.manifest import SegmentManifest
from tiering.store.protocol import ObjectStore
from tiering.upload.coordinator import SegmentFailure, UploadCoordinator, new_uid
from tiering.upload.pins import PinStore
from tiering.upload.retry import RetryPolicy


@dataclass(frozen=True)
class PassReport:
    uploaded: tuple[SegmentManifest, ...] = ()
    failures: tuple[SegmentFailure, ...] = ()
    anomalies: tuple[Anomaly, ...] = ()
    remote_problems: tuple[RemoteProblem, ...] = ()
    ineligible: int = 0
    already_remote: int = 0
    fatal: StoreError | None = None
    seconds: float = 0.0
    retention: RetentionReport = field(default_factory=RetentionReport)
    # Why Kafka's topic configs could not be read (bootstrap servers set); the last ones seen
    # were used, and topics never seen were held.
    config_error: str | None = None
    # Cluster mode: local partitions this broker does not lead (or whose leader is not known)
    not_led: int = 0

    @property
    def uploaded_bytes(self) -> int:
        return sum(m.total_bytes for m in self.uploaded)

    @property
    def ok(self) -> bool:
        return not (self.failures or self.anomalies or self.fatal or self.retention.failures or self.config_error)


_UNKNOWN = object()   # cluster mode, broker id not known yet


def prepare_journal(config: Config, store: ObjectStore, journal: Journal, clock: Clock, log: Any) -> list[RemoteProblem]:
    """Make the journal trustworthy before uploading: rebuild it from the store when it is new,
    and settle uploads a crash interrupted (aborting their multipart uploads at once)."""
    problems: list[RemoteProblem] = []
    if journal.get_meta(STORE_SYNCED) is None:
        own_broker = None
        if config.cluster_mode:
            # In a cluster the journal holds this broker's uploads only (the chain holds every
            # broker's); without a broker id it cannot tell them apart, so the rebuild waits.
            identity = broker_identity(config.kafka.log_dirs)
            if identity.broker_id is None:
                log.warning("journal rebuild waits for this broker's id", reason=identity.problem)
                own_broker = _UNKNOWN
            else:
                own_broker = identity.broker_id
        if own_broker is not _UNKNOWN:
            count, problems = rebuild_journal(journal, store, config.store.layout, clock, own_broker=own_broker)
            log.info("journal rebuilt from the store", manifests=count, problems=len(problems),
                     broker_id=own_broker)

    def root_of(segment: SegmentId) -> str:
        return PartitionPath(config.store.prefix, segment.topic, segment.topic_id, segment.partition,
                             config.store.hash_prefix).root

    for line in recover_interrupted(journal, store, root_of, clock):
        log.info("interrupted upload settled", detail=line)
    for problem in problems:
        log.warning("remote object skipped", key=problem.key, reason=problem.reason)
    return problems


@dataclass
class Offloader:
    config: Config
    store: ObjectStore
    journal: Journal
    clock: Clock
    log: Any
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    rng: random.Random = field(default_factory=random.Random)
    uid_factory: Callable[[], str] = new_uid
    deleter_factory: Callable[[str], RecordDeleter] = KafkaAdminDeleter
    config_source_factory: Callable[[str], TopicConfigSource] = KafkaConfigReader
    # Cluster mode's leadership source (default: Kafka's Metadata at kafka.bootstrap_servers)
    leadership_factory: Callable[[str], LeadershipSource] | None = None

    def run_pass(self) -> PassReport:
        started = self.clock.monotonic()
        try:
            remote_problems = prepare_journal(self.config, self.store, self.journal, self.clock, self.log)
        except StoreError as exc:
            self.log.error("store unavailable", error=str(exc), error_class=exc.error_class.value)
            return PassReport(fatal=exc, seconds=self.clock.monotonic() - started)
        scan = scan_log_dirs(self.config.kafka.log_dirs)
        for anomaly in scan.anomalies:
            self.log.warning("log dir entry skipped", path=anomaly.path, reason=anomaly.reason)
        configs = self._topic_configs({p.topic for p in scan.partitions} | self.journal.topics())
        topic_filter = TopicFilter(self.config.kafka.include, self.config.kafka.exclude, configs)
        disabled = frozenset(self.journal.disabled_topics())
        gate = open_gate(self.config, self.store, self.clock.now_ms, self.log, self.leadership_factory)
        if gate is not None:
            gate.refresh({p.topic for p in scan.partitions})
        coordinator = UploadCoordinator(self.config, self.store, self.journal, self.clock, self.log,
                                        retry=self.retry, rng=self.rng, uid_factory=self.uid_factory,
                                        pins=PinStore(self.config.state.pin_roots, self.log),
                                        disabled_topics=lambda: disabled, gate=gate)
        ineligible = already = not_led = 0
        for partition in scan.partitions:
            offered = coordinator.offer(partition, scan.log_dir_state(partition.log_dir), topic_filter)
            ineligible += offered.ineligible
            already += offered.already_remote
            not_led += offered.not_led
        try:
            coordinator.drain()
        finally:
            coordinator.shutdown(0)
            # Retention goes by this broker's role as the pass saw it (cluster mode).
            leadership = gate.view() if gate is not None else None
            if gate is not None:
                gate.close()
        retention = RetentionReport()
        if coordinator.fatal is None:
            retention = self._retention(disabled, configs, leadership)
        report = PassReport(tuple(coordinator.uploaded), tuple(coordinator.failures), scan.anomalies,
                            tuple(remote_problems), ineligible, already, coordinator.fatal,
                            self.clock.monotonic() - started, retention, configs.error, not_led)
        self.log.info("offload pass finished", uploaded_segments=len(report.uploaded),
                      uploaded_bytes=report.uploaded_bytes, failed_segments=len(report.failures),
                      already_remote=already, ineligible_segments=ineligible, anomalies=len(scan.anomalies),
                      not_led_partitions=not_led if gate is not None else None,
                      deleted_local=retention.count("local"), deleted_remote=retention.count("remote"),
                      retention_failures=len(retention.failures), retention_blocked=len(retention.blocked),
                      seconds=round(report.seconds, 3), fatal=str(report.fatal) if report.fatal else None)
        return report

    def _topic_configs(self, topics: set[str]) -> TopicConfigs:
        """Kafka's topic configs (bootstrap servers set), saved in the journal; the last ones
        seen when the cluster cannot be asked."""
        bootstrap = self.config.kafka.bootstrap_servers
        if not bootstrap:
            return TopicConfigs()
        source = self.config_source_factory(bootstrap)
        try:
            configs = read_configs(self.config, source, topics, last_seen(self.config, self.journal),
                                   self.clock.now_ms(), self.log)
        finally:
            source.close()
        remember(self.journal, configs)
        return configs

    def _retention(self, disabled: frozenset[str], configs: TopicConfigs = TopicConfigs(),
                   leadership: LeadershipView | None = None) -> RetentionReport:
        """Retention after the uploads, on a fresh scan (uploads made more segments deletable)."""
        runner = RetentionRunner(self.store, self.log, self.clock.now_ms, deleter_factory=self.deleter_factory,
                                 disabled_now=lambda: read_disabled_topics(self.config.state.dir))
        try:
            report = runner.run(self.config, scan_log_dirs(self.config.kafka.log_dirs), self.journal.all(), disabled,
                                configs, leadership)
        finally:
            runner.close()
        record_report(self.journal, report, self.clock.now_ms())
        for log_dir, detail in report.blocked:
            log_blocked(self.log, log_dir, detail)
        return report
