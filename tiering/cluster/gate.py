"""Upload gating in cluster mode: which partitions this broker's sidecar uploads, and which of
their segments.

- Only partitions this broker leads (Kafka's Metadata, `LeadershipTracker`) are uploaded; a
  follower's, or one whose leadership is not known (cluster unreachable, stale answer), are
  not: nothing new is uploaded on a guess.
- A leader uploads only what the chain (every broker's manifests, `RemoteChains`) lacks: a
  local segment whose last offset lies beyond the chain's end, or one inside the chain's span
  that the chain does not cover whole (a gap an earlier leader left: it crashed with an upload
  in flight while a later one finished). Followers roll at other offsets than the leader, so
  the first segment a new leader uploads usually starts below the chain's end: it is uploaded
  **whole**, not trimmed. Trimming would mean rewriting the .log and rebuilding its indexes,
  a producer snapshot and leader-epoch entries for a cut point, all of which Kafka wrote and
  we upload unchanged today; an overlap of one segment per leader change costs a little store
  space, and the chain's readers resolve it by leader epoch (the newer copy wins).
- Segments ending below the chain's start are never uploaded: total retention removed them
  from the store (or they predate tiering), and they must not come back.

`decide` is pure; `ClusterGate` holds the tracker, the cached chains and the last decisions
(for `status`), and is owned by the coordinator's thread.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable

from tiering.cluster.chain import Chain, ChainLink
from tiering.cluster.claims import Claim, ClaimOutcome, take_claim
from tiering.cluster.identity import BrokerIdentity, broker_identity
from tiering.cluster.leadership import LEADER, UNKNOWN, LeadershipSource, LeadershipTracker, LeadershipView
from tiering.cluster.remote import PartitionId, RemoteChains
from tiering.store.errors import StoreError
from tiering.store.keys import KeyLayout
from tiering.store.protocol import ObjectStore

if TYPE_CHECKING:
    from tiering.config import Config


@dataclass(frozen=True)
class GateDecision:
    upload: bool                    # may this sidecar upload the partition now
    role: str                       # leader | follower | unknown
    leader_epoch: int | None        # ours, when we lead
    chain: Chain | None = None      # the chain to extend (leader only)
    reason: str | None = None       # why nothing is uploaded

    def wants(self, base_offset: int, end_offset: int) -> bool:
        """Whether a local segment [base_offset, end_offset] is to be uploaded."""
        return self.upload and segment_extends(self.chain, base_offset, end_offset)


def segment_extends(chain: Chain | None, base_offset: int, end_offset: int) -> bool:
    """A segment the chain lacks: beyond its end, or not covered inside its span; never one
    ending below its start (expired from the store)."""
    if chain is None or chain.end is None:
        return True
    assert chain.start is not None
    if end_offset > chain.end:
        return True
    if end_offset < chain.start:
        return False
    return not chain.covers(max(base_offset, chain.start), end_offset)


def decide(view: LeadershipView, topic: str, partition: int, chain: Chain | None,
           chain_error: str | None = None) -> GateDecision:
    """Pure: whether and what to upload from the leadership view and the chain."""
    role = view.role(topic, partition)
    epoch = view.leader_epoch(topic, partition)
    if role != LEADER:
        return GateDecision(False, role, None, None, view.why_not_leader(topic, partition))
    if chain_error is not None:
        return GateDecision(False, role, epoch, None, f"the partition's chain could not be listed: {chain_error}")
    return GateDecision(True, role, epoch, chain)


@dataclass
class ClusterGate:
    tracker: LeadershipTracker
    chains: RemoteChains
    identity: BrokerIdentity
    store: ObjectStore
    layout: KeyLayout
    claims: bool                    # conditional-PUT claims before each upload
    claim_timeout_ms: int
    now_ms: Callable[[], int]
    log: Any = None
    decisions: dict[PartitionId, GateDecision] = field(default_factory=dict)
    _listed_epoch: dict[PartitionId, int | None] = field(default_factory=dict)
    _stale_chain: set[PartitionId] = field(default_factory=set)
    _view: LeadershipView | None = None

    @property
    def broker_id(self) -> int | None:
        return self.identity.broker_id

    def refresh(self, topics: Iterable[str], force: bool = False) -> LeadershipView:
        """Leadership for these topics (asked again when due, or forced)."""
        self._view = self.tracker.refresh(topics, force)
        return self._view

    def view(self) -> LeadershipView:
        return self._view if self._view is not None else self.tracker.view()

    def decide(self, partition: PartitionId) -> GateDecision:
        """What the coordinator may upload of this partition now. The chain is listed again
        when it is due, when our leader epoch changed since it was listed (we just became
        leader: what the previous leader uploaded matters now), or after a lost claim."""
        topic, _, number = partition
        view = self.tracker.view()
        chain, error = None, None
        if view.role(topic, number) == LEADER:
            epoch = view.leader_epoch(topic, number)
            force = self._listed_epoch.get(partition, -2) != epoch or partition in self._stale_chain
            try:
                chain = self.chains.get(partition, force=force).chain
                self._listed_epoch[partition] = epoch
                self._stale_chain.discard(partition)
            except StoreError as exc:
                error = str(exc)
        decision = decide(view, topic, number, chain, error)
        self.decisions[partition] = decision
        return decision

    def uploaded(self, partition: PartitionId, link: ChainLink) -> None:
        self.chains.extend(partition, link)

    def claim(self, claim_key: str, leader_epoch: int | None, uid: str) -> ClaimOutcome:
        """Runs on an upload worker: the store decides who uploads this start offset."""
        mine = Claim(self.broker_id, leader_epoch, uid, self.now_ms())
        return take_claim(self.store, claim_key, mine, mine.created_at_ms, self.claim_timeout_ms)

    def claim_lost(self, partition: PartitionId) -> None:
        """Another sidecar holds the claim: list the chain again before deciding anything more
        for the partition, and ask the cluster again (our leadership may be stale)."""
        self._stale_chain.add(partition)
        self.tracker.invalidate()

    def roles(self) -> dict[str, int]:
        counts = {LEADER: 0, "follower": 0, UNKNOWN: 0}
        for decision in self.decisions.values():
            counts[decision.role] = counts.get(decision.role, 0) + 1
        return counts

    def forget(self, partition: PartitionId) -> None:
        self.decisions.pop(partition, None)
        self._listed_epoch.pop(partition, None)
        self._stale_chain.discard(partition)
        self.chains.forget(partition)

    def close(self) -> None:
        self.tracker.close()


def claims_supported(config: Config, store: ObjectStore, log: Any) -> bool:
    """`cluster.claims`: "on", "off", or "auto": ask the store once whether it honours
    `If-None-Match: *` (tiering.store.capabilities), on a scratch key it removes again."""
    mode = config.cluster.claims
    if mode != "auto":
        return mode == "on"
    client = getattr(store, "client", None)
    if client is None:
        return False
    from tiering.store.capabilities import probe_conditional_put
    scratch = f"{config.store.prefix}.tiering-probe/conditional-put-{secrets.token_hex(8)}"
    try:
        return probe_conditional_put(client, config.store.bucket, scratch)
    except Exception as exc:    # whatever the store answered: no claims, said once
        if log is not None:
            log.warning("the store could not be asked for conditional writes; uploading without claims",
                        error=f"{type(exc).__name__}: {exc}")
        return False


def open_gate(config: Config, store: ObjectStore, now_ms: Callable[[], int], log: Any,
              source_factory: Callable[[str], LeadershipSource] | None = None,
              metrics: Any = None) -> ClusterGate | None:
    """The gate for cluster mode (kafka.bootstrap_servers set), None in single mode; says at
    start which mode it is."""
    if not config.cluster_mode:
        if log is not None:
            log.info("mode: single (no kafka.bootstrap_servers): every eligible segment in the log dirs is uploaded")
        if metrics is not None:
            metrics.cluster_reachable.set(1)
        return None
    assert config.kafka.bootstrap_servers is not None
    identity = broker_identity(config.kafka.log_dirs)
    claims = claims_supported(config, store, log)
    if source_factory is None:
        from tiering.cluster.leadership import KafkaLeadership
        source_factory = KafkaLeadership

    def on_reachable(ok: bool) -> None:
        if metrics is not None:
            metrics.cluster_reachable.set(1 if ok else 0)

    tracker = LeadershipTracker(source_factory(config.kafka.bootstrap_servers), identity.broker_id,
                                config.cluster.metadata_refresh_ms, now_ms, log, on_reachable)
    chains = RemoteChains(store, config.store.layout, config.cluster.chain_refresh_ms, now_ms)
    if log is not None:
        log.info("mode: cluster: only partitions this broker leads are uploaded", broker_id=identity.broker_id,
                 bootstrap_servers=config.kafka.bootstrap_servers, claims=claims,
                 metadata_refresh_s=config.cluster.metadata_refresh_ms / 1000)
        if identity.broker_id is None:
            log.error("this broker's id is unknown: nothing is uploaded until it is", problem=identity.problem)
    return ClusterGate(tracker, chains, identity, store, config.store.layout, claims,
                       config.cluster.claim_timeout_ms, now_ms, log)
