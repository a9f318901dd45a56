"""The CRC-32C the walk computed is what the store is given to verify: each PUT and part carries
it (rclone keeps what the client sent and returns it on HEAD), a multipart .log's full-object
checksum is the file's (moto computes it from the bytes it holds), and `store.checksum = "off"`
sends none. Neither test server refuses a wrong value (README, store capabilities), so these
check what is sent and what landed, not a refusal."""

from __future__ import annotations

import base64
from dataclasses import replace

import crc32c
import pytest

from tests.conftest import BUCKET
from tiering.config import load_config
from tiering.kafka.logdir import scan_log_dirs
from tiering.simulate import SimulatedBroker
from tiering.upload.buffers import PartBuffers
from tiering.upload.segment import offload_segment, target_for
from tiering.wiring import open_store

pytestmark = pytest.mark.integration


def _offload(env, segment_bytes: int, records: int, checksum: str = "crc32c", part_bytes: int = 5 * 1024 * 1024):
    broker = SimulatedBroker(env.log_dir, segment_bytes=segment_bytes, seed=31)
    broker.create_topic("orders", 1)
    broker.produce("orders", 0, records, value_size=4000, batch_records=4)
    broker.checkpoint()
    partition = scan_log_dirs([env.log_dir]).partitions[0]
    segment = next(s for s in partition.segments if not s.is_active and s.snapshot_path is not None)
    config = load_config(env.write_config())
    config = replace(config, store=replace(config.store, checksum=checksum))
    store = open_store(config)
    try:
        manifest = offload_segment(target_for(segment, partition, config.store.prefix, config.store.hash_prefix, 1,
                                              "feedfacefeedface"), store, lambda: 0,
                                   buffers=PartBuffers(1, part_bytes))
    finally:
        store.close()
    broker.close()
    return segment, manifest


def _header(value: int) -> str:
    return base64.b64encode(value.to_bytes(4, "big")).decode()


def test_a_multipart_log_lands_with_the_walks_crc32c_as_its_full_object_checksum(env, s3):
    segment, manifest = _offload(env, 6 * 1024 * 1024, 1700)
    local = segment.log_path.read_bytes()
    log = next(o for o in manifest.objects if o.kind == "log")
    assert len(local) > 5 * 1024 * 1024 and log.crc32c == f"{crc32c.crc32c(local):08x}"
    head = s3.head_object(Bucket=BUCKET, Key=log.key, ChecksumMode="ENABLED")
    # moto computes a multipart object's full-object CRC-32C from the bytes it assembled
    assert (head.get("ChecksumCRC32C"), head.get("ChecksumType")) == (_header(crc32c.crc32c(local)), "FULL_OBJECT")
    assert s3.get_object(Bucket=BUCKET, Key=log.key)["Body"].read() == local


@pytest.mark.stores("rclone")
@pytest.mark.parametrize("checksum", ["crc32c", "off"])
def test_every_put_carries_the_crc32c_of_its_bytes_or_none_when_off(env, s3, checksum):
    _, manifest = _offload(env, 64 * 1024, 60, checksum)
    assert {o.kind for o in manifest.objects} >= {"log", "index", "timeindex", "snapshot"}
    for entry in manifest.objects:
        body = s3.get_object(Bucket=BUCKET, Key=entry.key)["Body"].read()
        assert f"{crc32c.crc32c(body):08x}" == entry.crc32c
        # rclone returns the CRC-32C the client sent with the PUT, as sent
        head = s3.head_object(Bucket=BUCKET, Key=entry.key, ChecksumMode="ENABLED")
        assert head.get("ChecksumCRC32C") == (_header(int(entry.crc32c, 16)) if checksum == "crc32c" else None), entry.kind
        assert head.get("ChecksumCRC32") is None        # botocore added no checksum of its own
