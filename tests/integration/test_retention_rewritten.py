"""Total retention and a local segment the broker truncated and rewrote under the same base
offset, against a real S3 server through the real command line: the store's copy expires and
goes, but the local segment is not the one that expired (other bytes, other records) and must
stay, on this pass and on the next ones."""

from __future__ import annotations

import struct
import time

import pytest

from tests.conftest import events, run_cli
from tests.integration.test_offload import remote_manifests
from tests.integration.test_retention import DAY, Clock, produce_segments, segment_bytes
from tiering.kafka.names import segment_file_name
from tiering.kafka.records import build_batch
from tiering.simulate import SimulatedBroker

pytestmark = pytest.mark.integration


def rewrite_from(path, keep_batches: int, first_offset: int, count: int) -> None:
    """What an unclean leader election leaves: the segment cut after `keep_batches` batches,
    then other records appended from there under the same base offset (the index files cut
    to nothing, which a rolled segment may be)."""
    data = path.read_bytes()
    position = 0
    for _ in range(keep_batches):
        (length,) = struct.unpack_from(">i", data, position + 8)
        position += 12 + length
    now = int(time.time() * 1000)
    rewritten = [build_batch(first_offset + i, [(now, f"new-{first_offset + i}".encode(), b"x" * 400, ())])
                 for i in range(count)]
    path.write_bytes(data[:position] + b"".join(rewritten))
    for kind in ("index", "timeindex"):
        path.with_name(path.name.replace(".log", f".{kind}")).write_bytes(b"")


def _expire_with_a_rewritten_segment(env, s3):
    """Segments 0 and 60 (ten days old) offloaded and kept locally; then the broker truncates
    segment 60 at offset 90 and writes other records up to 119; then total retention (7 d)
    runs once. Returns the broker, the config, that pass's result, the rewritten path, its bytes."""
    clock = Clock()
    broker = SimulatedBroker(env.log_dir, segment_bytes=1 << 30, clock_ms=clock, seed=24)
    broker.create_topic("orders", 1)
    produce_segments(broker, clock, "orders", [10 * DAY, 10 * DAY])      # 60 records each, batches of 10
    broker.checkpoint()
    bases = sorted(b for _, b in segment_bytes(env.log_dir))
    assert bases == [0, 60, 120]
    keep = env.write_config("\n[retention]\nretention_ms = -1\n")
    assert run_cli("run", "--config", str(keep), "--once").returncode == 0
    assert sorted(b for _, _, b in remote_manifests(s3)) == [0, 60]

    rewritten = env.log_dir / "orders-0" / segment_file_name(60, "log")
    rewrite_from(rewritten, keep_batches=3, first_offset=90, count=30)
    mine = rewritten.read_bytes()
    assert len(mine) != remote_manifests(s3)[("orders", 0, 60)]["size_bytes"]

    config = env.write_config("\n[retention]\nretention_ms = \"7d\"\n")
    result = run_cli("run", "--config", str(config), "--once")
    assert result.returncode == 0, result.stderr
    return broker, config, result, rewritten, mine


def test_total_retention_never_deletes_a_local_segment_that_differs_from_the_expired_copy(env, s3):
    broker, _config, result, rewritten, mine = _expire_with_a_rewritten_segment(env, s3)
    local = sorted((e["base_offset"], e["reason"]) for e in events(result.stdout) if e["event"] == "segment deleted locally")
    remote = sorted((e["base_offset"], e["reason"]) for e in events(result.stdout)
                    if e["event"] == "segment deleted from the store")
    assert remote == [(0, "total-time"), (60, "total-time")]      # both store copies expired
    assert local == [(0, "total-time")]                            # only the identical local copy with them
    assert rewritten.read_bytes() == mine
    broker.close()


def test_later_passes_keep_the_rewritten_segment_too(env, s3):
    broker, config, _result, rewritten, mine = _expire_with_a_rewritten_segment(env, s3)
    for _ in range(2):     # later passes remember the expired copy; the rewritten segment still stays
        again = run_cli("run", "--config", str(config), "--once")
        assert again.returncode == 0, again.stderr
        assert not [e for e in events(again.stdout) if e["event"] == "segment deleted locally"], again.stdout
        assert rewritten.read_bytes() == mine
    # The rewritten segment is new data: it is uploaded (once), not taken for the expired copy.
    assert remote_manifests(s3)[("orders", 0, 60)]["size_bytes"] == len(mine)
    broker.close()
