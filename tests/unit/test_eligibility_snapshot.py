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
