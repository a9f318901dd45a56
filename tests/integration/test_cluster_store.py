"""Claims and the partition chain against a real S3 server over HTTP (moto's server mode)."""

from dataclasses import replace

import pytest

from tests.conftest import BUCKET, PREFIX
from tiering.cluster.claims import PROCEED, WAIT, YIELD, Claim, take_claim
from tiering.cluster.remote import RemoteChains
from tiering.config import StoreConfig, UploadConfig
from tiering.store.keys import KeyLayout
from tiering.store.manifest import ObjectEntry, SegmentManifest
from tiering.store.s3 import S3Store

TOPIC_ID = "4A8VWD3ZTJa4i2ZbnSPb8A"
LAYOUT = KeyLayout(PREFIX)


@pytest.fixture
def store(s3, s3_endpoint):
    store = S3Store.from_config(StoreConfig(BUCKET, PREFIX, s3_endpoint, "us-east-1", "path"), UploadConfig())
    yield store
    store.close()


def test_a_second_claim_of_the_same_key_loses(store, s3):
    key = LAYOUT.partition("orders", TOPIC_ID, 0).claim_key(100)
    assert store.put_if_absent(key, b"first\n")
    assert not store.put_if_absent(key, b"second\n")
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"first\n"

    new_leader, old_leader = Claim(2, 6, "b" * 16, 1_000), Claim(1, 5, "a" * 16, 1_000)
    assert take_claim(store, key.replace("100.claim", "200.claim"), new_leader, 2_000, 600_000).verdict == PROCEED
    stale = take_claim(store, key.replace("100.claim", "200.claim"), old_leader, 2_000, 600_000)
    assert stale.verdict == YIELD and stale.holder == new_leader and "broker 2 (leader epoch 6)" in stale.describe()
    # the other way round: the new leader goes ahead over the old one's claim at once (that
    # leader may have died mid-upload), and the claim on the store stays the old leader's
    assert take_claim(store, key.replace("100.claim", "300.claim"), old_leader, 2_000, 600_000).verdict == PROCEED
    over = take_claim(store, key.replace("100.claim", "300.claim"), new_leader, 2_000, 600_000)
    assert over.verdict == PROCEED and over.holder == old_leader
    # our own claim again (a restart): go ahead
    assert take_claim(store, key.replace("100.claim", "300.claim"), replace(old_leader, uid="c" * 16), 2_000,
                      600_000).verdict == PROCEED
    # garbage at the key counts from the object's time, as an unknown writer's
    garbage = key.replace("100.claim", "400.claim")
    store.put_bytes(garbage, b"not json")
    found = take_claim(store, garbage, new_leader, 2_000, 600_000)
    written_ms = int(store.head(garbage).last_modified * 1000)
    assert found.verdict == WAIT and found.holder == Claim(None, None, "", written_ms)
    assert take_claim(store, garbage, new_leader, written_ms + 600_000, 600_000).verdict == PROCEED


def manifest(base: int, end: int, broker: int | None, epoch: int | None, uid: str, created: int = 1) -> SegmentManifest:
    keys = LAYOUT.partition("orders", TOPIC_ID, 0).segment(base, uid)
    return SegmentManifest(
        format_version=1, topic="orders", topic_id=TOPIC_ID, partition=0, base_offset=base, end_offset=end,
        last_batch_offset=end, size_bytes=10, batch_count=1, record_count=1, max_timestamp=5, leader_epochs=(),
        objects=(ObjectEntry("log", keys.object_key("log"), 10, "0badf00d", "e"),), uid=uid, broker_id=broker,
        created_at_ms=created, tool_version="t", leader_epoch=epoch)


def test_the_chain_holds_every_brokers_manifests_of_the_current_topic_id(store):
    path = LAYOUT.partition("orders", TOPIC_ID, 0)
    for m in (manifest(0, 99, 1, 3, "1" * 16), manifest(50, 149, 2, 4, "2" * 16)):
        store.put_bytes(path.segment(m.base_offset, m.uid).manifest_key, m.to_json())
    # not in this chain: another topic id, another partition, a claim, a nested deployment
    other = LAYOUT.partition("orders", "B" * 22, 0)
    store.put_bytes(other.segment(0, "3" * 16).manifest_key, b"{}")
    store.put_bytes(path.claim_key(150), b"{}")
    store.put_bytes(f"{PREFIX}nested/{path.segment(150, '4' * 16).manifest_key}", b"{}")
    store.put_bytes(path.segment(300, "5" * 16).manifest_key, b"not a manifest")
    now = [1_000]
    chains = RemoteChains(store, LAYOUT, 30_000, lambda: now[0])
    listed = chains.get(("orders", TOPIC_ID, 0))
    assert [(p.first, p.last, p.link.broker_id) for p in listed.chain.pieces] == [(0, 49, 1), (50, 149, 2)]
    assert [key for key, _ in listed.unreadable] == [path.segment(300, "5" * 16).manifest_key]
    m = manifest(150, 199, 2, 4, "6" * 16)
    store.put_bytes(path.segment(150, m.uid).manifest_key, m.to_json())
    assert chains.get(("orders", TOPIC_ID, 0)).chain.end == 149      # cached until due
    now[0] += 30_000
    assert chains.get(("orders", TOPIC_ID, 0)).chain.end == 199
    store.delete_objects([path.segment(0, "1" * 16).manifest_key])
    assert chains.get(("orders", TOPIC_ID, 0), force=True).chain.start == 50
