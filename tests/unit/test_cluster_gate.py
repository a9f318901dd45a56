"""What a sidecar uploads in cluster mode (tiering.cluster.gate, pure parts)."""

import pytest

from tiering.cluster.chain import Chain, ChainLink
from tiering.cluster.gate import decide, segment_extends
from tiering.cluster.leadership import LeadershipView, PartitionLeadership


def link(base, end, uid):
    return ChainLink(base, end, 1, 1, uid * 16, f"k{uid}", 0)


CHAIN = Chain.of([link(100, 199, "a"), link(200, 299, "b"), link(400, 499, "c")])   # gap 300..399


@pytest.mark.parametrize("base,end,wanted", [
    (500, 599, True),      # beyond the end
    (450, 550, True),      # straddles the end: uploaded whole
    (499, 499, False),     # ends at the end: covered
    (150, 250, False),     # covered inside
    (250, 350, True),      # reaches into the gap
    (300, 399, True),      # the gap itself
    (0, 99, False),        # ends below the start: expired from the store, never again
    (0, 150, False),       # what is above the start is covered
    (50, 350, True),
])
def test_segment_extends(base, end, wanted):
    assert segment_extends(CHAIN, base, end) is wanted


def test_an_empty_chain_wants_everything():
    assert segment_extends(Chain.of([]), 0, 9) and segment_extends(None, 5, 9)


def test_decide_uploads_only_as_leader():
    view = LeadershipView(1, {("t", 0): PartitionLeadership(1, 7, (1, 2), (1, 2)),
                              ("t", 1): PartitionLeadership(2, 3, (1, 2), (1, 2))}, 1, True)
    led = decide(view, "t", 0, CHAIN)
    assert (led.upload, led.role, led.leader_epoch, led.reason) == (True, "leader", 7, None)
    assert led.wants(500, 599) and not led.wants(150, 250)
    follower = decide(view, "t", 1, CHAIN)
    assert (follower.upload, follower.role) == (False, "follower")
    assert follower.reason == "broker 2 leads it (leader epoch 3)"
    assert not follower.wants(500, 599)
    unknown = decide(view, "t", 2, None)
    assert (unknown.upload, unknown.role) == (False, "unknown")
    unlisted = decide(view, "t", 0, None, chain_error="list cluster-a/: timeout")
    assert not unlisted.upload and "could not be listed: list cluster-a/: timeout" in unlisted.reason
