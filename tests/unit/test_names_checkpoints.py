import pytest

from tiering.kafka.checkpoints import (CheckpointError, EpochEntry, TopicPartition, format_leader_epoch_checkpoint,
                                       format_offset_checkpoint, parse_leader_epoch_checkpoint,
                                       parse_offset_checkpoint, parse_partition_metadata)
from tiering.kafka.names import DirKind, parse_partition_dir, parse_segment_file


@pytest.mark.parametrize("name,topic,partition", [
    ("orders-0", "orders", 0),
    ("my.topic_v2-with-dashes-17", "my.topic_v2-with-dashes", 17),
    ("__consumer_offsets-49", "__consumer_offsets", 49),
    ("a-1-2", "a-1", 2),
])
def test_partition_dirs(name, topic, partition):
    parsed = parse_partition_dir(name)
    assert (parsed.kind, parsed.topic, parsed.partition) == (DirKind.PARTITION, topic, partition)


@pytest.mark.parametrize("name", [
    "gone-0.0123456789abcdef0123456789abcdef-delete",
    "orders-7.0123456789abcdef0123456789abcdef-future",
    "orders-3.0123456789abcdef0123456789abcdef-stray",
])
def test_broker_transient_dirs_are_ignored(name):
    assert parse_partition_dir(name).kind is DirKind.IGNORED


@pytest.mark.parametrize("name", ["orders", "orders-", "-3", "bad topic-1", "orders-x", "..-1", "t-99999999999"])
def test_other_dirs_are_unknown(name):
    assert parse_partition_dir(name).kind is DirKind.UNKNOWN


def test_segment_file_names():
    assert parse_segment_file("00000000000000001234.log").base_offset == 1234
    assert parse_segment_file("00000000000000001234.timeindex").extension == "timeindex"
    for bad in ("1234.log", "00000000000000001234.log.deleted", "00000000000000001234.LOG", "x.index"):
        assert parse_segment_file(bad) is None


def test_offset_checkpoint_round_trip_and_errors():
    entries = {TopicPartition("orders", 0): 9351, TopicPartition("clicks", 1): 5}
    assert parse_offset_checkpoint(format_offset_checkpoint(entries)) == entries
    # Kafka creates cleaner-offset-checkpoint empty and reads an empty file as no entries.
    assert parse_offset_checkpoint("") == {}
    for bad in ("\n", "0\n", "1\n0\n", "0\n2\norders 0 1\n", "0\n1\norders zero 1\n", "0\n1\norders 0\n"):
        with pytest.raises(CheckpointError):
            parse_offset_checkpoint(bad)


def test_leader_epoch_checkpoint_and_partition_metadata():
    epochs = (EpochEntry(0, 0), EpochEntry(3, 120))
    assert parse_leader_epoch_checkpoint(format_leader_epoch_checkpoint(epochs)) == epochs
    assert parse_partition_metadata("version: 0\ntopic_id: 4A8VWD3ZTJa4i2ZbnSPb8A\n") == "4A8VWD3ZTJa4i2ZbnSPb8A"
    with pytest.raises(CheckpointError):
        parse_partition_metadata("version: 0\ntopic_id: ../../etc\n")
