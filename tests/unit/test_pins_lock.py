"""Pins (hard links against the broker's own deletion), the broker lock test (fcntl, never
flock) and the journal's upgrade from schema 1."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tiering.journal import Journal, SegmentId, SegmentState
from tiering.kafka.lock import BrokerRunning, broker_stopped, probe_lock
from tiering.kafka.logdir import scan_log_dirs
from tiering.simulate import SimulatedBroker
from tiering.upload.pins import PinStore


class Log:
    def __init__(self):
        self.warnings: list[str] = []

    def warning(self, event: str, **fields):
        self.warnings.append(event)


def partition_of(log_dir: Path):
    return scan_log_dirs([log_dir]).partitions[0]


@pytest.fixture
def broker(tmp_path):
    broker = SimulatedBroker(tmp_path / "logs", segment_bytes=8 * 1024, seed=1)
    broker.create_topic("orders", 1)
    broker.produce("orders", 0, 300, value_size=100)
    broker.checkpoint()
    yield broker
    broker.close()


def test_a_pin_is_a_hard_link_that_outlives_the_brokers_deletion(tmp_path, broker):
    pins = PinStore((tmp_path / "state" / "pins",), Log())
    partition = partition_of(broker.log_dir)
    segment = partition.segments[0]
    original = segment.log_path.read_bytes()
    pinned = pins.pin(partition, segment)
    assert pinned.log_path != segment.log_path
    assert os.stat(pinned.log_path).st_ino == os.stat(segment.log_path).st_ino
    assert {k for k, _ in pinned.index_paths} == {k for k, _ in segment.index_paths}
    assert pins.pin(partition, segment) == pinned and pins.count() == 1

    # The broker's retention: rename to .deleted, then unlink.
    for path in [segment.log_path, *(p for _, p in segment.index_paths)]:
        path.rename(path.with_name(path.name + ".deleted"))
        path.with_name(path.name + ".deleted").unlink()
    after = partition_of(broker.log_dir)
    assert segment.base_offset not in {s.base_offset for s in after.segments}
    [rescued] = pins.rescued(after)
    assert (rescued.base_offset, rescued.next_offset, rescued.size) == (segment.base_offset, segment.next_offset,
                                                                       segment.size)
    assert rescued.log_path.read_bytes() == original

    # A restart finds the pin again; releasing it removes every link.
    again = PinStore((tmp_path / "state" / "pins",), Log())
    assert [s.base_offset for s in again.rescued(after)] == [segment.base_offset]
    again.release(after, segment.base_offset)
    assert again.rescued(after) == [] and not list((tmp_path / "state" / "pins").rglob("*.log"))


def test_a_segment_the_broker_replaced_is_pinned_afresh(tmp_path, broker):
    pins = PinStore((tmp_path / "pins",), Log())
    partition = partition_of(broker.log_dir)
    segment = partition.segments[0]
    first = pins.pin(partition, segment)
    data = segment.log_path.read_bytes()
    segment.log_path.unlink()
    segment.log_path.write_bytes(data)             # same name, new inode
    second = pins.pin(partition_of(broker.log_dir), segment)
    assert os.stat(second.log_path).st_ino == os.stat(segment.log_path).st_ino
    assert first.log_path == second.log_path and pins.count() == 1


def retire(path: Path) -> Path:
    """Kafka's retention, first step: the file is renamed to `.deleted` (unlinked later)."""
    deleted = path.with_name(path.name + ".deleted")
    path.rename(deleted)
    return deleted


def test_a_pin_survives_a_scan_that_listed_its_segment_just_before_the_broker_renamed_it(tmp_path, broker):
    # The race: a scan lists the segment, the broker renames its files to .deleted, then the
    # coordinator offers the segment from that stale listing. The pin is all that is left of
    # the segment: it must stay, and be what the upload reads.
    pins = PinStore((tmp_path / "pins",), Log())
    stale = partition_of(broker.log_dir)
    segment = stale.segments[0]
    original = segment.log_path.read_bytes()
    first = pins.pin(stale, segment)
    for path in sorted(broker.partition_dir("orders", 0).glob(f"{segment.base_offset:020d}.*")):
        retire(path).unlink()
    again = pins.pin(stale, segment)
    assert again == first and again.log_path.read_bytes() == original and pins.count() == 1
    [rescued] = pins.rescued(partition_of(broker.log_dir))
    assert rescued.log_path.read_bytes() == original


@pytest.mark.parametrize("renamed", ["log", "every file"])
def test_a_segment_renamed_to_deleted_before_its_first_pin_is_pinned_from_the_deleted_name(tmp_path, broker,
                                                                                         renamed):
    # Kafka unlinks .deleted files a minute after the rename: a pin made in that minute still
    # keeps the segment. Its size must still be the listed one (the same segment).
    pins = PinStore((tmp_path / "pins",), Log())
    stale = partition_of(broker.log_dir)
    segment = stale.segments[0]
    original = segment.log_path.read_bytes()
    files = [segment.log_path] if renamed == "log" else sorted(
        broker.partition_dir("orders", 0).glob(f"{segment.base_offset:020d}.*"))
    deleted = [retire(path) for path in files]
    pinned = pins.pin(stale, segment)
    assert pinned != segment and pinned.log_path.read_bytes() == original
    assert {k for k, _ in pinned.index_paths} == {k for k, _ in segment.index_paths}
    for path in deleted:
        path.unlink()
    [rescued] = pins.rescued(partition_of(broker.log_dir))
    assert rescued.log_path.read_bytes() == original and rescued.size == segment.size


def test_a_deleted_file_of_another_size_is_not_taken_for_the_listed_segment(tmp_path, broker):
    pins = PinStore((tmp_path / "pins",), Log())
    stale = partition_of(broker.log_dir)
    segment = stale.segments[0]
    deleted = retire(segment.log_path)
    with open(deleted, "ab") as f:
        f.write(b"x")
    assert pins.pin(stale, segment) == segment and pins.count() == 0


def test_a_replacement_that_vanishes_while_being_pinned_leaves_the_old_pin(tmp_path, broker):
    # The broker replaced the segment (a new inode under the same name), then deleted the
    # replacement too before it could be linked: the old pin is kept, not released for nothing.
    pins = PinStore((tmp_path / "pins",), Log())
    stale = partition_of(broker.log_dir)
    segment = stale.segments[0]
    first = pins.pin(stale, segment)
    data = segment.log_path.read_bytes()
    segment.log_path.unlink()
    segment.log_path.write_bytes(data)
    segment.log_path.unlink()
    assert pins.pin(stale, segment) == first and first.log_path.read_bytes() == data


def test_a_log_dir_without_a_usable_pin_dir_on_its_file_system_is_not_pinned_and_said_once(tmp_path, broker):
    # /proc is another file system on every Linux, and nothing can be created there: the pin
    # dir is unusable for this log dir whichever way the check goes.
    root = Path("/proc") / "tiering-pins"
    assert os.stat("/proc").st_dev != os.stat(broker.log_dir).st_dev
    log = Log()
    pins = PinStore((root,), log)
    partition = partition_of(broker.log_dir)
    assert pins.pin(partition, partition.segments[0]) == partition.segments[0]
    assert pins.pin(partition, partition.segments[1]) == partition.segments[1]
    assert len(log.warnings) == 1 and "cannot be pinned" in log.warnings[0]
    assert pins.count() == 0 and not root.exists()


def hold(path: Path, kind: str) -> subprocess.Popen:
    call = "fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)" if kind == "fcntl" else "fcntl.flock(f, fcntl.LOCK_EX)"
    holder = subprocess.Popen([sys.executable, "-c", (
        f"import fcntl, time\nf = open({str(path)!r}, 'r+')\n{call}\nprint('locked', flush=True)\ntime.sleep(60)\n")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_the_lock_test_sees_fcntl_locks_and_names_the_holder(tmp_path):
    (tmp_path / ".lock").touch()
    assert not probe_lock(tmp_path).held
    holder = hold(tmp_path / ".lock", "fcntl")
    try:
        state = probe_lock(tmp_path)
        assert state.held and f"pid {holder.pid}" in state.detail
        with pytest.raises(BrokerRunning):
            with broker_stopped(tmp_path):
                raise AssertionError("the body must not run while a broker holds the lock")
    finally:
        holder.kill()
        holder.wait()
    assert not probe_lock(tmp_path).held


def test_a_flock_is_not_a_brokers_lock(tmp_path):
    """Java's FileChannel.tryLock takes fcntl locks; a flock test would always pass."""
    (tmp_path / ".lock").touch()
    holder = hold(tmp_path / ".lock", "flock")
    try:
        assert not probe_lock(tmp_path).held
    finally:
        holder.kill()
        holder.wait()


def test_while_we_unlink_a_starting_broker_cannot_take_the_lock(tmp_path):
    (tmp_path / ".lock").touch()
    with broker_stopped(tmp_path):
        attempt = subprocess.run([sys.executable, "-c", (
            "import fcntl\n"
            f"f = open({str(tmp_path / '.lock')!r}, 'r+')\n"
            "try:\n    fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n    print('got it')\n"
            "except OSError:\n    print('refused')\n")], capture_output=True, text=True)
        assert attempt.stdout.strip() == "refused"
    assert not probe_lock(tmp_path).held


def test_a_schema_1_journal_is_upgraded_in_place(tmp_path):
    db = sqlite3.connect(tmp_path / "journal.sqlite")
    db.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '1'), ('store_synced', '1');
        CREATE TABLE segments (topic TEXT NOT NULL, topic_id TEXT NOT NULL, partition INTEGER NOT NULL,
            base_offset INTEGER NOT NULL, state TEXT NOT NULL, uid TEXT, end_offset INTEGER, size_bytes INTEGER,
            remote_bytes INTEGER, manifest_key TEXT, last_error TEXT, attempts INTEGER NOT NULL DEFAULT 0,
            updated_at_ms INTEGER NOT NULL, PRIMARY KEY (topic_id, partition, base_offset));
        INSERT INTO segments VALUES ('orders', 'AAAAAAAAAAAAAAAAAAAAAA', 0, 0, 'uploaded', 'u', 99, 10, 20, 'k', NULL, 1, 5);
    """)
    db.close()
    journal = Journal(tmp_path)
    [record] = journal.all()
    assert record.state is SegmentState.UPLOADED and record.max_timestamp is None
    assert journal.get_meta("schema_version") == "2" and journal.get_meta("store_synced") == "1"
    sid = SegmentId("orders", "AAAAAAAAAAAAAAAAAAAAAA", 0, 0)
    journal.set_max_timestamp(sid, 1234)
    journal.mark_expired(sid, "total-size", 6)
    journal.disable_topic("orders", "rollback", 7)
    journal.close()
    reopened = Journal(tmp_path)
    [record] = reopened.all()
    assert (record.state, record.max_timestamp, record.expired_reason) == (SegmentState.EXPIRED, 1234, "total-size")
    assert reopened.disabled_topics() == {"orders": "rollback"}
    reopened.close()
