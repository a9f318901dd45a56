"""Pins, file by file: what a pin holds, where it lives, what a restart finds, and what is
let go. A pin is what keeps a segment the broker deleted before its upload, so each of these
is a way a segment could be lost or a pin leak (the broker's deletion itself:
test_pins_lock.py; the coordinator's use of pins: test_pins_coordinator.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration.test_cli_and_recovery import ListLog
from tiering.kafka.logdir import scan_log_dirs
from tiering.simulate import SimulatedBroker
from tiering.upload.pins import PinStore


def warnings(log: ListLog) -> list[tuple[str, dict]]:
    return [(event, fields) for level, event, fields in log.events if level == "warning"]


@pytest.fixture
def broker(tmp_path):
    broker = SimulatedBroker(tmp_path / "logs", segment_bytes=8 * 1024, seed=2)
    broker.create_topic("orders", 2)
    for partition in (0, 1):
        broker.produce("orders", partition, 120, value_size=100)
        broker.produce_transaction("orders", partition, 5, commit=False)   # an aborted one: a .txnindex
        broker.produce("orders", partition, 120, value_size=100)
    broker.checkpoint()
    yield broker
    broker.close()


def partitions(broker):
    return {p.partition: p for p in scan_log_dirs([broker.log_dir]).partitions if p.topic == "orders"}


def files_of(segment) -> dict[str, bytes]:
    named = {"log": segment.log_path, **dict(segment.index_paths)}
    if segment.snapshot_path is not None:
        named["snapshot"] = segment.snapshot_path
    return {kind: path.read_bytes() for kind, path in named.items()}


def delete_like_the_broker(broker, partition: int, base: int) -> None:
    directory = broker.partition_dir("orders", partition)
    for path in sorted(directory.glob(f"{base:020d}.*")):
        path.rename(path.with_name(path.name + ".deleted"))
    for path in directory.glob(f"{base:020d}.*.deleted"):
        path.unlink()


def test_a_rescued_segment_is_the_pinned_one_whole_every_file_of_it(tmp_path, broker):
    pins = PinStore((tmp_path / "pins",), ListLog())
    os.unlink(partitions(broker)[0].segments[0].snapshot_path)      # a segment without a snapshot
    partition = partitions(broker)[0]
    with_txn = next(s for s in partition.segments if any(k == "txnindex" for k, _ in s.index_paths))
    without_snapshot = partition.segments[0]
    with_snapshot = next(s for s in partition.segments[1:] if s.snapshot_path is not None and s is not with_txn)
    assert without_snapshot.snapshot_path is None and len({with_txn, with_snapshot, without_snapshot}) == 3
    chosen = {s.base_offset: s for s in (with_txn, with_snapshot, without_snapshot)}
    before = {base: files_of(s) for base, s in chosen.items()}
    for segment in chosen.values():
        pins.pin(partition, segment)
    for base in chosen:
        delete_like_the_broker(broker, 0, base)
    after = partitions(broker)[0]
    rescued = {s.base_offset: s for s in pins.rescued(after)}
    assert set(rescued) == set(chosen)
    for base, segment in rescued.items():
        original = chosen[base]
        assert (segment.log_dir, segment.topic, segment.partition, segment.base_offset, segment.next_offset,
                segment.size) == (original.log_dir, original.topic, original.partition, original.base_offset,
                                  original.next_offset, original.size)
        assert [k for k, _ in segment.index_paths] == [k for k, _ in original.index_paths]
        assert (segment.snapshot_path is None) == (original.snapshot_path is None)
        assert files_of(segment) == before[base]
    # A restart reads the same pins back from their names.
    again = {s.base_offset: s for s in PinStore((tmp_path / "pins",), ListLog()).rescued(after)}
    assert {b: (s.next_offset, s.size, files_of(s)) for b, s in again.items()} == {
        b: (s.next_offset, s.size, files_of(s)) for b, s in rescued.items()}


def test_each_partition_has_pins_of_its_own_and_lets_go_of_its_own(tmp_path, broker):
    pins = PinStore((tmp_path / "pins",), ListLog())
    parts = partitions(broker)
    for p in (0, 1):
        for segment in parts[p].segments[:2]:
            pins.pin(parts[p], segment)
    assert set(pins.pins(parts[0])) == set(pins.pins(parts[1])) == {s.base_offset for s in parts[0].segments[:2]}
    assert pins.pins(parts[0]) != pins.pins(parts[1])       # other files, in another dir
    assert pins.count() == 4
    pins.release_partition(parts[0])
    assert pins.pins(parts[0]) == {} and len(pins.pins(parts[1])) == 2 and pins.count() == 2
    left = sorted(p.relative_to(tmp_path / "pins") for p in (tmp_path / "pins").rglob("*.log"))
    assert [p.parts[1] for p in left] == ["1", "1"]
    pins.release(parts[1], parts[1].segments[0].base_offset)
    assert list(pins.pins(parts[1])) == [parts[1].segments[1].base_offset]
    pins.release(parts[1], 999_999)                          # nothing pinned there: nothing happens
    assert pins.count() == 1


def test_the_count_follows_every_pin_and_release_and_a_restart_counts_what_it_reads_back(tmp_path, broker):
    # The count is kept as pins change (the daemon reads it every second); after each step it
    # must equal the pins the store holds, and what a restart finds on disk.
    pins = PinStore((tmp_path / "pins",), ListLog())
    parts = partitions(broker)

    def held(store) -> int:
        return sum(len(store.pins(parts[p])) for p in (0, 1))

    steps = [lambda: pins.pin(parts[0], parts[0].segments[0]),
             lambda: pins.pin(parts[0], parts[0].segments[0]),        # again: still one
             lambda: pins.pin(parts[0], parts[0].segments[1]),
             lambda: pins.pin(parts[1], parts[1].segments[0]),
             lambda: pins.pin(parts[1], parts[1].segments[2]),
             lambda: pins.release(parts[0], parts[0].segments[0].base_offset),
             lambda: pins.release(parts[0], parts[0].segments[0].base_offset),   # gone already
             lambda: pins.release(parts[1], 999_999)]
    counts = []
    for step in steps:
        step()
        counts.append(pins.count())
        assert pins.count() == held(pins)
    assert counts == [1, 1, 2, 3, 4, 3, 3, 3]
    again = PinStore((tmp_path / "pins",), ListLog())
    assert again.count() == 0                   # nothing read yet: pin dirs are read per partition
    assert held(again) == 3 and again.count() == 3
    again.release_partition(parts[1])
    assert again.count() == 1 == held(again)


def test_pinning_a_pinned_segment_again_touches_nothing(tmp_path, broker):
    # Every reconcile offers every segment again: a pin made once is returned as it is, under
    # its own name or the .deleted one the broker gave it since (no new link, no rename).
    pins = PinStore((tmp_path / "pins",), ListLog())
    partition = partitions(broker)[0]
    segment = partition.segments[0]
    first = pins.pin(partition, segment)
    changed = os.stat(first.log_path).st_ctime_ns
    assert pins.pin(partition, segment) == first and os.stat(first.log_path).st_ctime_ns == changed
    segment.log_path.rename(segment.log_path.with_name(segment.log_path.name + ".deleted"))
    changed = os.stat(first.log_path).st_ctime_ns
    assert pins.pin(partition, segment) == first and os.stat(first.log_path).st_ctime_ns == changed


def test_a_partition_without_pins_has_none_and_releasing_there_is_harmless(tmp_path, broker):
    pins = PinStore((tmp_path / "pins",), ListLog())
    partition = partitions(broker)[1]
    assert pins.pins(partition) == {} and pins.rescued(partition) == []
    pins.release(partition, 0)
    pins.release_partition(partition)
    assert pins.count() == 0


def test_an_index_the_broker_removed_is_left_out_and_the_rest_pinned(tmp_path, broker):
    pins = PinStore((tmp_path / "pins",), ListLog())
    partition = partitions(broker)[0]
    segment = next(s for s in partition.segments if s.snapshot_path is not None and not s.is_active)
    os.unlink(dict(segment.index_paths)["index"])
    pinned = pins.pin(partition, segment)
    assert [k for k, _ in pinned.index_paths] == [k for k, _ in segment.index_paths if k != "index"]
    assert pinned.snapshot_path is not None and pinned.snapshot_path.read_bytes() == segment.snapshot_path.read_bytes()


def test_a_restart_clears_what_a_crash_left_half_done_and_nothing_else(tmp_path, broker):
    root = tmp_path / "pins"
    pins = PinStore((root,), ListLog())
    partition = partitions(broker)[0]
    kept = partition.segments[:3]
    for segment in kept:
        pins.pin(partition, segment)
    directory = pins.pins(partition)[kept[0].base_offset].log_path.parent
    stem = f"{900:020d}-{950:020d}"
    half = [directory / f".{stem}.log.staging", directory / f".{stem}.index.staging",
            directory / f"{stem}.index", directory / f"{stem}.timeindex"]      # no .log: useless
    foreign = [directory / "README", directory / ".keep", directory / "notes.staging",
               directory / "00000000000000000001.log"]
    for path in half + foreign:
        path.write_bytes(b"x")
    again = PinStore((root,), ListLog())
    assert sorted(again.pins(partition)) == [s.base_offset for s in kept]
    assert [again.pins(partition)[s.base_offset].next_offset for s in kept] == [s.next_offset for s in kept]
    assert not any(path.exists() for path in half)
    assert all(path.exists() for path in foreign)


def test_a_pin_that_lost_its_log_reads_as_empty_not_as_data(tmp_path, broker):
    pins = PinStore((tmp_path / "pins",), ListLog())
    partition = partitions(broker)[0]
    segment = partition.segments[0]
    pinned = pins.pin(partition, segment)
    os.unlink(pinned.log_path)
    delete_like_the_broker(broker, 0, segment.base_offset)
    [rescued] = pins.rescued(partitions(broker)[0])
    assert rescued.size == 0


def test_a_symlink_in_the_log_dir_is_pinned_as_the_link_not_followed(tmp_path, broker):
    pins = PinStore((tmp_path / "pins",), ListLog())
    partition = partitions(broker)[0]
    segment = partition.segments[0]
    elsewhere = tmp_path / "elsewhere.log"
    os.rename(segment.log_path, elsewhere)
    os.symlink(elsewhere, segment.log_path)
    pinned = pins.pin(partition, segment)
    assert os.lstat(pinned.log_path).st_ino == os.lstat(segment.log_path).st_ino != os.stat(elsewhere).st_ino


def test_a_pin_dir_that_cannot_be_made_disables_pins_for_that_log_dir_once_and_cleans_up(tmp_path, broker):
    log = ListLog()
    root = tmp_path / "pins"
    pins = PinStore((root,), log)
    parts = partitions(broker)
    partition = parts[0]
    topic_id = partition.topic_id
    # The partition's pin dir exists, but the pin's .index name is taken by a directory: the
    # .log is linked, then linking the index fails. Nothing of the attempt may stay.
    segment = partition.segments[0]
    directory = root / topic_id / "0"
    stem = f"{segment.base_offset:020d}-{segment.next_offset:020d}"
    (directory / f"{stem}.index").mkdir(parents=True)
    assert pins.pin(partition, segment) == segment
    assert not list(directory.glob("*.log"))
    [(event, fields)] = warnings(log)
    assert event == "cannot pin segments of this log dir (hard link refused); uploading without pins"
    assert fields["log_dir"] == str(broker.log_dir) and fields["pin_dir"] == str(directory) and fields["error"]
    # Every partition of that log dir goes without pins from then on, and it is said once.
    assert pins.pin(parts[1], parts[1].segments[0]) == parts[1].segments[0]
    assert pins.count() == 0 and len(warnings(log)) == 1
    assert not (root / topic_id / "1").exists() and not Path(topic_id).exists()


def test_the_first_pin_root_on_the_log_dirs_file_system_is_used_past_unusable_ones(tmp_path, broker):
    log = ListLog()
    pins = PinStore((Path("/proc/tiering-pins"), tmp_path / "first", tmp_path / "second"), log)
    partition = partitions(broker)[0]
    pinned = pins.pin(partition, partition.segments[0])
    assert pinned.log_path.is_relative_to(tmp_path / "first") and log.events == []


def test_no_pin_root_on_the_log_dirs_file_system_is_said_with_what_to_do(tmp_path, broker):
    log = ListLog()
    pins = PinStore((Path("/proc/tiering-pins"),), log)
    partition = partitions(broker)[0]
    assert pins.pin(partition, partition.segments[0]) == partition.segments[0]
    assert warnings(log) == [(
        "segments of this log dir cannot be pinned: no pin dir on its file system; the broker's retention could "
        "delete a segment before it is uploaded (add a directory on that file system to state.pin_dirs)",
        {"log_dir": str(broker.log_dir), "pin_dirs": ["/proc/tiering-pins"]})]
