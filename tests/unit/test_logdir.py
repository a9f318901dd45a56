"""The log-dir model and eligibility, over log dirs the simulated broker writes."""

import os

import pytest

from tiering.kafka.eligibility import TopicFilter, plan_partition
from tiering.kafka.logdir import scan_log_dirs
from tiering.simulate import SimulatedBroker


@pytest.fixture
def broker(tmp_path):
    b = SimulatedBroker(tmp_path / "logs", segment_bytes=8 * 1024, seed=1)
    yield b
    b.close()


def verdicts(scan, topic_filter=TopicFilter()):
    result = {}
    for partition in scan.partitions:
        state = scan.log_dir_state(partition.log_dir)
        for segment, verdict in plan_partition(partition, state, topic_filter):
            result[(partition.topic, partition.partition, segment.base_offset)] = verdict
    return result


def test_rolled_segments_below_the_high_watermark_are_eligible(broker):
    broker.create_topic("orders.v1_x-y", 2)
    broker.produce("orders.v1_x-y", 0, 300)
    broker.produce("orders.v1_x-y", 1, 300)
    broker.hold_high_watermark("orders.v1_x-y", 1, 150)
    scan = scan_log_dirs([broker.log_dir])
    assert scan.anomalies == ()
    v = verdicts(scan)
    p0 = sorted(k for k in v if k[1] == 0)
    assert all(v[k].eligible for k in p0[:-1])
    assert v[p0[-1]].reason == "active segment (still being written)"
    part1 = next(p for p in scan.partitions if p.partition == 1)
    for segment in part1.segments[:-1]:
        verdict = v[("orders.v1_x-y", 1, segment.base_offset)]
        assert verdict.eligible == (segment.end_offset < 150), (segment, verdict)
        if not verdict.eligible:
            assert verdict.reason.startswith("above the high watermark")


def test_internal_compacted_excluded_and_unmatched_topics(broker):
    for name, compacted in (("__consumer_offsets", False), ("users", True), ("tmp-scratch", False), ("logs", False)):
        broker.create_topic(name, 1, compacted=compacted)
        broker.produce(name, 0, 200)
    scan = scan_log_dirs([broker.log_dir])
    v = verdicts(scan, TopicFilter(include=("*",), exclude=("tmp-*",)))
    reasons = {topic: verdict.reason for (topic, _, _), verdict in v.items() if not verdict.eligible}
    assert reasons["__consumer_offsets"] == "internal topic (never tiered)"
    assert reasons["users"].startswith("compacted topic")
    assert reasons["tmp-scratch"] == "excluded by kafka.exclude 'tmp-*'"
    only = verdicts(scan, TopicFilter(include=("users", "logs")))
    assert any(verdict.eligible for (topic, _, _), verdict in only.items() if topic == "logs")
    assert only[("tmp-scratch", 0, 0)].reason == "not matched by kafka.include"


def test_broker_transient_files_and_dirs_are_ignored_silently(broker):
    broker.create_topic("orders", 1)
    broker.produce("orders", 0, 300)
    part = broker.partition_dir("orders", 0)
    (part / "00000000000000000000.log.deleted").write_bytes(b"x")
    (part / "00000000000000000099.log.cleaned").write_bytes(b"x")
    (part / "00000000000000000098.log.swap").write_bytes(b"x")
    (part / "leader-epoch-checkpoint.tmp").write_bytes(b"x")
    (broker.log_dir / f"gone-0.{'a' * 32}-delete").mkdir()
    (broker.log_dir / f"orders-7.{'b' * 32}-future").mkdir()
    (broker.log_dir / f"orders-3.{'c' * 32}-stray").mkdir()
    scan = scan_log_dirs([broker.log_dir])
    assert scan.anomalies == ()
    assert [p.topic for p in scan.partitions] == ["orders"]


def test_junk_names_and_symlinks_are_reported_and_skipped(broker, tmp_path):
    broker.create_topic("orders", 1)
    broker.produce("orders", 0, 300)
    part = broker.partition_dir("orders", 0)
    (part / "notes.txt").write_text("hello")
    (part / "123.log").write_bytes(b"junk")
    outside = tmp_path / "elsewhere" / "evil-0"
    outside.mkdir(parents=True)
    (outside / "00000000000000000000.log").write_bytes(b"x" * 100)
    os.symlink(outside, broker.log_dir / "evil-0")
    os.symlink(part / "00000000000000000000.log", part / "00000000000000099999.log")
    (broker.log_dir / "not a partition").mkdir()
    scan = scan_log_dirs([broker.log_dir])
    reasons = {os.path.basename(a.path): a.reason for a in scan.anomalies}
    assert reasons == {
        "notes.txt": "skipped: not a well-formed segment file name",
        "123.log": "skipped: not a well-formed segment file name",
        "evil-0": "symbolic link inside the log dir: not followed",
        "00000000000000099999.log": "symbolic link inside the log dir: not followed",
        "not a partition": "skipped: not a <topic>-<partition> directory",
    }
    assert [p.topic for p in scan.partitions] == ["orders"]
    assert all(s.base_offset != 99999 for s in scan.partitions[0].segments)


def test_missing_topic_id_and_missing_log_dir(broker, tmp_path):
    broker.create_topic("orders", 1)
    broker.produce("orders", 0, 300)
    (broker.partition_dir("orders", 0) / "partition.metadata").unlink()
    scan = scan_log_dirs([broker.log_dir, tmp_path / "absent"])
    assert scan.anomalies[0].reason.startswith("log dir does not exist")
    reasons = {v.reason for v in verdicts(scan).values()}
    assert reasons == {"partition.metadata is missing, so the topic id is unknown; keys need it to keep "
                       "re-created topics apart"}


def test_segment_model_links_indexes_and_the_snapshot_taken_at_roll(broker):
    broker.create_topic("orders", 1)
    broker.produce("orders", 0, 300)
    partition = scan_log_dirs([broker.log_dir]).partitions[0]
    first, second = partition.segments[:2]
    assert first.next_offset == second.base_offset and first.end_offset == second.base_offset - 1
    assert [kind for kind, _ in first.index_paths] == ["index", "timeindex"]
    assert first.snapshot_path.name == f"{second.base_offset:020d}.snapshot"
    assert partition.segments[-1].is_active
