"""Local retention through the real broker (`local_delete = "kafka-admin"`): the broker takes
DeleteRecords, moves its log start and deletes its own files; nothing not yet in the store is
ever asked for; `tiering cat` from offset 0 then returns exactly what was produced, across the
store and the local disk, at both isolation levels."""

from __future__ import annotations

import base64
import json
import time

import pytest

from tests.conftest import events, run_cli
from tests.realkafka.clients import create_topic, list_offsets, produce_kafka_python, produce_transactions
from tests.realkafka.offload import (checkpoint, remote_manifests, rolled_segments, segment_bases,
                                     wait_for_high_watermark, wait_until)

pytestmark = [pytest.mark.realkafka, pytest.mark.integration]


def cat(config, topic: str, isolation: str) -> list[tuple]:
    result = run_cli("cat", "--config", str(config), topic, "0", "--from-offset", "0", "--isolation", isolation)
    assert result.returncode == 0, result.stderr
    out = []
    for line in result.stdout.splitlines():
        r = json.loads(line)
        b = lambda v: None if v is None else base64.b64decode(v)   # noqa: E731
        out.append((r["offset"], b(r["key"]), b(r["value"]), tuple((n, b(v)) for n, v in r["headers"]),
                    r["timestamp"]))
    return out


def test_delete_records_through_the_broker_then_cat_reads_everything_from_both_tiers(kafka_broker, kenv, s3):
    bootstrap, log_dir = kafka_broker.bootstrap, kafka_broker.log_dir
    create_topic(bootstrap, "ret")
    create_topic(bootstrap, "rettx")
    sent = produce_kafka_python(bootstrap, "ret", 600, codec="snappy")
    committed, every = produce_transactions(bootstrap, "rettx", [True, False, True, False, True, True] * 4, 30,
                                            txn_id="rettx-1")
    wait_for_high_watermark(log_dir, "ret", 0, 600)
    wait_for_high_watermark(log_dir, "rettx", 0, len(every) + 24)    # + one marker per transaction
    time.sleep(1.5)    # one more HW checkpoint: the last roll is below it too
    before = {t: segment_bases(log_dir, t, 0) for t in ("ret", "rettx")}
    eligible = {t: rolled_segments(log_dir, t, 0) for t in ("ret", "rettx")}
    assert all(len(v) >= 3 for v in eligible.values())

    config = kenv.write_config(f'include = ["ret", "rettx"]\nbootstrap_servers = "{bootstrap}"\n\n'
                               '[retention]\nlocal_delete = "kafka-admin"\nlocal_retention_bytes = 1\n')
    result = run_cli("run", "--once", "--config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    asked = [e for e in events(result.stdout) if e["event"] == "broker asked to delete segment (DeleteRecords)"]
    for topic in ("ret", "rettx"):
        stored = {b for (_, _, b) in remote_manifests(s3, topic)}
        mine = [e for e in asked if e["topic"] == topic]
        assert {e["base_offset"] for e in mine} == set(eligible[topic])     # every eligible one, once
        assert {e["base_offset"] for e in mine} <= stored                   # only what is in the store
        new_start = mine[0]["log_start_offset"]
        assert new_start == before[topic][len(eligible[topic])]             # the first segment kept
        # The broker moved its log start and deleted its own files.
        assert list_offsets(bootstrap, topic)[0] == new_start
        wait_until(lambda: segment_bases(log_dir, topic, 0)[0] == new_start, 30,
                   f"the broker to delete {topic}'s segments below {new_start}")
        # Kafka checkpoints a log start only while it is above the first segment's base offset:
        # once the files are gone, the partition is no longer in log-start-offset-checkpoint.
        wait_until(lambda: (topic, 0) not in checkpoint(log_dir / "log-start-offset-checkpoint"), 30,
                   "the broker's log-start-offset-checkpoint to drop the partition")

    # A second pass asks nothing again (the checkpoint says the broker got there).
    again = run_cli("run", "--once", "--config", str(config))
    assert again.returncode == 0, again.stdout + again.stderr
    assert [e for e in events(again.stdout) if e["event"].startswith("broker asked")] == []

    expected = [(i, k, v, h, ts) for i, (k, v, h, ts) in enumerate(sent)]
    for isolation in ("read_uncommitted", "read_committed"):
        assert cat(config, "ret", isolation) == expected
    assert [r[1:] for r in cat(config, "rettx", "read_committed")] == committed
    assert [r[1:] for r in cat(config, "rettx", "read_uncommitted")] == every
