"""Rollback's plan over a cluster's chain (pure): pieces below the first local offset, newest
first, whole uploads with their files, cut pieces as their .log, a gap stops it."""

from __future__ import annotations

from dataclasses import replace

from tests.unit.test_rollback_plan import local, manifest
from tiering.rollback.plan import plan_partition


def upload(base: int, end: int, broker: int, epoch: int | None, created: int, uid: str):
    return replace(manifest(base, end, uid=uid, created=created), broker_id=broker, leader_epoch=epoch)


def test_a_followers_plan_is_the_chains_pieces_cut_at_its_first_local_offset():
    remote = [upload(0, 99, 1, 0, 10, "a" * 16), upload(100, 249, 1, 0, 11, "b" * 16),
              upload(200, 319, 2, 1, 20, "c" * 16),      # the new leader's first upload, whole
              upload(0, 59, 3, None, 5, "d" * 16)]       # serves nothing: broker 1's epoch 0 wins
    plan = plan_partition(local(300, 400), remote, [], log_start=300)
    assert plan.refused is None and plan.left is None
    assert [(s.base_offset, s.end_offset, s.manifest.uid[0], s.cut) for s in plan.restore] == [
        (200, 299, "c", (200, 299)),      # tail cut at the first local offset
        (100, 199, "b", (100, 199)),      # tail served by the newer epoch's upload
        (0, 99, "a", None),               # whole, with its files
    ]
    assert [f.name for f in plan.restore[0].files] == ["00000000000000000200.log"]
    assert [f.name for f in plan.restore[2].files][-1] == "00000000000000000000.log"
    assert len(plan.restore[2].files) == 4
    assert [m.uid[0] for m in plan.duplicates] == ["d"]
    assert plan.first_offset == 0 and plan.new_log_start == 0


def test_a_gap_in_the_chain_stops_the_restore_below_it():
    remote = [upload(0, 99, 1, 0, 10, "a" * 16), upload(150, 299, 2, 1, 20, "c" * 16)]
    plan = plan_partition(local(300), remote, [], log_start=300)
    assert [(s.base_offset, s.cut) for s in plan.restore] == [(150, None)]
    assert plan.left is not None and "offsets 100..149" in plan.left and "1 piece(s)" in plan.left
