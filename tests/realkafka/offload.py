"""What the broker's files say, read independently of the sidecar's own parsers, and what the
store holds."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.conftest import BUCKET, PREFIX


def checkpoint(path: Path) -> dict[tuple[str, int], int]:
    """An offset checkpoint file (version line, count line, `topic partition offset` lines)."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return {}
    out = {}
    for line in lines[2:]:
        topic, partition, offset = line.split()
        out[(topic, int(partition))] = int(offset)
    return out


def high_watermark(log_dir: Path, topic: str, partition: int) -> int | None:
    return checkpoint(log_dir / "replication-offset-checkpoint").get((topic, partition))


def wait_for_high_watermark(log_dir: Path, topic: str, partition: int, at_least: int, timeout: float = 30) -> int:
    """The broker checkpoints its high watermarks every second (the fixture's setting)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hw = high_watermark(log_dir, topic, partition)
        if hw is not None and hw >= at_least:
            return hw
        time.sleep(0.2)
    raise AssertionError(f"{topic}-{partition}: high watermark checkpoint never reached {at_least} "
                         f"(last {high_watermark(log_dir, topic, partition)})")


def partition_dir(log_dir: Path, topic: str, partition: int) -> Path:
    return log_dir / f"{topic}-{partition}"


def segment_bases(log_dir: Path, topic: str, partition: int) -> list[int]:
    return sorted(int(p.stem) for p in partition_dir(log_dir, topic, partition).glob("*.log"))


def rolled_segments(log_dir: Path, topic: str, partition: int) -> list[int]:
    """Base offsets of the rolled segments whose end is below the checkpointed high watermark
    (Kafka's rule for what may be tiered: next segment's base <= HW)."""
    bases = segment_bases(log_dir, topic, partition)
    hw = high_watermark(log_dir, topic, partition) or 0
    return [b for b, nxt in zip(bases, bases[1:]) if nxt <= hw]


def topic_id(log_dir: Path, topic: str, partition: int = 0) -> str:
    for line in (partition_dir(log_dir, topic, partition) / "partition.metadata").read_text().splitlines():
        if line.startswith("topic_id:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError("no topic_id")


def remote_manifests(s3, topic: str) -> dict[tuple[str, int, int], dict]:
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX):
        for item in page.get("Contents", []):
            if item["Key"].endswith(".manifest.json"):
                doc = json.loads(get(s3, item["Key"]))
                if doc["topic"] != topic:
                    continue
                key = (doc["topic"], doc["partition"], doc["base_offset"])
                assert key not in found, f"two manifests for {key}"
                found[key] = doc
    return found


def remote_keys(s3) -> list[str]:
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return keys


def get(s3, key: str) -> bytes:
    return s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def wait_until(predicate, timeout: float, what: str, interval: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
