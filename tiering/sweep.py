"""The periodic sweep of stale state in the store: multipart uploads nobody will complete
(a crash, a killed process) cost storage and are invisible in listings; objects without a
manifest (an attempt that failed and could not clean up) are garbage.

Planning is pure (listings and time in, keys out). Thresholds keep it from touching work in
progress, ours or another process's: an upload younger than the multipart age, objects
younger than the orphan age, and every segment stem we have in flight are left alone. Only
this deployment's keys are considered (tiering.store.owned): another deployment's uploads and
objects nested under our prefix are never aborted or deleted.

In a cluster the other sidecars upload into the same partitions, and their uploads in flight
are not in our busy stems. The claim tells them apart (tiering.cluster.claims): an uploader
claims a segment's start offset before its first object goes up, so an upload at a start
offset with a claim younger than the orphan age and no manifest yet (from anyone) is someone's
work in progress, however old its multipart upload: left alone until a manifest lands there
or the claim itself ages out (then its uploader is long gone, and the next sweep takes its
leftovers). On a store without conditional writes there are no claims, and the ages alone
protect: `daemon.stale_multipart_ms` must exceed any broker's longest upload.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from tiering.store.keys import KeyLayout, ParsedKey
from tiering.store.owned import owned_objects, owned_uploads
from tiering.store.protocol import MultipartUpload, ObjectInfo, ObjectStore


@dataclass(frozen=True)
class SweepPlan:
    aborts: tuple[MultipartUpload, ...]
    orphans: tuple[str, ...]


def plan_sweep(uploads: Iterable[tuple[ParsedKey, MultipartUpload]], objects: Iterable[tuple[ParsedKey, ObjectInfo]],
               busy_stems: set[str], now: float, multipart_age_seconds: float, orphan_age_seconds: float) -> SweepPlan:
    """From our uploads and objects (already cut down to our keys), what to remove."""
    manifested: set[str] = set()
    manifested_starts: set[tuple[str, int]] = set()
    claims: dict[tuple[str, int], float] = {}
    candidates: list[tuple[str, ParsedKey, float]] = []
    for parsed, info in objects:
        if parsed.is_manifest:
            manifested.add(parsed.stem)
            manifested_starts.add((parsed.root, parsed.base_offset))
        else:
            if parsed.is_claim:
                claims[(parsed.root, parsed.base_offset)] = info.last_modified
            candidates.append((info.key, parsed, info.last_modified))

    def in_flight(parsed: ParsedKey) -> bool:
        """Another sidecar's upload under a live claim (see the module's doc)."""
        start = (parsed.root, parsed.base_offset)
        claimed = claims.get(start)
        return (not parsed.is_claim and claimed is not None and now - claimed <= orphan_age_seconds
                and start not in manifested_starts)

    aborts = []
    for parsed, upload in uploads:
        if parsed.stem in busy_stems or in_flight(parsed):
            continue
        if now - upload.initiated > multipart_age_seconds:
            aborts.append(upload)
    orphans = [key for key, parsed, modified in candidates
               if parsed.stem not in manifested and parsed.stem not in busy_stems and not in_flight(parsed)
               and now - modified > orphan_age_seconds]
    return SweepPlan(tuple(aborts), tuple(orphans))


def sweep(store: ObjectStore, layout: KeyLayout, busy_stems: set[str], now: float, multipart_age_seconds: float,
          orphan_age_seconds: float, log: Any) -> SweepPlan:
    """List, plan and carry out one sweep; raises StoreError when the store fails."""
    plan = plan_sweep(list(owned_uploads(store, layout)), owned_objects(store, layout), busy_stems, now,
                      multipart_age_seconds, orphan_age_seconds)
    for upload in plan.aborts:
        store.abort_multipart_upload(upload.key, upload.upload_id)
        log.info("stale multipart upload aborted", key=upload.key, initiated=upload.initiated)
    if plan.orphans:
        store.delete_objects(list(plan.orphans))
        for key in plan.orphans:
            log.info("orphaned object deleted", key=key)
    return plan
