"""subscribe() consumers through the endpoint: group requests relayed to a real broker's
coordinator (tiering/serve/groups.py), records from the endpoint's own (in-memory) source."""

from __future__ import annotations

import subprocess
import time

import confluent_kafka
import pytest
from kafka import KafkaConsumer
from prometheus_client import CollectorRegistry

from tests.realkafka.clients import create_topic
from tests.serve.conftest import expected_events, filled_source
from tiering.config import ServeConfig
from tiering.serve.groups import GroupRelay
from tiering.serve.server import ServeEndpoint, ThreadedEndpoint

pytestmark = [pytest.mark.realkafka, pytest.mark.integration]


@pytest.fixture(scope="module")
def relayed(kafka_broker):
    create_topic(kafka_broker.bootstrap, "events", 2, exist_ok=True)     # the group's commits name a topic Kafka knows
    host, port = kafka_broker.bootstrap.rsplit(":", 1)
    endpoint = ThreadedEndpoint(ServeEndpoint(ServeConfig(listen="127.0.0.1:0"), filled_source(), None,
                                              GroupRelay([(host, int(port))]), CollectorRegistry()))
    address = endpoint.start()
    endpoint.bootstrap = f"{address[0]}:{address[1]}"
    yield endpoint
    endpoint.stop()


def test_kafka_python_subscribe_reads_everything_once(relayed):
    consumer = KafkaConsumer("events", bootstrap_servers=relayed.bootstrap, group_id="e2e-python",
                             auto_offset_reset="earliest", enable_auto_commit=False, consumer_timeout_ms=15000)
    try:
        got = []
        for message in consumer:
            got.append(message.value)
            if len(got) == len(expected_events()):
                break
        consumer.commit()
    finally:
        consumer.close()
    assert sorted(got) == expected_events()


def test_confluent_subscribe_reads_everything_once(relayed):
    consumer = confluent_kafka.Consumer({"bootstrap.servers": relayed.bootstrap, "group.id": "e2e-confluent",
                                         "auto.offset.reset": "earliest"})
    try:
        consumer.subscribe(["events"])
        got = []
        deadline = time.monotonic() + 60
        while len(got) < len(expected_events()) and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                got.append(message.value())
    finally:
        consumer.close()
    assert sorted(got) == expected_events()


def test_java_console_consumer_in_a_group_reads_everything(relayed, kafka_libs):
    done = subprocess.run(
        ["java", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-cp", f"{kafka_libs}/*",
         "org.apache.kafka.tools.consumer.ConsoleConsumer", "--bootstrap-server", relayed.bootstrap,
         "--topic", "events", "--group", "e2e-java", "--from-beginning",
         "--max-messages", str(len(expected_events())), "--timeout-ms", "30000"],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(done.stdout.encode().split()) == expected_events()
