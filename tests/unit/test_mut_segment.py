"""The segment worker against a store in memory (tests/unit/memstore.py): what the manifest
says, what is uploaded in which order, each store answer that must stop or settle an attempt,
and each broker file that makes a segment bad. The same paths against moto: tests/integration
(test_offload.py, test_short_store.py)."""

from __future__ import annotations

import os
import shutil
from types import SimpleNamespace

import crc32c
import pytest

from tests.unit.memstore import MemoryStore, fail_on
from tiering import __version__
from tiering.kafka.checkpoints import parse_leader_epoch_checkpoint
from tiering.kafka.records import build_batch
from tiering.kafka.logdir import scan_log_dirs
from tiering.simulate import SimulatedBroker
from tiering.store.errors import ErrorClass, StoreError
from tiering.store.keys import PartitionPath
from tiering.store.manifest import MAX_TIMESTAMP_MS, parse_manifest
from tiering.upload import segment as worker
from tiering.upload.buffers import PartBuffers
from tiering.upload.segment import (BadSegment, UnsettledUpload, discard_attempt, offload_segment, settle_previous,
                                    target_for)

NOW = 1_700_000_000_000
UID = "feedfacefeedface"


@pytest.fixture(scope="module")
def log_dir_template(tmp_path_factory):
    """One log dir written once per module; each test gets its own copy (tests change files)."""
    log_dir = tmp_path_factory.mktemp("segment") / "logs"
    broker = SimulatedBroker(log_dir, segment_bytes=4096, seed=3, clock_ms=lambda: NOW)
    broker.create_topic("orders", 1)
    broker.produce("orders", 0, 100, value_size=100)
    broker.bump_leader_epoch("orders", 0)
    broker.produce("orders", 0, 40, value_size=100)
    broker.checkpoint()
    broker.close()
    return log_dir


@pytest.fixture
def broker(log_dir_template, tmp_path):
    log_dir = tmp_path / "logs"
    shutil.copytree(log_dir_template, log_dir, copy_function=shutil.copy2)
    return SimpleNamespace(log_dir=log_dir)


def partition_of(broker):
    return next(p for p in scan_log_dirs([broker.log_dir]).partitions if p.topic == "orders")


def target(broker, index=0, uid=UID, broker_id=7):
    partition = partition_of(broker)
    return target_for(partition.segments[index], partition, "cluster-a/", False, broker_id, uid)


def test_the_manifest_describes_the_segment_and_every_object_exactly(broker):
    t = target(broker, 0)
    store = MemoryStore()
    manifest = offload_segment(t, store, lambda: 1234)
    calls = list(store.calls)
    segment, keys = t.segment, t.keys
    log = segment.log_path.read_bytes()
    assert (manifest.topic, manifest.topic_id, manifest.partition, manifest.base_offset, manifest.end_offset) == \
        ("orders", t.topic_id, 0, 0, 29)
    assert (manifest.last_batch_offset, manifest.size_bytes, manifest.batch_count, manifest.record_count) == \
        (29, len(log), 3, 30)
    assert (manifest.uid, manifest.broker_id, manifest.created_at_ms, manifest.tool_version) == \
        (UID, 7, 1234, __version__)
    assert manifest.max_timestamp_source == "records" and 0 <= manifest.max_timestamp <= NOW + 10_000
    assert manifest.leader_epochs == ((0, 0),)
    by_kind = {o.kind: o for o in manifest.objects}
    assert set(by_kind) == {"log", "index", "timeindex", "snapshot", "leader_epoch"}
    for o in manifest.objects:
        data = store.objects[o.key]
        assert o.key == keys.object_key(o.kind)
        assert (o.size, o.crc32c) == (len(data), f"{crc32c.crc32c(data):08x}")
        assert o.etag == store.head(o.key).etag
    assert store.objects[keys.object_key("log")] == log
    assert store.objects[keys.object_key("index")] == dict(segment.index_paths)["index"].read_bytes()
    assert store.objects[keys.object_key("snapshot")] == segment.snapshot_path.read_bytes()
    # The manifest is the store's copy, byte for byte, and written last.
    assert parse_manifest(store.objects[keys.manifest_key], keys.manifest_key) == manifest
    puts = [k for op, k in calls if op in ("upload", "put")]
    assert keys.object_key("log") in puts and puts[-1] == keys.manifest_key
    assert puts.count(keys.manifest_key) == 1
    # One PUT: the store checked its length and CRC-32C, and its answer is the object's ETag.
    assert ("head", keys.object_key("log")) not in calls


class AnswersOtherETags(MemoryStore):
    """A store whose upload answer is not the ETag it lists afterwards (rclone's multipart
    completion: the MD5 of the whole object in the listing)."""

    def upload_parts(self, key, size, parts, whole_crc):
        super().upload_parts(key, size, parts, whole_crc)
        return "answered-" + key[-4:]


@pytest.mark.parametrize("part_bytes", [1024, None, "size"])
def test_the_log_etag_is_the_upload_answer_for_one_put_and_the_heads_for_parts(broker, part_bytes, monkeypatch):
    t = target(broker, 0)
    size = t.segment.log_path.stat().st_size
    assert 3 * 1024 < size < 4 * 1024
    # Walked in windows smaller than a part (1 MiB in production): each part's CRC-32C, which
    # the store checks, is combined from its windows'.
    monkeypatch.setattr(worker, "WALK_WINDOW_BYTES", 300)
    store = AnswersOtherETags()
    if part_bytes == "size":        # exactly one part buffer: one PUT
        part_bytes = None
        buffers = PartBuffers(1, size)
    else:
        buffers = PartBuffers(1, part_bytes) if part_bytes else None
    manifest = offload_segment(t, store, lambda: 1, buffers=buffers)
    log_key = t.keys.object_key("log")
    log = manifest.object("log")
    assert store.objects[log_key] == t.segment.log_path.read_bytes()
    assert (log.size, log.crc32c) == (size, f"{crc32c.crc32c(store.objects[log_key]):08x}")
    if part_bytes:
        assert [len(p) for p in store.sent_parts[log_key]] == [1024, 1024, 1024, size - 3072]
        assert log.etag == store.head(log_key).etag
        assert store.calls.index(("head", log_key)) < store.calls.index(("put", t.keys.manifest_key))
    else:
        assert [len(p) for p in store.sent_parts[log_key]] == [size]
        assert log.etag == "answered-.log" and ("head", log_key) not in store.calls


def test_a_target_names_the_hashed_path_and_the_leader_epoch_the_manifest_records(broker):
    partition = partition_of(broker)
    t = target_for(partition.segments[1], partition, "cluster-a/", True, 7, UID, leader_epoch=5)
    assert t.keys == PartitionPath("cluster-a/", "orders", partition.topic_id, 0, True).segment(30, UID)
    assert t.keys != target(broker, 1).keys and t.leader_epoch == 5
    store = MemoryStore()
    manifest = offload_segment(t, store, lambda: 1)
    assert manifest.leader_epoch == 5
    assert parse_manifest(store.objects[t.keys.manifest_key], t.keys.manifest_key).leader_epoch == 5
    assert offload_segment(target(broker, 1), store, lambda: 1).leader_epoch is None


def test_the_leader_epoch_object_holds_the_epochs_up_to_the_segments_last_offset(broker):
    partition = partition_of(broker)
    epochs = parse_leader_epoch_checkpoint(partition.leader_epoch_path.read_text())
    assert [(e.epoch, e.start_offset) for e in epochs] == [(0, 0), (1, 100)]
    store = MemoryStore()
    first = offload_segment(target(broker, 0), store, lambda: 1)
    covered = parse_leader_epoch_checkpoint(store.objects[target(broker, 0).keys.object_key("leader_epoch")].decode())
    assert [(e.epoch, e.start_offset) for e in covered] == [(0, 0)]
    assert first.leader_epochs == ((0, 0),)
    # the segment [90, 120) holds offset 100, where epoch 1 starts; [60, 90) ends at 89
    for index, expected in ((2, [(0, 0)]), (3, [(0, 0), (1, 100)])):
        t = target(broker, index)
        assert t.segment.base_offset == 30 * index
        offload_segment(t, store, lambda: 1)
        covered = parse_leader_epoch_checkpoint(store.objects[t.keys.object_key("leader_epoch")].decode())
        assert [(e.epoch, e.start_offset) for e in covered] == expected


def test_a_segment_ending_exactly_where_an_epoch_starts_leaves_that_epoch_out(broker, tmp_path):
    t = target(broker, 2)      # [60, 90)
    t.leader_epoch_path.write_text("0\n2\n0 0\n5 90\n")
    store = MemoryStore()
    offload_segment(t, store, lambda: 1)
    assert store.objects[t.keys.object_key("leader_epoch")] == b"0\n1\n0 0\n"
    t.leader_epoch_path.write_text("0\n2\n0 0\n5 89\n")
    t2 = target(broker, 2, uid="0000000000000002")
    offload_segment(t2, store, lambda: 1)
    assert store.objects[t2.keys.object_key("leader_epoch")] == b"0\n2\n0 0\n5 89\n"


def test_an_unreadable_leader_epoch_checkpoint_is_left_out_not_fatal(broker):
    t = target(broker, 0)
    t.leader_epoch_path.write_text("not a checkpoint\n")
    store = MemoryStore()
    manifest = offload_segment(t, store, lambda: 1)
    assert "leader_epoch" not in {o.kind for o in manifest.objects}
    t.leader_epoch_path.write_bytes(b"\xff\xfe")
    manifest = offload_segment(target(broker, 1), store, lambda: 1)
    assert "leader_epoch" not in {o.kind for o in manifest.objects}


def test_a_snapshot_the_broker_cleaned_is_left_out(broker):
    t = target(broker, 0)
    t.segment.snapshot_path.unlink()
    manifest = offload_segment(t, MemoryStore(), lambda: 1)
    assert {o.kind for o in manifest.objects} == {"log", "index", "timeindex", "leader_epoch"}


def test_a_snapshot_that_is_a_link_or_unreadable_makes_the_segment_bad(broker, tmp_path):
    t = target(broker, 0)
    t.segment.snapshot_path.unlink()
    os.symlink(tmp_path / "elsewhere", t.segment.snapshot_path)
    store = MemoryStore()
    with pytest.raises(BadSegment) as raised:
        offload_segment(t, store, lambda: 1)
    assert raised.value.read_error is False and str(t.segment.snapshot_path) in str(raised.value)
    os.unlink(t.segment.snapshot_path)
    os.mkdir(t.segment.snapshot_path)
    with pytest.raises(BadSegment) as raised:
        offload_segment(t, store, lambda: 1)
    assert not raised.value.read_error
    assert str(raised.value) == f"{t.segment.snapshot_path} is a directory, not a regular file: not followed or read"
    assert not store.objects


def _with_timestamps(t, timestamp):
    """Segment [0, 30) rewritten as three batches of ten records, each record at `timestamp`
    (-1: none, as an old produce request up-converted); its index files emptied to match."""
    t.segment.log_path.write_bytes(b"".join(
        build_batch(base, [(timestamp, None, b"v" * 50, ())] * 10) for base in (0, 10, 20)))
    for _, path in t.segment.index_paths:
        path.write_bytes(b"")
    return t


def test_a_file_time_stands_in_when_no_batch_has_a_timestamp(broker):
    t = _with_timestamps(target(broker, 0), -1)
    os.utime(t.segment.log_path, ns=(5_000_000_123_456_789, 5_000_000_123_456_789))
    manifest = offload_segment(t, MemoryStore(), lambda: 1)
    assert (manifest.max_timestamp, manifest.max_timestamp_source) == (5_000_000_123, "file-mtime")
    assert (manifest.batch_count, manifest.record_count, manifest.last_batch_offset) == (3, 30, 29)
    # 0 is a timestamp of the records (the epoch), not "none"
    t = _with_timestamps(target(broker, 0, uid="0000000000000002"), 0)
    manifest = offload_segment(t, MemoryStore(), lambda: 1)
    assert (manifest.max_timestamp, manifest.max_timestamp_source) == (0, "records")


def test_a_timestamp_past_the_readers_range_is_clamped_to_it(broker):
    manifest = offload_segment(_with_timestamps(target(broker, 0), MAX_TIMESTAMP_MS + 1), MemoryStore(), lambda: 1)
    assert (manifest.max_timestamp, manifest.max_timestamp_source) == (MAX_TIMESTAMP_MS, "records")
    t = _with_timestamps(target(broker, 0, uid="0000000000000002"), MAX_TIMESTAMP_MS)
    manifest = offload_segment(t, MemoryStore(), lambda: 1)
    assert manifest.max_timestamp == MAX_TIMESTAMP_MS


@pytest.mark.parametrize("keep", [None, -1, +1])
def test_a_log_the_store_does_not_hold_whole_stops_the_attempt_and_cleans_it(broker, keep):
    """In parts (the .log over one part buffer): the HEAD after the completion must list every
    byte; here it lists none, one fewer or one more."""
    t = target(broker, 0)
    store = MemoryStore()
    size = t.segment.log_path.stat().st_size
    log_key = t.keys.object_key("log")

    def answer(op, key):
        if op == "head" and key == log_key:
            if keep is None:
                del store.objects[key]
            else:
                store.objects[key] = store.objects[key][:size + keep] + b"x" * max(0, keep)
    store.answer = answer
    with pytest.raises(StoreError) as raised:
        offload_segment(t, store, lambda: 1, buffers=PartBuffers(1, 1024))
    error = raised.value
    held = "no" if keep is None else size + keep
    assert (error.error_class, error.operation, error.key) == (ErrorClass.RETRYABLE, "verify", log_key)
    assert error.detail == f"the store holds {held} bytes, expected {size}"
    assert not store.objects          # nothing visible, nothing left
    assert ("put", t.keys.manifest_key) not in store.calls


@pytest.mark.parametrize("part_bytes", [1024, None])
def test_a_log_whose_bytes_the_store_refuses_stops_the_attempt_and_cleans_it(broker, part_bytes):
    """The store checks each part's and the whole object's CRC-32C (and a PUT's length): bytes
    changed on the way are refused (S3's BadDigest), and nothing of the attempt stays."""
    t = target(broker, 0)
    store = MemoryStore()
    store.damage = lambda key, body: body[:-1] + bytes([body[-1] ^ 1]) if key.endswith(".log") else body
    with pytest.raises(StoreError) as raised:
        offload_segment(t, store, lambda: 1, buffers=PartBuffers(1, part_bytes) if part_bytes else None)
    assert raised.value.key == t.keys.object_key("log") and "BadDigest" in raised.value.detail
    assert not store.objects
    assert ("put", t.keys.manifest_key) not in store.calls


def test_a_failed_index_put_discards_the_attempts_objects(broker):
    t = target(broker, 0)
    store = MemoryStore()
    store.answer = fail_on("put", ".timeindex")
    with pytest.raises(StoreError):
        offload_segment(t, store, lambda: 1)
    assert not store.objects
    assert ("list", t.keys.stem + ".") in store.calls


def test_a_manifest_no_reader_would_accept_is_never_put(broker, monkeypatch):
    monkeypatch.setattr(worker, "SegmentWalker", _walker_summarising(last_offset=10**6))
    t = target(broker, 0)
    store = MemoryStore()
    with pytest.raises(BadSegment, match="^its manifest would not be valid: "):
        offload_segment(t, store, lambda: 1)
    assert not store.objects
    assert ("put", t.keys.manifest_key) not in store.calls


def _walker_summarising(**fields):
    """The real walker, its summary changed in `fields` (a walk no real segment gives)."""
    from dataclasses import replace

    class Walker(worker.SegmentWalker):
        def finish(self):
            return replace(super().finish(), **fields)
    return Walker


def test_a_manifest_put_that_failed_but_landed_is_the_upload(broker):
    t = target(broker, 0)
    store = LosesAnswer(t.keys.manifest_key)
    manifest = offload_segment(t, store, lambda: 1)
    assert parse_manifest(store.objects[t.keys.manifest_key], t.keys.manifest_key) == manifest
    assert len(store.objects) == 6


class LosesAnswer(MemoryStore):
    """A PUT of `key` is stored, then its answer is lost (retryable, or `error_class`)."""

    def __init__(self, key, error_class=ErrorClass.RETRYABLE, store=True, truncate=False):
        super().__init__()
        self.key, self.error_class, self.store, self.truncate = key, error_class, store, truncate

    def put_bytes(self, key, data):
        if key != self.key:
            return super().put_bytes(key, data)
        if self.store:
            super().put_bytes(key, data[:-1] if self.truncate else data)
        raise StoreError(self.error_class, "put", key, "connection reset")


@pytest.mark.parametrize("how", ["not stored", "stored short", "fatal"])
def test_a_manifest_put_that_failed_and_did_not_land_fails_the_attempt(broker, how):
    t = target(broker, 0)
    store = LosesAnswer(t.keys.manifest_key, ErrorClass.FATAL if how == "fatal" else ErrorClass.RETRYABLE,
                        store=how == "stored short", truncate=True)
    with pytest.raises(StoreError) as raised:
        offload_segment(t, store, lambda: 1)
    assert not isinstance(raised.value, UnsettledUpload)
    assert raised.value.detail == "connection reset"
    # The attempt's objects are removed; a short manifest (no reader takes it) is the sweep's.
    assert list(store.objects) == ([t.keys.manifest_key] if how == "stored short" else [])
    assert (("head", t.keys.manifest_key) in store.calls) == (how != "fatal")


def test_a_manifest_put_whose_outcome_cannot_be_known_keeps_the_objects(broker):
    t = target(broker, 0)
    store = LosesAnswer(t.keys.manifest_key, store=True)
    store.answer = lambda op, key: (_ for _ in ()).throw(StoreError(ErrorClass.RETRYABLE, "head", key, "timeout")) \
        if (op, key) == ("head", t.keys.manifest_key) else None
    with pytest.raises(UnsettledUpload) as raised:
        offload_segment(t, store, lambda: 1)
    assert raised.value.keys == t.keys and raised.value.retryable
    assert raised.value.detail == "connection reset (whether the manifest landed is not known yet)"
    assert len(store.objects) == 6 and ("list", t.keys.stem + ".") not in store.calls


def test_settling_a_previous_attempt_that_landed_adopts_it_and_uploads_nothing(broker):
    t = target(broker, 0)
    store = MemoryStore()
    first = offload_segment(t, store, lambda: 1)
    before = dict(store.objects)
    store.calls.clear()
    again = offload_segment(target(broker, 0, uid="0000000000000002"), store, lambda: 2, previous=t.keys)
    assert again == first and store.objects == before
    assert not [c for c in store.calls if c[0] in ("upload", "put", "delete")]


def test_settling_a_previous_attempt_that_did_not_land_removes_it_then_uploads(broker):
    t = target(broker, 0)
    store = MemoryStore()
    offload_segment(t, store, lambda: 1)
    del store.objects[t.keys.manifest_key]
    other = "cluster-a/orders-x/0/00000000000000000000-feedfacefeedface.logs"
    store.objects[other] = b"not ours"
    new = target(broker, 0, uid="0000000000000002")
    manifest = offload_segment(new, store, lambda: 2, previous=t.keys)
    assert manifest.uid == "0000000000000002"
    assert sorted(store.objects) == sorted([other, new.keys.manifest_key, *(o.key for o in manifest.objects)])


def test_settling_an_unreadable_manifest_removes_it_before_its_objects(broker):
    t = target(broker, 0)
    store = MemoryStore()
    offload_segment(t, store, lambda: 1)
    store.objects[t.keys.manifest_key] = b"{cut sho"
    store.calls.clear()
    assert settle_previous(store, t.keys) is None
    deletes = [k for op, k in store.calls if op == "delete"]
    assert deletes[0] == t.keys.manifest_key and len(deletes) == 6
    assert not store.objects


def test_settling_while_the_store_cannot_answer_is_unsettled(broker):
    t = target(broker, 0)
    store = MemoryStore()
    offload_segment(t, store, lambda: 1)
    store.answer = fail_on("get")
    with pytest.raises(UnsettledUpload) as raised:
        settle_previous(store, t.keys)
    assert raised.value.keys == t.keys
    assert len(store.objects) == 6


def test_discarding_an_attempt_removes_its_exact_keys_only_and_never_raises(broker):
    t = target(broker, 0)
    store = MemoryStore()
    ours = {t.keys.object_key(k): b"x" for k in ("log", "index", "leader_epoch")}
    longer = t.keys.stem + ".log.bak"
    store.objects.update(ours)
    store.objects[longer] = b"y"
    discard_attempt(store, t.keys)
    assert store.objects == {longer: b"y"}
    store.calls.clear()
    discard_attempt(store, t.keys)
    assert not [c for c in store.calls if c[0] == "delete"]     # nothing to delete: no request
    store.objects.update(ours)
    store.answer = fail_on("delete")
    discard_attempt(store, t.keys)                              # best effort: the sweep finds them
    assert set(store.objects) == {*ours, longer}


def test_a_corrupt_index_makes_the_segment_bad_before_anything_is_sent(broker):
    t = target(broker, 1)
    index = dict(t.segment.index_paths)["index"]
    index.write_bytes(index.read_bytes() + b"\x00" * 3)
    store = MemoryStore()
    with pytest.raises(BadSegment, match=f"^corrupt index {index}: "):
        offload_segment(t, store, lambda: 1)
    assert not store.calls


@pytest.mark.parametrize("part_bytes", [1024, None])
def test_a_corrupt_log_is_bad_before_the_part_that_shows_it_is_sent(broker, part_bytes):
    """The .log is walked part by part as it goes up: a part is handed to the store only once
    every batch ending in it checked. The small objects may have gone up beside it: the attempt
    is cleaned and no manifest written."""
    t = target(broker, 0)
    data = bytearray(t.segment.log_path.read_bytes())
    last = _last_batch_position(t)
    data[last + 100] ^= 1
    t.segment.log_path.write_bytes(bytes(data))
    store = MemoryStore()
    with pytest.raises(BadSegment, match=f"^corrupt segment {t.segment.log_path}: at byte {last}: CRC-32C mismatch"):
        offload_segment(t, store, lambda: 1, buffers=PartBuffers(1, part_bytes) if part_bytes else None)
    sent = b"".join(store.sent_parts.get(t.keys.object_key("log"), []))
    assert len(sent) < len(data) and data.startswith(sent)     # the last batch never went up
    assert len(sent) == (3072 if part_bytes else 0)
    assert not store.objects and ("put", t.keys.manifest_key) not in store.calls
    data[last + 100] ^= 1
    data[100] ^= 1
    t.segment.log_path.write_bytes(bytes(data))
    with pytest.raises(BadSegment, match=f"^corrupt segment {t.segment.log_path}: at byte 0: CRC-32C mismatch"):
        offload_segment(t, store, lambda: 1, buffers=PartBuffers(1, part_bytes) if part_bytes else None)
    first_end = 12 + int.from_bytes(data[8:12], "big")      # 1201 bytes: it ends in the second part
    sent = b"".join(store.sent_parts[t.keys.object_key("log")])
    assert len(sent) == (1024 if part_bytes else 0) and first_end > 1024 and not store.objects


def test_broker_files_gone_or_not_regular_are_bad_segments(broker, tmp_path):
    t = target(broker, 0)
    index = dict(t.segment.index_paths)["timeindex"]
    index.unlink()
    with pytest.raises(BadSegment) as raised:
        offload_segment(t, MemoryStore(), lambda: 1)
    assert str(raised.value) == f"{index} disappeared before it was offloaded" and not raised.value.read_error
    os.mkdir(index)
    with pytest.raises(BadSegment) as raised:
        offload_segment(t, MemoryStore(), lambda: 1)
    assert str(raised.value) == f"{index} is a directory, not a regular file: not followed or read"
    assert not raised.value.read_error
    t1 = target(broker, 1)
    t1.segment.log_path.unlink()
    with pytest.raises(BadSegment, match="disappeared before it was offloaded"):
        offload_segment(t1, MemoryStore(), lambda: 1)
    os.symlink(tmp_path / "x", t1.segment.log_path)
    with pytest.raises(BadSegment) as raised:
        offload_segment(t1, MemoryStore(), lambda: 1)
    assert not raised.value.read_error


def test_a_log_replaced_under_its_name_after_the_open_is_not_what_goes_up(broker, tmp_path):
    """What goes up is the file opened and walked, whatever the name points at meanwhile (the
    broker's cleaner swaps segments by rename)."""
    t = target(broker, 0)
    original = t.segment.log_path.read_bytes()
    other = tmp_path / "swapped"
    other.write_bytes(target(broker, 1).segment.log_path.read_bytes())
    store = MemoryStore()
    log_key = t.keys.object_key("log")
    store.answer = lambda op, key: os.rename(other, t.segment.log_path) if (op, key) == ("upload", log_key) else None
    manifest = offload_segment(t, store, lambda: 1, buffers=PartBuffers(1, 1024))
    assert not other.exists() and t.segment.log_path.read_bytes() != original
    assert store.objects[log_key] == original
    assert (manifest.size_bytes, manifest.object("log").crc32c) == (len(original), f"{crc32c.crc32c(original):08x}")


class ChangesTheFileAfterPart(MemoryStore):
    """A store that, as the first .log part arrives, flips one byte of the file on disk."""

    def __init__(self, path, at):
        super().__init__()
        self.path, self.at = path, at

    def upload_parts(self, key, size, parts, whole_crc):
        def watched():
            for number, part in enumerate(parts):
                if number == 0:
                    with open(self.path, "r+b") as f:
                        f.seek(self.at)
                        byte = f.read(1)
                        f.seek(self.at)
                        f.write(bytes([byte[0] ^ 1]))
                yield part
        return super().upload_parts(key, size, watched(), whole_crc)


def test_a_byte_changed_on_disk_after_its_part_was_read_is_not_what_goes_up(broker):
    """The walk and the sent bytes come from one read: a change to a part already read goes
    neither to the store nor into the manifest; one to a part not read yet is walked (and
    here refused: its batch's CRC-32C no longer matches)."""
    t = target(broker, 0)
    original = t.segment.log_path.read_bytes()
    store = ChangesTheFileAfterPart(t.segment.log_path, 500)
    manifest = offload_segment(t, store, lambda: 1, buffers=PartBuffers(1, 1024))
    assert t.segment.log_path.read_bytes() != original
    assert store.objects[t.keys.object_key("log")] == original
    assert manifest.object("log").crc32c == f"{crc32c.crc32c(original):08x}"
    t2 = target(broker, 1)
    store = ChangesTheFileAfterPart(t2.segment.log_path, t2.segment.log_path.stat().st_size - 10)
    with pytest.raises(BadSegment, match="CRC-32C mismatch"):
        offload_segment(t2, store, lambda: 1, buffers=PartBuffers(1, 1024))
    assert not store.objects


def test_an_unsettled_upload_keeps_every_part_of_its_cause(broker):
    keys = target(broker, 0).keys
    cause = StoreError(ErrorClass.RETRYABLE, "put", keys.manifest_key, "reset", "check the network", "network")
    unsettled = UnsettledUpload(cause, keys)
    assert (unsettled.error_class, unsettled.operation, unsettled.key, unsettled.hint, unsettled.reason,
            unsettled.keys) == (ErrorClass.RETRYABLE, "put", keys.manifest_key, "check the network", "network", keys)
    assert str(unsettled) == (f"put {keys.manifest_key}: reset (whether the manifest landed is not known yet); "
                              "check the network")


def test_the_active_segment_is_never_offloaded(broker):
    partition = partition_of(broker)
    active = target_for(partition.segments[-1], partition, "cluster-a/", False, 1, UID)
    assert active.segment.next_offset is None
    with pytest.raises(AssertionError, match="^the active segment is never offloaded$"):
        offload_segment(active, MemoryStore(), lambda: 1)


def test_a_log_holding_offsets_at_or_past_the_next_segments_base_is_bad(broker):
    from dataclasses import replace
    t = target(broker, 0)                        # offsets 0..29, the next segment at 30
    early = replace(t, segment=replace(t.segment, next_offset=29))
    store = MemoryStore()
    with pytest.raises(BadSegment) as raised:
        offload_segment(early, store, lambda: 1)
    assert str(raised.value) == (f"corrupt segment {t.segment.log_path}: at byte {_last_batch_position(t)}: batch "
                                 "last offset 29 outside the segment [0, 29)")
    assert not store.sent_parts.get(t.keys.object_key("log"))     # the one part walked first, never sent
    assert not store.objects and ("put", t.keys.manifest_key) not in store.calls


def _last_batch_position(t):
    from tiering.kafka.batches import parse_header
    data, position = t.segment.log_path.read_bytes(), 0
    while position + parse_header(data, position).size < len(data):
        position += parse_header(data, position).size
    return position


def test_an_index_pointing_past_the_end_of_the_log_is_bad(broker):
    from tiering.kafka.indexes import OFFSET_ENTRY
    t = target(broker, 0)
    index = dict(t.segment.index_paths)["index"]
    size = t.segment.log_path.stat().st_size
    index.write_bytes(OFFSET_ENTRY.pack(29, size))
    with pytest.raises(BadSegment) as raised:
        offload_segment(t, MemoryStore(), lambda: 1)
    assert str(raised.value) == (f"corrupt index {index}: .index entry (29, {size}) points outside the segment "
                                 f"(30 offsets, {size} bytes)")
    index.write_bytes(OFFSET_ENTRY.pack(29, size - 1))
    offload_segment(t, MemoryStore(), lambda: 1)


def test_a_log_gone_before_it_is_opened_is_named(broker):
    t = target(broker, 1)
    t.segment.log_path.unlink()
    with pytest.raises(BadSegment) as raised:
        offload_segment(t, MemoryStore(), lambda: 1)
    assert str(raised.value) == f"{t.segment.log_path} disappeared before it was offloaded"
