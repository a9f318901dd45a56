"""Issue 22 on a real broker: Kafka is the source of truth for compaction, retention and
timestamps; KRaft's metadata dir is the broker's. The broker runs with its log cleaner
disabled, so a compacted topic is never in cleaner-offset-checkpoint (as a new one, or one
whose cleaner died)."""

from __future__ import annotations

import time

import pytest

from tests.conftest import events, run_cli
from tests.realkafka.clients import create_topic, list_offsets, produce_kafka_python
from tests.realkafka.conftest import start_broker
from tests.realkafka.offload import (checkpoint, remote_manifests, rolled_segments, segment_bases,
                                     wait_for_high_watermark, wait_until)

pytestmark = [pytest.mark.realkafka, pytest.mark.integration]


@pytest.fixture(scope="module")
def kafka_broker(tmp_path_factory, kafka_libs):
    broker = start_broker(tmp_path_factory.mktemp("broker"), kafka_libs, extra_props={"log.cleaner.enable": "false"})
    yield broker
    broker.stop()


def config_for(kenv, broker, topics: list[str], retention: str = "", bootstrap: bool = True):
    kafka = f'include = {topics!r}\n'.replace("'", '"')
    if bootstrap:
        kafka += f'bootstrap_servers = "{broker.bootstrap}"\n'
    return kenv.write_config(kafka + retention)


def fill(broker, topic: str, count: int = 300, **configs: str) -> list[int]:
    create_topic(broker.bootstrap, topic, segment_bytes=8 * 1024, **configs)
    produce_kafka_python(broker.bootstrap, topic, count, value_size=200)
    wait_for_high_watermark(broker.log_dir, topic, 0, count)
    rolled = rolled_segments(broker.log_dir, topic, 0)
    assert len(rolled) >= 3
    return rolled


def test_an_uncleaned_compacted_topic_is_never_tiered(kafka_broker, kenv, s3):
    fill(kafka_broker, "uncleaned", cleanup_policy="compact")
    fill(kafka_broker, "both", cleanup_policy="compact,delete")
    rolled = fill(kafka_broker, "plain")
    assert ("uncleaned", 0) not in checkpoint(kafka_broker.log_dir / "cleaner-offset-checkpoint")
    config = config_for(kenv, kafka_broker, ["uncleaned", "both", "plain"],
                        '\n[retention]\nlocal_delete = "off"\n')
    result = run_cli("run", "--once", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert remote_manifests(s3, "uncleaned") == {} and remote_manifests(s3, "both") == {}
    assert sorted(m["base_offset"] for m in remote_manifests(s3, "plain").values()) == rolled
    status = run_cli("status", "--config", str(config), "--json")
    import json
    rows = {r["topic"]: r for r in json.loads(status.stdout)["partitions"]}
    assert "cleanup.policy=compact " in rows["uncleaned"]["not_tiered"][0]["reason"]
    assert "cleanup.policy=compact,delete" in rows["both"]["not_tiered"][0]["reason"]


def test_retention_ms_minus_one_set_in_kafka_keeps_the_store_copies_past_the_toml_default(kafka_broker, kenv, s3):
    kept = fill(kafka_broker, "forever", retention_ms="-1")
    gone = fill(kafka_broker, "bytoml")
    # The sidecar's own default: 2 s. Kafka states -1 for "forever" only.
    config = config_for(kenv, kafka_broker, ["forever", "bytoml"],
                        '\n[retention]\nretention_ms = "2s"\nlocal_delete = "off"\n')
    first = run_cli("run", "--once", "--config", str(config))
    assert first.returncode == 0, first.stderr
    time.sleep(2.5)
    second = run_cli("run", "--once", "--config", str(config))
    assert second.returncode == 0, second.stderr
    assert sorted(m["base_offset"] for m in remote_manifests(s3, "forever").values()) == kept
    assert remote_manifests(s3, "bytoml") == {}
    expired = {(e["topic"], e["reason"]) for e in events(first.stdout + second.stdout)
               if e["event"] == "segment deleted from the store"}
    assert expired == {("bytoml", "total-time")}
    assert gone


def test_local_retention_ms_set_on_the_topic_drives_local_deletion(kafka_broker, kenv, s3):
    rolled = fill(kafka_broker, "shortlocal", local_retention_ms="1000")
    fill(kafka_broker, "longlocal")
    bases = segment_bases(kafka_broker.log_dir, "shortlocal", 0)
    config = config_for(kenv, kafka_broker, ["shortlocal", "longlocal"],
                        '\n[retention]\nlocal_delete = "kafka-admin"\n')
    first = run_cli("run", "--once", "--config", str(config))
    assert first.returncode == 0, first.stderr
    time.sleep(1.5)
    second = run_cli("run", "--once", "--config", str(config))
    assert second.returncode == 0, second.stderr
    asked = {(e["topic"], e["reason"]) for e in events(first.stdout + second.stdout)
             if e["event"] == "broker asked to delete segment (DeleteRecords)"}
    assert asked == {("shortlocal", "local-time")}
    # Kafka moved the log start to the first segment kept (every rolled one went); the store holds them all.
    assert list_offsets(kafka_broker.bootstrap, "shortlocal")[0] == bases[len(rolled)]
    assert list_offsets(kafka_broker.bootstrap, "longlocal")[0] == 0
    assert sorted(m["base_offset"] for m in remote_manifests(s3, "shortlocal").values()) == rolled


def test_a_kraft_brokers_metadata_log_dir_gives_run_once_exit_0(kafka_broker, kenv, s3):
    metadata = kafka_broker.metadata_dir
    assert (metadata / "__cluster_metadata-0" / "quorum-state").exists()
    wait_until(lambda: list((metadata / "__cluster_metadata-0").glob("*.checkpoint")) or True, 1, "")
    config = kenv.write_config(f'include = ["none"]\n').read_text().replace(
        f'log_dirs = ["{kenv.log_dir}"]', f'log_dirs = ["{metadata}", "{kenv.log_dir}"]')
    path = kenv.root / "kraft.toml"
    path.write_text(config)
    result = run_cli("run", "--once", "--config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert not [e for e in events(result.stdout) if e["event"] == "log dir entry skipped"]


def test_a_segment_of_timestampless_batches_survives_until_its_mtime_says_otherwise(kafka_broker, kenv, s3):
    """Records sent with no timestamp (-1, what Kafka up-converts old produce requests to):
    the batches' max timestamp is -1; retention goes by the file's mtime, in both tiers."""
    from kafka import KafkaProducer
    create_topic(kafka_broker.bootstrap, "legacy", segment_bytes=8 * 1024)
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all", linger_ms=5, batch_size=4096)
    for i in range(300):
        producer.send("legacy", key=f"k{i}".encode(), value=b"v" * 200, partition=0, timestamp_ms=-1)
    producer.flush()
    producer.close()
    wait_for_high_watermark(kafka_broker.log_dir, "legacy", 0, 300)
    rolled = rolled_segments(kafka_broker.log_dir, "legacy", 0)
    assert len(rolled) >= 3
    # The oldest segment last written two hours ago (by its mtime, all Kafka has to go by).
    import os
    old = int(time.time()) - 7200
    os.utime(kafka_broker.log_dir / "legacy-0" / f"{rolled[0]:020d}.log", (old, old))
    config = config_for(kenv, kafka_broker, ["legacy"], '\n[retention]\nretention_ms = "1h"\nlocal_delete = "off"\n')
    result = run_cli("run", "--once", "--config", str(config))
    assert result.returncode == 0, result.stderr
    manifests = remote_manifests(s3, "legacy")
    # Kept: written a moment ago. Before issue 22's fix every one was deleted in the same pass.
    assert sorted(m["base_offset"] for m in manifests.values()) == rolled[1:]
    assert [(e["base_offset"], e["reason"]) for e in events(result.stdout)
            if e["event"] == "segment deleted from the store"] == [(rolled[0], "total-time")]
    assert {m["max_timestamp_source"] for m in manifests.values()} == {"file-mtime"}
    assert all(abs(m["max_timestamp"] - time.time() * 1000) < 600_000 for m in manifests.values())


def test_remote_storage_enable_stated_for_a_topic_keeps_it_out_and_kafka_refuses_true_without_tiered_storage(
        kafka_broker, kenv, s3):
    from kafka.errors import InvalidConfigurationError
    with pytest.raises(InvalidConfigurationError, match="Tiered Storage functionality is disabled in the broker"):
        create_topic(kafka_broker.bootstrap, "rson", remote_storage_enable="true")
    fill(kafka_broker, "rsoff", remote_storage_enable="false")
    rolled = fill(kafka_broker, "rsdefault")
    config = config_for(kenv, kafka_broker, ["rsoff", "rsdefault"], '\n[retention]\nlocal_delete = "off"\n')
    result = run_cli("run", "--once", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert remote_manifests(s3, "rsoff") == {}
    assert sorted(m["base_offset"] for m in remote_manifests(s3, "rsdefault").values()) == rolled
    import json
    rows = {r["topic"]: r for r in json.loads(run_cli("status", "--config", str(config), "--json").stdout)["partitions"]}
    assert rows["rsoff"]["not_tiered"][0]["reason"].startswith("remote.storage.enable=false (DYNAMIC_TOPIC_CONFIG)")
    assert rows["rsoff"]["retention_config"]["remote_storage_enable"] == {"value": "false",
                                                                          "source": "kafka:DYNAMIC_TOPIC_CONFIG"}
    assert rows["rsdefault"]["retention_config"]["remote_storage_enable"] == {"value": "false",
                                                                              "source": "kafka:DEFAULT_CONFIG"}
    assert not any("remote.storage" in skipped["reason"] for skipped in rows["rsdefault"]["not_tiered"])


def test_delete_remote_keeps_the_store_copies_until_the_cluster_confirms_the_restored_log_start(kafka_broker, kenv, s3):
    """Last in this module: it stops and restarts the shared broker."""
    from tests.realkafka.clients import consume_kafka_python, wait_for_leader
    bootstrap = kafka_broker.bootstrap
    rolled = fill(kafka_broker, "rb", local_retention_ms="1000")
    config = config_for(kenv, kafka_broker, ["rb"], '\n[retention]\nlocal_delete = "kafka-admin"\n')
    assert run_cli("run", "--once", "--config", str(config)).returncode == 0
    time.sleep(1.5)
    assert run_cli("run", "--once", "--config", str(config)).returncode == 0
    wait_until(lambda: segment_bases(kafka_broker.log_dir, "rb", 0)[0] > 0, 30, "the broker to delete below its log start")
    stored = remote_manifests(s3, "rb")
    assert sorted(m["base_offset"] for m in stored.values()) == rolled

    kafka_broker.stop()
    restore = run_cli("rollback", "--config", str(config), "--topic", "rb", "--confirm", "--delete-remote")
    assert restore.returncode == 0, restore.stdout + restore.stderr
    assert "kept until the running cluster confirms log start 0" in restore.stderr
    assert remote_manifests(s3, "rb") == stored                       # nothing deleted by the restoring command
    kafka_broker.start()
    wait_for_leader(bootstrap, "rb", 1)
    confirmed = run_cli("rollback", "--config", str(config), "--topic", "rb", "--confirm", "--delete-remote")
    assert confirmed.returncode == 0, confirmed.stdout + confirmed.stderr
    assert remote_manifests(s3, "rb") == {}
    assert [e for e in events(confirmed.stdout) if e["event"] == "store copies removed"]
    assert [r.offset for r in consume_kafka_python(bootstrap, "rb")][:1] == [0]
    assert len(consume_kafka_python(bootstrap, "rb")) == 300
