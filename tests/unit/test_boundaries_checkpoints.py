"""The broker's checkpoint files at their edges, each refusal's message in full (found by
mutation testing: the message is the one line an operator gets, and it must never quote the
file's contents)."""

from __future__ import annotations

import pytest

from tiering.kafka.checkpoints import (CheckpointError, EpochEntry, TopicPartition, broker_id_from_meta,
                                       format_leader_epoch_checkpoint, format_offset_checkpoint,
                                       parse_leader_epoch_checkpoint, parse_offset_checkpoint,
                                       parse_partition_metadata, parse_properties, rewrite_offset_checkpoint)


@pytest.mark.parametrize("text, message", [
    ("0\n", "expected a version line and an entry count"),
    ("1\n0\n", "unsupported version on the first line (expected 0)"),
    ("0\nx\n", "entry count is not a number"),
    ("0\n2\nt 0 5\n", "header says 2 entries, found 1"),
    ("0\n1\nt 0\n", "malformed entry 1 (expected 'topic partition offset')"),
    ("0\n1\nt 0 5 6\n", "malformed entry 1 (expected 'topic partition offset')"),
    ("0\n1\nt p 5\n", "partition is not a number"),
    ("0\n1\nt 0 o\n", "offset is not a number"),
])
def test_offset_checkpoint_refusals(text, message):
    with pytest.raises(CheckpointError) as raised:
        parse_offset_checkpoint(text)
    assert str(raised.value) == message


def test_offset_checkpoint_minimal_and_blank_lines():
    assert parse_offset_checkpoint("") == {}       # a fresh broker's 0-byte cleaner-offset-checkpoint
    assert parse_offset_checkpoint("0\n0\n") == {}
    assert parse_offset_checkpoint("\n 0 \n\n1\n  t 3 9  \n\n") == {TopicPartition("t", 3): 9}
    assert format_offset_checkpoint({TopicPartition("b", 1): 2, TopicPartition("a", 10): 1,
                                     TopicPartition("a", 9): 0}) == "0\n3\na 9 0\na 10 1\nb 1 2\n"


def test_rewrite_changes_only_named_lines_and_keeps_the_rest_byte_for_byte():
    text = "0\n3\nb 1 2\n  a 10 1\na 9 0\n"
    assert rewrite_offset_checkpoint(text, {TopicPartition("a", 10): 0, TopicPartition("z", 0): 5}) == \
        "0\n3\nb 1 2\na 10 0\na 9 0\n"
    with pytest.raises(CheckpointError):
        rewrite_offset_checkpoint("0\n1\n", {})


@pytest.mark.parametrize("text, message", [
    ("0\n", "expected version 0 and an entry count"),
    ("1\n0\n", "expected version 0 and an entry count"),
    ("0\nn\n", "entry count is not a number"),
    ("0\n2\n0 0\n", "header says 2 entries, found 1"),
    ("0\n1\n0\n", "malformed entry 1 (expected 'epoch startOffset')"),
    ("0\n1\n0 0 0\n", "malformed entry 1 (expected 'epoch startOffset')"),
    ("0\n1\ne 0\n", "epoch is not a number"),
    ("0\n1\n0 s\n", "start offset is not a number"),
])
def test_leader_epoch_checkpoint_refusals(text, message):
    with pytest.raises(CheckpointError) as raised:
        parse_leader_epoch_checkpoint(text)
    assert str(raised.value) == message


def test_leader_epoch_checkpoint_round_trip_and_blank_lines():
    entries = (EpochEntry(0, 0), EpochEntry(3, 120))
    assert format_leader_epoch_checkpoint(entries) == "0\n2\n0 0\n3 120\n"
    assert parse_leader_epoch_checkpoint("\n0\n\n2\n0 0\n 3  120 \n") == entries
    assert parse_leader_epoch_checkpoint("0\n0\n") == ()


def test_partition_metadata_refusals_and_spacing():
    with pytest.raises(CheckpointError, match=r"^unsupported partition.metadata version \(expected 'version: 0'\)$"):
        parse_partition_metadata("version: 1\ntopic_id: 4A8VWD3ZTJa4i2ZbnSPb8A\n")
    with pytest.raises(CheckpointError, match="^malformed topic_id"):
        parse_partition_metadata("version: 0\n")
    assert parse_partition_metadata("  version :  0 \n topic_id:4A8VWD3ZTJa4i2ZbnSPb8A\nother\n") == \
        "4A8VWD3ZTJa4i2ZbnSPb8A"


def test_properties_the_broker_writes():
    text = "#comment\n! also a comment\n\n  node.id = 3 \ncluster.id=abc=def\nflag\n"
    assert parse_properties(text) == {"node.id": "3", "cluster.id": "abc=def", "flag": ""}


@pytest.mark.parametrize("properties, found", [
    ({"node.id": "3", "broker.id": "4"}, 3),       # KRaft's node.id first
    ({"broker.id": "4"}, 4),
    ({"node.id": "x", "broker.id": "4"}, 4),
    ({"node.id": "", "broker.id": "0"}, 0),
    ({}, None),
    ({"broker.id": "1.5"}, None),
])
def test_broker_id_from_meta(properties, found):
    assert broker_id_from_meta(properties) == found


def test_the_last_topic_id_line_is_the_one_checked_and_the_refusal_is_in_full():
    with pytest.raises(CheckpointError) as raised:
        parse_partition_metadata("version: 0\ntopic_id: 4A8VWD3ZTJa4i2ZbnSPb8A\ntopic_id: x:y\n")
    assert str(raised.value) == "malformed topic_id (expected base64 of a UUID: 22 characters of A-Z a-z 0-9 - _)"


@pytest.mark.parametrize("value", ["1-", "X5", "5X"])
def test_a_broker_id_that_is_not_a_number_is_none(value):
    assert broker_id_from_meta({"broker.id": value}) is None
