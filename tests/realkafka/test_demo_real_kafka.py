"""`tiering demo --real-kafka`: the demo's story on a real broker, and one clear line where
Java is missing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.realkafka, pytest.mark.integration]


def test_the_real_kafka_demo_runs_end_to_end(kafka_libs):
    result = subprocess.run([sys.executable, "-m", "tiering", "demo", "--real-kafka"], capture_output=True,
                            text=True, timeout=280, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert "offsets 0..2999 with none missing: True" in result.stdout
    assert "the broker serves orders-0 from offset 0: 3000 records read by a kafka-python consumer: True" \
        in result.stdout
    assert result.stdout.rstrip().endswith("served from offset 0")


def test_without_java_the_real_kafka_demo_says_what_to_install(tmp_path):
    result = subprocess.run([sys.executable, "-m", "tiering", "demo", "--real-kafka"], capture_output=True,
                            text=True, timeout=60, env={**os.environ, "PATH": str(tmp_path)})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "needs Java 17+" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
