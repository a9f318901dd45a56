"""Parser fuzzing that checks what is accepted, not only what is raised: each parser of what the
broker hands us may raise only its own error, and whatever it accepts must round-trip or keep
the promises its callers rely on (a batch walk that accounts for every byte, an index whose
entries a reader can search, a topic id the store's key layout can hold). The generators mix
random input with near-valid documents, so the accepting branch is reached, not just the
raising one."""

from __future__ import annotations

import io
import os
import re
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.test_batches import segment
from tiering.kafka.batches import CorruptSegment, scan_segment
from tiering.kafka.checkpoints import (CheckpointError, EpochEntry, TopicPartition, format_leader_epoch_checkpoint,
                                       format_offset_checkpoint, parse_leader_epoch_checkpoint,
                                       parse_offset_checkpoint, parse_partition_metadata)
from tiering.kafka.indexes import OFFSET_ENTRY, TIME_ENTRY, TXN_ENTRY, CorruptIndex, check_index
from tiering.read.offsets import aborted_transactions, position_for

pytestmark = pytest.mark.faults

SOAK = os.environ.get("TIERING_SOAK") == "1"
FUZZ = settings(max_examples=5000 if SOAK else 300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SEGMENT = segment(4)          # offsets 100..111, four batches


# -- the batch walk -------------------------------------------------------------------------------

def _batch_ends(data: bytes) -> list[int]:
    ends, position = [], 0
    while position + 12 <= len(data):
        position += 12 + int.from_bytes(data[position + 8:position + 12], "big", signed=True)
        ends.append(position)
    return ends


segments = st.one_of(
    st.binary(max_size=400),
    # a prefix of the real segment cut anywhere, with random bytes after it
    st.tuples(st.integers(min_value=0, max_value=len(SEGMENT)), st.binary(max_size=40))
      .map(lambda t: SEGMENT[:t[0]] + t[1]),
)


@FUZZ
@given(segments)
def test_an_accepted_segment_is_whole_batches_of_this_segment(data):
    try:
        summary = scan_segment(io.BytesIO(data), len(data), 100, 112)
    except CorruptSegment:
        return
    # Accepted: every byte belongs to a batch, the batches are the real ones (their CRCs cover
    # them), and the offsets the caller records in the manifest lie inside the segment.
    assert summary.size == len(data)
    assert len(data) in [0, *_batch_ends(SEGMENT)] and data == SEGMENT[:len(data)]
    assert summary.batch_count == [0, *_batch_ends(SEGMENT)].index(len(data))
    if summary.batch_count:
        assert summary.first_offset == 100 and 100 <= summary.last_offset < 112
        assert summary.record_count >= summary.batch_count
    else:
        assert summary.first_offset is None and summary.last_offset is None and summary.record_count == 0
    # The walk is a function of the bytes: the same input gives the same summary.
    assert scan_segment(io.BytesIO(data), len(data), 100, 112) == summary


# -- index files ----------------------------------------------------------------------------------

def _entries(kind: str):
    if kind == "index":
        return st.lists(st.tuples(st.integers(-5, 60), st.integers(-5, 5000)), max_size=12) \
            .map(lambda es: b"".join(OFFSET_ENTRY.pack(*e) for e in es))
    if kind == "timeindex":
        return st.lists(st.tuples(st.integers(-5, 10**6), st.integers(-5, 60)), max_size=12) \
            .map(lambda es: b"".join(TIME_ENTRY.pack(*e) for e in es))
    return st.lists(st.tuples(st.integers(0, 2), st.integers(-1, 5), st.integers(0, 60), st.integers(0, 60),
                              st.integers(0, 60)), max_size=5).map(lambda es: b"".join(TXN_ENTRY.pack(*e) for e in es))


indexes = st.sampled_from(["index", "timeindex", "txnindex"]).flatmap(
    lambda kind: st.tuples(st.just(kind), st.one_of(_entries(kind), st.binary(max_size=300))))


@FUZZ
@given(indexes, st.integers(min_value=0, max_value=5000), st.integers(min_value=0, max_value=2**40),
       st.integers(min_value=1, max_value=60))
def test_an_accepted_index_is_what_its_readers_search(kind_data, log_size, base, span):
    kind, data = kind_data
    try:
        check_index(kind, data, log_size, base, base + span)
    except CorruptIndex:
        return
    if kind == "index":
        assert len(data) % OFFSET_ENTRY.size == 0
        entries = list(OFFSET_ENTRY.iter_unpack(data))
        assert all(0 <= r < span and 0 <= p < log_size for r, p in entries)
        # strictly rising in both columns: the binary search of a reader needs it
        assert all(a[0] < b[0] and a[1] < b[1] for a, b in zip(entries, entries[1:]))
        for target in (base - 1, base, base + span // 2, base + span - 1, base + span):
            position = position_for(data, base, target)
            at_or_below = [p for r, p in entries if base + r <= target]
            assert position == (at_or_below[-1] if at_or_below else 0)
            assert position == 0 or position < log_size
    elif kind == "timeindex":
        assert len(data) % TIME_ENTRY.size == 0
        entries = list(TIME_ENTRY.iter_unpack(data))
        assert all(0 <= r < span for _, r in entries)
        assert all(a[0] < b[0] for a, b in zip(entries, entries[1:]))
    else:
        assert len(data) % TXN_ENTRY.size == 0
        assert len(aborted_transactions(data)) == len(data) // TXN_ENTRY.size


# -- checkpoints ----------------------------------------------------------------------------------

words = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=8)
numbers = st.one_of(st.integers(-5, 10**12).map(str), words)


def _document(header: list[str], rows: list[list[str]], noise: list[str]) -> str:
    lines = header + [" ".join(r) for r in rows]
    for i, extra in enumerate(noise):
        lines.insert(i % (len(lines) + 1), extra)
    return "\n".join(lines) + "\n"


offset_documents = st.one_of(
    st.text(max_size=300),
    st.builds(lambda rows, noise, lie: _document(["0", str(len(rows) + lie)], rows, noise),
              st.lists(st.lists(st.one_of(words, numbers), min_size=2, max_size=4), max_size=5),
              st.lists(st.sampled_from(["", "   ", "\t", "x", "0 1"]), max_size=2),
              st.sampled_from([0, 0, 0, 1, -1])),
)


@FUZZ
@given(offset_documents)
def test_an_accepted_offset_checkpoint_round_trips(text):
    try:
        parsed = parse_offset_checkpoint(text)
    except CheckpointError:
        return
    assert all(isinstance(tp, TopicPartition) and tp.topic and not any(c.isspace() for c in tp.topic)
               for tp in parsed)
    assert parse_offset_checkpoint(format_offset_checkpoint(parsed)) == parsed


epoch_documents = st.one_of(
    st.text(max_size=300),
    st.builds(lambda rows, noise, lie: _document(["0", str(len(rows) + lie)], rows, noise),
              st.lists(st.lists(numbers, min_size=1, max_size=3), max_size=5),
              st.lists(st.sampled_from(["", "  ", "1", "a b"]), max_size=2),
              st.sampled_from([0, 0, 0, 1, -1])),
)


@FUZZ
@given(epoch_documents)
def test_an_accepted_leader_epoch_checkpoint_round_trips(text):
    try:
        parsed = parse_leader_epoch_checkpoint(text)
    except CheckpointError:
        return
    assert all(isinstance(e, EpochEntry) for e in parsed)
    assert parse_leader_epoch_checkpoint(format_leader_epoch_checkpoint(parsed)) == parsed


TOPIC_ID = re.compile(r"[A-Za-z0-9_-]{22}")      # URL-safe base64 of 16 bytes, unpadded (the key layout's form)

metadata_documents = st.one_of(
    st.text(max_size=200),
    st.builds(lambda version, topic_id, noise: f"{noise}version: {version}\ntopic_id: {topic_id}\n",
              st.sampled_from(["0", "0", "1", " 0 "]),
              st.one_of(st.text(max_size=30), st.text(alphabet="AZaz09_-=+/é", min_size=20, max_size=24)),
              st.sampled_from(["", "\n", "# x\n"])),
)


@FUZZ
@given(metadata_documents)
def test_an_accepted_topic_id_is_one_the_key_layout_can_hold(text):
    try:
        topic_id = parse_partition_metadata(text)
    except CheckpointError:
        return
    # Every store key carries it; keys.py owns only 22 URL-safe base64 characters.
    assert TOPIC_ID.fullmatch(topic_id), topic_id
    assert parse_partition_metadata(f"version: 0\ntopic_id: {topic_id}\n") == topic_id


def test_a_topic_id_of_the_wrong_length_or_alphabet_is_refused():
    for bad in ("abc", "4A8VWD3ZTJa4i2ZbnSPb8", "4A8VWD3ZTJa4i2ZbnSPb8AA", "4A8VWD3ZTJa4i2ZbnSPb8é", "４A8VWD3ZTJa4i2ZbnSPb8A"):
        with pytest.raises(CheckpointError):
            parse_partition_metadata(f"version: 0\ntopic_id: {bad}\n")
    assert parse_partition_metadata("version: 0\ntopic_id: 4A8VWD3ZTJa4i2ZbnSPb8A\n") == "4A8VWD3ZTJa4i2ZbnSPb8A"


def test_unpack_sizes_agree_with_the_entry_structs():
    assert (OFFSET_ENTRY.size, TIME_ENTRY.size, TXN_ENTRY.size) == (8, 12, 34) == \
        (struct.calcsize(">ii"), struct.calcsize(">qi"), struct.calcsize(">hqqqq"))
