"""Which keys a deployment owns (`KeyLayout.parse`), at the boundaries: its own keys in every
legal form, and never a key of a deployment nested under its prefix, beside it, with another
hash setting, or in any form we do not write."""

from __future__ import annotations

import base64
import uuid

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tiering.store.keys import MANIFEST_SUFFIX, OBJECT_SUFFIXES, KeyLayout, PartitionPath

TOPIC_ID = "4A8VWD3ZTJa4i2ZbnSPb8A"
OTHER_ID = "9FzQpRj3TvWlM0XcYb2dEg"
UID = "0123456789abcdef"

topics = st.text("abcxyzABC019._-", min_size=1, max_size=249).filter(lambda t: t not in (".", ".."))
topic_ids = st.uuids().map(lambda u: base64.urlsafe_b64encode(u.bytes).decode().rstrip("="))
partitions = st.integers(0, 2**31 - 1)
bases = st.integers(0, 2**63 - 1)
uids = st.text("0123456789abcdef", min_size=16, max_size=16)
suffixes = st.sampled_from([*OBJECT_SUFFIXES.values(), MANIFEST_SUFFIX])
components = st.text("abcdef0123456789-_.team", min_size=1, max_size=12)
prefixes = st.lists(components, max_size=3).map(lambda parts: "".join(p + "/" for p in parts))


def key_of(prefix: str, hashed: bool, topic: str = "orders", topic_id: str = TOPIC_ID, partition: int = 0,
           base: int = 1234, uid: str = UID, suffix: str = "log") -> str:
    return f"{PartitionPath(prefix, topic, topic_id, partition, hashed).segment(base, uid).stem}.{suffix}"


@settings(max_examples=300, deadline=None)
@given(prefixes, st.booleans(), topics, topic_ids, partitions, bases, uids, suffixes)
def test_every_key_we_write_is_ours_and_parses_back(prefix, hashed, topic, topic_id, partition, base, uid, suffix):
    key = key_of(prefix, hashed, topic, topic_id, partition, base, uid, suffix)
    parsed = KeyLayout(prefix, hashed).parse(key)
    assert parsed is not None
    assert (parsed.topic, parsed.topic_id, parsed.partition, parsed.base_offset, parsed.uid, parsed.suffix) == (
        topic, topic_id, partition, base, uid, suffix)
    assert parsed.root == PartitionPath(prefix, topic, topic_id, partition, hashed).root
    assert f"{parsed.stem}.{parsed.suffix}" == key


@settings(max_examples=300, deadline=None)
@given(prefixes, st.booleans(), st.lists(components, min_size=1, max_size=3), st.booleans(), topics, topic_ids,
       partitions, suffixes)
def test_a_deployment_nested_under_our_prefix_is_never_ours(prefix, hashed, extra, inner_hashed, topic, topic_id,
                                                            partition, suffix):
    nested = prefix + "".join(p + "/" for p in extra)
    key = key_of(nested, inner_hashed, topic, topic_id, partition, suffix=suffix)
    # The one way a nested key can be ours: the inner prefix's only extra component is the
    # very hash we would put there for this partition, which makes it our key, byte for byte.
    assume(key != key_of(prefix, hashed, topic, topic_id, partition, suffix=suffix))
    assert KeyLayout(prefix, hashed).parse(key) is None


@pytest.mark.parametrize("outer,inner", [
    ("tiered/", "tiered/team-b/"),
    ("", "team-b/"),
    ("cluster-a/", "cluster-a/broker-1/"),
    ("tiered/", "tiered/orders-" + OTHER_ID + "/0/"),   # a prefix shaped like our layout
])
@pytest.mark.parametrize("outer_hashed,inner_hashed", [(False, False), (False, True), (True, False), (True, True)])
def test_nested_examples(outer, inner, outer_hashed, inner_hashed):
    for suffix in ("manifest.json", "log", "index"):
        assert KeyLayout(outer, outer_hashed).parse(key_of(inner, inner_hashed, suffix=suffix)) is None
    assert KeyLayout(outer, outer_hashed).parse(key_of(outer, outer_hashed)) is not None


def test_a_sibling_that_shares_characters_of_the_prefix_is_not_ours():
    assert KeyLayout("tiered/").parse(key_of("tiered-b/", False)) is None
    assert KeyLayout("tiered/").parse(key_of("tieredb/", False)) is None
    assert KeyLayout("tiered/").parse(key_of("tiered/", False)) is not None


def test_the_hash_segment_is_exactly_as_configured():
    hashed, plain = key_of("p/", True), key_of("p/", False)
    assert KeyLayout("p/", True).parse(hashed) is not None
    assert KeyLayout("p/", False).parse(hashed) is None       # a hash segment where we write none
    assert KeyLayout("p/", True).parse(plain) is None         # no hash segment where we write one
    segment = hashed[len("p/"):len("p/") + 8]
    wrong = "%08x" % ((int(segment, 16) + 1) % 2**32)
    assert KeyLayout("p/", True).parse(hashed.replace(segment, wrong, 1)) is None
    if segment != segment.upper():
        assert KeyLayout("p/", True).parse(hashed.replace(segment, segment.upper(), 1)) is None
    # Another partition's (or topic id's) hash in front of this partition's path.
    other = key_of("p/", True, partition=1)[len("p/"):len("p/") + 8]
    assert other != segment and KeyLayout("p/", True).parse(hashed.replace(segment, other, 1)) is None


def test_topic_names_with_dashes_and_digits_split_at_the_topic_id():
    parsed = KeyLayout("t/").parse(key_of("t/", False, topic="team-b-7-" + "x" * 3))
    assert (parsed.topic, parsed.topic_id) == ("team-b-7-xxx", TOPIC_ID)
    # A topic named like a topic id, and a topic id that ends in digits and dashes.
    odd_id = "AAAAAAAAAAAAAAAAAA-0-A"
    parsed = KeyLayout("t/").parse(key_of("t/", False, topic=OTHER_ID, topic_id=odd_id))
    assert (parsed.topic, parsed.topic_id) == (OTHER_ID, odd_id)
    # `team-b/orders-<id>` under `tiered/`: "team-b" is no topic of ours followed by an id.
    assert KeyLayout("tiered/").parse(f"tiered/team-b/orders-{TOPIC_ID}/0/{1234:020d}-{UID}.log") is None


@pytest.mark.parametrize("key", [
    f"p/orders-{TOPIC_ID}/0/{1234:020d}-{UID}.log.tmp",           # a suffix we never write
    f"p/orders-{TOPIC_ID}/0/{1234:020d}-{UID}.json",
    f"p/orders-{TOPIC_ID}/00/{1234:020d}-{UID}.log",              # partition not as we write it
    f"p/orders-{TOPIC_ID}/03/{1234:020d}-{UID}.log",
    f"p/orders-{TOPIC_ID}/-1/{1234:020d}-{UID}.log",
    f"p/orders-{TOPIC_ID}/12345678901/{1234:020d}-{UID}.log",     # beyond int32
    f"p/orders-{TOPIC_ID}/{2**31}/{1234:020d}-{UID}.log",
    f"p/orders-{TOPIC_ID}/0/{2**63:020d}-{UID}.log",              # beyond int64
    f"p/orders-{TOPIC_ID}/0/{1234:019d}-{UID}.log",               # 19-digit base offset
    f"p/orders-{TOPIC_ID}/0/{1234:021d}-{UID}.log",
    f"p/orders-{TOPIC_ID}/0/{1234:020d}-{UID.upper()}.log",       # uid in upper case
    f"p/orders-{TOPIC_ID}/0/{1234:020d}-{UID[:15]}.log",
    f"p/orders-{TOPIC_ID[:21]}/0/{1234:020d}-{UID}.log",          # 21-character topic id
    f"p/orders-{TOPIC_ID}x/0/{1234:020d}-{UID}.log",
    f"p/-{TOPIC_ID}/0/{1234:020d}-{UID}.log",                     # empty topic
    f"p/.-{TOPIC_ID}/0/{1234:020d}-{UID}.log",                    # "." and ".." are no topics
    f"p/..-{TOPIC_ID}/0/{1234:020d}-{UID}.log",
    f"p/{'x' * 250}-{TOPIC_ID}/0/{1234:020d}-{UID}.log",          # 250 characters
    f"p/ord ers-{TOPIC_ID}/0/{1234:020d}-{UID}.log",
    f"p/orders-{TOPIC_ID}/0/x/{1234:020d}-{UID}.log",             # an extra path component
    f"p/x/orders-{TOPIC_ID}/0/{1234:020d}-{UID}.log",
    f"p//orders-{TOPIC_ID}/0/{1234:020d}-{UID}.log",
    f"porders-{TOPIC_ID}/0/{1234:020d}-{UID}.log",                # not under the prefix
    f"P/orders-{TOPIC_ID}/0/{1234:020d}-{UID}.log",
    "p/notes.txt",
    "p/",
    "",
])
def test_keys_we_do_not_write_are_not_ours(key):
    assert KeyLayout("p/").parse(key) is None


def test_boundaries_we_do_write_are_ours():
    top = KeyLayout("p/").parse(key_of("p/", False, topic="x" * 249, partition=2**31 - 1, base=2**63 - 1))
    assert top is not None and top.partition == 2**31 - 1 and top.base_offset == 2**63 - 1
    assert KeyLayout("p/").parse(key_of("p/", False, topic="..a", partition=0, base=0)) is not None
    real_id = base64.urlsafe_b64encode(uuid.UUID(int=2**128 - 1).bytes).decode().rstrip("=")
    assert KeyLayout("").parse(key_of("", False, topic_id=real_id)) is not None


@settings(max_examples=500, deadline=None)
@given(prefixes, st.booleans(), topics, topic_ids, partitions, suffixes, st.data())
def test_a_key_one_edit_away_from_ours_is_ours_only_in_the_form_we_write(prefix, hashed, topic, topic_id,
                                                                         partition, suffix, data):
    key = key_of(prefix, hashed, topic, topic_id, partition, suffix=suffix)
    at = data.draw(st.integers(0, len(key)))
    edit = data.draw(st.sampled_from(["insert", "delete", "replace"]))
    char = data.draw(st.sampled_from("/-._0a9fA"))
    edited = {"insert": key[:at] + char + key[at:], "delete": key[:at] + key[at + 1:],
              "replace": key[:at] + char + key[at + 1:]}[edit]
    parsed = KeyLayout(prefix, hashed).parse(edited)
    if parsed is not None:
        # Still a key we would write, byte for byte, for the parts it names (e.g. a topic
        # name one character longer); never one with a stray component or a foreign hash.
        again = PartitionPath(prefix, parsed.topic, parsed.topic_id, parsed.partition, hashed)
        assert edited == f"{again.segment(parsed.base_offset, parsed.uid).stem}.{parsed.suffix}"
