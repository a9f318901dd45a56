"""The periodic sweep of stale state in the store: multipart uploads nobody will complete
(a crash, a killed process) cost storage and are invisible in listings; objects without a
manifest (an attempt that failed and could not clean up) are garbage.

Planning is pure (listings and time in, keys out). Thresholds keep it from touching work in
progress, ours or another process's: an upload younger than the multipart age, objects
younger than the orphan age, and every segment stem we have in flight are left alone. Only
this deployment's keys are considered (tiering.store.owned): another deployment's uploads and
objects nested under our prefix are never aborted or deleted.
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
    aborts = []
    for parsed, upload in uploads:
        if parsed.stem in busy_stems:
            continue
        if now - upload.initiated > multipart_age_seconds:
            aborts.append(upload)
    manifested: set[str] = set()
    candidates: list[tuple[str, str, float]] = []
    for parsed, info in objects:
        if parsed.is_manifest:
            manifested.add(parsed.stem)
        else:
            candidates.append((info.key, parsed.stem, info.last_modified))
    orphans = [key for key, stem, modified in candidates
               if stem not in manifested and stem not in busy_stems and now - modified > orphan_age_seconds]
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
