"""Reconciliation against a store in memory (tests/unit/memstore.py), with manifests the real
segment worker wrote: a journal rebuilt from the store, and uploads a crash interrupted. The
same paths against moto: tests/faults (test_crash.py, test_hostile_manifests.py)."""

from __future__ import annotations

import json

import pytest

from tests.unit.memstore import MemoryStore, fail_on
from tiering.journal import Journal, SegmentId, SegmentState
from tiering.kafka.logdir import scan_log_dirs
from tiering.reconcile import (STORE_SYNCED, read_manifests, rebuild_journal, record_uploaded, recover_interrupted,
                               segment_id)
from tiering.simulate import SimulatedBroker
from tiering.store.errors import ErrorClass, StoreError
from tiering.store.keys import KeyLayout, SegmentKeys
from tiering.store.owned import owned_objects
from tiering.store.protocol import MultipartUpload
from tiering.upload.segment import offload_segment, target_for

PREFIX = "cluster-a/"


class Clock:
    def __init__(self, now=5_000):
        self.now = now

    def now_ms(self):
        self.now += 1
        return self.now


@pytest.fixture(scope="module")
def uploaded(tmp_path_factory):
    """Three segments of one partition in a store, as the worker wrote them (created_at 30, 20, 10)."""
    root = tmp_path_factory.mktemp("reconcile")
    broker = SimulatedBroker(root / "logs", segment_bytes=4096, seed=5, clock_ms=lambda: 1_700_000_000_000)
    broker.create_topic("orders", 1)
    broker.produce("orders", 0, 100, value_size=100)
    broker.checkpoint()
    partition = next(p for p in scan_log_dirs([broker.log_dir]).partitions if p.topic == "orders")
    store = MemoryStore()
    manifests = []
    for i, segment in enumerate(partition.segments[:3]):
        target = target_for(segment, partition, PREFIX, False, 1, f"{i + 1:016x}")
        manifests.append((target.keys, offload_segment(target, store, lambda i=i: 30 - 10 * i)))
    broker.close()
    return dict(store.objects), manifests


def fresh(uploaded):
    store = MemoryStore()
    store.objects.update(uploaded[0])
    return store


def test_a_journal_is_rebuilt_from_every_valid_manifest_with_what_it_says(uploaded, tmp_path):
    store, manifests = fresh(uploaded), uploaded[1]
    journal = Journal(tmp_path)
    count, problems = rebuild_journal(journal, store, KeyLayout(PREFIX), Clock(100))
    assert (count, problems) == (3, [])
    for keys, manifest in manifests:
        record = journal.get(segment_id(manifest))
        assert (record.state, record.uid, record.end_offset, record.size_bytes, record.remote_bytes,
                record.manifest_key, record.max_timestamp) == (
            SegmentState.UPLOADED, keys.uid, manifest.end_offset, manifest.size_bytes, manifest.total_bytes,
            keys.manifest_key, manifest.effective_max_timestamp)
    assert journal.get_meta(STORE_SYNCED) == "104"      # after the three records


def test_segment_id_and_record_uploaded_carry_the_manifests_fields(uploaded, tmp_path):
    keys, manifest = uploaded[1][1]
    assert segment_id(manifest) == SegmentId("orders", manifest.topic_id, 0, manifest.base_offset)
    journal = Journal(tmp_path)
    record_uploaded(journal, manifest, "the-key", 77)
    record = journal.get(segment_id(manifest))
    assert (record.uid, record.end_offset, record.size_bytes, record.remote_bytes, record.manifest_key,
            record.updated_at_ms) == (manifest.uid, manifest.end_offset, manifest.size_bytes,
                                      manifest.total_bytes, "the-key", 77)


def test_of_two_manifests_for_one_segment_the_older_wins_and_the_other_is_reported(uploaded, tmp_path):
    store, manifests = fresh(uploaded), uploaded[1]
    keys, manifest = manifests[2]              # created at 10: its twin (9) and it come first
    twin = SegmentKeys(keys.root, keys.base_offset, "00000000000000aa")
    for o in manifest.objects:
        store.objects[twin.object_key(o.kind)] = store.objects[o.key]
    doc = json.loads(store.objects[keys.manifest_key])
    doc.update(uid=twin.uid, created_at_ms=9)
    for o in doc["objects"]:
        o["key"] = twin.object_key(o["kind"])
    store.objects[twin.manifest_key] = json.dumps(doc).encode()
    journal = Journal(tmp_path)
    count, problems = rebuild_journal(journal, store, KeyLayout(PREFIX), Clock())
    assert count == 3
    assert [(p.key, p.reason, p.unread) for p in problems] == [
        (keys.manifest_key, f"second manifest for the segment of {twin.manifest_key}: ignored", False)]
    assert journal.get(segment_id(manifest)).uid == twin.uid
    assert all(journal.get(segment_id(m)).uid == k.uid for k, m in manifests[:2])     # the ones after it too


@pytest.mark.parametrize("how", ["missing", "size"])
def test_a_manifest_its_objects_contradict_is_reported_not_taken(uploaded, tmp_path, how):
    store, manifests = fresh(uploaded), uploaded[1]
    keys, manifest = manifests[1]
    index = keys.object_key("index")
    size = len(store.objects[index])
    if how == "missing":
        del store.objects[index]
    else:
        store.objects[index] += b"x"
    journal = Journal(tmp_path)
    count, problems = rebuild_journal(journal, store, KeyLayout(PREFIX), Clock())
    assert count == 2 and journal.get(segment_id(manifest)) is None
    reason = f"{index} is missing" if how == "missing" else f"{index} is {size + 1} bytes, the manifest says {size}"
    assert [(p.key, p.reason) for p in problems] == [(keys.manifest_key,
                                                      f"manifest does not match the store, ignored: {reason}")]


def test_an_invalid_manifest_is_a_problem_line_and_the_rest_is_imported(uploaded, tmp_path):
    store, manifests = fresh(uploaded), uploaded[1]
    keys, manifest = manifests[2]
    store.objects[keys.manifest_key] = b"{not json"
    count, problems = rebuild_journal(Journal(tmp_path), store, KeyLayout(PREFIX), Clock())
    assert count == 2
    assert len(problems) == 1 and problems[0].key == keys.manifest_key and not problems[0].unread
    assert problems[0].reason.startswith("invalid manifest, ignored: ")


@pytest.mark.parametrize("error_class", [ErrorClass.RETRYABLE, ErrorClass.NOT_FOUND])
def test_a_manifest_the_store_does_not_hand_over_stops_the_rebuild(uploaded, tmp_path, error_class):
    store, manifests = fresh(uploaded), uploaded[1]
    store.answer = fail_on("get", manifests[1][0].manifest_key, error_class)
    journal = Journal(tmp_path)
    with pytest.raises(StoreError) as raised:
        rebuild_journal(journal, store, KeyLayout(PREFIX), Clock())
    error = raised.value
    assert (error.error_class, error.operation, error.key) == (ErrorClass.RETRYABLE, "rebuild",
                                                               manifests[1][0].manifest_key)
    assert error.detail == ("1 manifest(s) could not be read (the first: 503: injected by the test); the journal "
                            "is rebuilt from the store when it answers")
    assert journal.all() == [] and journal.get_meta(STORE_SYNCED) is None


def test_a_fatal_store_answer_while_reading_manifests_is_raised(uploaded):
    store, manifests = fresh(uploaded), uploaded[1]
    store.answer = fail_on("get", "", ErrorClass.FATAL)
    with pytest.raises(StoreError) as raised:
        read_manifests(store, owned_objects(store, KeyLayout(PREFIX)))
    assert raised.value.error_class is ErrorClass.FATAL


def test_read_manifests_reads_manifests_only(uploaded):
    store, manifests = fresh(uploaded), uploaded[1]
    found, problems = read_manifests(store, owned_objects(store, KeyLayout(PREFIX)))
    assert sorted(k for k, _ in found) == sorted(k.manifest_key for k, _ in manifests) and problems == []
    assert [c for c in store.calls if c[0] == "get"] == [("get", k) for k, _ in sorted(found)]


def test_unread_problem_lines_say_so(uploaded):
    store, manifests = fresh(uploaded), uploaded[1]
    store.answer = fail_on("get", manifests[0][0].manifest_key)
    found, problems = read_manifests(store, owned_objects(store, KeyLayout(PREFIX)))
    assert len(found) == 2
    assert [(p.key, p.reason, p.unread) for p in problems] == [
        (manifests[0][0].manifest_key, "manifest could not be read: 503: injected by the test", True)]


# -- uploads a crash interrupted ----------------------------------------------------------------

def uploading(journal, keys, manifest, uid=True):
    sid = segment_id(manifest)
    journal.mark_uploading(sid, keys.uid, manifest.size_bytes, 1)
    if not uid:
        journal._write("UPDATE segments SET uid = NULL", ())
    return sid


def test_an_interrupted_upload_whose_manifest_landed_is_recorded_uploaded(uploaded, tmp_path):
    store, (keys, manifest) = fresh(uploaded), uploaded[1][0]
    journal = Journal(tmp_path)
    sid = uploading(journal, keys, manifest)
    settled = recover_interrupted(journal, store, lambda s: keys.root, Clock(10))
    assert settled == [f"{keys.stem}: upload had completed"]
    record = journal.get(sid)
    assert (record.state, record.uid, record.manifest_key, record.end_offset) == (
        SegmentState.UPLOADED, keys.uid, keys.manifest_key, manifest.end_offset)
    assert store.objects == uploaded[0]


def test_an_interrupted_upload_without_its_manifest_is_cleaned_and_failed(uploaded, tmp_path):
    store, (keys, manifest) = fresh(uploaded), uploaded[1][0]
    del store.objects[keys.manifest_key]
    other_attempt = SegmentKeys(keys.root, keys.base_offset, "00000000000000bb")
    store.uploads = [MultipartUpload(keys.object_key("log"), "u1", 0.0),
                     MultipartUpload(keys.stem + ".logx", "u2", 0.0),          # starts like ours: not ours
                     MultipartUpload(other_attempt.object_key("log"), "u3", 0.0)]
    store.objects[keys.stem + ".log.bak"] = b"not ours"
    journal = Journal(tmp_path)
    sid = uploading(journal, keys, manifest)
    settled = recover_interrupted(journal, store, lambda s: keys.root, Clock(10))
    assert settled == [f"{keys.stem}: interrupted upload cleaned up"]
    assert [u.upload_id for u in store.uploads] == ["u2", "u3"]
    assert ("list-multipart", keys.stem + ".") in store.calls
    assert [k for k in store.objects if k.startswith(keys.stem)] == [keys.stem + ".log.bak"]
    assert len(store.objects) == len(uploaded[0]) - len(manifest.objects) - 1 + 1
    record = journal.get(sid)
    assert (record.state, record.last_error, record.updated_at_ms) == (
        SegmentState.FAILED, "interrupted upload (cleaned up; retried)", 11)


def test_an_interrupted_upload_with_an_invalid_manifest_is_failed_with_its_attempt_kept(uploaded, tmp_path):
    store, (keys, manifest) = fresh(uploaded), uploaded[1][0]
    store.objects[keys.manifest_key] = b"[]"
    journal = Journal(tmp_path)
    sid = uploading(journal, keys, manifest)
    settled = recover_interrupted(journal, store, lambda s: keys.root, Clock(10))
    assert len(settled) == 1 and settled[0].startswith(f"{keys.stem}: invalid manifest (")
    assert settled[0].endswith("); the attempt is discarded and the segment uploaded again")
    record = journal.get(sid)
    assert record.state is SegmentState.FAILED and record.uid == keys.uid
    assert record.last_error.startswith(f"its manifest {keys.manifest_key} is invalid: ")
    assert store.objects[keys.manifest_key] == b"[]" and len(store.objects) == len(uploaded[0])


def test_an_upload_interrupted_before_it_had_an_id_is_failed_without_a_store_call(uploaded, tmp_path):
    store, (keys, manifest) = fresh(uploaded), uploaded[1][0]
    journal = Journal(tmp_path)
    sid = uploading(journal, keys, manifest, uid=False)
    assert recover_interrupted(journal, store, lambda s: keys.root, Clock(10)) == []
    record = journal.get(sid)
    assert (record.state, record.last_error) == (SegmentState.FAILED, "interrupted before upload")
    assert store.calls == []


def test_every_uploading_row_is_settled_and_others_are_left(uploaded, tmp_path):
    store, manifests = fresh(uploaded), uploaded[1]
    journal = Journal(tmp_path)
    for keys, manifest in manifests[:2]:
        uploading(journal, keys, manifest)
    keys, manifest = manifests[2]
    journal.mark_uploaded(segment_id(manifest), keys.uid, manifest.end_offset, manifest.size_bytes, 1, "k", 1)
    settled = recover_interrupted(journal, store, lambda s: manifests[0][0].root, Clock(10))
    assert settled == [f"{k.stem}: upload had completed" for k, _ in manifests[:2]]
    assert journal.get(segment_id(manifest)).manifest_key == "k"


def test_each_row_is_settled_under_its_own_root_after_rows_failed_without_a_store_answer(uploaded, tmp_path):
    store, manifests = fresh(uploaded), uploaded[1]
    journal = Journal(tmp_path)
    (k0, m0), (k1, m1), (k2, m2) = manifests
    # Rows are taken in base offset order: [0] had no id yet, [1] has an invalid manifest, [2] landed.
    uploading(journal, k0, m0)
    journal._write("UPDATE segments SET uid = NULL WHERE base_offset = ?", (m0.base_offset,))
    uploading(journal, k1, m1)
    store.objects[k1.manifest_key] = b"[]"
    uploading(journal, k2, m2)
    roots = {segment_id(m): k.root for k, m in manifests}
    asked = []

    def root_of(sid):
        asked.append(sid)
        return roots[sid]
    settled = recover_interrupted(journal, store, root_of, Clock(10))
    assert asked == [segment_id(m1), segment_id(m2)]
    assert len(settled) == 2 and settled[0].startswith(f"{k1.stem}: invalid manifest (")
    assert settled[1] == f"{k2.stem}: upload had completed"
    assert journal.get(segment_id(m2)).state is SegmentState.UPLOADED
