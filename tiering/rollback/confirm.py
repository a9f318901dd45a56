"""`--delete-remote` after a rollback: the store's copies go only once the running cluster
confirms the restored log start.

A rollback lowers `log-start-offset-checkpoint` on this broker only. A follower adopts the
leader's log start on every fetch (ReplicaFetcherThread -> UnifiedLog.maybeIncrementLogStartOffset)
and deletes the segments below it, so with a replication factor above 1 a broker restarted
after a rollback can undo it within minutes. Deleting the store's copies before the cluster
has shown it kept the restored offsets could leave them nowhere.

So the restoring command only records, per partition, the first offset it restored (in the
journal). A later `rollback --delete-remote --confirm`, or the daemon's pass, once the
broker is up, asks the cluster (ListOffsets earliest, answered by the partition's leader) and this broker's own
log-start-offset-checkpoint:
- both at the recorded first offset: the store's copies are deleted (each verified against
  the local file first, as before);
- either above it: the rollback was undone; said loudly, the store's copies kept;
- the cluster not reachable (or no bootstrap servers): nothing deleted, said so.
Pure: the records and the offsets in, the decision out.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

JOURNAL_KEY = "rollback_delete_remote"
DELETE, UNDONE, WAIT = "delete", "undone", "wait"
# A record's state: restored (not checked yet), waiting, undone; confirmed ones are dropped.
RESTORED, WAITING, CONFIRMED = "restored", "waiting", "confirmed"


@dataclass(frozen=True)
class PendingDeletion:
    topic: str
    topic_id: str
    partition: int
    first_offset: int            # the first offset on disk after the restore
    requested_at_ms: int
    # The last check's verdict (records from before it read as never checked).
    state: str = RESTORED
    detail: str = ""
    checked_at_ms: int | None = None

    @property
    def name(self) -> str:
        return f"{self.topic}-{self.partition}"


@dataclass(frozen=True)
class Decision:
    action: str                  # DELETE, UNDONE or WAIT
    reason: str


def decide(pending: PendingDeletion, earliest: int | None, local_start: int | None) -> Decision:
    """`earliest`: the cluster's answer to ListOffsets earliest (None: not asked or no
    answer); `local_start`: this broker's log start (tiering.rollback.deletion.replica_log_start:
    its log-start-offset-checkpoint entry, never below its first segment; None: unknown)."""
    first = pending.first_offset
    if local_start is not None and local_start > first:
        return Decision(UNDONE, f"rollback undone: this broker's log start is {local_start}, above the restored "
                                f"first offset {first} (a follower adopts the leader's log start); the store's "
                                "copies are kept: roll back every replica (see the README), then run this again")
    if earliest is None:
        return Decision(WAIT, f"the cluster has not confirmed log start {first} (no answer to ListOffsets; "
                              "kafka.bootstrap_servers set and the broker up?); the store's copies are kept")
    if earliest > first:
        return Decision(UNDONE, f"rollback undone: the cluster's log start is {earliest}, above the restored first "
                                f"offset {first} (the leader's log start wins on every replica); the store's copies "
                                "are kept: roll back every replica (see the README), then run this again")
    if local_start is not None and local_start < first:
        return Decision(WAIT, f"this broker's log start {local_start} is below the restored first offset {first}; "
                              "the store's copies are kept")
    if earliest < first:
        return Decision(WAIT, f"the cluster's log start {earliest} is below the restored first offset {first} "
                              "(another replica holds older data); the store's copies are kept")
    return Decision(DELETE, f"the cluster confirms log start {first}")


def load(text: str | None) -> dict[str, PendingDeletion]:
    """The pending deletions kept in the journal, by partition name; garbage reads as none."""
    if not text:
        return {}
    try:
        return {name: PendingDeletion(**fields) for name, fields in json.loads(text).items()}
    except (ValueError, TypeError, AttributeError):
        return {}


def dump(pending: dict[str, PendingDeletion]) -> str:
    return json.dumps({name: asdict(p) for name, p in sorted(pending.items())}, sort_keys=True)
