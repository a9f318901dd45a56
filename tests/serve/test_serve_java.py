"""Kafka's own Java console consumer (from the fetched jars) against the endpoint."""

from __future__ import annotations

import subprocess

import pytest

from tests.realkafka.conftest import kafka_libs  # noqa: F401  (the fixture: fetched jars, or skip/fail as there)

pytestmark = pytest.mark.realkafka


def test_java_console_consumer_reads_a_partition_from_earliest(endpoint, kafka_libs):  # noqa: F811
    done = subprocess.run(
        ["java", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto",
         "-cp", f"{kafka_libs}/*", "org.apache.kafka.tools.consumer.ConsoleConsumer",
         "--bootstrap-server", endpoint.bootstrap, "--topic", "events", "--partition", "1",
         "--offset", "earliest", "--max-messages", "30", "--timeout-ms", "30000"],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    # partition 1 holds the odd batches, in offset order, each record once
    assert done.stdout.split() == [f"e{i}-{j}" for i in range(1, 12, 2) for j in range(5)]
    assert "Processed a total of 30 messages" in done.stderr
