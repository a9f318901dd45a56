"""Kafka as the source of truth: timestamps, sizes, KRaft dirs and producer snapshots as the
broker itself sees them (each rule checked against what Kafka's source does)."""

from __future__ import annotations

import json
import os
import struct
from dataclasses import replace

import pytest

from tests.unit.test_manifest_keys import keys, manifest
from tiering.store.manifest import ManifestError, parse_manifest


def test_the_manifest_keeps_the_effective_timestamp_and_says_where_it_came_from():
    mtime = replace(manifest(), max_timestamp=1_700_000_000_000, max_timestamp_source="file-mtime")
    parsed = parse_manifest(mtime.to_json(), keys().manifest_key)
    assert parsed == mtime and parsed.effective_max_timestamp == 1_700_000_000_000
    assert json.loads(mtime.to_json())["format_version"] == 1   # an added field; older readers ignore it


def test_a_manifest_from_before_the_mtime_fallback_goes_by_its_upload_time():
    document = json.loads(replace(manifest(), max_timestamp=-1).to_json())
    del document["max_timestamp_source"]
    old = parse_manifest(json.dumps(document).encode(), keys().manifest_key)
    assert old.max_timestamp_source == "records"
    assert old.effective_max_timestamp == old.created_at_ms     # never -1: that expired at once


def test_an_unknown_timestamp_source_is_rejected():
    document = json.loads(manifest().to_json())
    document["max_timestamp_source"] = "guess"
    with pytest.raises(ManifestError, match="max_timestamp_source"):
        parse_manifest(json.dumps(document).encode(), keys().manifest_key)


# -- sizes as Kafka counts them (log.preallocate) ---------------------------------------------

from tiering.kafka.logdir import scan_log_dirs  # noqa: E402
from tiering.kafka.validbytes import valid_bytes  # noqa: E402
from tiering.simulate import SimulatedBroker  # noqa: E402


def _active(log_dir):
    return scan_log_dirs([log_dir]).partitions[0].segments[-1]


@pytest.mark.parametrize("records", [1, 3, 200])
def test_a_preallocated_active_segment_counts_only_its_whole_batches(tmp_path, records):
    broker = SimulatedBroker(tmp_path / "logs", segment_bytes=1 << 30, index_interval_bytes=4096, seed=3)
    broker.create_topic("t", 1)
    broker.produce("t", 0, records, value_size=120, batch_records=2)
    active = _active(tmp_path / "logs")
    written = active.size
    # What log.preallocate leaves: the file (and its offset index) segment.bytes long, zeros after the data.
    os.truncate(active.log_path, 1 << 20)
    for kind, path in active.index_paths:
        if kind == "index":
            os.truncate(path, 1 << 16)
    padded = _active(tmp_path / "logs")
    assert padded.size == 1 << 20
    assert valid_bytes(padded) == written
    broker.close()


def test_a_stale_index_entry_makes_the_walk_start_at_the_front(tmp_path):
    broker = SimulatedBroker(tmp_path / "logs", segment_bytes=1 << 30, index_interval_bytes=512, seed=3)
    broker.create_topic("t", 1)
    broker.produce("t", 0, 50, value_size=120, batch_records=2)
    active = _active(tmp_path / "logs")
    written = active.size
    index = dict(active.index_paths)["index"]
    with open(index, "r+b") as f:        # the last entry now points into the middle of a batch
        f.seek(-4, os.SEEK_END)
        f.write(struct.pack(">i", written // 2 + 3))
    os.truncate(active.log_path, written + 4096)
    assert valid_bytes(_active(tmp_path / "logs")) == written
    broker.close()


def test_a_partly_written_last_batch_is_not_counted(tmp_path):
    broker = SimulatedBroker(tmp_path / "logs", segment_bytes=1 << 30, seed=3)
    broker.create_topic("t", 1)
    broker.produce("t", 0, 4, value_size=120, batch_records=2)
    active = _active(tmp_path / "logs")
    written = active.size
    with open(active.log_path, "ab") as f:
        f.write(open(active.log_path, "rb").read()[:30])   # the front of a batch header, no body
    assert valid_bytes(_active(tmp_path / "logs")) == written
    broker.close()


# -- KRaft's metadata log --------------------------------------------------------------------

def test_a_kraft_metadata_dir_is_ignored_silently(tmp_path):
    broker = SimulatedBroker(tmp_path / "logs", seed=3)
    broker.create_topic("orders", 1)
    broker.produce("orders", 0, 10)
    metadata = tmp_path / "logs" / "__cluster_metadata-0"
    metadata.mkdir()
    for name in ("quorum-state", "00000000000000000000.log", "00000000000000000000.index",
                 "00000000000000000000.timeindex", "00000000000000004123-0000000002.checkpoint",
                 "leader-epoch-checkpoint", "partition.metadata"):
        (metadata / name).write_bytes(b"{}")
    (tmp_path / "logs" / "bootstrap.checkpoint").write_bytes(b"x")
    scan = scan_log_dirs([tmp_path / "logs"])
    assert scan.anomalies == ()
    assert [p.topic for p in scan.partitions] == ["orders"]
    broker.close()
