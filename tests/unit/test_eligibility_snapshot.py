"""The newest rolled segment waits for its producer snapshot: a real Kafka broker creates the
next segment first and writes `<next base>.snapshot` just after (UnifiedLog.roll), so a
sidecar that sees the roll in between would upload the segment without its snapshot."""

from tests.unit.test_logdir import broker, verdicts  # noqa: F401  (the fixture)
from tiering.kafka.logdir import scan_log_dirs


def test_the_newest_rolled_segment_waits_for_its_snapshot_and_older_ones_do_not(broker):  # noqa: F811
    broker.create_topic("orders", 1)
    broker.produce("orders", 0, 300)
    bases = sorted(int(p.name[:20]) for p in broker.partition_dir("orders", 0).glob("*.log"))
    assert len(bases) >= 4
    v = verdicts(scan_log_dirs([broker.log_dir]))
    assert all(v[("orders", 0, b)].eligible for b in bases[:-1])      # every snapshot is there

    # The moment between the roll and the snapshot: the newest rolled segment waits...
    (broker.partition_dir("orders", 0) / f"{bases[-1]:020d}.snapshot").unlink()
    # ...and an older segment whose snapshot is gone (the broker may clean them) still goes.
    (broker.partition_dir("orders", 0) / f"{bases[1]:020d}.snapshot").unlink()
    v = verdicts(scan_log_dirs([broker.log_dir]))
    waiting = v[("orders", 0, bases[-2])]
    assert not waiting.eligible and waiting.awaits_high_watermark
    assert waiting.reason.startswith("producer snapshot not written yet")
    assert all(v[("orders", 0, b)].eligible for b in bases[:-2])


WAITING = "producer snapshot not written yet (the broker takes it just after the roll)"


def _keep_newest(partition_dir, count):
    """Delete every segment's files but the newest `count` (as retention does)."""
    bases = sorted({int(p.name[:20]) for p in partition_dir.glob("*.log")})
    for base in bases[:-count]:
        for path in partition_dir.glob(f"{base:020d}.*"):
            path.unlink()
    return bases[-count:]


def test_with_one_rolled_segment_it_waits_for_its_snapshot_too(broker):  # noqa: F811
    broker.create_topic("orders", 1)
    broker.produce("orders", 0, 300)
    rolled, active = _keep_newest(broker.partition_dir("orders", 0), 2)
    assert verdicts(scan_log_dirs([broker.log_dir]))[("orders", 0, rolled)].eligible is True
    (broker.partition_dir("orders", 0) / f"{active:020d}.snapshot").unlink()
    v = verdicts(scan_log_dirs([broker.log_dir]))
    # The exact verdict `status` shows: not eligible (False, not merely falsy), waiting.
    assert (v[("orders", 0, rolled)].eligible, v[("orders", 0, rolled)].reason,
            v[("orders", 0, rolled)].awaits_high_watermark) == (False, WAITING, True)
    assert v[("orders", 0, active)].eligible is False


def test_a_partition_of_one_active_segment_has_nothing_to_wait_for(broker):  # noqa: F811
    broker.create_topic("orders", 1)
    broker.produce("orders", 0, 300)
    (active,) = _keep_newest(broker.partition_dir("orders", 0), 1)
    v = verdicts(scan_log_dirs([broker.log_dir]))
    assert list(v) == [("orders", 0, active)]
    assert v[("orders", 0, active)].reason == "active segment (still being written)"
