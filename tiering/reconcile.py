"""Bringing the journal in line with the store, which is the source of truth.

- A new (or lost) journal is rebuilt from the manifests in the store, so nothing is uploaded
  twice.
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
from tiering.store.keys import MANIFEST_SUFFIX, SegmentKeys, parse_key
from tiering.store.manifest import ManifestError, SegmentManifest, parse_manifest
from tiering.store.protocol import ObjectInfo, ObjectStore
from tiering.upload.segment import discard_attempt

STORE_SYNCED = "store_synced"


@dataclass(frozen=True)
class RemoteProblem:
    key: str
    reason: str


def segment_id(manifest: SegmentManifest) -> SegmentId:
    return SegmentId(manifest.topic, manifest.topic_id, manifest.partition, manifest.base_offset)


def record_uploaded(journal: Journal, manifest: SegmentManifest, manifest_key: str, now_ms: int) -> None:
    journal.mark_uploaded(segment_id(manifest), manifest.uid, manifest.end_offset, manifest.size_bytes,
                          manifest.total_bytes, manifest_key, now_ms, manifest.effective_max_timestamp)


def read_manifests(store: ObjectStore, listing: Iterable[ObjectInfo]) -> tuple[list[tuple[str, SegmentManifest]], list[RemoteProblem]]:
    """Every valid manifest in a listing, and one problem line for each that is not."""
    manifests, problems = [], []
    for info in listing:
        if not info.key.endswith("." + MANIFEST_SUFFIX):
            continue
        if parse_key(info.key) is None:
            problems.append(RemoteProblem(info.key, "manifest under a key we do not write: ignored"))
            continue
        try:
            manifests.append((info.key, parse_manifest(store.get_bytes(info.key), info.key)))
        except ManifestError as exc:
            problems.append(RemoteProblem(info.key, f"invalid manifest, ignored: {exc}"))
        except StoreError as exc:
            if exc.retryable or exc.error_class is ErrorClass.NOT_FOUND:
                problems.append(RemoteProblem(info.key, f"manifest could not be read: {exc.detail}"))
            else:
                raise
    return manifests, problems


def rebuild_journal(journal: Journal, store: ObjectStore, prefix: str, clock: Clock) -> tuple[int, list[RemoteProblem]]:
    """Import every manifest in the store into a journal that has never seen the store."""
    listing = {info.key: info for info in store.list_objects(prefix)}
    manifests, problems = read_manifests(store, listing.values())
    seen: dict[SegmentId, str] = {}
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
            manifest = parse_manifest(store.get_bytes(keys.manifest_key), keys.manifest_key)
            record_uploaded(journal, manifest, keys.manifest_key, clock.now_ms())
            settled.append(f"{keys.stem}: upload had completed")
            continue
        for upload in store.list_multipart_uploads(keys.stem + "."):
            store.abort_multipart_upload(upload.key, upload.upload_id)
        discard_attempt(store, keys)
        journal.mark_failed(record.id, "interrupted upload (cleaned up; retried)", clock.now_ms())
        settled.append(f"{keys.stem}: interrupted upload cleaned up")
    return settled
