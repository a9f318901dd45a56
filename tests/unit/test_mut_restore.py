"""Restoring a partition from a store in memory (tests/unit/memstore.py) with manifests the real
segment worker wrote: the files in place, the recorded order of fsyncs and renames, what is
kept, each store answer and each damaged download, and the checkpoints afterwards. The same
paths against moto: tests/integration (test_rollback.py, test_rollback_damaged.py)."""

from __future__ import annotations

import os
import stat
import threading
from dataclasses import replace

import crc32c
import pytest

from tests.unit.memstore import MemoryStore, fail_on
from tiering.errors import TieringError
from tiering.kafka.checkpoints import EpochEntry, TopicPartition
from tiering.kafka.logdir import scan_log_dirs
from tiering.rollback import restore as restore_module
from tiering.rollback.plan import PartitionPlan, SegmentRestore, restore_files
from tiering.rollback.progress import Progress
from tiering.rollback.restore import (TEMP_SUFFIX, PartitionRestorer, PartitionResult, remove_temporary_files,
                                      update_leader_epochs, update_log_start)
from tiering.simulate import SimulatedBroker
from tiering.upload.segment import offload_segment, target_for

MAX_TS = 1_700_000_000_000


class Log:
    def __init__(self):
        self.lines = []
        self.bound = {}

    def bind(self, **fields):
        self.bound.update(fields)
        return self

    def info(self, message, **fields):
        self.lines.append(("info", message, fields))

    def warning(self, message, **fields):
        self.lines.append(("warning", message, fields))


@pytest.fixture
def partition(tmp_path):
    """Segments [0, 30), [30, 60) of orders-0 in the store and gone from the disk; [60, ...) local."""
    broker = SimulatedBroker(tmp_path / "logs", segment_bytes=4096, seed=9, clock_ms=lambda: MAX_TS)
    broker.create_topic("orders", 1)
    broker.produce("orders", 0, 100, value_size=100)
    broker.checkpoint()
    broker.close()
    local = next(p for p in scan_log_dirs([tmp_path / "logs"]).partitions if p.topic == "orders")
    store = MemoryStore()
    manifests, originals = [], {}
    for i, segment in enumerate(local.segments[:2]):
        target = target_for(segment, local, "cluster-a/", False, 1, f"{i + 1:016x}")
        manifests.append(offload_segment(target, store, lambda: 1))
    for manifest in manifests:
        for f in restore_files(manifest):
            path = local.path / f.name
            if path.exists():
                originals[f.name] = path.read_bytes()
                path.unlink()
    store.calls.clear()
    return local, store, manifests, originals


def plan_of(local, manifests, **changes):
    restore = tuple(SegmentRestore(m, restore_files(m)) for m in sorted(manifests, key=lambda m: -m.base_offset))
    plan = PartitionPlan("orders", 0, local.topic_id, local.log_dir, local.path, 60, restore, (), 60)
    return replace(plan, **changes)


def restorer(store, stop=None, log=None):
    progress = Progress(0, 0, lambda: 0.0)
    return PartitionRestorer(store, progress, log or Log(), stop or threading.Event()), progress


def test_every_file_comes_back_byte_for_byte_newest_segment_first(partition):
    local, store, manifests, originals = partition
    plan = plan_of(local, manifests)
    r, progress = restorer(store)
    result = r.restore(plan)
    assert (result.failure, result.interrupted, result.disk_full) == (None, False, False)
    assert [m.base_offset for m in result.restored] == [30, 0] and result.first_offset == 0
    for name, data in originals.items():
        assert (local.path / name).read_bytes() == data, name
    assert result.bytes_written == plan.bytes == sum(len(d) for d in originals.values())
    assert progress.snapshot().bytes_done == plan.bytes and progress.snapshot().segments_done == 2
    assert not [n for n in os.listdir(local.path) if n.endswith(TEMP_SUFFIX)]
    downloads = [k for op, k in store.calls if op == "download"]
    assert downloads[0].startswith(manifests[1].objects[0].key.rsplit(".", 1)[0])     # 30 first
    assert downloads[-1] == manifests[0].object("log").key                            # the .log last


def test_a_restored_log_carries_the_manifests_time_and_a_zero_time_is_left_alone(partition):
    local, store, manifests, originals = partition
    r, _ = restorer(store)
    r.restore(plan_of(local, manifests[1:]))
    info = os.stat(local.path / "00000000000000000030.log")
    assert info.st_mtime == info.st_atime == manifests[1].max_timestamp / 1000
    zero = replace(manifests[0], max_timestamp=0)
    before = os.stat(local.path).st_mtime
    r.restore(plan_of(local, [zero]))
    assert os.stat(local.path / "00000000000000000000.log").st_mtime >= before
    os.unlink(local.path / "00000000000000000000.log")
    r.restore(plan_of(local, [replace(manifests[0], max_timestamp=1)]))
    assert os.stat(local.path / "00000000000000000000.log").st_mtime == 0.001


def test_fsyncs_and_renames_go_indexes_then_directory_then_log_then_directory(partition, monkeypatch):
    local, store, manifests, _ = partition
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        mode = os.fstat(fd).st_mode
        events.append(("fsync-dir",) if stat.S_ISDIR(mode) else ("fsync-file",))
        real_fsync(fd)

    def rename(src, dst, **kw):
        events.append(("rename", src, dst))
        real_replace(src, dst, **kw)
    monkeypatch.setattr(restore_module.os, "fsync", fsync)
    monkeypatch.setattr(restore_module.os, "replace", rename)
    r, _ = restorer(store)
    assert r.restore(plan_of(local, manifests[:1])).failure is None
    names = [f.name for f in restore_files(manifests[0])]
    assert names[-1].endswith(".log")
    expected = [("fsync-file",)] * len(names)
    expected += [("rename", n + TEMP_SUFFIX, n) for n in names[:-1]] + [("fsync-dir",)]
    expected += [("rename", names[-1] + TEMP_SUFFIX, names[-1]), ("fsync-dir",)]
    assert events == expected


def test_files_already_in_place_and_verified_are_kept_and_a_differing_one_replaced(partition):
    local, store, manifests, originals = partition
    m = manifests[0]
    names = {f.entry.kind: f.name for f in restore_files(m)}
    (local.path / names["index"]).write_bytes(originals[names["index"]])       # right: kept
    (local.path / names["timeindex"]).write_bytes(b"\x00" * len(originals[names["timeindex"]]))  # wrong bytes
    r, progress = restorer(store)
    result = r.restore(plan_of(local, [m]))
    assert result.failure is None and result.files_kept == 1
    assert result.bytes_written == m.total_bytes - len(originals[names["index"]]) - \
        (m.object("leader_epoch").size if m.object("leader_epoch") else 0)
    assert progress.snapshot().bytes_done == sum(f.entry.size for f in restore_files(m))
    assert ("download", m.object("index").key) not in store.calls
    assert (local.path / names["timeindex"]).read_bytes() == originals[names["timeindex"]]


def test_a_producer_snapshot_in_place_is_the_brokers_and_stays_whatever_it_holds(partition):
    local, store, manifests, originals = partition
    m = manifests[0]
    snapshot = next(f.name for f in restore_files(m) if f.entry.kind == "snapshot")
    assert snapshot == "00000000000000000030.snapshot"
    (local.path / snapshot).write_bytes(b"the broker's")
    r, _ = restorer(store)
    result = r.restore(plan_of(local, [m]))
    assert result.failure is None and result.files_kept == 1
    assert (local.path / snapshot).read_bytes() == b"the broker's"


def test_something_not_a_file_at_a_final_name_is_refused(partition):
    local, store, manifests, _ = partition
    name = next(f.name for f in restore_files(manifests[0]) if f.entry.kind == "index")
    os.mkdir(local.path / name)
    r, _ = restorer(store)
    result = r.restore(plan_of(local, manifests[:1]))
    assert result.failure == (f"orders-0: {local.path / name} is a directory; refusing to read it or write over it "
                              "(move it aside and rerun)")
    os.rmdir(local.path / name)
    os.symlink("/etc/passwd", local.path / name)
    result = r.restore(plan_of(local, manifests[:1]))
    assert result.failure == (f"orders-0: {local.path / name} is a symbolic link; refusing to read it or write "
                              "over it (move it aside and rerun)")
    assert os.path.islink(local.path / name)


def test_a_download_damaged_once_is_fetched_again_and_twice_is_refused(partition):
    local, store, manifests, originals = partition
    m = manifests[0]
    key = m.object("timeindex").key
    good = store.objects[key]
    bad = bytes([good[0] ^ 1]) + good[1:]
    served = []

    def answer(op, k):
        if op == "download" and k == key:
            served.append(1)
            store.objects[k] = bad if len(served) == 1 else good
    store.answer = answer
    log = Log()
    r, progress = restorer(store, log=log)
    result = r.restore(plan_of(local, [m]))
    assert result.failure is None and len(served) == 2
    assert progress.snapshot().bytes_done == sum(f.entry.size for f in restore_files(m))
    warning = next(line for line in log.lines if line[0] == "warning")
    assert warning[1] == "restored file does not match its manifest; downloading it again"
    assert warning[2] == {"key": key, "attempt": 1, "size": len(bad), "crc32c": f"{crc32c.crc32c(bad):08x}",
                          "expected_size": len(good), "expected_crc32c": m.object("timeindex").crc32c}


def test_a_download_damaged_twice_leaves_nothing_in_place(partition):
    local, store, manifests, originals = partition
    m = manifests[0]
    key = m.object("log").key
    bad = store.objects[key][:-1] + bytes([store.objects[key][-1] ^ 1])
    store.objects[key] = bad
    before = sorted(os.listdir(local.path))
    r, progress = restorer(store)
    result = r.restore(plan_of(local, [m]))
    entry = m.object("log")
    assert result.failure == (
        f"orders-0: {key}: the store returned {len(bad)} bytes with CRC-32C {crc32c.crc32c(bad):08x} twice, its "
        f"manifest says {entry.size} bytes with {entry.crc32c}; the store's copy is damaged (run 'tiering verify'); "
        "segment 0 and the older ones stay in the store")
    assert sorted(os.listdir(local.path)) == before and result.restored == []
    assert [k for op, k in store.calls if op == "download"].count(key) == 2
    others = sum(f.entry.size for f in restore_files(m) if f.entry.kind != "log")
    assert progress.snapshot().bytes_done == others


def test_a_log_of_the_right_checksum_that_is_not_kafka_batches_is_refused(partition):
    local, store, manifests, _ = partition
    m = manifests[0]
    junk = b"\x00" * 100
    store.objects[m.object("log").key] = junk
    entry = replace(m.object("log"), size=100, crc32c=f"{crc32c.crc32c(junk):08x}")
    forged = replace(m, objects=tuple(entry if o.kind == "log" else o for o in m.objects), size_bytes=100)
    before = sorted(os.listdir(local.path))
    r, _ = restorer(store)
    result = r.restore(plan_of(local, [forged]))
    shown = local.path / ("00000000000000000000.log" + TEMP_SUFFIX)
    assert result.failure.startswith(f"orders-0: {shown}: the bytes of {entry.key} match its manifest's CRC-32C "
                                     f"but are not valid Kafka batches of offsets 0..{m.end_offset} (at byte 0: ")
    assert result.failure.endswith("); nothing was put in place; segment 0 and the older ones stay in the store "
                                   "(run 'tiering verify')")
    assert sorted(os.listdir(local.path)) == before


def test_an_object_gone_from_the_store_or_a_store_failure_stops_the_partition(partition):
    local, store, manifests, _ = partition
    key = manifests[0].object("timeindex").key
    del store.objects[key]
    r, _ = restorer(store)
    result = r.restore(plan_of(local, manifests))
    assert [m.base_offset for m in result.restored] == [30]
    assert result.failure == (f"orders-0: {key} is gone from the store (total retention may have removed it since "
                              "the plan was made); rerun the same command to plan again")
    assert result.first_offset == 30
    store.answer = fail_on("download")
    result = r.restore(plan_of(local, manifests[:1]))
    assert result.failure == (f"orders-0: download {manifests[0].object('index').key}: 503: injected by the test; "
                              "rerun the same command to continue")


def test_a_stop_interrupts_between_segments_and_during_a_download(partition):
    local, store, manifests, _ = partition
    stop = threading.Event()
    stop.set()
    r, _ = restorer(store, stop=stop)
    result = r.restore(plan_of(local, manifests))
    assert result.interrupted and result.failure is None and result.restored == [] and store.calls == []
    assert result.first_offset == 60
    stop = threading.Event()

    def answer(op, key):
        if op == "download":
            stop.set()
            raise fail_on("download")(op, key)
    store.answer = answer
    r, _ = restorer(store, stop=stop)
    result = r.restore(plan_of(local, manifests))
    assert result.interrupted and result.failure is None and result.restored == []
    assert not [n for n in os.listdir(local.path) if n.endswith(TEMP_SUFFIX)]


def test_a_partition_path_that_is_not_a_directory_is_refused(partition, tmp_path):
    local, store, manifests, _ = partition
    not_dir = tmp_path / "file"
    not_dir.write_text("x")
    r, _ = restorer(store)
    result = r.restore(plan_of(local, manifests, path=not_dir))
    assert result.failure == (f"orders-0: {not_dir} is a regular file, not a directory: not followed; refusing to write there (move it aside, make "
                              "sure nothing else writes the partition dir, and rerun)")
    assert not result.disk_full
    missing = tmp_path / "missing"
    result = r.restore(plan_of(local, manifests, path=missing))
    assert result.failure == f"orders-0: {missing}: No such file or directory"


def test_a_file_name_with_a_slash_is_never_written(partition):
    local, store, manifests, _ = partition
    m = manifests[0]
    files = restore_files(m)
    for bad in ("../escape.index", ".", ".."):
        evil = (replace(files[0], name=bad),) + files[1:]
        r, _ = restorer(store)
        result = r.restore(replace(plan_of(local, [m]), restore=(SegmentRestore(m, evil),)))
        assert result.failure == f"orders-0: refusing to write {local.path / bad}: outside {local.path}"
    assert not (local.path.parent / "escape.index").exists()


def test_leftover_temporary_names_are_removed_and_nothing_else(partition):
    local, store, manifests, _ = partition
    ours = ["00000000000000000000.log" + TEMP_SUFFIX, "00000000000000000030.snapshot" + TEMP_SUFFIX]
    theirs = ["0000000000000000000.log" + TEMP_SUFFIX, "00000000000000000000.log.restore.tmp.x",
              "00000000000000000000.leader-epoch-checkpoint" + TEMP_SUFFIX, "x00000000000000000000.log" + TEMP_SUFFIX]
    for name in ours + theirs:
        (local.path / name).write_bytes(b"x")
    os.symlink("/etc/hostname", local.path / ("00000000000000000000.index" + TEMP_SUFFIX))
    fd = os.open(local.path, os.O_RDONLY)
    try:
        assert remove_temporary_files(fd, local.path) == 3
        assert os.path.exists("/etc/hostname")
        for name in theirs:
            assert (local.path / name).exists(), name
        os.mkdir(local.path / ("00000000000000000000.txnindex" + TEMP_SUFFIX))
        with pytest.raises(Exception) as raised:
            remove_temporary_files(fd, local.path)
        assert str(raised.value) == (f"{local.path / ('00000000000000000000.txnindex' + TEMP_SUFFIX)} is a directory "
                                     "under a name rollback uses for its temporary files; remove it and rerun")
    finally:
        os.close(fd)


def test_first_offset_is_the_lowest_restored_base(partition):
    local, _, manifests, _ = partition
    plan = plan_of(local, manifests)
    assert PartitionResult(plan).first_offset == 60
    # each restored segment's own first offset (a piece cut from an upload starts inside it)
    assert PartitionResult(plan, restored=[manifests[1], manifests[0]], restored_from=[30, 0]).first_offset == 0
    assert PartitionResult(plan, restored=[manifests[1], manifests[0]], restored_from=[30, 12]).first_offset == 12


# -- checkpoints ---------------------------------------------------------------------------------

def test_the_log_start_checkpoint_is_lowered_only_where_it_is_above_the_first_offset(tmp_path):
    path = tmp_path / "log-start-offset-checkpoint"
    path.write_text("0\n3\norders 0 60\norders 1 5\nclicks 0 7\n")
    a, b, c = TopicPartition("orders", 0), TopicPartition("orders", 1), TopicPartition("clicks", 0)
    changes = update_log_start(tmp_path, {a: 0, b: 5, c: 8, TopicPartition("gone", 0): 0})
    assert changes == {a: (60, 0)}
    assert path.read_text() == "0\n3\norders 0 0\norders 1 5\nclicks 0 7\n"
    assert update_log_start(tmp_path, {a: 0}) == {}
    assert update_log_start(tmp_path / "none", {a: 0}) == {}


@pytest.mark.parametrize("content", [b"garbage\n", b"\xff\xfe\n"])
def test_a_log_start_checkpoint_that_cannot_be_parsed_stops_with_what_to_do(tmp_path, content):
    path = tmp_path / "log-start-offset-checkpoint"
    path.write_bytes(content)
    with pytest.raises(TieringError) as raised:
        update_log_start(tmp_path, {TopicPartition("orders", 0): 0})
    assert str(raised.value).startswith(f"{path}: cannot parse it (")
    assert str(raised.value).endswith("); the restored segments are in place but the broker would delete them at "
                                      "start-up: fix the file by hand (it lists 'topic partition offset'), then rerun")
    assert path.read_bytes() == content


def test_leader_epochs_of_restored_segments_are_merged_in(partition):
    local, _, manifests, _ = partition
    path = local.path / "leader-epoch-checkpoint"
    path.write_text("0\n1\n3 60\n")
    m = replace(manifests[0], leader_epochs=((1, 0), (2, 10)))
    before, after = update_leader_epochs(local.path, [m])
    assert before == (EpochEntry(3, 60),)
    assert after == (EpochEntry(1, 0), EpochEntry(2, 10), EpochEntry(3, 60))
    assert path.read_text() == "0\n3\n1 0\n2 10\n3 60\n"
    assert update_leader_epochs(local.path, [m]) is None
    path.unlink()
    assert update_leader_epochs(local.path, [m])[0] == ()
    assert path.read_text() == "0\n2\n1 0\n2 10\n"


@pytest.mark.parametrize("content, why", [(b"nonsense\n", "expected version 0 and an entry count)"), (b"\xff\n", "not UTF-8 text"),
                                          (None, "is a directory, not a regular file: not followed or read")])
def test_a_leader_epoch_checkpoint_that_cannot_be_read_stops_with_what_to_do(partition, content, why):
    local, _, manifests, _ = partition
    path = local.path / "leader-epoch-checkpoint"
    path.unlink()
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    with pytest.raises(TieringError) as raised:
        update_leader_epochs(local.path, manifests)
    message = str(raised.value)
    assert message.startswith(f"{path}: cannot read it (")
    assert message.endswith("); move it aside (the broker rebuilds it from the segments) and rerun")
    assert f"({why}" in message


def test_object_entries_restore_to_names_from_offsets(partition):
    _, _, manifests, _ = partition
    names = [f.name for f in restore_files(manifests[1])]
    assert names == ["00000000000000000030.index", "00000000000000000030.timeindex",
                     "00000000000000000060.snapshot", "00000000000000000030.log"]


def test_files_kept_are_counted_each(partition):
    local, store, manifests, originals = partition
    names = {f.entry.kind: f.name for f in restore_files(manifests[0])}
    for kind in ("index", "timeindex"):
        (local.path / names[kind]).write_bytes(originals[names[kind]])
    r, _ = restorer(store)
    assert r.restore(plan_of(local, manifests[:1])).files_kept == 2
    assert store.download_sizes == [f.entry.size for f in restore_files(manifests[0])
                                    if f.entry.kind not in ("index", "timeindex")]


def test_an_empty_object_served_with_bytes_once_is_fetched_again_into_an_empty_file(partition):
    local, store, manifests, originals = partition
    m = manifests[0]
    entry = m.object("index")
    assert entry.size == 0
    served = []

    def answer(op, key):
        if op == "download" and key == entry.key:
            served.append(1)
            store.objects[key] = b"x" if len(served) == 1 else b""
    store.answer = answer
    r, progress = restorer(store)
    assert r.restore(plan_of(local, [m])).failure is None and len(served) == 2
    assert (local.path / "00000000000000000000.index").read_bytes() == b""
    assert progress.snapshot().bytes_done == sum(f.entry.size for f in restore_files(m))


def test_a_temporary_file_replaced_before_its_rename_is_never_put_in_place(partition):
    local, store, manifests, _ = partition
    m = manifests[0]
    temporary = local.path / ("00000000000000000000.index" + TEMP_SUFFIX)

    def answer(op, key):      # while the .log downloads, another process swaps the index's temporary
        if op == "download" and key == m.object("log").key:
            temporary.unlink()
            temporary.write_bytes(b"someone else's")
    store.answer = answer
    r, _ = restorer(store)
    result = r.restore(plan_of(local, [m]))
    assert result.failure == (f"orders-0: {temporary} was replaced while it was restored: another process writes "
                              f"{local.path}; stop it and rerun")
    assert not (local.path / "00000000000000000000.index").exists()
    assert temporary.read_bytes() == b"someone else's"       # not ours: left alone


def test_a_log_temporary_replaced_before_its_rename_is_never_put_in_place(partition, monkeypatch):
    local, store, manifests, _ = partition
    m = manifests[0]
    temporary = local.path / ("00000000000000000000.log" + TEMP_SUFFIX)
    real_fsync = os.fsync

    def fsync(fd):     # the directory's fsync after the indexes: then the .log's temporary is swapped
        real_fsync(fd)
        if stat.S_ISDIR(os.fstat(fd).st_mode) and temporary.exists():
            temporary.unlink()
            temporary.write_bytes(b"someone else's")
    monkeypatch.setattr(restore_module.os, "fsync", fsync)
    r, _ = restorer(store)
    result = r.restore(plan_of(local, [m]))
    assert result.failure == (f"orders-0: {temporary} was replaced while it was restored: another process writes "
                              f"{local.path}; stop it and rerun")
    assert not (local.path / "00000000000000000000.log").exists()


def test_restored_files_belong_to_the_partition_directorys_owner(partition):
    local, store, manifests, _ = partition
    if os.geteuid() != 0:
        pytest.skip("only root restores files for another user")
    os.chown(local.path, 4321, 4322)
    r, _ = restorer(store)
    assert r.restore(plan_of(local, manifests[:1])).failure is None
    for f in restore_files(manifests[0]):
        info = os.stat(local.path / f.name)
        assert (info.st_uid, info.st_gid) == (4321, 4322), f.name


def test_a_full_disk_during_a_download_stops_every_partition_with_the_files_name(partition):
    import errno
    local, store, manifests, _ = partition
    m = manifests[0]

    def answer(op, key):     # s3transfer's writer raises the disk's error without a file name
        if op == "download" and key == m.object("log").key:
            raise OSError(errno.ENOSPC, "No space left on device")
    store.answer = answer
    stop = threading.Event()
    r, _ = restorer(store, stop=stop)
    before = sorted(os.listdir(local.path))
    result = r.restore(plan_of(local, [m]))
    shown = local.path / ("00000000000000000000.log" + TEMP_SUFFIX)
    assert result.disk_full and stop.is_set()
    assert result.failure == (f"orders-0: cannot write {shown} (No space left on device); free space on the log "
                              "dir's disk and rerun the same command (what is restored stays; nothing half-written "
                              "is visible)")
    assert sorted(os.listdir(local.path)) == before


def test_a_restore_leaves_no_descriptor_open(partition):
    local, store, manifests, _ = partition
    before = len(os.listdir("/proc/self/fd"))
    r, _ = restorer(store)
    assert r.restore(plan_of(local, manifests)).failure is None
    assert len(os.listdir("/proc/self/fd")) == before


def test_the_log_start_checkpoint_is_found_through_a_linked_log_dir(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "log-start-offset-checkpoint").write_text("0\n1\norders 0 60\n")
    os.symlink(real, tmp_path / "linked")
    a = TopicPartition("orders", 0)
    assert update_log_start(tmp_path / "linked", {a: 0}) == {a: (60, 0)}
    assert (real / "log-start-offset-checkpoint").read_text() == "0\n1\norders 0 0\n"


def test_each_restored_segment_is_logged_with_its_partition(partition):
    local, store, manifests, _ = partition
    log = Log()
    r, _ = restorer(store, log=log)
    r.restore(plan_of(local, manifests))
    assert log.bound == {"topic": "orders", "partition": 0}
    assert log.lines == [("info", "segment restored", {"base_offset": m.base_offset, "end_offset": m.end_offset,
                                                       "bytes": sum(f.entry.size for f in restore_files(m))})
                         for m in (manifests[1], manifests[0])]


def test_a_restore_first_removes_what_an_interrupted_one_left(partition):
    local, store, manifests, _ = partition
    leftover = local.path / ("00000000000000000000.log" + TEMP_SUFFIX)
    leftover.write_bytes(b"half")
    unrelated = local.path / ("00000000000000000099.log" + TEMP_SUFFIX)
    unrelated.write_bytes(b"half")
    stop = threading.Event()
    stop.set()
    assert restorer(store, stop=stop)[0].restore(plan_of(local, manifests)).interrupted
    assert not leftover.exists() and not unrelated.exists()


def test_a_directory_under_a_temporary_name_stops_the_partition_before_anything_is_written(partition):
    local, store, manifests, _ = partition
    (local.path / ("00000000000000000000.log" + TEMP_SUFFIX)).mkdir()
    r, _ = restorer(store)
    result = r.restore(plan_of(local, manifests))
    assert result.failure == (f"orders-0: {local.path / ('00000000000000000000.log' + TEMP_SUFFIX)} is a directory "
                              "under a name rollback uses for its temporary files; remove it and rerun")
    assert store.calls == []


def test_a_log_holding_offsets_past_its_manifests_end_is_refused_whatever_its_checksum(partition):
    local, store, manifests, _ = partition
    m = manifests[0]                       # offsets 0..29
    short = replace(m, end_offset=28, last_batch_offset=28)
    r, _ = restorer(store)
    result = r.restore(plan_of(local, [short]))
    assert "match its manifest's CRC-32C but are not valid Kafka batches of offsets 0..28 (at byte " in result.failure
    assert "batch last offset 29 outside the segment [0, 29)" in result.failure
    assert not (local.path / "00000000000000000000.log").exists()
    assert r.restore(plan_of(local, [m])).failure is None          # its true end: accepted
