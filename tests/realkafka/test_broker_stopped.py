"""What the sidecar does to a broker's files while the broker is down, and the broker's
verdict when it starts again: `unlink` shortens the log (refused with exit 3 while the broker
holds its lock), and a rollback restores segments the broker then serves to real consumers."""

from __future__ import annotations

import re
import time

import pytest

from tests.conftest import events, run_cli
from tests.realkafka.clients import (Rec, consume_confluent, consume_kafka_python, create_topic, list_offsets,
                                     produce_confluent, produce_kafka_python, produce_transactions)
from tests.realkafka.offload import (remote_manifests, rolled_segments, segment_bases, wait_for_high_watermark,
                                     wait_until)

pytestmark = [pytest.mark.realkafka, pytest.mark.integration]


def restart_log(broker, since: int) -> str:
    """The broker's log written since byte `since` (its last start)."""
    return broker.log_text()[since:]


def assert_loaded_cleanly(log: str, partition: str) -> None:
    """No error, and the partition loaded without recovery, index rebuilds or deletions.
    (The KRaft metadata log's own "Recovering unflushed segment" lines are not ours.)"""
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert errors == [], "\n".join(errors)
    ours = [line for line in log.splitlines() if f"partition={partition}," in line or f" {partition} " in line
            or f"{partition}]" in line]
    bad = [line for line in ours if re.search(r"Recovering|[Cc]orrupt|index file|[Dd]eleting|[Tt]runcat", line)]
    assert bad == [], "\n".join(bad)
    assert "since clean shutdown file was found" in log


def log_size(broker) -> int:
    return len(broker.log_text())


def as_sent(records: list[Rec]) -> list[tuple]:
    return [(r.key, r.value, r.headers, r.timestamp) for r in records]


def test_unlink_refuses_while_the_broker_runs_and_the_broker_starts_on_the_shortened_log(kafka_broker, kenv, s3):
    bootstrap, log_dir = kafka_broker.bootstrap, kafka_broker.log_dir
    create_topic(bootstrap, "ul")
    sent = produce_kafka_python(bootstrap, "ul", 600, codec="lz4")
    wait_for_high_watermark(log_dir, "ul", 0, 600)
    time.sleep(1.5)
    eligible = rolled_segments(log_dir, "ul", 0)
    assert len(eligible) >= 3
    files = sorted(p.name for p in (log_dir / "ul-0").iterdir())
    config = kenv.write_config('include = ["ul"]\n\n[retention]\nlocal_retention_bytes = 1\n')

    # The broker holds the log dir's .lock: uploads go, nothing is unlinked, exit 3.
    held = run_cli("run", "--once", "--config", str(config))
    assert held.returncode == 3, held.stdout + held.stderr
    assert {b for (_, _, b) in remote_manifests(s3, "ul")} == set(eligible)
    assert sorted(p.name for p in (log_dir / "ul-0").iterdir()) == files

    kafka_broker.stop()
    bases = segment_bases(log_dir, "ul", 0)
    stopped = run_cli("run", "--once", "--config", str(config))
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    left = segment_bases(log_dir, "ul", 0)
    assert left == [bases[-1]]               # every rolled segment went (all below the HW at shutdown)
    assert {e["base_offset"] for e in events(stopped.stdout) if e["event"] == "segment deleted locally"} \
        == set(bases[:-1])

    mark = log_size(kafka_broker)
    kafka_broker.start()
    assert list_offsets(bootstrap, "ul") == (left[0], 600)
    got = consume_kafka_python(bootstrap, "ul", from_offset=left[0])
    assert [r.offset for r in got] == list(range(left[0], 600))
    assert as_sent(got) == sent[left[0]:]
    assert_loaded_cleanly(restart_log(kafka_broker, mark), "ul-0")


def test_rollback_is_accepted_by_the_broker_and_real_consumers_read_from_offset_0(kafka_broker, kenv, s3):
    bootstrap, log_dir = kafka_broker.bootstrap, kafka_broker.log_dir
    create_topic(bootstrap, "rb")
    plain = produce_kafka_python(bootstrap, "rb", 300, codec="gzip")
    committed, every = produce_transactions(bootstrap, "rb", [True, False, True] * 4, 25, txn_id="rb-1",
                                            start=300)
    tail = produce_confluent(bootstrap, "rb", 200, codec="lz4", start=1000)
    end = 300 + len(every) + 12 + 200          # one marker per transaction
    wait_for_high_watermark(log_dir, "rb", 0, end)
    time.sleep(1.5)
    bases = segment_bases(log_dir, "rb", 0)

    # Offload and local deletion through the broker (DeleteRecords), while it runs.
    config = kenv.write_config(f'include = ["rb"]\nbootstrap_servers = "{bootstrap}"\n\n'
                               '[retention]\nlocal_delete = "kafka-admin"\nlocal_retention_bytes = 1\n')
    result = run_cli("run", "--once", "--config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    first_kept = wait_until(lambda: segment_bases(log_dir, "rb", 0)[0] > 0 and segment_bases(log_dir, "rb", 0)[0],
                            30, "the broker to delete rb's offloaded segments")
    assert list_offsets(bootstrap, "rb")[0] == first_kept

    kafka_broker.stop()
    rollback = run_cli("rollback", "--config", str(config), "--topic", "rb", "--confirm")
    assert rollback.returncode == 0, rollback.stdout + rollback.stderr
    assert segment_bases(log_dir, "rb", 0) == bases

    mark = log_size(kafka_broker)
    kafka_broker.start()
    assert list_offsets(bootstrap, "rb") == (0, end)
    uncommitted = plain + every + tail
    committed_view = plain + committed + tail
    for consume in (consume_kafka_python, consume_confluent):
        assert as_sent(consume(bootstrap, "rb", isolation="read_uncommitted")) == uncommitted, consume.__name__
        assert as_sent(consume(bootstrap, "rb", isolation="read_committed")) == committed_view, consume.__name__
    assert_loaded_cleanly(restart_log(kafka_broker, mark), "rb-0")
