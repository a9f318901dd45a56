"""The claim rule and the claim key (tiering.cluster.claims, tiering.store.keys)."""

import pytest

from tiering.cluster.claims import PROCEED, WAIT, YIELD, Claim, ClaimOutcome, claim_verdict, parse_claim
from tiering.store.errors import ErrorClass, ObjectTooLarge, StoreError
from tiering.store.keys import KeyLayout

TOPIC_ID = "4A8VWD3ZTJa4i2ZbnSPb8A"
TIMEOUT = 600_000
NOW = 10_000_000


def claim(broker=1, epoch=5, created=NOW, uid="a" * 16):
    return Claim(broker, epoch, uid, created)


@pytest.mark.parametrize("existing,mine,now,verdict", [
    # ours: a retry, a restart, our own write whose answer was lost; whatever the epoch or age
    (claim(1, 5), claim(1, 5, uid="b" * 16), NOW, PROCEED),
    (claim(1, 7), claim(1, 5), NOW, PROCEED),
    # a newer leader's: we are stale, whatever the age
    (claim(2, 6), claim(1, 5), NOW, YIELD),
    (claim(2, 6, created=0), claim(1, 5), NOW, YIELD),
    (claim(2, 0), claim(1, None), NOW, YIELD),          # any epoch beats a single-mode upload
    # an older leader's, however fresh: it may have died mid-upload; waiting would leave a gap
    (claim(2, 5), claim(1, 6), NOW, PROCEED),
    (claim(2, 5, created=NOW - TIMEOUT + 1), claim(1, 6), NOW, PROCEED),
    (claim(2, 0), claim(1, 1), NOW, PROCEED),
    # a single-mode upload's claim (no epoch) is waited out, however low
    (claim(2, None), claim(1, 6), NOW, WAIT),
    (claim(2, None, created=NOW - TIMEOUT), claim(1, 6), NOW, PROCEED),
    # the same epoch from another broker (not a Kafka state) is waited out too
    (claim(2, 6), claim(1, 6), NOW, WAIT),
    (claim(2, 6, created=NOW - TIMEOUT), claim(1, 6), NOW, PROCEED),
    # an unreadable claim (no broker, no epoch): waited out from its object's time
    (Claim(None, None, "", NOW - 1), claim(1, 6), NOW, WAIT),
    (Claim(None, None, "", NOW - TIMEOUT), claim(1, 6), NOW, PROCEED),
    # no broker id on either side is not "ours"
    (claim(None, None), claim(None, None), NOW, WAIT),
])
def test_claim_verdict(existing, mine, now, verdict):
    assert claim_verdict(existing, mine, now, TIMEOUT) == verdict


def test_claim_round_trip_and_garbage():
    mine = claim(3, 9)
    assert parse_claim(mine.to_json(), 0) == mine
    for garbage in (b"", b"{", b"[]", b'{"broker_id": "3", "leader_epoch": 1, "uid": "x", "created_at_ms": 1}',
                    b'{"broker_id": 3, "leader_epoch": true, "uid": "x", "created_at_ms": 1}',
                    b'{"broker_id": 3, "leader_epoch": 1, "uid": "x", "created_at_ms": null}',
                    b'{"broker_id": 3, "leader_epoch": 1, "uid": "x", "created_at_ms": "7"}',
                    b'{"broker_id": 3, "leader_epoch": 1, "uid": 5, "created_at_ms": 1}', b"\xff"):
        assert parse_claim(garbage, 42) == Claim(None, None, "", 42)


@pytest.mark.parametrize("hash_prefix", [False, True])
def test_claim_key_is_ours_and_never_a_segment_stem(hash_prefix):
    layout = KeyLayout("cluster-a/", hash_prefix)
    path = layout.partition("orders.v2", TOPIC_ID, 3)
    key = path.claim_key(1234)
    assert key == f"{path.root}00000000000000001234.claim"
    parsed = layout.parse(key)
    assert (parsed.topic, parsed.topic_id, parsed.partition, parsed.base_offset) == ("orders.v2", TOPIC_ID, 3, 1234)
    assert parsed.is_claim and not parsed.is_manifest and parsed.uid == ""
    segment = path.segment(1234, "0123456789abcdef")
    assert parsed.stem != segment.stem and not segment.stem.startswith(parsed.stem + ".")
    assert not layout.parse(segment.manifest_key).is_claim
    for not_ours in (key + ".x", key.replace(".claim", "-.claim"), key.replace("1234.claim", "123.claim"),
                     key.replace(".claim", ".claims"), f"cluster-a/nested/{key}", key.replace("cluster-a/", "other/")):
        assert layout.parse(not_ours) is None, not_ours


def test_take_claim_on_a_store_creates_yields_waits_and_reads_garbage_as_an_unknown_writer():
    """take_claim against the in-memory store (the same port as the S3 adapter; the real
    conditional write is tested on moto in tests/integration/test_cluster_store.py)."""
    from tests.unit.memstore import MemoryStore
    from tiering.cluster.claims import take_claim
    store = MemoryStore()
    new, old = claim(2, 6, created=NOW), claim(1, 5, created=NOW)
    outcome = take_claim(store, "k1", new, NOW, TIMEOUT)
    assert (outcome.verdict, outcome.holder, outcome.describe()) == (PROCEED, None, "claimed")
    assert parse_claim(store.objects["k1"], 0) == new
    stale = take_claim(store, "k1", old, NOW, TIMEOUT)
    assert (stale.verdict, stale.holder) == (YIELD, new)
    assert stale.describe() == f"claimed by broker 2 (leader epoch 6) at {NOW}"
    assert parse_claim(store.objects["k1"], 0) == new                 # the loser wrote nothing
    same_epoch = take_claim(store, "k1", claim(3, 6), NOW + 1, TIMEOUT)
    assert (same_epoch.verdict, same_epoch.holder) == (WAIT, new)
    store.objects["k2"] = b"not json"        # the in-memory store reports it written at time 0
    unknown = take_claim(store, "k2", new, TIMEOUT - 1, TIMEOUT)
    assert unknown.verdict == WAIT and unknown.holder == Claim(None, None, "", 0)
    assert take_claim(store, "k2", new, TIMEOUT, TIMEOUT).verdict == PROCEED
    assert unknown.describe().startswith("claimed by an unknown writer (no epoch) at ")


def test_take_claim_when_the_claim_vanishes_is_too_large_or_dates_from_the_objects_time():
    from tests.unit.memstore import MemoryStore
    from tiering.cluster.claims import MAX_CLAIM_BYTES, take_claim
    from tiering.store.protocol import ObjectInfo

    class Store(MemoryStore):
        """Holds `key` (the create-only put loses) but answers as the test says."""
        def __init__(self, get=None, written_s=None):
            super().__init__()
            self.get, self.written_s = get, written_s

        def put_if_absent(self, key, data):
            return False

        def get_bytes(self, key, max_bytes):
            return self.get(key, max_bytes)

        def head(self, key):
            return None if self.written_s is None else ObjectInfo(key, 1, "e", self.written_s)

    mine = claim(2, 6)

    def gone(key, max_bytes):
        raise StoreError(ErrorClass.NOT_FOUND, "get", key, "no such key")
    # swept between our create-only put and the read: ask again later (no holder to judge)
    assert take_claim(Store(gone), "k", mine, NOW, TIMEOUT) == ClaimOutcome(WAIT)

    def huge(key, max_bytes):
        raise ObjectTooLarge("get", key, max_bytes + 1, max_bytes)
    # too large to be a claim: an unknown writer's, dated by the object (2,000.5 s -> ms)
    found = take_claim(Store(huge, 2_000.5), "k", mine, 2_000_500 + TIMEOUT - 1, TIMEOUT)
    assert (found.verdict, found.holder) == (WAIT, Claim(None, None, "", 2_000_500))
    assert take_claim(Store(huge, 2_000.5), "k", mine, 2_000_500 + TIMEOUT, TIMEOUT).verdict == PROCEED
    # no HEAD answer either: dated now, so waited out from now
    undated = take_claim(Store(huge, None), "k", mine, NOW, TIMEOUT)
    assert (undated.verdict, undated.holder) == (WAIT, Claim(None, None, "", NOW))

    def broken(key, max_bytes):
        raise StoreError(ErrorClass.RETRYABLE, "get", key, "503")
    with pytest.raises(StoreError):
        take_claim(Store(broken), "k", mine, NOW, TIMEOUT)
    assert MAX_CLAIM_BYTES >= len(mine.to_json())
