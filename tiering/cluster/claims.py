"""Claims: during a leader change two sidecars may both believe they lead a partition (one
of them on stale metadata). Before a segment's objects go up, the uploader creates the
partition's claim on the segment's start offset with a conditional write (`If-None-Match:
*`); the store lets exactly one writer create it. Whoever finds the claim there already asks
`claim_verdict` (pure) what to do. Stores without conditional writes get no claims: uploads
go ahead and the chain's readers resolve duplicates by leader epoch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from tiering.store.errors import ErrorClass, ObjectTooLarge, StoreError
from tiering.store.protocol import ObjectStore

PROCEED, WAIT, YIELD = "proceed", "wait", "yield"
MAX_CLAIM_BYTES = 4096


@dataclass(frozen=True)
class Claim:
    broker_id: int | None
    leader_epoch: int | None
    uid: str                # the upload attempt that made it
    created_at_ms: int

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), sort_keys=True) + "\n").encode()


def parse_claim(data: bytes, fallback_ms: int) -> Claim:
    """A claim read back; what is not one of ours (garbage, a field of the wrong type) counts
    as a claim of an unknown broker and epoch made at `fallback_ms` (the object's time)."""
    try:
        doc = json.loads(data)
        broker, epoch, uid, created = doc["broker_id"], doc["leader_epoch"], doc["uid"], doc["created_at_ms"]
        if (not _int_or_none(broker) or not _int_or_none(epoch) or not isinstance(uid, str)
                or not _int_or_none(created) or created is None):
            raise ValueError
        return Claim(broker, epoch, uid, created)
    except (ValueError, TypeError, KeyError, RecursionError, UnicodeDecodeError):
        return Claim(None, None, "", fallback_ms)


def _int_or_none(value: object) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool))


def claim_verdict(existing: Claim, mine: Claim, now_ms: int, timeout_ms: int) -> str:
    """What to do when `mine` finds `existing` at the key:

    - PROCEED: it is this broker's (an earlier attempt, a restart, a lost answer to our own
      write), or another broker's claim older than `timeout_ms` at an epoch not above ours
      (its uploader died or gave up before writing a manifest);
    - YIELD: a broker claimed it under a higher leader epoch than ours: it is the newer
      leader, we are the stale one;
    - WAIT: another broker's recent claim at an epoch not above ours (its upload may still
      finish): ask again later, by then its manifest is in the chain or the claim is stale.
    """
    if existing.broker_id is not None and existing.broker_id == mine.broker_id:
        return PROCEED
    if existing.leader_epoch is not None and (mine.leader_epoch is None or existing.leader_epoch > mine.leader_epoch):
        return YIELD
    if now_ms - existing.created_at_ms >= timeout_ms:
        return PROCEED
    return WAIT


@dataclass(frozen=True)
class ClaimOutcome:
    verdict: str
    holder: Claim | None = None     # the claim found at the key (None: ours was created)

    def describe(self) -> str:
        if self.holder is None:
            return "claimed"
        who = f"broker {self.holder.broker_id}" if self.holder.broker_id is not None else "an unknown writer"
        epoch = f"leader epoch {self.holder.leader_epoch}" if self.holder.leader_epoch is not None else "no epoch"
        return f"claimed by {who} ({epoch}) at {self.holder.created_at_ms}"


def take_claim(store: ObjectStore, key: str, mine: Claim, now_ms: int, timeout_ms: int) -> ClaimOutcome:
    """Create the claim at `key`, or judge the one there. Raises StoreError."""
    if store.put_if_absent(key, mine.to_json()):
        return ClaimOutcome(PROCEED)
    try:
        data = store.get_bytes(key, MAX_CLAIM_BYTES)
    except StoreError as exc:
        if exc.error_class is ErrorClass.NOT_FOUND:
            return ClaimOutcome(WAIT)     # removed since (the sweep of an old claim): ask again
        if not isinstance(exc, ObjectTooLarge):
            raise
        data = b""                        # too large to be a claim: judged as an unknown one
    info = store.head(key)
    fallback = int(info.last_modified * 1000) if info is not None else now_ms
    holder = parse_claim(data, fallback)
    return ClaimOutcome(claim_verdict(holder, mine, now_ms, timeout_ms), holder)
