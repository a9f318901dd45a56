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
from tiering.kafka.validbytes import ValidBytes, valid_bytes  # noqa: E402
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


def _preallocated(tmp_path, records: int):
    """A broker with log.preallocate's active segment (1 MiB of file, zeros after the data)."""
    broker = SimulatedBroker(tmp_path / "logs", segment_bytes=1 << 30, index_interval_bytes=4096, seed=3)
    broker.create_topic("t", 1)
    broker.produce("t", 0, records, value_size=120, batch_records=2)
    written = _active(tmp_path / "logs").size
    os.truncate(_active(tmp_path / "logs").log_path, 1 << 20)
    return broker, written


def _append_in_place(path, data: bytes, at: int) -> None:
    """What a preallocating broker's append is: a write inside the file, its size unchanged."""
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(data)


def _zeroed_behind_its_back(path, length: int) -> None:
    """The file's first bytes zeroed (no batch left), its size and mtime put back."""
    before = os.stat(path)
    _append_in_place(path, bytes(length), 0)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_an_active_segment_that_is_gone_before_it_is_read_counts_nothing(tmp_path):
    # Its listed size may be a whole preallocated segment.bytes: counting that could make a
    # size rule delete a segment early; counting 0 can only keep one longer.
    broker, _ = _preallocated(tmp_path, 10)
    listed = _active(tmp_path / "logs")
    os.unlink(listed.log_path)
    assert listed.size == 1 << 20
    assert valid_bytes(listed) == 0 and ValidBytes()(listed) == 0
    broker.close()


@pytest.mark.parametrize("kind", ["fifo", "link"])
def test_an_active_segment_swapped_for_a_fifo_or_a_link_is_not_opened_and_counts_nothing(tmp_path, kind):
    # Between the scan and the pass the name could become a FIFO (opening it for reading
    # would block the retention thread for good) or a link to some other file.
    broker, _ = _preallocated(tmp_path, 10)
    listed = _active(tmp_path / "logs")
    other = tmp_path / "elsewhere.log"
    os.replace(listed.log_path, other)         # the same batches, now under another name
    if kind == "fifo":
        os.mkfifo(listed.log_path)
    else:
        os.symlink(other, listed.log_path)
    assert valid_bytes(listed) == 0 and ValidBytes()(listed) == 0
    broker.close()


def test_remembered_sizes_follow_appends_truncation_and_a_new_file(tmp_path):
    broker, written = _preallocated(tmp_path, 10)
    sizes = ValidBytes()
    active = _active(tmp_path / "logs")
    assert sizes(active) == written
    whole = open(active.log_path, "rb").read(written)
    first_batch = struct.unpack_from(">i", whole, 8)[0] + 12
    # An append (here: the first batch again, a valid batch at the end): counted at the next ask.
    _append_in_place(active.log_path, whole[:first_batch], written)
    assert sizes(active) == written + first_batch == valid_bytes(active)
    # A follower's truncation back to the first batch (the tail zeroed, as preallocated).
    _append_in_place(active.log_path, bytes(written), first_batch)
    assert sizes(active) == first_batch == valid_bytes(active)
    # A new file under the same name and size (a topic deleted and created again): its own size.
    os.unlink(active.log_path)
    with open(active.log_path, "wb") as f:
        f.write(whole)
        f.truncate(1 << 20)
    assert sizes(active) == written == valid_bytes(active)
    broker.close()


def test_a_file_whose_stamp_did_not_move_is_not_read_again(tmp_path):
    # The whole point of remembering: an idle partition's active segment is not walked at each
    # pass. Shown by changing the bytes behind its back with size and mtime put back: the
    # remembered answer stays, and a fresh walk sees the change.
    broker, written = _preallocated(tmp_path, 10)
    sizes = ValidBytes()
    active = _active(tmp_path / "logs")
    assert sizes(active) == written
    _zeroed_behind_its_back(active.log_path, written)
    assert sizes(active) == written and valid_bytes(active) == 0
    broker.close()


def test_sizes_not_asked_for_in_a_pass_are_forgotten(tmp_path):
    broker, written = _preallocated(tmp_path, 10)
    sizes = ValidBytes()
    active = _active(tmp_path / "logs")
    sizes(active)
    sizes.forget_unused()                     # asked in this pass: kept
    _zeroed_behind_its_back(active.log_path, written)
    assert sizes(active) == written           # still the remembered answer
    sizes.forget_unused()
    sizes.forget_unused()                     # a pass that did not ask: forgotten
    assert sizes(active) == 0                 # read afresh
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


# -- topic configs from Kafka ----------------------------------------------------------------

from pathlib import Path  # noqa: E402
from types import MappingProxyType  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.unit.test_retention_plan import NOW, partitions  # noqa: E402
from tiering.config import parse_config  # noqa: E402
from tiering.kafka.checkpoints import TopicPartition  # noqa: E402
from tiering.kafka.logdir import LogDirState  # noqa: E402
from tiering.kafka.topicconfig import TopicConfig, TopicConfigs, effective_retention  # noqa: E402
from tiering.retention.plan import PartitionInput, plan_retention  # noqa: E402

TOML = """
[kafka]
log_dirs = ["/var/lib/kafka"]
bootstrap_servers = "127.0.0.1:9092"
[store]
bucket = "b"
[retention]
local_retention_ms = "1h"
[topics."orders"]
retention_ms = "3d"
"""


def _config():
    import tomllib
    return parse_config(tomllib.loads(TOML), base_dir=Path("/etc/tiering"))


def _kafka(topic: str, **entries) -> TopicConfigs:
    return TopicConfigs(True, MappingProxyType({topic: TopicConfig(MappingProxyType(
        {name.replace("_", "."): value for name, value in entries.items()}))}))


def test_a_value_the_cluster_states_wins_and_kafkas_builtin_default_leaves_the_toml():
    configs = _kafka("orders", cleanup_policy=("delete", "DEFAULT_CONFIG"),
                     retention_ms=("-1", "DYNAMIC_TOPIC_CONFIG"), retention_bytes=("-1", "DEFAULT_CONFIG"),
                     local_retention_ms=("-2", "DEFAULT_CONFIG"), local_retention_bytes=("1000", "STATIC_BROKER_CONFIG"))
    r = effective_retention(_config(), "orders", configs)
    assert (r.retention_ms, r.sources["retention_ms"]) == (-1, "kafka:DYNAMIC_TOPIC_CONFIG")
    assert (r.local_retention_ms, r.sources["local_retention_ms"]) == (3_600_000, "toml:retention")
    assert (r.local_retention_bytes, r.sources["local_retention_bytes"]) == (1000, "kafka:STATIC_BROKER_CONFIG")
    assert r.sources["retention_bytes"] == "default" and r.hold is None


def test_the_toml_alone_without_bootstrap_servers_and_a_never_seen_topic_is_held():
    r = effective_retention(_config(), "orders", TopicConfigs())
    assert (r.retention_ms, r.sources["retention_ms"]) == (3 * 86_400_000, 'toml:topics."orders"') and r.hold is None
    held = effective_retention(_config(), "orders", TopicConfigs(True))
    assert held.hold and "not read from Kafka" in held.hold


def test_a_local_limit_above_the_total_one_takes_the_total_value():
    configs = _kafka("orders", cleanup_policy=("delete", "DEFAULT_CONFIG"), retention_ms=("600000", "DYNAMIC_TOPIC_CONFIG"))
    r = effective_retention(_config(), "orders", configs)     # TOML local 1 h > Kafka's total 10 min
    assert r.local_retention_ms == -2 and "above retention_ms" in r.sources["local_retention_ms"]


@pytest.mark.parametrize("policy,tiered", [("delete", True), ("compact", False), ("compact,delete", False),
                                           ("delete, compact", False)])
def test_compacted_means_cleanup_policy_contains_compact(policy, tiered):
    configs = _kafka("t", cleanup_policy=(policy, "DYNAMIC_TOPIC_CONFIG"))
    reason = configs.not_tiered_reason(TopicPartition("t", 0), LogDirState(Path("/x")))
    assert (reason is None) is tiered


def test_the_cleaner_checkpoint_is_the_fallback_only_without_bootstrap_servers():
    cleaned = LogDirState(Path("/x"), compacted=frozenset({TopicPartition("t", 0)}))
    assert "cleaner-offset-checkpoint" in TopicConfigs().not_tiered_reason(TopicPartition("t", 0), cleaned)
    assert TopicConfigs().not_tiered_reason(TopicPartition("u", 0), cleaned) is None
    # With bootstrap servers, Kafka's word: a delete topic listed there (cleaned once) is tiered,
    # a topic never described is not.
    assert _kafka("t", cleanup_policy=("delete", "DEFAULT_CONFIG")).not_tiered_reason(TopicPartition("t", 0), cleaned) is None
    assert "not read from Kafka" in TopicConfigs(True).not_tiered_reason(TopicPartition("u", 0), cleaned)


def test_configs_kept_in_the_journal_read_back_the_same_and_garbage_reads_as_nothing_seen():
    configs = _kafka("orders", cleanup_policy=("delete", "DEFAULT_CONFIG"), retention_ms=("-1", "DYNAMIC_TOPIC_CONFIG"))
    configs = TopicConfigs(True, configs.topics, 123)
    again = TopicConfigs.from_json(configs.to_json())
    assert dict(again.topics["orders"].entries) == dict(configs.topics["orders"].entries) and again.read_at_ms == 123
    assert TopicConfigs.from_json("{not json").topics == {}


# Generating a partition is slow under tracing (mutmut's first pass, coverage): the check on
# generation speed says nothing about the rule under test.
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(partitions(), st.text(min_size=1, max_size=30))
def test_a_held_topic_loses_nothing_in_either_tier(partition, reason):
    held = PartitionInput(partition.local, partition.remote, partition.limits, local_hold=reason, remote_hold=reason)
    plan = plan_retention(held, NOW)
    assert plan.local == () and plan.remote == ()
    if partition.remote:
        assert plan.remote_waiting == reason


# -- rollback: --delete-remote waits for the cluster -------------------------------------------

from tiering.rollback import confirm  # noqa: E402


@settings(max_examples=300)
@given(st.integers(0, 10_000), st.one_of(st.none(), st.integers(0, 10_000)), st.one_of(st.none(), st.integers(0, 10_000)))
def test_store_copies_go_only_when_the_cluster_and_this_replica_both_hold_the_restored_log_start(first, earliest, local):
    pending = confirm.PendingDeletion("orders", "id", 0, first, 1)
    decision = confirm.decide(pending, earliest, local)
    if decision.action == confirm.DELETE:
        assert earliest == first and (local is None or local == first)
    if (earliest is not None and earliest > first) or (local is not None and local > first):
        assert decision.action == confirm.UNDONE and "undone" in decision.reason and "kept" in decision.reason
    if earliest is None and not (local is not None and local > first):
        assert decision.action == confirm.WAIT


def test_pending_deletions_round_trip_through_the_journal_text():
    pending = {"orders-0": confirm.PendingDeletion("orders", "id", 0, 0, 5)}
    assert confirm.load(confirm.dump(pending)) == pending
    assert confirm.load("[1, 2]") == {} and confirm.load(None) == {}


@pytest.mark.parametrize("entry,tiered,says", [
    (("false", "DEFAULT_CONFIG"), True, None),                       # Kafka's built-in default: says nothing
    (None, True, None),                                              # an older broker: no such config
    (("false", "DYNAMIC_TOPIC_CONFIG"), False, "remote.storage.enable=false (DYNAMIC_TOPIC_CONFIG): tiering is "
                                                "turned off for this topic in Kafka"),
    (("TRUE", "DYNAMIC_TOPIC_CONFIG"), False, "remote.storage.enable=true (DYNAMIC_TOPIC_CONFIG): Kafka's own "
                                              "tiered storage (KIP-405) holds this topic"),
    (("yes", "DYNAMIC_TOPIC_CONFIG"), True, None),                   # not a boolean Kafka would accept: ignored
])
def test_remote_storage_enable_stated_for_the_topic_keeps_it_out_of_tiering(entry, tiered, says):
    entries = {"cleanup_policy": ("delete", "DEFAULT_CONFIG")}
    if entry is not None:
        entries["remote_storage_enable"] = entry
    configs = _kafka("t", **entries)
    reason = configs.not_tiered_reason(TopicPartition("t", 0), LogDirState(Path("/x")))
    assert (reason is None) is tiered
    if says:
        assert reason.startswith(says)


def test_status_shows_remote_storage_enable_as_kafka_described_it_and_nothing_without_kafka():
    configs = _kafka("orders", cleanup_policy=("delete", "DEFAULT_CONFIG"),
                     remote_storage_enable=("false", "DYNAMIC_TOPIC_CONFIG"))
    shown = effective_retention(_config(), "orders", configs).to_json()
    assert shown["remote_storage_enable"] == {"value": "false", "source": "kafka:DYNAMIC_TOPIC_CONFIG"}
    assert "remote_storage_enable" not in effective_retention(_config(), "orders", TopicConfigs()).to_json()
