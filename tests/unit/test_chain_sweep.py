"""The sweep in a cluster: another sidecar's upload in flight is told by its claim (pure)."""

from __future__ import annotations

import pytest

from tiering.store.keys import KeyLayout
from tiering.store.protocol import MultipartUpload, ObjectInfo
from tiering.sweep import plan_sweep

ROOT = "cluster-a/orders-AAAAAAAAAAAAAAAAAAAAAA/0/"
NOW = 1_000_000.0
MULTIPART_AGE, ORPHAN_AGE = 3600, 86_400
LAYOUT = KeyLayout("cluster-a/")


def key(base: int, uid: str, suffix: str) -> str:
    return f"{ROOT}{base:020d}-{uid}.{suffix}"


def claim(base: int, age: float) -> ObjectInfo:
    return ObjectInfo(f"{ROOT}{base:020d}.claim", 80, "e", NOW - age)


def plan(uploads, objects):
    owned = lambda items: [(LAYOUT.parse(i.key), i) for i in items]  # noqa: E731
    assert all(LAYOUT.parse(i.key) is not None for i in (*uploads, *objects))
    return plan_sweep(owned(uploads), owned(objects), set(), NOW, MULTIPART_AGE, ORPHAN_AGE)


@pytest.mark.parametrize("claim_age, aborted", [(ORPHAN_AGE, False), (ORPHAN_AGE + 1, True), (None, True)])
def test_another_brokers_long_upload_under_its_claim_is_never_aborted(claim_age, aborted):
    # a multipart upload older than the multipart age: ours would be in busy_stems; another
    # broker's is told by the claim on its start offset (younger than the orphan age)
    upload = MultipartUpload(key(80, "1" * 16, "log"), "u1", NOW - 2 * MULTIPART_AGE)
    objects = [ObjectInfo(key(80, "1" * 16, "index"), 10, "e", NOW - 2 * MULTIPART_AGE)]
    if claim_age is not None:
        objects.append(claim(80, claim_age))
    swept = plan([upload], objects)
    assert [u.upload_id for u in swept.aborts] == (["u1"] if aborted else [])
    # the claim itself goes once older than the orphan age (how claims leave the store)
    assert sorted(swept.orphans) == sorted(k for k in [f"{ROOT}{80:020d}.claim"] if claim_age and aborted)


def test_a_claim_whose_segment_has_a_manifest_protects_no_other_attempt():
    # the claimed upload finished (a manifest at that start offset, any uid): a second,
    # abandoned attempt at the same start offset is swept by its ages as before
    upload = MultipartUpload(key(90, "2" * 16, "log"), "u2", NOW - MULTIPART_AGE - 1)
    objects = [claim(90, 10), ObjectInfo(key(90, "3" * 16, "log"), 10, "e", NOW - 10),
               ObjectInfo(key(90, "3" * 16, "manifest.json"), 10, "e", NOW - 10),
               ObjectInfo(key(90, "2" * 16, "index"), 10, "e", NOW - ORPHAN_AGE - 1)]
    swept = plan([upload], objects)
    assert [u.upload_id for u in swept.aborts] == ["u2"]
    assert swept.orphans == (key(90, "2" * 16, "index"),)
