"""Bringing the journal in line with the store, which is the source of truth.

- A new (or lost) journal is rebuilt from the manifests in the store, so nothing is uploaded
  twice: from this deployment's manifests only (tiering.store.owned), never from another's
  nested under our prefix, which total retention would then delete as ours.
- In a cluster the store holds every broker's uploads of a partition (its chain). The journal
  keeps what this sidecar uploaded, one row per segment of its own log dir: a rebuild takes
  only the manifests this broker wrote (`own_broker`). Another broker's upload of the same
  base offset (with its own end offset) or of other boundaries is the chain's, read from the
  store by whoever needs it (tiering.read.remote_chain), never a row here, where it would
  stand for a segment of ours with the wrong end offset, or hide ours under the same key.
- A segment the journal says was `uploading` was interrupted (crash, kill -9): if its
  manifest made it, the upload is complete; otherwise its objects and multipart uploads,
  which nobody can see, are removed and the segment is offloaded again under a new id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from tiering.clock import Clock
from tiering.journal import Journal, SegmentId, SegmentState
from tiering.store.errors import ErrorClass, StoreError
from tiering.store.keys import OBJECT_SUFFIXES, KeyLayout, ParsedKey, SegmentKeys
from tiering.store.manifest import ManifestError, SegmentManifest, fetch_manifest
from tiering.store.owned import owned_objects
from tiering.store.protocol import ObjectInfo, ObjectStore
from tiering.upload.segment import discard_attempt

STORE_SYNCED = "store_synced"


@dataclass(frozen=True)
class RemoteProblem:
    key: str
    reason: str
    unread: bool = False     # the store failed to hand it over: it may be a valid manifest


def segment_id(manifest: SegmentManifest) -> SegmentId:
    return SegmentId(manifest.topic, manifest.topic_id, manifest.partition, manifest.base_offset)


def record_uploaded(journal: Journal, manifest: SegmentManifest, manifest_key: str, now_ms: int) -> None:
    journal.mark_uploaded(segment_id(manifest), manifest.uid, manifest.end_offset, manifest.size_bytes,
                          manifest.total_bytes, manifest_key, now_ms, manifest.effective_max_timestamp)


def read_manifests(store: ObjectStore, listing: Iterable[tuple[ParsedKey, ObjectInfo]]
                   ) -> tuple[list[tuple[str, SegmentManifest]], list[RemoteProblem]]:
    """Every valid manifest in a listing of our keys, and one problem line for each that is not."""
    manifests, problems = [], []
    for parsed, info in listing:
        if not parsed.is_manifest:
            continue
        try:
            manifests.append((info.key, fetch_manifest(store, info.key)))
        except ManifestError as exc:
            problems.append(RemoteProblem(info.key, f"invalid manifest, ignored: {exc}"))
        except StoreError as exc:
            if exc.retryable or exc.error_class is ErrorClass.NOT_FOUND:
                problems.append(RemoteProblem(info.key, f"manifest could not be read: {exc.detail}", unread=True))
            else:
                raise
    return manifests, problems


def rebuild_journal(journal: Journal, store: ObjectStore, layout: KeyLayout,
                    clock: Clock, own_broker: int | None = None) -> tuple[int, list[RemoteProblem]]:
    """Import every manifest of ours in the store into a journal that has never seen the store.

    `own_broker` (cluster mode: this broker's id): only the manifests that broker uploaded;
    None (single mode): every manifest, whoever's broker id it records."""
    owned = list(owned_objects(store, layout))
    listing = {info.key: info for _, info in owned}
    manifests, problems = read_manifests(store, owned)
    unread = [p for p in problems if p.unread]
    if unread:
        # A manifest the store did not hand over (a bad moment, or listed and then gone) may
        # describe a segment still on disk: a journal rebuilt without it would upload that
        # segment a second time. The rebuild waits for a store that answers.
        raise StoreError(ErrorClass.RETRYABLE, "rebuild", unread[0].key,
                         f"{len(unread)} manifest(s) could not be read (the first: "
                         f"{unread[0].reason.removeprefix('manifest could not be read: ')}); the journal is "
                         "rebuilt from the store when it answers")
    seen: dict[SegmentId, str] = {}
    if own_broker is not None:
        manifests = [(key, m) for key, m in manifests if m.broker_id == own_broker]
    for key, manifest in sorted(manifests, key=lambda item: item[1].created_at_ms):
        sid = segment_id(manifest)
        mismatch = _unlike_listing(manifest, listing)
        if mismatch is not None:
            # Taking it would call the segment remote on the word of a manifest its objects
            # contradict: it is reported, and the segment (if still local) uploaded afresh.
            problems.append(RemoteProblem(key, f"manifest does not match the store, ignored: {mismatch}"))
            continue
        if sid in seen:
            problems.append(RemoteProblem(key, f"second manifest for the segment of {seen[sid]}: ignored"))
            continue
        seen[sid] = key
        record_uploaded(journal, manifest, key, clock.now_ms())
    journal.set_meta(STORE_SYNCED, str(clock.now_ms()))
    return len(seen), problems


def _unlike_listing(manifest: SegmentManifest, listing: dict[str, ObjectInfo]) -> str | None:
    for entry in manifest.objects:
        info = listing.get(entry.key)
        if info is None:
            return f"{entry.key} is missing"
        if info.size != entry.size:
            return f"{entry.key} is {info.size} bytes, the manifest says {entry.size}"
    return None


def recover_interrupted(journal: Journal, store: ObjectStore, root_of: Callable[[SegmentId], str], clock: Clock) -> list[str]:
    """Settle segments left `uploading` by a crash; returns one line per segment settled."""
    settled = []
    for record in journal.in_state(SegmentState.UPLOADING):
        if record.uid is None:
            journal.mark_failed(record.id, "interrupted before upload", clock.now_ms())
            continue
        keys = SegmentKeys(root_of(record.id), record.id.base_offset, record.uid)
        if store.head(keys.manifest_key) is not None:
            try:
                manifest = fetch_manifest(store, keys.manifest_key)
            except ManifestError as exc:
                # Not a manifest a reader would take, so the segment is not remote (and still on
                # disk: an `uploading` row is never deleted locally). Failed, the row keeps this
                # attempt's id: the next upload settles the attempt first (settle_previous
                # removes an unreadable manifest of ours, then its objects) and uploads again.
                journal.mark_failed(record.id, f"its manifest {keys.manifest_key} is invalid: {exc}", clock.now_ms())
                settled.append(f"{keys.stem}: invalid manifest ({exc}); the attempt is discarded and the segment "
                               "uploaded again")
                continue
            record_uploaded(journal, manifest, keys.manifest_key, clock.now_ms())
            settled.append(f"{keys.stem}: upload had completed")
            continue
        ours = {keys.object_key(kind) for kind in OBJECT_SUFFIXES}
        for upload in store.list_multipart_uploads(keys.stem + "."):
            if upload.key in ours:      # this attempt's keys exactly, nothing that merely starts so
                store.abort_multipart_upload(upload.key, upload.upload_id)
        discard_attempt(store, keys)
        journal.mark_failed(record.id, "interrupted upload (cleaned up; retried)", clock.now_ms())
        settled.append(f"{keys.stem}: interrupted upload cleaned up")
    return settled
