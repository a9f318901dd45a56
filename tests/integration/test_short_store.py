"""A store that keeps fewer bytes than it was sent, against a real S3 server: the segment worker
must not write a manifest that describes a short object (its HEAD-the-size check is what stands
between a truncated upload and a visible segment that cannot be read back)."""

from __future__ import annotations

import pytest

from tests.conftest import BUCKET, PREFIX, bucket_snapshot
from tiering.config import load_config
from tiering.kafka.logdir import scan_log_dirs
from tiering.simulate import SimulatedBroker
from tiering.store.errors import StoreError
from tiering.upload.buffers import PartBuffers
from tiering.upload.segment import offload_segment, target_for
from tiering.wiring import open_store

pytestmark = pytest.mark.integration


class KeepsLessThanSent:
    """The real S3 store, except that after each upload of a `.log` the object is replaced by its
    first `keep` bytes, as a store that acknowledged a write it did not keep whole would leave it
    (a fault at the store boundary: the bytes really are short in the bucket, nothing is mocked)."""

    def __init__(self, store, client, keep: int):
        self.store = store
        self.client = client
        self.keep = keep
        self.shortened: list[str] = []

    def upload_parts(self, key, size, parts, whole_crc):
        stored = self.store.upload_parts(key, size, parts, whole_crc)
        if key.endswith(".log"):
            body = self.client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
            self.client.put_object(Bucket=BUCKET, Key=key, Body=body[:self.keep])
            self.shortened.append(key)
        return stored

    def __getattr__(self, name):
        return getattr(self.store, name)


@pytest.mark.parametrize("missing", [1, 4096])
def test_an_upload_the_store_kept_short_never_gets_a_manifest(env, s3, missing):
    # A multipart .log (6 MiB in 5 MiB parts): a single PUT's answer already confirms its length
    # (and the checksum, on a store that verifies it); a multipart upload's is checked by a HEAD.
    broker = SimulatedBroker(env.log_dir, segment_bytes=6 * 1024 * 1024, seed=24)
    broker.create_topic("orders", 1)
    broker.produce("orders", 0, 1700, value_size=4000, batch_records=16)
    broker.checkpoint()
    scan = scan_log_dirs([env.log_dir])
    partition = next(p for p in scan.partitions if p.topic == "orders")
    segment = next(s for s in partition.segments if not s.is_active)
    size = segment.log_path.stat().st_size
    assert size > 5 * 1024 * 1024
    config = load_config(env.write_config())
    real = open_store(config)
    store = KeepsLessThanSent(real, s3, keep=size - missing)
    try:
        with pytest.raises(StoreError) as raised:
            offload_segment(target_for(segment, partition, config.store.prefix, config.store.hash_prefix, 1,
                                       "feedfacefeedface"), store, lambda: 0,
                            buffers=PartBuffers(1, 5 * 1024 * 1024))
    finally:
        real.close()
    assert store.shortened, "the wrapper never saw the .log go up"
    assert f"expected {size}" in str(raised.value)
    keys = bucket_snapshot(s3, PREFIX)
    assert not [k for k in keys if k.endswith(".manifest.json")], keys     # nothing made visible
    assert not keys, keys            # and the attempt's objects were cleaned up
    broker.close()
