"""Rollback against a store object that was damaged without changing its size, over HTTP to a
real S3 server: the object is overwritten in the bucket with as many bytes as its manifest
says, but other bytes. The size alone cannot tell; the manifest's CRC-32C must, and nothing of
the damaged segment (or any older one) may be put in place under a real name."""

from __future__ import annotations

import struct

import crc32c
import pytest

from tests.conftest import BUCKET, run_cli
from tests.integration.test_rollback import OFFLOAD_ALL, assert_nothing_half_visible, build, offload, orders_files, orders_remote

pytestmark = pytest.mark.integration


def _flip_last_byte(body: bytes) -> bytes:
    return body[:-1] + bytes([body[-1] ^ 0x01])


def _rewrite_first_batch(body: bytes) -> bytes:
    """Other bytes in the first batch, with the batch's own CRC-32C made right again: still
    valid Kafka batches (the batch walk accepts them), but not the bytes that were offloaded."""
    (length,) = struct.unpack_from(">i", body, 8)
    end = 12 + length
    batch = bytearray(body[:end])
    batch[-1] ^= 0x01
    struct.pack_into(">I", batch, 17, crc32c.crc32c(bytes(batch[21:])))
    return bytes(batch) + body[end:]


@pytest.mark.parametrize("kind, damage", [("index", _flip_last_byte), ("log", _rewrite_first_batch)])
def test_a_damaged_object_of_the_right_size_is_refused(env, s3, kind, damage):
    broker, before = build(env, rounds=2)
    config = env.write_config(OFFLOAD_ALL)
    offload(env, config, broker)
    manifests = orders_remote(s3, 0)
    newest = manifests[max(manifests)]            # restored first
    entry = next(o for o in newest["objects"] if o["kind"] == kind)
    original = s3.get_object(Bucket=BUCKET, Key=entry["key"])["Body"].read()
    damaged = damage(original)
    assert len(damaged) == len(original) == entry["size"] and damaged != original
    s3.put_object(Bucket=BUCKET, Key=entry["key"], Body=damaged)
    partition_0 = {k: v for k, v in orders_files(env.log_dir).items() if k.startswith("orders-0/")}

    result = run_cli("rollback", "--config", str(config), "--topic", "orders", "--confirm")
    assert result.returncode == 1, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and entry["key"] in lines[0] and "damaged" in lines[0], lines
    # Nothing of partition 0 changed under a real name; no file anywhere holds the damaged bytes.
    now = orders_files(env.log_dir)
    assert {k: v for k, v in now.items() if k.startswith("orders-0/") and not k.endswith(".restore.tmp")} == \
        {k: v for k, v in partition_0.items()}
    assert damaged not in now.values()
    assert_nothing_half_visible(env.log_dir, before)
    broker.close()
