"""The upload coordinator: the single owner of the journal, the backlog and the breakers.

It runs on one thread (the caller's: `run --once`'s pass, or the daemon's loop); workers in
a bounded pool only read local files and talk to the store. At most `upload.concurrency`
segments are in flight; each holds at most its index files in memory (the .log streams from
disk part by part), so memory is bounded by concurrency, not by the backlog.
"""

from __future__ import annotations

import os
import random
import secrets
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from tiering.clock import Clock
from tiering.cluster.claims import PROCEED, YIELD, ClaimOutcome
from tiering.cluster.gate import ClusterGate, GateDecision
from tiering.cluster.remote import link_of
from tiering.config import Config
from tiering.journal import Journal, SegmentId, SegmentState
from tiering.kafka.eligibility import TopicFilter, partition_reason, plan_partition
from tiering.kafka.logdir import LocalPartition, LocalSegment, LogDirState
from tiering.reconcile import record_uploaded
from tiering.store.errors import StoreError
from tiering.store.manifest import SegmentManifest
from tiering.store.protocol import ObjectStore
from tiering.upload.breaker import Breaker, BreakerPolicy
from tiering.upload.buffers import PartBuffers
from tiering.upload.pins import PinStore
from tiering.upload.queue import Backlog, Pending, UploadQueue
from tiering.upload.retry import RetryPolicy
from tiering.upload.segment import BadSegment, UploadTarget, offload_segment, target_for

if TYPE_CHECKING:    # prometheus_client is imported where metrics are made: `run --once` makes none
    from tiering.observability.metrics import Metrics


def new_uid() -> str:
    return secrets.token_hex(8)


@dataclass(frozen=True)
class Candidate:
    segment: LocalSegment                 # what is read: the pin, when the segment is pinned
    partition: LocalPartition
    broker_id: int | None
    original: LocalSegment | None = None  # the segment under its name in the log dir
    leader_epoch: int | None = None       # ours as the partition's leader (cluster mode)

    def in_log_dir(self, text: str) -> str:
        """`text` with the pin's file names put back to the log dir's, for operators (who
        look for a bad file where the broker keeps it)."""
        if self.original is None:
            return text
        pinned = {"log": self.segment.log_path, **dict(self.segment.index_paths)}
        named = {"log": self.original.log_path, **dict(self.original.index_paths)}
        for kind, path in pinned.items():
            if kind in named:
                text = text.replace(str(path), str(named[kind]))
        return text

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
class Offered:
    queued: int
    ineligible: int
    already_remote: int
    awaits_high_watermark: bool
    not_led: bool = False                 # cluster mode: another broker (or nobody known) leads it


class ClaimNotTaken(Exception):
    """Another sidecar holds the claim on the segment's start offset (cluster mode)."""

    def __init__(self, outcome: ClaimOutcome):
        super().__init__(outcome.describe())
        self.outcome = outcome


def claimed_offload(gate: ClusterGate, claim_key: str, target: UploadTarget, store: ObjectStore,
                    now_ms: Callable[[], int], previous: Any, buffers: Any = None) -> SegmentManifest:
    """On a worker: take the claim on the segment's start offset, then upload. The claim is
    taken before any object, so a lost claim leaves nothing behind."""
    outcome = gate.claim(claim_key, target.leader_epoch, target.keys.uid)
    if outcome.verdict != PROCEED:
        raise ClaimNotTaken(outcome)
    return offload_segment(target, store, now_ms, previous, buffers)


def rolled_at(segment: LocalSegment) -> float:
    """When the segment was rolled, as near as the disk tells: the broker trims its index files
    and appends the last time-index entry at the roll, so the newest mtime of its files."""
    newest = 0.0
    for path in (segment.log_path, *(p for _, p in segment.index_paths)):
        try:
            newest = max(newest, os.stat(path).st_mtime)
        except OSError:
            pass
    return newest


def fingerprint(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_size, info.st_mtime_ns


class UploadCoordinator:
    def __init__(self, config: Config, store: ObjectStore, journal: Journal, clock: Clock, log: Any, *,
                 metrics: Metrics | None = None, retry: RetryPolicy | None = None,
                 rng: random.Random | None = None, uid_factory: Callable[[], str] = new_uid,
                 breaker: BreakerPolicy | None = None, wall: Callable[[], float] = time.time,
                 stop_on_fatal: bool = True, keep_results: bool = True,
                 on_done: Callable[[], None] = lambda: None, pins: PinStore | None = None,
                 disabled_topics: Callable[[], frozenset[str]] = frozenset, gate: ClusterGate | None = None):
        self.config = config
        self.store = store
        self.journal = journal
        self.clock = clock
        self.log = log
        self.metrics = metrics
        self.retry = retry or RetryPolicy()
        self.rng = rng or random.Random()
        self.uid_factory = uid_factory
        self.breaker_policy = breaker
        self.wall = wall
        self.stop_on_fatal = stop_on_fatal
        self.keep_results = keep_results
        self.on_done = on_done
        self.pins = pins
        self.disabled_topics = disabled_topics
        # Cluster mode: which partitions (and segments) this broker's sidecar uploads; None in
        # single mode, where every eligible segment is uploaded.
        self.gate = gate
        self.queue = UploadQueue()
        self.accepting = True
        self.fatal: StoreError | None = None
        self.uploaded: list[SegmentManifest] = []
        self.failures: list[SegmentFailure] = []
        self._pool = ThreadPoolExecutor(max_workers=config.upload.concurrency, thread_name_prefix="upload")
        # One part buffer per upload slot: the .log is read once into it, walked, and sent.
        self._part_buffers = PartBuffers(config.upload.concurrency, config.upload.part_size_bytes)
        self._in_flight: dict[Future, tuple[Pending, UploadTarget]] = {}
        self._in_flight_ids: set[SegmentId] = set()
        self._breakers: dict[Any, Breaker] = {}
        # What is remembered per segment (known remote, known bad) is kept only while the
        # segment is on the local disk (in the log dir or pinned): `offer` prunes the rest, so
        # memory follows the segments present, not every segment ever uploaded.
        self._bad: dict[SegmentId, tuple[int, int] | None] = {}
        # (topic, topic id, partition) -> base offset -> (end offset, size) of the segment found remote
        self._remote: dict[tuple[str, str, int], dict[int, tuple[int | None, int]]] = {}
        self._offered: dict[Path, tuple[tuple[object, ...], Offered]] = {}
        self._partitions: dict[Path, LocalPartition] = {}
        self._rescued: set[SegmentId] = set()
        self._paused_until = 0.0
        # Segments another sidecar's claim holds (cluster mode): not offered again until then.
        self._held: dict[SegmentId, float] = {}

    # -- what to upload -----------------------------------------------------------------------

    def offer(self, partition: LocalPartition, state: LogDirState, topic_filter: TopicFilter) -> Offered:
        """Queue the partition's eligible segments that are not remote yet (replacing what was
        queued for it), pinning each until it is uploaded. Cheap to repeat: an unchanged
        partition is not looked at twice."""
        key = partition.path
        disabled = self.disabled_topics()
        decision = self._decide(partition)
        held = self._held_in(partition)
        # Only what this partition's plan depends on (not the whole log dir's checkpoints,
        # which would make a reconcile of N partitions cost N squared).
        inputs = (partition, state.high_watermarks.get(partition.tp),
                  topic_filter.configs.not_tiered_reason(partition.tp, state),
                  state.broker_id, topic_filter, partition.topic in disabled, decision, held)
        previous = self._offered.get(key)
        if previous is not None and previous[0] == inputs:
            return previous[1]
        self._partitions[key] = partition
        self._prune(partition)
        if decision is not None and not decision.upload:
            return self._not_led(partition, decision, inputs)
        queued: list[Pending] = []
        ineligible = already = 0
        waiting = False
        plan = plan_partition(partition, state, topic_filter, disabled)
        candidates = []
        for segment, verdict in plan:
            if not verdict.eligible:
                ineligible += 1
                waiting = waiting or verdict.awaits_high_watermark
                continue
            candidates.append(segment)
        reason = partition_reason(partition, state, topic_filter, disabled)
        # Not tiered because the topic's config is not known yet (just after a restart that
        # turned cluster mode on, say) is no verdict: the pins wait for one.
        undecided = reason is not None and topic_filter.configs.undecided(partition.topic) and (
            reason == topic_filter.configs.not_tiered_reason(partition.tp, state))
        candidates += self._rescued_segments(partition, reason is None, undecided)
        epoch = decision.leader_epoch if decision is not None else None
        for segment in candidates:
            candidate = Candidate(segment, partition, state.broker_id, leader_epoch=epoch)
            sid = candidate.id
            if sid in self._in_flight_ids or sid in held:
                continue
            if self._is_remote(sid, segment) or (
                    decision is not None and not decision.wants(segment.base_offset, segment.end_offset)):
                # uploaded (by us, or in cluster mode by any broker: the chain covers it)
                already += 1
                if self.pins is not None:
                    self.pins.release(partition, segment.base_offset)   # a pin left by a crash
                continue
            if sid in self._bad and self._bad[sid] == fingerprint(segment.log_path):
                continue  # known bad and unchanged: reading it again would fail the same way
            self._bad.pop(sid, None)
            if self.pins is not None:
                pinned = self.pins.pin(partition, segment)
                if pinned is not segment:
                    candidate = Candidate(pinned, partition, state.broker_id, original=segment, leader_epoch=epoch)
            stamp = 0.0 if (key, segment.base_offset) in self.queue else rolled_at(candidate.segment)
            queued.append(Pending(key, segment.base_offset, segment.size, stamp, candidate))
        self.queue.set_partition(key, queued)
        result = Offered(len(queued), ineligible, already, waiting)
        self._offered[key] = (inputs, result)
        return result

    def _rescued_segments(self, partition: LocalPartition, tiered: bool, undecided: bool) -> list[LocalSegment]:
        """Pinned segments the broker deleted before we uploaded them (still to offload), unless
        the partition is no longer tiered (its pins are let go) or not known to be (kept)."""
        if self.pins is None or partition.topic_id is None or undecided:
            return []
        if not tiered:
            self.pins.release_partition(partition)
            return []
        rescued = self.pins.rescued(partition)
        for segment in rescued:
            sid = SegmentId(partition.topic, partition.topic_id, partition.partition, segment.base_offset)
            if sid not in self._rescued and not self._is_remote(sid, segment):
                self._rescued.add(sid)
                self.log.warning("segment deleted by the broker before it was uploaded; uploading it from its pin",
                                 topic=partition.topic, partition=partition.partition,
                                 base_offset=segment.base_offset, pin=str(segment.log_path))
                if self.metrics:
                    self.metrics.rescued.inc()
        return rescued

    # -- cluster mode -----------------------------------------------------------------------

    def _decide(self, partition: LocalPartition) -> GateDecision | None:
        if self.gate is None or partition.topic_id is None:
            return None
        return self.gate.decide((partition.topic, partition.topic_id, partition.partition))

    def _held_in(self, partition: LocalPartition) -> frozenset[SegmentId]:
        """This partition's segments held by another sidecar's claim (expired holds dropped)."""
        if not self._held:
            return frozenset()
        now = self.clock.monotonic()
        for sid in [sid for sid, until in self._held.items() if until <= now]:
            del self._held[sid]
        key = _partition_key(partition)
        return frozenset(sid for sid in self._held if _partition_key_of(sid) == key)

    def _not_led(self, partition: LocalPartition, decision: GateDecision, inputs: tuple) -> Offered:
        """Cluster mode, a partition this broker does not lead (or cannot tell): nothing of it
        is queued. A follower's pins are let go (the leader uploads; keeping deleted segments
        alive on a follower would only cost its disk), unless an upload of ours is still in
        flight (it started while we led, under our epoch; it finishes or fails on its own)."""
        self.queue.set_partition(partition.path, [])
        if (self.pins is not None and decision.role == "follower"
                and not any(p.partition == partition.path for p, _ in self._in_flight.values())):
            self.pins.release_partition(partition)
        result = Offered(0, 0, 0, False, not_led=True)
        self._offered[partition.path] = (inputs, result)
        return result

    def leadership_tick(self, topics: Callable[[], set[str]]) -> bool:
        """Ask the cluster again when due about `topics()`; True when a partition's role or our
        leader epoch changed since it was last planned (the caller offers the partitions again).
        `topics` is a function: without a cluster (single mode) it is never called, which spares
        the daemon gathering every partition's topic each second for nothing."""
        if self.gate is None:
            return False
        view = self.gate.refresh(topics())
        changed = any((view.role(t, p), view.leader_epoch(t, p) if d.upload or view.role(t, p) == "leader" else None)
                      != (d.role, d.leader_epoch) for (t, _, p), d in self.gate.decisions.items())
        if self.metrics:
            self.metrics.cluster_reachable.set(1 if view.reachable else 0)
            for role, count in self.gate.roles().items():
                self.metrics.cluster_partitions.labels(role).set(count)
        return changed

    def forget(self, partition_path: Path) -> None:
        """The partition dir is gone (topic deleted, partition moved): drop its backlog."""
        self.queue.drop_partition(partition_path)
        self._offered.pop(partition_path, None)
        self._breakers.pop(partition_path, None)
        partition = self._partitions.pop(partition_path, None)
        if partition is not None:
            if self.pins is not None:
                self.pins.release_partition(partition)   # a deleted topic's segments are not offloaded
            self._remote.pop(_partition_key(partition), None)
            if self.gate is not None:
                self.gate.forget(_partition_key(partition))
            self._bad = {sid: f for sid, f in self._bad.items() if _partition_key_of(sid) != _partition_key(partition)}

    def remembered(self) -> int:
        """How many segments the coordinator remembers something about (flat in steady state)."""
        return sum(len(bases) for bases in self._remote.values()) + len(self._bad) + len(self._rescued)

    def _prune(self, partition: LocalPartition) -> None:
        """Forget segments of this partition that left the local disk (deleted by retention,
        ours or the broker's, and not pinned): nothing will offer them again, and the journal
        answers for them if something does."""
        if partition.topic_id is None:
            return
        key = _partition_key(partition)
        present = {s.base_offset for s in partition.segments}
        if self.pins is not None:
            present.update(self.pins.pins(partition))
        bases = self._remote.get(key)
        if bases is not None:
            for base in bases.keys() - present:
                del bases[base]
            if not bases:
                del self._remote[key]
        if self._bad:
            gone = [sid for sid in self._bad if _partition_key_of(sid) == key and sid.base_offset not in present]
            for sid in gone:
                del self._bad[sid]

    def forget_cached(self, topics: frozenset[str]) -> None:
        """Drop what is cached about these topics' segments being remote: a rollback with
        --delete-remote removed their copies (and journal rows) behind our back, and after
        `resume` they must be uploaded again."""
        self._remote = {key: bases for key, bases in self._remote.items() if key[0] not in topics}

    def _is_remote(self, sid: SegmentId, segment: LocalSegment) -> bool:
        """Uploaded, or removed from the store by total retention (never uploaded again), as
        far as this very segment goes: one the broker truncated and rewrote under the same base
        offset after its predecessor expired is new data, and is uploaded."""
        if self._remote.get(_partition_key_of(sid), {}).get(sid.base_offset) == _shape(segment):
            return True
        record = self.journal.get(sid)
        if record is None or record.state not in (SegmentState.UPLOADED, SegmentState.EXPIRED):
            return False
        if self.gate is not None and record.state is SegmentState.UPLOADED and record.end_offset != segment.end_offset:
            # Cluster mode: a journal rebuilt from the store holds every broker's uploads, and
            # another broker's segment may start at this base offset yet end elsewhere (replicas
            # roll apart): it is not this segment. The chain decides what this one adds.
            return False
        if record.state is SegmentState.EXPIRED and not record.describes(segment.end_offset, segment.size):
            return False
        self._remember_remote(sid, segment)
        return True

    def _remember_remote(self, sid: SegmentId, segment: LocalSegment) -> None:
        self._remote.setdefault(_partition_key_of(sid), {})[sid.base_offset] = _shape(segment)

    # -- running uploads ----------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def pump(self) -> None:
        """Start uploads while there is capacity and ready work."""
        if not self.accepting or (self.fatal is not None and self.stop_on_fatal):
            return
        now = self.clock.monotonic()
        if now < self._paused_until:
            return

        def allowed(partition: Any) -> bool:
            breaker = self._breakers.get(partition)
            return breaker is None or breaker.allows(now)

        while len(self._in_flight) < self.config.upload.concurrency:
            pending = self.queue.take(now, allowed)
            if pending is None:
                return
            self._start(pending, now)

    def settle_done(self, timeout: float | None = 0) -> int:
        """Record finished uploads (waiting up to `timeout` for one); returns how many."""
        if not self._in_flight:
            return 0
        done, _ = wait(list(self._in_flight), timeout=timeout, return_when=FIRST_COMPLETED)
        for future in done:
            self._settle(future)
        return len(done)

    def next_start_at(self, now: float) -> float | None:
        """The moment `pump` could next start an upload without one finishing first, or None
        when only a finished upload can change anything (every slot busy, a probe in flight,
        nothing queued, or no new work accepted). Loops wait for that moment or a completion,
        never on a zero timeout: with every slot busy and more segments ready, a timeout of
        "ready now" made the one-shot drain spin on `wait(timeout=0)`, holding the GIL."""
        if not self.accepting or (self.fatal is not None and self.stop_on_fatal):
            return None
        if len(self._in_flight) >= self.config.upload.concurrency:
            return None
        next_ready = self.queue.next_ready_at()
        if next_ready is None:
            return None
        at = max(next_ready, self._paused_until)
        if at > now:
            return at
        # Entries are ready but pump left them: their partitions' breakers are open. Wake when
        # the first one may probe, and at least every second for a retry backoff ending sooner.
        reopen = [b.open_until for b in self._breakers.values() if b.open_until is not None and b.open_until > now]
        return min([now + 1.0, *reopen])

    def drain(self) -> None:
        """Upload everything queued (one-shot mode): returns when nothing is left to try."""
        while True:
            self.pump()
            now = self.clock.monotonic()
            start_at = self.next_start_at(now)
            if not self._in_flight:
                if start_at is None:
                    return
                self.clock.sleep(max(0.0, start_at - now))
                continue
            self.settle_done(None if start_at is None else max(0.0, start_at - now))

    def shutdown(self, grace_seconds: float) -> bool:
        """Take no new work; let uploads in flight finish for `grace_seconds`, then cancel them.
        Returns True when no upload is left running."""
        self.accepting = False
        deadline = self.clock.monotonic() + grace_seconds
        while self._in_flight and self.clock.monotonic() < deadline:
            self.settle_done(max(0.0, deadline - self.clock.monotonic()))
        if self._in_flight:
            self.log.warning("grace period over: cancelling uploads in flight", segments=len(self._in_flight))
            self.store.cancel_transfers()
            deadline = self.clock.monotonic() + 1.0
            while self._in_flight and self.clock.monotonic() < deadline:
                self.settle_done(max(0.0, deadline - self.clock.monotonic()))
        finished = not self._in_flight
        self._pool.shutdown(wait=finished, cancel_futures=True)
        return finished

    def backlog(self) -> Backlog:
        """Queued segments, plus the roll time of the oldest one queued or in flight."""
        queued = self.queue.backlog()
        stamps = [p.rolled_at for p, _ in self._in_flight.values()]
        if queued.oldest_rolled_at is not None:
            stamps.append(queued.oldest_rolled_at)
        return Backlog(queued.segments, queued.bytes, min(stamps) if stamps else None)

    def busy_stems(self) -> set[str]:
        """Key stems of the uploads in flight (the sweep must not touch them)."""
        return {target.keys.stem for _, target in self._in_flight.values()}

    def muted_partitions(self) -> int:
        now = self.clock.monotonic()
        return sum(1 for b in self._breakers.values() if b.is_open(now))

    def _start(self, pending: Pending, now: float) -> None:
        candidate: Candidate = pending.item  # type: ignore[assignment]
        if self.gate is not None:
            latest = self.gate.decisions.get(_partition_key(candidate.partition))
            if latest is None or not latest.upload or latest.leader_epoch != candidate.leader_epoch:
                return   # leadership moved since it was queued: the next offer plans it afresh
        target = target_for(candidate.segment, candidate.partition, self.config.store.prefix,
                            self.config.store.hash_prefix, candidate.broker_id, self.uid_factory(),
                            candidate.leader_epoch)
        # The attempt before this one failed; if it failed after its manifest PUT was sent, the
        # segment may be visible already (the journal keeps that attempt's id, across restarts
        # too): the worker settles it before uploading again.
        record = self.journal.get(candidate.id)
        previous = (replace(target.keys, uid=record.uid)
                    if record is not None and record.state is SegmentState.FAILED and record.uid else None)
        self.journal.mark_uploading(candidate.id, target.keys.uid, candidate.segment.size, self.clock.now_ms())
        breaker = self._breakers.get(pending.partition)
        if breaker is not None:
            self._breakers[pending.partition] = breaker.started(now)
        if self.gate is not None and self.gate.claims:
            future = self._pool.submit(claimed_offload, self.gate, target.keys.claim_key, target, self.store,
                                       self.clock.now_ms, previous, self._part_buffers)
        else:
            future = self._pool.submit(offload_segment, target, self.store, self.clock.now_ms, previous,
                                       self._part_buffers)
        self._in_flight[future] = (pending, target)
        self._in_flight_ids.add(candidate.id)
        future.add_done_callback(lambda _: self.on_done())

    def _settle(self, future: Future) -> None:
        pending, target = self._in_flight.pop(future)
        candidate: Candidate = pending.item  # type: ignore[assignment]
        sid = candidate.id
        self._in_flight_ids.discard(sid)
        segment = candidate.segment
        log = self.log.bind(topic=segment.topic, partition=segment.partition, base_offset=segment.base_offset)
        now_ms, now = self.clock.now_ms(), self.clock.monotonic()
        try:
            manifest: SegmentManifest = future.result()
        except ClaimNotTaken as exc:
            self._claim_not_taken(pending, candidate, exc.outcome, log)
            return
        except BadSegment as exc:
            reason = candidate.in_log_dir(str(exc))
            self.journal.mark_failed(sid, reason, now_ms)
            self._bad[sid] = fingerprint(segment.log_path)
            self._unpin(candidate)
            log.error("segment skipped", reason=reason)
            self._count("bad_segment", segment.size)
            if exc.read_error:
                self._breaker_failed(pending.partition, now, log)
            self._failed(SegmentFailure(sid, str((candidate.original or segment).log_path), reason))
            return
        except StoreError as exc:
            self.journal.mark_failed(sid, str(exc), now_ms)
            if exc.retryable:
                self._breaker_failed(pending.partition, now, log)
                attempts = pending.attempts + 1
                if self.accepting and self.retry.should_retry(attempts):
                    delay = self.retry.delay(attempts, self.rng)
                    log.warning("segment upload failed, will retry", error=str(exc), attempt=attempts,
                                retry_in_seconds=round(delay, 2))
                    self._count("retried", segment.size)
                    if self.metrics:
                        self.metrics.retries.labels(exc.reason).inc()
                    self.queue.push(replace(pending, attempts=attempts, not_before=now + delay))
                    return
                log.error("segment upload failed", error=str(exc), attempts=attempts)
                self._count("failed", segment.size)
                self._offered.pop(pending.partition, None)  # the next reconcile offers it afresh
                self._failed(SegmentFailure(sid, str(segment.log_path), str(exc)))
                return
            self._count("failed", segment.size)
            # said once per outage, and again when the fix it needs changes
            first = self.fatal is None or self.fatal.hint != exc.hint
            self.fatal = exc
            if self.stop_on_fatal:
                log.error("store refused the upload", error=str(exc), error_class=exc.error_class.value)
                return
            # A fatal error (credentials, permissions, bucket) is not retried request by
            # request: the daemon stops uploading for daemon.fatal_retry_ms, then tries again,
            # since an operator may have fixed it meanwhile.
            pause = self.config.daemon.fatal_retry_ms / 1000
            self._paused_until = max(self._paused_until, now + pause)
            if first:
                log.error("store refused the upload; uploads paused", error=str(exc),
                          error_class=exc.error_class.value, retry_in_seconds=pause)
            self.queue.push(replace(pending, not_before=self._paused_until))
            return
        manifest_key = replace(target.keys, uid=manifest.uid).manifest_key   # an adopted attempt's own
        record_uploaded(self.journal, manifest, manifest_key, now_ms)
        self._remember_remote(sid, candidate.segment)
        if self.gate is not None:
            self.gate.uploaded(_partition_key(candidate.partition), link_of(manifest, manifest_key))
        self._unpin(candidate)
        self._breakers.pop(pending.partition, None)
        if not self.stop_on_fatal:
            self.fatal = None   # the store accepts uploads again
        self._count("uploaded", manifest.total_bytes)
        if self.metrics and pending.rolled_at > 0:
            self.metrics.roll_to_remote.observe(max(0.0, self.wall() - pending.rolled_at))
        if self.keep_results:
            self.uploaded.append(manifest)
        log.info("segment uploaded", bytes=manifest.total_bytes, end_offset=manifest.end_offset,
                 key=manifest_key)

    def _claim_not_taken(self, pending: Pending, candidate: Candidate, outcome: ClaimOutcome, log: Any) -> None:
        """Another sidecar holds the claim: nothing of ours went up. The segment is held for a
        chain refresh's time (by then the other upload is in the chain, or its claim is
        stale), the chain is listed again and leadership asked again before the next plan."""
        assert self.gate is not None
        sid = candidate.id
        self.journal.forget(sid)     # nothing uploaded under this attempt's uid
        self._held[sid] = self.clock.monotonic() + self.gate.chains.refresh_ms / 1000
        self.gate.claim_lost(_partition_key(candidate.partition))
        self._offered.pop(pending.partition, None)
        if outcome.verdict == YIELD:
            self._unpin(candidate)   # a newer leader uploads it
            log.warning("segment left to the newer leader: its claim is under a higher leader epoch",
                        claim=outcome.describe(), our_leader_epoch=candidate.leader_epoch)
        else:
            log.info("segment claimed by another broker's upload; asking again later", claim=outcome.describe(),
                     retry_in_seconds=self.gate.chains.refresh_ms / 1000)
        self._count("claimed_elsewhere", candidate.segment.size)

    def _unpin(self, candidate: Candidate) -> None:
        if self.pins is not None:
            self.pins.release(candidate.partition, candidate.segment.base_offset)
        self._rescued.discard(candidate.id)

    def _breaker_failed(self, partition: Any, now: float, log: Any) -> None:
        if self.breaker_policy is None:
            return
        before = self._breakers.get(partition, Breaker())
        after = before.failed(now, self.breaker_policy)
        self._breakers[partition] = after
        if after.open_until is not None and after.times_opened > before.times_opened:
            log.warning("partition muted after repeated upload failures",
                        failures=after.consecutive_failures, retry_in_seconds=round(after.open_until - now, 1))

    def _failed(self, failure: SegmentFailure) -> None:
        if self.keep_results:
            self.failures.append(failure)

    def _count(self, result: str, nbytes: int) -> None:
        if self.metrics:
            self.metrics.uploaded_segments.labels(result).inc()
            self.metrics.uploaded_bytes.labels(result).inc(nbytes)


def _partition_key(partition: LocalPartition) -> tuple[str, str, int]:
    assert partition.topic_id is not None
    return partition.topic, partition.topic_id, partition.partition


def _shape(segment: LocalSegment) -> tuple[int | None, int]:
    """What tells a segment from one rewritten under the same base offset."""
    return segment.end_offset, segment.size


def _partition_key_of(sid: SegmentId) -> tuple[str, str, int]:
    return sid.topic, sid.topic_id, sid.partition
