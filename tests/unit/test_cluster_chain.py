"""The partition chain: pieces, gaps, overlaps, covers (tiering.cluster.chain)."""

import json
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tiering.cluster.chain import Chain, ChainLink, ChainPiece
from tiering.store.manifest import ManifestError, parse_manifest
from tests.unit.test_manifest_keys import keys, manifest

_counter = iter(range(10**9))


def link(base, end, epoch=None, broker=None, created=0, uid=None):
    uid = uid or f"{next(_counter):016x}"
    return ChainLink(base, end, epoch, broker, uid, f"p/t/0/{base:020d}-{uid}.manifest.json", created)


def spans(chain):
    return [(p.first, p.last, p.link.uid) for p in chain.pieces]


def test_empty_chain():
    chain = Chain.of([])
    assert (chain.pieces, chain.start, chain.end, chain.gaps(), chain.overlaps()) == ((), None, None, (), ())
    assert not chain.covers(0, 0)


def test_adjacent_links_are_two_pieces_no_gap_no_overlap():
    a, b = link(0, 99, 1), link(100, 199, 2)
    chain = Chain.of([b, a])                 # any order in, offset order out
    assert chain.links == (a, b)
    assert chain.pieces == (ChainPiece(a, 0, 99), ChainPiece(b, 100, 199))
    assert (chain.start, chain.end, chain.gaps(), chain.overlaps()) == (0, 199, (), ())
    assert chain.covers(0, 199) and chain.covers(99, 100)


def test_one_offset_overlap_goes_to_the_higher_epoch():
    old, new = link(0, 100, epoch=3), link(100, 199, epoch=4)
    chain = Chain.of([old, new])
    assert chain.pieces == (ChainPiece(old, 0, 99), ChainPiece(new, 100, 199))
    assert chain.overlaps() == ((old, new),)
    # The lower epoch written later still loses the shared offset.
    old_late, new_early = replace(old, created_at_ms=9), replace(new, created_at_ms=1)
    assert Chain.of([old_late, new_early]).pieces[1] == ChainPiece(new_early, 100, 199)


def test_one_offset_overlap_lower_epoch_after_keeps_only_its_tail():
    first, second = link(0, 100, epoch=5), link(100, 199, epoch=4)
    chain = Chain.of([first, second])
    assert chain.pieces == (ChainPiece(first, 0, 100), ChainPiece(second, 101, 199))


def test_nested_link_with_higher_epoch_splits_the_outer_one():
    outer, inner = link(0, 99, epoch=1), link(40, 59, epoch=2)
    chain = Chain.of([outer, inner])
    assert chain.pieces == (ChainPiece(outer, 0, 39), ChainPiece(inner, 40, 59), ChainPiece(outer, 60, 99))
    assert chain.overlaps() == ((outer, inner),)
    assert (chain.start, chain.end) == (0, 99)


def test_nested_link_with_lower_epoch_is_hidden():
    outer, inner = link(0, 99, epoch=2), link(40, 59, epoch=1)
    assert Chain.of([outer, inner]).pieces == (ChainPiece(outer, 0, 99),)


def test_equal_epochs_earlier_upload_wins_then_smaller_uid():
    early, late = link(0, 99, epoch=7, created=10, uid="b" * 16), link(50, 149, epoch=7, created=20, uid="a" * 16)
    assert spans(Chain.of([early, late])) == [(0, 99, "b" * 16), (100, 149, "a" * 16)]
    same_time_big, same_time_small = replace(early, created_at_ms=20), late
    assert spans(Chain.of([same_time_big, same_time_small])) == [(0, 49, "b" * 16), (50, 149, "a" * 16)]


def test_none_epoch_loses_to_any_epoch_even_zero():
    single, zero = link(0, 99, epoch=None, created=1), link(0, 99, epoch=0, created=2)
    assert Chain.of([single, zero]).pieces == (ChainPiece(zero, 0, 99),)
    both_none = [link(0, 99, created=5), link(0, 99, created=3)]
    assert Chain.of(both_none).pieces == (ChainPiece(both_none[1], 0, 99),)


def test_identical_duplicate_links_are_one_piece():
    a = link(0, 99, epoch=1, uid="1" * 16)
    b = replace(a, uid="2" * 16, manifest_key="other")
    chain = Chain.of([b, a])
    assert chain.pieces == (ChainPiece(a, 0, 99),)
    assert chain.overlaps() == ((a, b),)


def test_gaps_between_start_and_end():
    a, b, c = link(10, 19), link(30, 39), link(41, 50)
    chain = Chain.of([c, a, b])
    assert chain.gaps() == ((20, 29), (40, 40))
    assert (chain.start, chain.end) == (10, 50)
    assert [(p.first, p.last) for p in chain.pieces] == [(10, 19), (30, 39), (41, 50)]


def test_a_long_link_bridges_what_a_later_short_one_leaves():
    long, short, after = link(0, 100), link(10, 20), link(50, 60)
    assert Chain.of([long, short, after]).gaps() == ()


def test_covers_edges():
    chain = Chain.of([link(10, 19), link(20, 29), link(40, 49)])
    assert chain.covers(10, 29) and chain.covers(10, 10) and chain.covers(29, 29) and chain.covers(40, 49)
    assert not chain.covers(9, 10)          # one before the start
    assert not chain.covers(29, 30)         # one past into the gap
    assert not chain.covers(30, 39)         # the gap itself
    assert not chain.covers(39, 40)
    assert not chain.covers(49, 50)         # one past the end
    assert not chain.covers(10, 49)         # spans the gap
    with pytest.raises(ValueError, match="empty range"):
        chain.covers(5, 4)


def test_pieces_within_clips_to_the_range():
    a, b = link(0, 99, epoch=1), link(100, 199, epoch=1)
    assert Chain.of([a, b]).pieces_within(50, 120) == (ChainPiece(a, 50, 99), ChainPiece(b, 100, 120))
    assert Chain.of([a, b]).pieces_within(200, 300) == ()


def test_a_link_ending_before_its_base_is_refused():
    with pytest.raises(ValueError, match="end offset 4 below base offset 5"):
        link(5, 4)


def test_manifest_leader_epoch_round_trips_and_is_optional():
    with_epoch = replace(manifest(), leader_epoch=12)
    assert parse_manifest(with_epoch.to_json(), keys().manifest_key) == with_epoch
    assert json.loads(with_epoch.to_json())["format_version"] == 1
    without = manifest()
    assert "leader_epoch" not in json.loads(without.to_json())  # single mode: as before
    assert parse_manifest(without.to_json(), keys().manifest_key).leader_epoch is None
    doc = json.loads(without.to_json())
    doc["leader_epoch"] = None
    assert parse_manifest(json.dumps(doc).encode(), keys().manifest_key).leader_epoch is None


@pytest.mark.parametrize("bad", [-1, 2**31, "3", True, 1.5])
def test_manifest_leader_epoch_out_of_range_is_refused(bad):
    doc = json.loads(manifest().to_json())
    doc["leader_epoch"] = bad
    with pytest.raises(ManifestError, match="leader_epoch"):
        parse_manifest(json.dumps(doc).encode(), keys().manifest_key)


# ---- the property: each covered offset in exactly one piece, from its best link ----

_links = st.lists(
    st.builds(lambda base, length, epoch, created, uid: link(base, base + length, epoch, None, created, f"{uid:016x}"),
              st.integers(0, 60), st.integers(0, 25), st.one_of(st.none(), st.integers(0, 3)),
              st.integers(0, 3), st.integers(0, 2**20)),
    max_size=8, unique_by=lambda l: l.uid)     # a uid names one upload attempt


def _best(links):
    return min(links, key=lambda l: (l.leader_epoch is None, -(l.leader_epoch or 0), l.created_at_ms, l.uid,
                                     l.manifest_key))


@settings(max_examples=150, deadline=None)
@given(_links)
def test_every_covered_offset_is_in_exactly_one_piece_from_the_best_link(links):
    chain = Chain.of(links)
    offsets = {o for l in links for o in range(l.base_offset, l.end_offset + 1)}
    pieces = chain.pieces
    for earlier, later in zip(pieces, pieces[1:]):
        assert earlier.last < later.first       # ordered and disjoint
    for piece in pieces:
        assert piece.link.base_offset <= piece.first <= piece.last <= piece.link.end_offset
    for offset in range(0, max(offsets, default=0) + 2):
        holding = [p for p in pieces if p.first <= offset <= p.last]
        covering = [l for l in links if l.base_offset <= offset <= l.end_offset]
        assert len(holding) == (1 if offset in offsets else 0)
        if covering:
            assert holding[0].link == _best(covering)
        gap = any(g[0] <= offset <= g[1] for g in chain.gaps())
        inside = chain.start is not None and chain.start <= offset <= chain.end
        assert gap == (inside and offset not in offsets)
        assert chain.covers(offset, offset) == (offset in offsets)
    overlapping = {(a.uid, b.uid) for a, b in chain.overlaps()}
    expected = {tuple(sorted((a.uid, b.uid))) for i, a in enumerate(links) for b in links[i + 1:]
                if a.base_offset <= b.end_offset and b.base_offset <= a.end_offset}
    assert {tuple(sorted(p)) for p in overlapping} == expected


def test_covers_stops_at_a_gap_of_one_offset_and_pieces_within_keeps_pieces_touching_the_range():
    a, b = link(0, 9), link(11, 19)
    chain = Chain.of([a, b])
    assert chain.gaps() == ((10, 10),)
    assert not chain.covers(0, 19) and not chain.covers(9, 11) and chain.covers(11, 19) and chain.covers(0, 9)
    # a piece whose last offset is the range's first, and one whose first is the range's last
    assert chain.pieces_within(9, 11) == (ChainPiece(a, 9, 9), ChainPiece(b, 11, 11))
    assert chain.pieces_within(10, 10) == ()
