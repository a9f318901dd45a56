"""Retention against a real S3 server over HTTP, through the real command line: time and size in
both tiers with per-topic overrides, a broker's fcntl lock, the broker's own deletion of a
segment we had not uploaded yet, and kill -9 in the middle of a retention pass."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import BOTH_STORES, BUCKET, events, run_cli
from tests.integration.test_offload import remote_manifests
from tiering.kafka.logdir import scan_log_dirs
from tiering.simulate import SimulatedBroker

pytestmark = pytest.mark.integration

DAY = 86_400_000
RETENTION = """
[topics."orders"]
local_retention_ms = "1h"

[topics."clicks"]
retention_ms = -1
retention_bytes = 60000
local_retention_bytes = 30000
"""


class Clock:
    def __init__(self):
        self.now = int(time.time() * 1000)

    def __call__(self) -> int:
        return self.now


def produce_segments(broker: SimulatedBroker, clock: Clock, topic: str, ages_ms: list[int]) -> None:
    """One rolled segment per age (its records that old), then a small active segment."""
    real_now = int(time.time() * 1000)
    for age in ages_ms:
        clock.now = real_now - age
        broker.produce(topic, 0, 60, value_size=150)
        broker.roll(topic, 0)
    clock.now = real_now
    broker.produce(topic, 0, 5, value_size=150)


def local_files(log_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(log_dir)): p.read_bytes() for p in sorted(log_dir.rglob("*")) if p.is_file()}


def segment_bytes(log_dir: Path) -> dict[tuple[str, int], bytes]:
    """(topic, base offset) -> the .log bytes, for every segment on disk now."""
    return {(s.topic, s.base_offset): s.log_path.read_bytes()
            for p in scan_log_dirs([log_dir]).partitions for s in p.segments}


def local_bases(log_dir: Path) -> list[int]:
    """Base offsets of the segments on disk now (names only: a daemon may be deleting them)."""
    return sorted(s.base_offset for p in scan_log_dirs([log_dir]).partitions for s in p.segments)


def remote_log(s3, manifest: dict) -> bytes:
    key = next(o["key"] for o in manifest["objects"] if o["kind"] == "log")
    return s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def assert_no_index_without_log(log_dir: Path) -> None:
    for directory in (p for p in log_dir.iterdir() if p.is_dir()):
        stems = {f.name.split(".")[0] for f in directory.iterdir() if f.suffix in (".index", ".timeindex", ".txnindex")}
        logs = {f.name.split(".")[0] for f in directory.iterdir() if f.suffix == ".log"}
        assert stems <= logs, f"index files without a .log in {directory}: {sorted(stems - logs)}"


def build(env) -> tuple[SimulatedBroker, dict]:
    clock = Clock()
    broker = SimulatedBroker(env.log_dir, segment_bytes=1 << 30, clock_ms=clock, seed=5)
    for topic in ("orders", "clicks", "audit"):
        broker.create_topic(topic, 1)
    # orders: 3 segments past the total 7 d, 2 past the local 1 h, 2 recent.
    produce_segments(broker, clock, "orders", [10 * DAY, 9 * DAY, 8 * DAY, 2 * DAY, DAY, 60_000, 1000])
    produce_segments(broker, clock, "clicks", [5000] * 8)      # size only: ~10.5 KB per segment
    produce_segments(broker, clock, "audit", [3 * DAY, 1000])  # defaults: 7 d in both tiers
    broker.checkpoint()
    return broker, segment_bytes(env.log_dir)


@BOTH_STORES
def test_time_and_size_retention_in_both_tiers_with_per_topic_overrides(env, s3):
    broker, before = build(env)
    config = env.write_config(f"\n[retention]\nretention_ms = \"7d\"\n{RETENTION}")
    result = run_cli("run", "--config", str(config), "--once")
    assert result.returncode == 0, result.stderr

    scan = {p.topic: p for p in scan_log_dirs([env.log_dir]).partitions}
    manifests = remote_manifests(s3)
    orders_bases = sorted(b for t, b in before if t == "orders")
    # orders: the 3 oldest gone everywhere (total-time), 2 more gone locally (local-time).
    assert [s.base_offset for s in scan["orders"].segments] == orders_bases[5:]
    assert sorted(b for t, _, b in manifests if t == "orders") == orders_bases[3:7]
    # audit: nothing deleted (7 d default in both tiers).
    assert len(scan["audit"].segments) == 3
    # clicks: Kafka's size rule in each tier, checked independently of the planner.
    clicks = scan["clicks"].segments
    local_size = sum(s.size for s in clicks)
    assert 30000 <= local_size and local_size - clicks[0].size < 30000
    remote_clicks = sorted((b, d) for (t, _, b), d in manifests.items() if t == "clicks")
    highest = remote_clicks[-1][1]["end_offset"]
    total = sum(d["size_bytes"] for _, d in remote_clicks) + sum(s.size for s in clicks if s.base_offset > highest)
    assert 60000 <= total and total - remote_clicks[0][1]["size_bytes"] < 60000
    assert len(remote_clicks) < 8 and len(clicks) < 9

    # Whatever left the local disk is whole in the store, byte for byte (or expired in both).
    for (topic, base), data in before.items():
        if any(s.base_offset == base for s in scan[topic].segments):
            continue
        remote = manifests.get((topic, 0, base))
        if remote is not None:
            assert remote_log(s3, remote) == data
    assert_no_index_without_log(env.log_dir)

    # One event per deletion, with Kafka's reasons.
    found = events(result.stdout)
    local = sorted((e["topic"], e["base_offset"], e["reason"]) for e in found if e["event"] == "segment deleted locally")
    remote = sorted((e["topic"], e["base_offset"], e["reason"]) for e in found
                    if e["event"] == "segment deleted from the store")
    assert [r for r in local if r[0] == "orders"] == sorted(
        [("orders", b, "total-time") for b in orders_bases[:3]] + [("orders", b, "local-time") for b in orders_bases[3:5]])
    assert [r for r in remote if r[0] == "orders"] == [("orders", b, "total-time") for b in orders_bases[:3]]
    # clicks: the oldest leave both tiers by total size (the local copy with them), more leave
    # the local disk by local size.
    assert {r[2] for r in remote if r[0] == "clicks"} == {"total-size"}
    assert [r for r in local if r[0] == "clicks" and r[2] == "total-size"] == [r for r in remote if r[0] == "clicks"]
    assert [r for r in local if r[0] == "clicks" and r[2] == "local-size"]

    # status: extents, and why nothing more goes.
    status = run_cli("status", "--config", str(config), "--json")
    assert status.returncode == 0, status.stderr
    rows = {r["topic"]: r for r in json.loads(status.stdout)["partitions"]}
    assert rows["orders"]["local_start_offset"] == orders_bases[5]
    assert rows["orders"]["remote_start_offset"] == orders_bases[3]
    assert rows["orders"]["retention"]["next"] == []
    assert "expires by time in" in rows["orders"]["retention"]["local_waiting"]
    assert "within local retention bytes" in rows["clicks"]["retention"]["local_waiting"]
    assert rows["audit"]["retention"]["remote_waiting"].startswith("expires by time in")

    # A second pass deletes nothing more and uploads nothing again.
    bucket = remote_manifests(s3)
    again = run_cli("run", "--config", str(config), "--once")
    assert again.returncode == 0, again.stderr
    assert not [e for e in events(again.stdout) if e["event"].startswith("segment deleted")]
    assert remote_manifests(s3) == bucket
    broker.close()


def test_a_store_copy_that_no_longer_matches_keeps_the_local_segment(env, s3):
    clock = Clock()
    broker = SimulatedBroker(env.log_dir, segment_bytes=1 << 30, clock_ms=clock, seed=7)
    broker.create_topic("orders", 1)
    produce_segments(broker, clock, "orders", [3 * DAY, 2 * DAY, DAY])
    broker.checkpoint()
    bases = sorted(b for _, b in segment_bytes(env.log_dir))
    off = env.write_config('\n[topics."orders"]\nlocal_retention_ms = "1h"\nlocal_delete = "off"\n')
    assert run_cli("run", "--config", str(off), "--once").returncode == 0
    # Someone overwrites the second segment's .log in the store (same key, other bytes).
    manifest = remote_manifests(s3)[("orders", 0, bases[1])]
    key = next(o["key"] for o in manifest["objects"] if o["kind"] == "log")
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"not the segment")
    config = env.write_config('\n[topics."orders"]\nlocal_retention_ms = "1h"\n')
    result = run_cli("run", "--config", str(config), "--once")
    assert result.returncode == 1
    assert "1 retention step(s) failed" in result.stderr
    failure = next(e for e in events(result.stdout) if e["event"] == "retention step failed")
    assert f"{bases[1]:020d}.log: not deleted: object {key} is 15 bytes" in failure["detail"]
    # The first went; the tampered one and every later one stay (deletion stays a prefix).
    assert [b for _, b in segment_bytes(env.log_dir)] == bases[1:]
    broker.close()


def test_a_topic_with_tiering_turned_off_loses_nothing_locally(env, s3):
    from tiering.journal import Journal

    broker, before = build(env)
    config = env.write_config(f"\n[retention]\nretention_ms = \"7d\"\n{RETENTION}")
    journal = Journal(env.state_dir)
    journal.disable_topic("orders", "rolled back", 0)       # what `tiering rollback` records
    journal.close()
    result = run_cli("run", "--config", str(config), "--once")
    assert result.returncode == 0, result.stderr
    orders = next(p for p in scan_log_dirs([env.log_dir]).partitions if p.topic == "orders")
    assert [s.base_offset for s in orders.segments] == sorted(b for t, b in before if t == "orders")
    assert not [k for k in remote_manifests(s3) if k[0] == "orders"]          # nor uploaded
    clicks = next(p for p in scan_log_dirs([env.log_dir]).partitions if p.topic == "clicks")
    assert len(clicks.segments) < len([b for t, b in before if t == "clicks"])  # other topics still retained
    status = json.loads(run_cli("status", "--config", str(config), "--json").stdout)
    row = next(r for r in status["partitions"] if r["topic"] == "orders")
    assert row["tiering_enabled"] is False
    assert row["retention"]["local_waiting"].startswith("not tiered: tiering turned off for this topic")
    broker.close()


def hold_lock(path: Path) -> subprocess.Popen:
    """Another process holding the broker's fcntl lock, as Java's FileChannel.tryLock does."""
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, sys, time\n"
        f"f = open({str(path)!r}, 'r+')\n"
        "fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
        "print('locked', flush=True)\n"
        "time.sleep(600)\n")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_held_broker_lock_stops_every_unlink_and_exits_3(env, s3):
    broker, before = build(env)
    config = env.write_config(f"\n[retention]\nretention_ms = \"7d\"\n{RETENTION}")
    files = local_files(env.log_dir)
    holder = hold_lock(env.log_dir / ".lock")
    try:
        result = run_cli("run", "--config", str(config), "--once")
        assert result.returncode == 3, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and f"pid {holder.pid}" in lines[0] and "kafka-admin" in lines[0]
        assert local_files(env.log_dir) == files                  # nothing unlinked, nothing changed
        # The pass still uploaded (and total retention still applied to the store).
        manifests = remote_manifests(s3)
        assert {b for t, _, b in manifests if t == "audit"} == {b for t, b in before if t == "audit"} - {
            max(b for t, b in before if t == "audit")}
        status = json.loads(run_cli("status", "--config", str(config), "--json").stdout)
        assert status["log_dirs"][0]["broker_lock_held"] is True
        orders = next(r for r in status["partitions"] if r["topic"] == "orders")
        assert "refused" in orders["retention"]["local_waiting"]
        assert not [e for e in events(result.stdout) if e["event"] == "segment deleted locally"]
    finally:
        holder.kill()
        holder.wait()
    result = run_cli("run", "--config", str(config), "--once")
    assert result.returncode == 0, result.stderr
    orders = next(p for p in scan_log_dirs([env.log_dir]).partitions if p.topic == "orders")
    assert len(orders.segments) < len([b for t, b in before if t == "orders"])   # orders lost its old segments
    broker.close()


def test_kill_9_during_a_retention_pass_loses_nothing(env, s3):
    clock = Clock()
    broker = SimulatedBroker(env.log_dir, segment_bytes=1 << 30, clock_ms=clock, seed=9)
    broker.create_topic("orders", 1)
    produce_segments(broker, clock, "orders", [2 * DAY] * 40 + [1000])
    broker.checkpoint()
    before = segment_bytes(env.log_dir)
    config = env.write_config('\n[topics."orders"]\nlocal_retention_ms = "1h"\n')
    # First pass uploads only (retention off), so the next one is all deletions.
    off = env.write_config('\n[topics."orders"]\nlocal_retention_ms = "1h"\nlocal_delete = "off"\n')
    assert run_cli("run", "--config", str(off), "--once").returncode == 0
    config = env.write_config('\n[topics."orders"]\nlocal_retention_ms = "1h"\n')

    process = subprocess.Popen([sys.executable, "-m", "tiering", "run", "--config", str(config), "--once"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deleted = 0
    for line in process.stdout:
        if '"segment deleted locally"' in line:
            deleted += 1
            if deleted == 3:
                os.kill(process.pid, signal.SIGKILL)
                break
    process.wait()
    assert process.returncode == -signal.SIGKILL
    left = segment_bytes(env.log_dir)
    assert 2 < len(left) < len(before), "the kill did not land in the middle of the pass"

    def assert_every_segment_whole_somewhere():
        manifests = remote_manifests(s3)
        for (topic, base), data in before.items():
            local = env.log_dir / "orders-0" / f"{base:020d}.log"
            if local.exists():
                assert local.read_bytes() == data
            else:
                assert remote_log(s3, manifests[(topic, 0, base)]) == data
        assert_no_index_without_log(env.log_dir)

    assert_every_segment_whole_somewhere()
    result = run_cli("run", "--config", str(config), "--once")
    assert result.returncode == 0, result.stderr
    assert_every_segment_whole_somewhere()
    assert [b for _, b in segment_bytes(env.log_dir)] == sorted(b for _, b in before)[-2:]
    broker.close()


def test_a_segment_the_broker_deletes_before_upload_still_reaches_the_store(env, s3, tmp_path):
    from tests.integration.daemon_process import DaemonProcess
    from tiering.demo import free_port

    broker = SimulatedBroker(env.log_dir, segment_bytes=600 * 1024, seed=4)
    broker.create_topic("orders", 1)
    broker.produce("orders", 0, 12_000, value_size=150)    # three rolled segments of ~600 KiB
    broker.checkpoint()
    before = segment_bytes(env.log_dir)
    rolled = sorted(b for _, b in before)[:-1]
    assert len(rolled) >= 3
    victim = rolled[-1]                       # uploaded last: concurrency 1, oldest first
    port = free_port()
    config = env.write_config(upload='rate_limit_bytes_per_second = "256KiB"\n').read_text()
    config = config.replace('listen = ""', f'listen = "127.0.0.1:{port}"').replace("concurrency = 3", "concurrency = 1")
    (tmp_path / "tiering.toml").write_text(config)
    daemon = DaemonProcess(tmp_path / "tiering.toml", tmp_path, port, os.environ)
    try:
        daemon.wait_ready()
        pins = list((env.state_dir / "pins").rglob(f"{victim:020d}-*.log"))
        deadline = time.time() + 20
        while not pins and time.time() < deadline:
            time.sleep(0.05)
            pins = list((env.state_dir / "pins").rglob(f"{victim:020d}-*.log"))
        assert pins, "the eligible segment was never pinned"
        assert (BUCKET, victim) not in {(BUCKET, b) for _, _, b in remote_manifests(s3)}
        # The broker's retention: rename to .deleted, then unlink (60 s later in Kafka).
        directory = broker.partition_dir("orders", 0)
        for path in sorted(directory.glob(f"{victim:020d}.*")):
            deleted = path.with_name(path.name + ".deleted")
            path.rename(deleted)
        time.sleep(0.5)
        for path in directory.glob(f"{victim:020d}.*.deleted"):
            path.unlink()
        deadline = time.time() + 60
        while time.time() < deadline and ("orders", 0, victim) not in remote_manifests(s3):
            time.sleep(0.2)
        manifests = remote_manifests(s3)
        assert ("orders", 0, victim) in manifests, "the segment the broker deleted never reached the store"
        assert remote_log(s3, manifests[("orders", 0, victim)]) == before[("orders", victim)]
        assert daemon.metric("tiering_upload_rescued_segments_total") == 1
        deadline = time.time() + 5
        while time.time() < deadline and list((env.state_dir / "pins").rglob("*.log")):
            time.sleep(0.1)
        assert not list((env.state_dir / "pins").rglob("*.log")), "pins outlived their upload"
    finally:
        daemon.stop()
    broker.close()


def test_the_daemon_applies_retention_on_its_interval_and_reports_a_held_lock_once(env, s3, tmp_path):
    from tests.integration.daemon_process import DaemonProcess, wait_for
    from tiering.demo import free_port

    clock = Clock()
    broker = SimulatedBroker(env.log_dir, segment_bytes=1 << 30, clock_ms=clock, seed=8)
    broker.create_topic("orders", 1)
    produce_segments(broker, clock, "orders", [2 * DAY] * 4 + [1000])
    broker.checkpoint()
    bases = sorted(b for _, b in segment_bytes(env.log_dir))
    port = free_port()
    config = env.write_config('\n[topics."orders"]\nlocal_retention_ms = "1h"\n'
                              '\n[daemon]\nretention_interval_ms = "300ms"\n').read_text()
    (tmp_path / "tiering.toml").write_text(config.replace('listen = ""', f'listen = "127.0.0.1:{port}"'))
    holder = hold_lock(env.log_dir / ".lock")
    daemon = DaemonProcess(tmp_path / "tiering.toml", tmp_path, port, os.environ)
    try:
        daemon.wait_ready()
        wait_for(lambda: len(remote_manifests(s3)) == 5, 20, "the rolled segments were not uploaded")
        wait_for(lambda: daemon.metric("tiering_retention_blocked_log_dirs") == 1, 10, "the held lock went unseen")
        time.sleep(1.0)                                    # several more passes under the lock
        refused = [e for e in daemon.events() if e["event"].startswith("local retention refused")]
        assert len(refused) == 1 and f"pid {holder.pid}" in refused[0]["detail"]
        assert local_bases(env.log_dir) == bases
        holder.kill()
        holder.wait()
        wait_for(lambda: local_bases(env.log_dir) == bases[-2:], 10,
                 "retention did not delete once the lock was free")
        assert daemon.metric("tiering_retention_blocked_log_dirs") == 0
        assert daemon.metric("tiering_retention_deleted_segments_total", 'reason="local-time",tier="local"') == 4
    finally:
        if holder.poll() is None:
            holder.kill()
        daemon.stop()
    broker.close()


def test_a_segment_without_timestamps_goes_by_its_file_mtime_in_both_tiers(env, s3):
    """Batches with no timestamp (-1, as Kafka up-converts old produce requests): Kafka's
    LogSegment.largestTimestamp falls back to the file's mtime, and so does retention here,
    in the manifest and in both tiers. Before, -1 made `now - (-1)` huge: uploaded and then
    deleted from the store and the disk in the same pass."""
    broker = SimulatedBroker(env.log_dir, segment_bytes=1 << 30, clock_ms=lambda: -1, seed=7)
    broker.create_topic("legacy", 1)
    for _ in range(3):
        broker.produce("legacy", 0, 40, value_size=100)
        broker.roll("legacy", 0)
    broker.produce("legacy", 0, 5)
    broker.checkpoint()
    bases = local_bases(env.log_dir)
    now = int(time.time())    # whole seconds: the mtime is compared in ms
    segments = {s.base_offset: s for s in scan_log_dirs([env.log_dir]).partitions[0].segments}
    mtimes = {bases[0]: now - 10 * 86400, bases[1]: now - 2 * 86400, bases[2]: now - 600}
    for base, mtime in mtimes.items():
        os.utime(segments[base].log_path, (mtime, mtime))
    config = env.write_config('\n[retention]\nretention_ms = "7d"\nlocal_retention_ms = "1d"\n')
    result = run_cli("run", "--config", str(config), "--once")
    assert result.returncode == 0, result.stderr

    manifests = {b: d for (t, _, b), d in remote_manifests(s3).items() if t == "legacy"}
    # 10 days old by mtime: gone from both tiers; 2 days: gone locally only; 10 minutes: kept.
    assert sorted(manifests) == [bases[1], bases[2]]
    assert local_bases(env.log_dir) == bases[2:]
    for base in (bases[1], bases[2]):
        assert manifests[base]["max_timestamp"] == int(mtimes[base] * 1000)
        assert manifests[base]["max_timestamp_source"] == "file-mtime"
    reasons = sorted((e["base_offset"], e["reason"]) for e in events(result.stdout) if e["event"].startswith("segment deleted"))
    assert reasons == [(bases[0], "total-time"), (bases[0], "total-time"), (bases[1], "local-time")]
    broker.close()


def four_segments_and_an_active_one(env, clock: Clock):
    """Topic "pre": four rolled segments of ~10.5 KB, then ~1 KB in the active one."""
    broker = SimulatedBroker(env.log_dir, segment_bytes=1 << 30, clock_ms=clock, seed=5)
    broker.create_topic("pre", 1)
    produce_segments(broker, clock, "pre", [5000] * 4)
    broker.checkpoint()
    return broker, scan_log_dirs([env.log_dir]).partitions[0].segments


def test_a_preallocated_active_segment_counts_its_written_bytes_in_both_size_rules(env, s3):
    """log.preallocate=true: the active file is segment.bytes long; Kafka counts the bytes
    written, so must the size rules here (before, both tiers deleted segments early)."""
    clock = Clock()
    broker, segments = four_segments_and_an_active_one(env, clock)
    written = sum(s.size for s in segments)
    assert 25_000 + segments[0].size <= written < 25_000 + segments[0].size + segments[1].size
    os.truncate(segments[-1].log_path, 1 << 24)            # preallocated: 16 MiB of zeros after the data
    config = env.write_config('\n[topics."pre"]\nretention_ms = -1\nretention_bytes = 60000\n'
                              'local_retention_bytes = 25000\n')
    result = run_cli("run", "--config", str(config), "--once")
    assert result.returncode == 0, result.stderr
    deleted = sorted((e["base_offset"], e["reason"]) for e in events(result.stdout)
                     if e["event"].startswith("segment deleted"))
    assert deleted == [(segments[0].base_offset, "local-size")]
    assert len(remote_manifests(s3)) == 4
    broker.close()


def test_a_daemons_passes_see_what_the_broker_appended_to_a_preallocated_active_segment(env, s3):
    """The daemon's runner remembers each active segment's size between passes (an idle
    partition is not walked again); bytes the broker appends in place (the file's size does
    not change) must still count at the next pass."""
    from tests.integration.test_cli_and_recovery import ListLog
    from tiering.config import load_config
    from tiering.journal import Journal
    from tiering.retention.run import RetentionRunner
    from tiering.wiring import open_store

    clock = Clock()
    broker, segments = four_segments_and_an_active_one(env, clock)
    active = segments[-1]
    written = active.size
    batches = active.log_path.read_bytes()
    os.truncate(active.log_path, 1 << 24)
    path = env.write_config('\n[topics."pre"]\nretention_ms = -1\nretention_bytes = 60000\n'
                            'local_retention_bytes = 25000\n[retention]\nlocal_delete = "off"\n')
    assert run_cli("run", "--config", str(path), "--once").returncode == 0       # uploaded, all still local
    config = load_config(env.write_config('\n[topics."pre"]\nretention_ms = -1\nretention_bytes = 60000\n'
                                          'local_retention_bytes = 25000\n'))
    journal, store = Journal(env.state_dir), open_store(config)
    try:
        runner = RetentionRunner(store, ListLog(), clock)
        first = runner.run(config, scan_log_dirs([env.log_dir]), journal.all(), frozenset())
        assert [(d.segment.base_offset, d.reason) for d in first.deleted] == [(segments[0].base_offset, "local-size")]
        # The broker appends its own batches again (valid ones: offsets at or past the base),
        # inside the preallocated file, until the local bytes are a segment over the limit.
        grown = written
        with open(active.log_path, "r+b") as f:
            while grown - written < segments[1].size:
                f.seek(grown)
                f.write(batches)
                grown += len(batches)
        stamp = os.stat(active.log_path)
        assert stamp.st_size == 1 << 24
        os.utime(active.log_path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 1_000_000_000))   # a later tick
        second = runner.run(config, scan_log_dirs([env.log_dir]), journal.all(), frozenset())
        assert [(d.segment.base_offset, d.reason) for d in second.deleted] == [(segments[1].base_offset, "local-size")]
        third = runner.run(config, scan_log_dirs([env.log_dir]), journal.all(), frozenset())
        assert third.deleted == ()            # nothing appended since: the same answer
    finally:
        journal.close()
        store.close()
    broker.close()


def test_unlink_takes_the_producer_snapshots_of_the_segments_it_deletes(env, s3):
    """Kafka's deleteSegments removes the snapshot at each deleted segment's base offset; the
    one at the new log start (the first segment kept) stays."""
    clock = Clock()
    broker = SimulatedBroker(env.log_dir, segment_bytes=1 << 30, clock_ms=clock, seed=5)
    broker.create_topic("orders", 1)
    produce_segments(broker, clock, "orders", [3 * DAY, 2 * DAY, 60_000])
    broker.checkpoint()
    directory = broker.partition_dir("orders", 0)
    bases = local_bases(env.log_dir)
    snapshots = sorted(int(p.name.split(".")[0]) for p in directory.glob("*.snapshot"))
    assert snapshots == bases[1:]       # one per roll, at the next segment's base offset
    (directory / "00000000000000000000.snapshot").write_bytes((directory / f"{bases[1]:020d}.snapshot").read_bytes())
    config = env.write_config('\n[retention]\nretention_ms = "7d"\nlocal_retention_ms = "1d"\n')
    result = run_cli("run", "--config", str(config), "--once")
    assert result.returncode == 0, result.stderr
    assert local_bases(env.log_dir) == bases[2:]
    left = sorted(int(p.name.split(".")[0]) for p in directory.glob("*.snapshot"))
    assert left == bases[2:]            # 0 and bases[1] went with their segments
    broker.close()
