"""Listings of the store, cut down to this deployment's keys.

A prefix listing returns whatever lies under the prefix, including another deployment's keys
nested below it (`tiered/team-b/...` under `tiered/`). Every caller that lists the store
(journal rebuild, sweep, status, verify, cold reads, rollback) takes its keys from here, so
one rule (`KeyLayout.parse`) decides what is ours, and nothing it rejects is ever adopted,
deleted or counted. The two places that clean up one upload attempt (a failed attempt, one
a crash interrupted) list only that attempt's stem and act on its exact keys, which the
attempt's SegmentKeys name; nothing there is decided by a pattern.
"""

from __future__ import annotations

from typing import Iterator

from tiering.store.keys import KeyLayout, ParsedKey
from tiering.store.protocol import MultipartUpload, ObjectInfo, ObjectStore


def owned_objects(store: ObjectStore, layout: KeyLayout,
                  under: str | None = None) -> Iterator[tuple[ParsedKey, ObjectInfo]]:
    """Our objects under `under` (default: the whole prefix), with their parsed keys."""
    for info in store.list_objects(layout.prefix if under is None else under):
        parsed = layout.parse(info.key)
        if parsed is not None:
            yield parsed, info


def owned_uploads(store: ObjectStore, layout: KeyLayout,
                  under: str | None = None) -> Iterator[tuple[ParsedKey, MultipartUpload]]:
    """Our multipart uploads in progress under `under` (default: the whole prefix)."""
    for upload in store.list_multipart_uploads(layout.prefix if under is None else under):
        parsed = layout.parse(upload.key)
        if parsed is not None:
            yield parsed, upload
