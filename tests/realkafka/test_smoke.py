"""The fixture itself: the real broker starts, takes records, rolls small segments, and the
sidecar offloads them with one `tiering run --once`."""

from __future__ import annotations

import pytest

from tests.conftest import run_cli
from tests.realkafka.clients import consume_kafka_python, create_topic, produce_kafka_python
from tests.realkafka.offload import wait_for_high_watermark, remote_manifests, rolled_segments

pytestmark = [pytest.mark.realkafka, pytest.mark.integration]


def test_a_real_broker_rolls_segments_and_the_sidecar_offloads_them(kafka_broker, kenv, s3):
    create_topic(kafka_broker.bootstrap, "smoke", segment_bytes=16 * 1024)
    sent = produce_kafka_python(kafka_broker.bootstrap, "smoke", 400, codec="gzip")
    assert [(r.key, r.value) for r in consume_kafka_python(kafka_broker.bootstrap, "smoke")] == \
        [(k, v) for k, v, _, _ in sent]
    wait_for_high_watermark(kafka_broker.log_dir, "smoke", 0, 400)
    segments = rolled_segments(kafka_broker.log_dir, "smoke", 0)
    assert len(segments) >= 3
    config = kenv.write_config('include = ["smoke"]\n')
    result = run_cli("run", "--once", "--config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(m["base_offset"] for m in remote_manifests(s3, "smoke").values()) == segments
