"""One full offload pass: scan the log dirs, upload every eligible segment not yet remote.

The coordinator (the calling thread) is the only owner of the journal; workers only read
local files and talk to the store. At most `upload.concurrency` segments are in flight, so a
backlog of thousands of segments costs a list of small records, not memory per segment.
Partitions are served round-robin (oldest segment first within each), so one busy
partition cannot starve the rest.
"""

from __future__ import annotations

import heapq
import itertools
import random
import secrets
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from tiering.clock import Clock
from tiering.config import Config
from tiering.journal import Journal, SegmentId, SegmentState
from tiering.kafka.eligibility import TopicFilter, plan_partition
from tiering.kafka.logdir import Anomaly, LocalPartition, LocalSegment, LogDirScan, scan_log_dirs
from tiering.reconcile import (STORE_SYNCED, RemoteProblem, rebuild_journal, record_uploaded,
                               recover_interrupted)
from tiering.store.errors import StoreError
from tiering.store.keys import PartitionPath
from tiering.store.manifest import SegmentManifest
from tiering.store.protocol import ObjectStore
from tiering.upload.retry import RetryPolicy
from tiering.upload.segment import BadSegment, UploadTarget, offload_segment, target_for


def new_uid() -> str:
    return secrets.token_hex(8)


@dataclass(frozen=True)
class Candidate:
    segment: LocalSegment
    partition: LocalPartition
    broker_id: int | None

    @property
    def id(self) -> SegmentId:
        assert self.partition.topic_id is not None
        return SegmentId(self.segment.topic, self.partition.topic_id, self.segment.partition, self.segment.base_offset)


@dataclass(frozen=True)
class SegmentFailure:
    segment: SegmentId
    path: str
    reason: str


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

    @property
    def uploaded_bytes(self) -> int:
        return sum(m.total_bytes for m in self.uploaded)

    @property
    def ok(self) -> bool:
        return not (self.failures or self.anomalies or self.fatal)


def select_candidates(scan: LogDirScan, journal: Journal, topic_filter: TopicFilter) -> tuple[list[Candidate], int, int]:
    """Eligible segments not yet uploaded, interleaved across partitions; and the counts of
    ineligible and already-remote segments."""
    per_partition: list[list[Candidate]] = []
    ineligible = already = 0
    for partition in scan.partitions:
        state = scan.log_dir_state(partition.log_dir)
        todo = []
        for segment, verdict in plan_partition(partition, state, topic_filter):
            if not verdict.eligible:
                ineligible += 1
                continue
            candidate = Candidate(segment, partition, state.broker_id)
            record = journal.get(candidate.id)
            if record is not None and record.state is SegmentState.UPLOADED:
                already += 1
                continue
            todo.append(candidate)
        if todo:
            per_partition.append(todo)
    interleaved = [c for group in itertools.zip_longest(*per_partition) for c in group if c is not None]
    return interleaved, ineligible, already


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

    def root_of(self, segment: SegmentId) -> str:
        return PartitionPath(self.config.store.prefix, segment.topic, segment.topic_id, segment.partition,
                             self.config.store.hash_prefix).root

    def prepare(self) -> list[RemoteProblem]:
        """Make the journal trustworthy before a pass: rebuild it or settle interrupted uploads."""
        problems: list[RemoteProblem] = []
        if self.journal.get_meta(STORE_SYNCED) is None:
            count, problems = rebuild_journal(self.journal, self.store, self.config.store.prefix, self.clock)
            self.log.info("journal rebuilt from the store", manifests=count, problems=len(problems))
        for line in recover_interrupted(self.journal, self.store, self.root_of, self.clock):
            self.log.info("interrupted upload settled", detail=line)
        for problem in problems:
            self.log.warning("remote object skipped", key=problem.key, reason=problem.reason)
        return problems

    def run_pass(self) -> PassReport:
        started = self.clock.monotonic()
        try:
            remote_problems = self.prepare()
        except StoreError as exc:
            self.log.error("store unavailable", error=str(exc), error_class=exc.error_class.value)
            return PassReport(fatal=exc, seconds=self.clock.monotonic() - started)
        scan = scan_log_dirs(self.config.kafka.log_dirs)
        for anomaly in scan.anomalies:
            self.log.warning("log dir entry skipped", path=anomaly.path, reason=anomaly.reason)
        topic_filter = TopicFilter(self.config.kafka.include, self.config.kafka.exclude)
        candidates, ineligible, already = select_candidates(scan, self.journal, topic_filter)
        uploaded, failures, fatal = self._upload_all(candidates)
        report = PassReport(tuple(uploaded), tuple(failures), scan.anomalies, tuple(remote_problems),
                            ineligible, already, fatal, self.clock.monotonic() - started)
        self.log.info("offload pass finished", uploaded_segments=len(report.uploaded),
                      uploaded_bytes=report.uploaded_bytes, failed_segments=len(report.failures),
                      already_remote=already, ineligible_segments=ineligible, anomalies=len(scan.anomalies),
                      seconds=round(report.seconds, 3), fatal=str(fatal) if fatal else None)
        return report

    def _upload_all(self, candidates: Iterable[Candidate]) -> tuple[list[SegmentManifest], list[SegmentFailure], StoreError | None]:
        concurrency = self.config.upload.concurrency
        queue: deque[tuple[Candidate, int]] = deque((c, 0) for c in candidates)
        delayed: list[tuple[float, int, Candidate, int]] = []
        sequence = itertools.count()
        in_flight: dict[Future, tuple[Candidate, int, UploadTarget]] = {}
        uploaded: list[SegmentManifest] = []
        failures: list[SegmentFailure] = []
        fatal: StoreError | None = None
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="offload") as pool:
            while queue or delayed or in_flight:
                now = self.clock.monotonic()
                while delayed and delayed[0][0] <= now:
                    _, _, candidate, attempts = heapq.heappop(delayed)
                    queue.append((candidate, attempts))
                while queue and len(in_flight) < concurrency and fatal is None:
                    candidate, attempts = queue.popleft()
                    target = target_for(candidate.segment, candidate.partition, self.config.store.prefix,
                                        self.config.store.hash_prefix, candidate.broker_id, self.uid_factory())
                    self.journal.mark_uploading(candidate.id, target.keys.uid, candidate.segment.size, self.clock.now_ms())
                    future = pool.submit(offload_segment, target, self.store, self.clock.now_ms)
                    in_flight[future] = (candidate, attempts, target)
                if fatal is not None and not in_flight:
                    break
                if not in_flight:
                    self.clock.sleep(delayed[0][0] - now)
                    continue
                timeout = max(0.0, delayed[0][0] - now) if delayed and fatal is None else None
                done, _ = wait(in_flight, timeout=timeout, return_when=FIRST_COMPLETED)
                for future in done:
                    candidate, attempts, target = in_flight.pop(future)
                    outcome = self._settle(future, candidate, attempts, target)
                    if isinstance(outcome, SegmentManifest):
                        uploaded.append(outcome)
                    elif isinstance(outcome, SegmentFailure):
                        failures.append(outcome)
                    elif isinstance(outcome, StoreError):
                        fatal = fatal or outcome
                    else:
                        heapq.heappush(delayed, (self.clock.monotonic() + outcome, next(sequence), candidate, attempts + 1))
        return uploaded, failures, fatal

    def _settle(self, future: Future, candidate: Candidate, attempts: int,
                target: UploadTarget) -> SegmentManifest | SegmentFailure | StoreError | float:
        """Record a finished attempt; returns the manifest, a failure, a fatal error, or a retry delay."""
        log = self.log.bind(topic=candidate.segment.topic, partition=candidate.segment.partition,
                            base_offset=candidate.segment.base_offset)
        now = self.clock.now_ms()
        try:
            manifest: SegmentManifest = future.result()
        except BadSegment as exc:
            self.journal.mark_failed(candidate.id, str(exc), now)
            log.error("segment skipped", reason=str(exc))
            return SegmentFailure(candidate.id, str(candidate.segment.log_path), str(exc))
        except StoreError as exc:
            self.journal.mark_failed(candidate.id, str(exc), now)
            if exc.retryable and self.retry.should_retry(attempts + 1):
                delay = self.retry.delay(attempts + 1, self.rng)
                log.warning("segment upload failed, will retry", error=str(exc), attempt=attempts + 1,
                            retry_in_seconds=round(delay, 2))
                return delay
            if exc.retryable:
                log.error("segment upload failed", error=str(exc), attempts=attempts + 1)
                return SegmentFailure(candidate.id, str(candidate.segment.log_path), str(exc))
            log.error("store refused the upload", error=str(exc), error_class=exc.error_class.value)
            return exc
        record_uploaded(self.journal, manifest, target.keys.manifest_key, now)
        log.info("segment uploaded", bytes=manifest.total_bytes, end_offset=manifest.end_offset,
                 key=target.keys.manifest_key)
        return manifest
