"""The endpoint's partition source on a real broker's partition: its first segments only in the
store (offloaded, then deleted by the broker itself through DeleteRecords), the next ones rolled
on local disk, the end in the active segment the broker is writing. Consecutive fetches from
offset 0 return records that kafka-python decodes to exactly what real producers sent, each
once; read_committed keeps exactly the committed transactions; the high watermark is the
broker's own (ListOffsets), not the checkpoint's."""

from __future__ import annotations

import time

import pytest
from kafka.record import MemoryRecords

from tests.conftest import events, run_cli
from tests.realkafka.clients import create_topic, list_offsets, produce_kafka_python, produce_transactions
from tests.realkafka.offload import segment_bases, wait_for_high_watermark, wait_until
from tiering.config import load_config
from tiering.kafka.batches import HEADER_SIZE, parse_header
from tiering.serve.source import PartitionSource

pytestmark = [pytest.mark.realkafka, pytest.mark.integration]


def fetch_all(source, topic: str, read_committed: bool) -> tuple[bytes, list[str], list]:
    out, tiers, aborted, offset = [], [], [], 0
    while True:
        result = source.fetch(topic, 0, offset, 64 * 1024, read_committed)
        assert result.error == 0, result
        if not result.records:
            return b"".join(out), tiers, aborted
        out.append(result.records)
        tiers.append(result.tier)
        aborted += [a for a in result.aborted if a not in aborted]
        position = 0
        while position < len(result.records):
            header = parse_header(result.records[position:position + HEADER_SIZE])
            position += header.size
        offset = header.last_offset + 1


def decoded(data: bytes, aborted=()) -> list[tuple]:
    """kafka-python's records, with Kafka's consumer's read_committed rule given the aborted list."""
    pending = sorted((a.first_offset, a.producer_id) for a in aborted)
    aborting: set[int] = set()
    out = []
    batches = MemoryRecords(data)
    while (batch := batches.next_batch()) is not None:
        assert batch.validate_crc()
        records = list(batch)
        while pending and pending[0][0] <= records[-1].offset:
            aborting.add(pending.pop(0)[1])
        if batch.is_control_batch:
            aborting.discard(batch.producer_id)
            continue
        if batch.is_transactional and batch.producer_id in aborting:
            continue
        out += [(r.offset, r.key, r.value, tuple((k, bytes(v)) for k, v in r.headers), r.timestamp) for r in records]
    return out


def test_the_source_serves_a_real_partition_from_the_store_local_segments_and_the_active_one(kafka_broker, kenv, s3):
    bootstrap, log_dir = kafka_broker.bootstrap, kafka_broker.log_dir
    create_topic(bootstrap, "srv")
    create_topic(bootstrap, "srvtx")
    sent = produce_kafka_python(bootstrap, "srv", 500, codec="lz4")
    committed, every = produce_transactions(bootstrap, "srvtx", [True, False, True, True, False, True] * 2, 30,
                                            txn_id="srvtx-1")
    wait_for_high_watermark(log_dir, "srv", 0, 500)
    wait_for_high_watermark(log_dir, "srvtx", 0, len(every) + 12)
    time.sleep(1.5)    # one more HW checkpoint: the last roll is below it too
    config_path = kenv.write_config(f'include = ["srv", "srvtx"]\nbootstrap_servers = "{bootstrap}"\n\n'
                                    '[retention]\nlocal_delete = "kafka-admin"\nlocal_retention_bytes = 1\n')
    result = run_cli("run", "--once", "--config", str(config_path))
    assert result.returncode == 0, result.stdout + result.stderr
    asked = [e for e in events(result.stdout) if e["event"] == "broker asked to delete segment (DeleteRecords)"]
    starts = {t: max(e["log_start_offset"] for e in asked if e["topic"] == t) for t in ("srv", "srvtx")}
    for topic, start in starts.items():
        wait_until(lambda: segment_bases(log_dir, topic, 0)[0] == start, 30, f"the broker to delete {topic}'s old segments")
    # More records after the offload: rolled local segments nobody uploaded, and the active one.
    sent += produce_kafka_python(bootstrap, "srv", 300, codec="zstd", start=500)
    more_committed, more_every = produce_transactions(bootstrap, "srvtx", [False, True, True], 30, txn_id="srvtx-1",
                                                      start=len(every))
    committed += more_committed
    assert len(segment_bases(log_dir, "srv", 0)) >= 3

    source = PartitionSource.from_config(load_config(config_path))
    try:
        # The live end is the broker's own high watermark (ListOffsets), not the checkpoint's.
        assert source.high_watermarks.latest("srv", 0) == 800 and source.high_watermarks.error is None
        assert source.high_watermarks.latest("nosuchtopic", 0) is None
        assert "UnknownTopicOrPartition" in source.high_watermarks.error
        assert source.high_watermarks.latest("srv", 0) == 800      # one partition's error blocks no other
        assert source.state("srv", 0).log_start_offset == 0
        assert source.state("srv", 0).high_watermark == list_offsets(bootstrap, "srv")[1] == 800
        data, tiers, aborted = fetch_all(source, "srv", read_committed=False)
        assert aborted == []
        assert [t for i, t in enumerate(tiers) if i == 0 or tiers[i - 1] != t] == ["store", "local", "active"]
        assert decoded(data) == [(i, k, v, h, ts) for i, (k, v, h, ts) in enumerate(sent)]

        data, tiers, aborted = fetch_all(source, "srvtx", read_committed=True)
        assert {"store", "active"} <= set(tiers)
        assert len(aborted) == 5            # four offloaded, one written after
        assert [r[1:] for r in decoded(data, aborted)] == committed
        # By timestamp: the producers' timestamps rise by 1 ms per record, in every tier.
        for i in (0, 1, 250, 499, 500, 650, 799):
            assert source.offset_for_timestamp("srv", 0, sent[i][3]) == (i, sent[i][3])
        assert source.offset_for_timestamp("srv", 0, sent[-1][3] + 1) is None
    finally:
        source.close()
