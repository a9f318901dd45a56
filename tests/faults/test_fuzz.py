"""Fuzzing every parser that reads what the broker or the store hands us: each may only ever
raise its own error (which the caller turns into one line and a skip), never anything else,
and never accept what breaks its promises. A bounded number of examples runs in the suite;
--soak runs many more."""

from __future__ import annotations

import datetime
import io
import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.test_batches import segment
from tests.unit.test_manifest_keys import keys, manifest
from tiering.kafka.batches import CorruptSegment, scan_segment
from tiering.kafka.names import DirKind, is_legal_topic, parse_partition_dir, parse_segment_file
from tiering.store.keys import parse_key
from tiering.store.manifest import (MAX_MANIFEST_BYTES, MAX_OBJECT_BYTES, MAX_TIMESTAMP_MS, ManifestError,
                                    SegmentManifest, parse_manifest)

pytestmark = pytest.mark.faults

SOAK = os.environ.get("TIERING_SOAK") == "1"
FUZZ = settings(max_examples=5000 if SOAK else 300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KEYS = keys()
SEGMENT = segment(4)          # offsets 100..111


# -- the batch parser -----------------------------------------------------------------------------

@FUZZ
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=len(SEGMENT) - 1), st.integers(min_value=0, max_value=7)),
                min_size=1, max_size=4),
       st.integers(min_value=0, max_value=len(SEGMENT)))
def test_bit_flips_and_truncation_of_a_real_segment_are_caught_or_harmless(flips, keep):
    data = bytearray(SEGMENT)
    for position, bit in flips:
        data[position] ^= 1 << bit
    data = bytes(data[:keep])
    try:
        summary = scan_segment(io.BytesIO(data), len(data), 100, 112)
    except CorruptSegment:
        return
    # Accepted: then every byte was accounted for and it is still the segment it says it is
    # (a flip outside what the CRC covers, in a field the scan checks against the segment).
    assert summary.size == len(data)
    if summary.batch_count:
        assert 100 <= summary.last_offset < 112
    # Whole batches of the real segment: a cut only at a batch's end, and from each batch's
    # magic byte on (the CRC and what it covers) the very bytes that were written; only the
    # base offset and leader epoch, which the CRC does not cover, may differ (and were checked).
    ends = [0]
    while ends[-1] < len(SEGMENT):
        ends.append(ends[-1] + 12 + int.from_bytes(SEGMENT[ends[-1] + 8:ends[-1] + 12], "big"))
    assert len(data) in ends and summary.batch_count == ends.index(len(data))
    for start, end in zip(ends, ends[1:summary.batch_count + 1]):
        assert data[start + 8:start + 12] == SEGMENT[start + 8:start + 12]
        assert data[start + 16:end] == SEGMENT[start + 16:end]


@FUZZ
@given(st.integers(min_value=0, max_value=3), st.integers(min_value=-2**31, max_value=2**31 - 1))
def test_any_batch_length_in_any_batch_is_caught_or_exact(which, length):
    data = bytearray(SEGMENT)
    position = 0
    for _ in range(which):
        position += 12 + int.from_bytes(data[position + 8:position + 12], "big")
    data[position + 8:position + 12] = length.to_bytes(4, "big", signed=True)
    try:
        summary = scan_segment(io.BytesIO(bytes(data)), len(data), 100, 112)
    except CorruptSegment:
        return
    assert bytes(data) == SEGMENT and summary.size == len(SEGMENT)     # only the true length passes


# -- the manifest parser and the key layout -------------------------------------------------------

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
                           max_leaves=20)


@FUZZ
@given(st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode())))
def test_manifest_parser_only_ever_raises_manifest_error(data):
    try:
        assert_in_range(parse_manifest(data, KEYS.manifest_key))
    except ManifestError:
        pass


def assert_in_range(parsed: SegmentManifest) -> None:
    """What every reader of an accepted manifest relies on (os.utime, datetime, the leader-epoch
    checkpoint, offsets as int64)."""
    assert 0 <= parsed.partition <= 2**31 - 1
    assert 0 <= parsed.base_offset <= parsed.end_offset <= 2**63 - 1
    if parsed.last_batch_offset is not None:
        assert parsed.base_offset <= parsed.last_batch_offset <= parsed.end_offset
    assert 0 <= parsed.size_bytes <= MAX_OBJECT_BYTES and all(0 <= o.size <= MAX_OBJECT_BYTES for o in parsed.objects)
    assert parsed.batch_count >= 0 and parsed.record_count >= 0
    for ms in (parsed.max_timestamp, parsed.created_at_ms):
        assert ms == -1 or 0 <= ms <= MAX_TIMESTAMP_MS
        if ms >= 0:
            datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)   # raises if out of range
    previous = None
    for epoch, start in parsed.leader_epochs:
        assert 0 <= epoch <= 2**31 - 1 and parsed.base_offset <= start <= parsed.end_offset
        assert previous is None or (epoch > previous[0] and start > previous[1])
        previous = (epoch, start)
    assert all(len(o.crc32c) == 8 and set(o.crc32c) <= set("0123456789abcdef") for o in parsed.objects)
    # and it round-trips: what we would write back is read as the same manifest (our writer's
    # indented form of a document accepted just under the size limit may be over it)
    document = parsed.to_json()
    if len(document) <= MAX_MANIFEST_BYTES:
        assert parse_manifest(document, KEYS.manifest_key) == parsed


big_ints = st.integers(min_value=-2**70, max_value=2**70) | st.sampled_from(
    [-1, 0, 2**31 - 1, 2**31, 2**63 - 1, 2**63, MAX_TIMESTAMP_MS, MAX_TIMESTAMP_MS + 1, 10**30])


@FUZZ
@given(st.sampled_from(["partition", "base_offset", "end_offset", "last_batch_offset", "size_bytes", "batch_count",
                        "record_count", "max_timestamp", "created_at_ms", "broker_id"]), big_ints)
def test_any_number_in_any_field_is_rejected_or_in_range(field, value):
    doc = json.loads(manifest().to_json())
    doc[field] = value
    if field == "size_bytes":
        doc["objects"][0]["size"] = value      # kept consistent, so the range is what decides
    _in_range_if_accepted(doc)


@FUZZ
@given(st.lists(st.tuples(big_ints, big_ints), max_size=4))
def test_any_leader_epochs_are_rejected_or_in_range_and_rising(epochs):
    doc = json.loads(manifest().to_json())
    doc["leader_epochs"] = [list(e) for e in epochs]
    _in_range_if_accepted(doc)


@FUZZ
@given(st.integers(min_value=1, max_value=200_000), st.sampled_from("[{"))
def test_json_nested_to_any_depth_is_a_manifest_error(depth, bracket):
    closing = "]" if bracket == "[" else "}"
    inner = (bracket if bracket == "[" else '{"a":') * depth
    data = ('{"format_version": ' + inner + ("1" if bracket == "{" else "") + closing * depth + "}").encode()
    with pytest.raises(ManifestError):
        parse_manifest(data, KEYS.manifest_key)


def test_a_manifest_just_over_the_size_limit_is_refused():
    doc = json.loads(manifest().to_json())
    doc["tool_version"] = ""
    base = len(json.dumps(doc).encode())
    doc["tool_version"] = "x" * (MAX_MANIFEST_BYTES - base)
    assert_in_range(parse_manifest(json.dumps(doc).encode(), KEYS.manifest_key))    # at the limit: accepted
    doc["tool_version"] += "x"
    with pytest.raises(ManifestError, match="over the"):
        parse_manifest(json.dumps(doc).encode(), KEYS.manifest_key)


@FUZZ
@given(st.text(max_size=120))
def test_a_manifest_with_any_object_key_keeps_every_key_inside_its_segment(key):
    doc = json.loads(manifest().to_json())
    doc["objects"][0]["key"] = key
    try:
        parsed = parse_manifest(json.dumps(doc).encode(), KEYS.manifest_key)
    except ManifestError:
        return
    assert all(o.key == KEYS.object_key(o.kind) for o in parsed.objects)


@FUZZ
@given(st.sampled_from(["topic", "topic_id", "partition", "base_offset", "end_offset", "size_bytes", "objects",
                        "leader_epochs", "uid", "broker_id", "last_batch_offset"]), json_values)
def test_any_single_field_corruption_is_rejected_or_harmless(field, value):
    doc = json.loads(manifest().to_json())
    doc[field] = value
    try:
        parsed = parse_manifest(json.dumps(doc).encode(), KEYS.manifest_key)
    except ManifestError:
        return
    assert all(o.key.startswith(KEYS.stem + ".") for o in parsed.objects)
    assert_in_range(parsed)


@FUZZ
@given(st.text(max_size=160))
def test_key_parser_never_raises_and_what_it_accepts_is_ours(key):
    parsed = parse_key(key)
    if parsed is not None:
        assert key.startswith(parsed.stem + ".") and ".." not in key.split("/")
        # round trip: the parts name this very key
        assert f"{parsed.stem}.{parsed.suffix}" == key
        assert parse_key(f"{parsed.stem}.{parsed.suffix}") == parsed


# -- names (the batch walk, index files and checkpoints: test_fuzz_accepts.py) -----------------

@FUZZ
@given(st.text(max_size=80))
def test_any_directory_or_file_name_is_classified_never_raises(name):
    parsed = parse_partition_dir(name)
    if parsed.kind is DirKind.PARTITION:
        assert is_legal_topic(parsed.topic) and parsed.partition >= 0 and "/" not in parsed.topic
        # round trip: the broker's own name for that partition reads back the same
        assert parse_partition_dir(f"{parsed.topic}-{parsed.partition}") == parsed
    segment = parse_segment_file(name)
    if segment is not None:
        assert segment.base_offset >= 0 and name.startswith(f"{segment.base_offset:020d}.")


def _in_range_if_accepted(doc: dict) -> None:
    """A document the parser accepts satisfies the ranges its readers rely on."""
    try:
        parsed = parse_manifest(json.dumps(doc).encode(), KEYS.manifest_key)
    except ManifestError:
        return
    assert_in_range(parsed)
