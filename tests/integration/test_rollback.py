"""Rollback against a real S3 server over HTTP, through the real command line: the dry run,
a broker's lock, a byte-identical restore with its checkpoints, the daemon leaving a rolled
back topic alone until `resume`, kill -9 in the middle of a restore, a disk that refuses
writes (RLIMIT_FSIZE), a manifest that points outside its partition, and --delete-remote."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BOTH_STORES, BUCKET, PREFIX, bucket_snapshot, events, run_cli
from tests.integration.test_offload import remote_manifests
from tests.integration.test_retention import hold_lock, local_files
from tiering.kafka.checkpoints import parse_offset_checkpoint
from tiering.simulate import SimulatedBroker

pytestmark = pytest.mark.integration

OFFLOAD_ALL = "\n[retention]\nlocal_retention_bytes = 1\n"


def build(env, *, segment_bytes: int = 64_000, rounds: int = 4) -> tuple[SimulatedBroker, dict[str, bytes]]:
    """orders (2 partitions: four codecs, committed and aborted transactions, a new leader
    epoch per round) and clicks (1 partition); returns the broker and the orders files as they
    were before anything was offloaded."""
    broker = SimulatedBroker(env.log_dir, segment_bytes=segment_bytes, seed=11)
    broker.create_topic("orders", 2)
    broker.create_topic("clicks", 1)
    for p in (0, 1):
        for i in range(rounds):
            broker.produce("orders", p, 150, value_size=300, codec=("none", "zstd", "gzip", "lz4")[i % 4], headers=True)
            broker.produce_transaction("orders", p, 20, commit=i % 2 == 0)
            broker.bump_leader_epoch("orders", p)
    broker.produce("clicks", 0, 600, value_size=200)
    broker.checkpoint()
    return broker, orders_files(env.log_dir)


def orders_files(log_dir: Path) -> dict[str, bytes]:
    return {k: v for k, v in local_files(log_dir).items() if k.startswith("orders-")}


def offload(env, config: Path, broker: SimulatedBroker) -> None:
    """Everything rolled goes to the store and leaves the disk; then the broker restarts, which
    moves its log starts up and trims its leader-epoch checkpoints, as Kafka does."""
    result = run_cli("run", "--config", str(config), "--once")
    assert result.returncode == 0, result.stderr
    for p in (0, 1):
        assert len(list((env.log_dir / f"orders-{p}").glob("*.log"))) == 1     # only the active segment left
    broker.restart()


def orders_remote(s3, partition: int) -> dict[int, dict]:
    return {b: m for (t, p, b), m in remote_manifests(s3).items() if t == "orders" and p == partition}


def tiering_enabled(config: Path, topic: str) -> bool:
    status = json.loads(run_cli("status", "--config", str(config), "--json").stdout)
    return all(row["tiering_enabled"] for row in status["partitions"] if row["topic"] == topic)


def assert_nothing_half_visible(log_dir: Path, before: dict[str, bytes]) -> None:
    """Every orders file under a real name is byte-identical to the original (temporary names
    may remain after a kill; nothing else)."""
    for name, data in orders_files(log_dir).items():
        if name.endswith(".restore.tmp"):
            continue
        if name.endswith("leader-epoch-checkpoint"):
            continue     # trimmed by the restart, merged back at the end of a run
        assert data == before[name], f"{name} is visible but differs from the original"


def test_the_dry_run_prints_the_plan_and_changes_nothing(env, s3):
    broker, _ = build(env)
    config = env.write_config(OFFLOAD_ALL)
    offload(env, config, broker)
    files, bucket = local_files(env.log_dir), bucket_snapshot(s3)
    result = run_cli("rollback", "--config", str(config), "--topic", "orders", "--delete-remote")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "rollback plan for topic orders (dry run: nothing was changed)"
    assert lines[1].split()[:3] == ["PARTITION", "LOG", "DIR"]
    starts = parse_offset_checkpoint((env.log_dir / "log-start-offset-checkpoint").read_text())
    for p in (0, 1):
        remote = orders_remote(s3, p)
        row = next(line.split() for line in lines if line.startswith(f"orders-{p} "))
        assert row[2] == str(len(remote))                                       # segments to restore
        assert row[5] == f"0..{max(m['end_offset'] for m in remote.values())}"  # offsets
        assert row[6:9] == [str(_start(starts, p)), "->", "0"]
    assert any(line.startswith("total ") for line in lines)
    assert f"broker lock on {env.log_dir}: no process holds" in result.stdout
    assert "--delete-remote:" in result.stdout
    every = run_cli("rollback", "--config", str(config), "--all")
    assert every.returncode == 0, every.stderr
    assert every.stdout.startswith("rollback plan for every topic")
    assert {line.split()[0] for line in every.stdout.splitlines()} >= {"orders-0", "orders-1", "clicks-0"}
    unknown = run_cli("rollback", "--config", str(config), "--topic", "nope", "--confirm")
    assert unknown.returncode == 2 and len(unknown.stderr.strip().splitlines()) == 1
    assert "topic nope is not in the log dirs" in unknown.stderr
    assert local_files(env.log_dir) == files
    assert bucket_snapshot(s3) == bucket
    assert tiering_enabled(config, "orders")
    broker.close()


def _start(starts: dict, partition: int) -> int:
    return next(v for tp, v in starts.items() if tp.topic == "orders" and tp.partition == partition)


def test_a_held_broker_lock_refuses_with_exit_3_and_changes_nothing(env, s3):
    broker, _ = build(env)
    config = env.write_config(OFFLOAD_ALL)
    offload(env, config, broker)
    files, bucket = local_files(env.log_dir), bucket_snapshot(s3)
    holder = hold_lock(env.log_dir / ".lock")
    try:
        dry = run_cli("rollback", "--config", str(config), "--topic", "orders")
        assert dry.returncode == 0 and "--confirm will refuse until the broker stops" in dry.stdout
        result = run_cli("rollback", "--config", str(config), "--topic", "orders", "--confirm")
        assert result.returncode == 3, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and f"pid {holder.pid}" in lines[0] and "nothing was changed" in lines[0]
        assert local_files(env.log_dir) == files
        assert bucket_snapshot(s3) == bucket
        assert tiering_enabled(config, "orders")            # not even turned off
    finally:
        holder.kill()
        holder.wait()
    broker.close()


@BOTH_STORES
def test_a_restore_is_byte_identical_with_its_checkpoints_put_right(env, s3):
    broker, before = build(env)
    config = env.write_config(OFFLOAD_ALL)
    offload(env, config, broker)
    checkpoint_before = (env.log_dir / "log-start-offset-checkpoint").read_text()
    assert "orders 0 0" not in checkpoint_before.splitlines()       # the restart moved the log start up
    assert (env.log_dir / "orders-0/leader-epoch-checkpoint").read_bytes() != before["orders-0/leader-epoch-checkpoint"]
    segments = len(orders_remote(s3, 0)) + len(orders_remote(s3, 1))
    broker_user = 4321
    as_root = os.geteuid() == 0
    if as_root:   # the broker's files belong to its user; a rollback run as root must keep it so
        for path in [env.log_dir / "log-start-offset-checkpoint", *env.log_dir.glob("orders-*"),
                     *env.log_dir.glob("orders-*/*")]:
            os.chown(path, broker_user, broker_user)

    result = run_cli("rollback", "--config", str(config), "--topic", "orders", "--confirm")
    assert result.returncode == 0, result.stderr
    assert orders_files(env.log_dir) == before          # .log, .index, .timeindex, .txnindex, .snapshot, epochs
    if as_root:
        owners = {p.name: p.stat().st_uid for p in [env.log_dir / "log-start-offset-checkpoint",
                                                     *env.log_dir.glob("orders-*/*")]}
        assert set(owners.values()) == {broker_user}, owners
    assert any(name.endswith(".txnindex") for name in before)
    summary = next(e for e in events(result.stdout) if e["event"] == "rollback finished")
    assert summary["segments_restored"] == segments and summary["failures"] == 0
    assert summary["log_start_lowered"] == {f"orders-{p}": [_start(parse_offset_checkpoint(checkpoint_before), p), 0]
                                            for p in (0, 1)}
    # The checkpoint: orders lines at 0, every other line exactly as it was, in its place.
    old, new = checkpoint_before.splitlines(), (env.log_dir / "log-start-offset-checkpoint").read_text().splitlines()
    assert len(old) == len(new)
    for a, b in zip(old, new):
        assert b == (a.rsplit(" ", 1)[0] + " 0" if a.startswith("orders ") else a)
    assert not tiering_enabled(config, "orders") and tiering_enabled(config, "clicks")

    again = run_cli("rollback", "--config", str(config), "--topic", "orders", "--confirm")
    assert again.returncode == 0, again.stderr
    summary = next(e for e in events(again.stdout) if e["event"] == "rollback finished")
    assert summary["segments_restored"] == 0 and summary["bytes_restored"] == 0    # idempotent
    assert orders_files(env.log_dir) == before
    broker.close()


def test_the_daemon_leaves_a_rolled_back_topic_alone_until_resume(env, s3, tmp_path):
    from tests.integration.daemon_process import DaemonProcess, wait_for
    from tiering.demo import free_port

    broker, before = build(env)
    port = free_port()
    config = env.write_config(OFFLOAD_ALL + '\n[daemon]\nretention_interval_ms = "200ms"\n')
    config.write_text(config.read_text().replace('listen = ""', f'listen = "127.0.0.1:{port}"'))
    daemon = DaemonProcess(config, tmp_path, port, os.environ)

    def only_active(topic: str, partition: int) -> bool:
        return len(list((env.log_dir / f"{topic}-{partition}").glob("*.log"))) == 1

    try:
        daemon.wait_ready()
        wait_for(lambda: only_active("orders", 0) and only_active("orders", 1) and only_active("clicks", 0), 30,
                 "the daemon did not offload and trim the local disk")
        broker.restart()
        result = run_cli("rollback", "--config", str(config), "--topic", "orders", "--confirm", "--delete-remote")
        assert result.returncode == 0, result.stderr
        # Never in the restoring command (issue 22): the copies wait for the cluster's word.
        assert [k for k in remote_manifests(s3) if k[0] == "orders"]
        wait_for(lambda: any(e["event"].startswith("tiering turned off for topic") for e in daemon.events()), 10,
                 "the daemon did not see the rollback")
        passes = daemon.metric("tiering_retention_passes_total")
        wait_for(lambda: daemon.metric("tiering_retention_passes_total") >= passes + 3, 20, "retention stopped")
        assert orders_files(env.log_dir) == before            # restored segments survive the daemon's retention
        assert daemon.metric("tiering_disabled_topics") == 1

        # New rolled segments of orders stay local; those of clicks (the witness) are offloaded
        # and trimmed. (Two rolls each: the daemon sees appends to an active segment only at its
        # next scan, and size retention never deletes below the limit.)
        def roll_twice(topic: str) -> int:
            """Returns the base offset of the first segment rolled (the active one now)."""
            first = max(int(p.name[:20]) for p in (env.log_dir / f"{topic}-0").glob("*.log"))
            for _ in range(2):
                broker.produce(topic, 0, 200, value_size=200)
                broker.roll(topic, 0)
            broker.produce(topic, 0, 1)
            return first

        def gone(topic: str, base: int) -> bool:
            return not (env.log_dir / f"{topic}-0" / f"{base:020d}.log").exists()

        orders_next, clicks_next = roll_twice("orders"), roll_twice("clicks")
        wait_for(lambda: ("clicks", 0, clicks_next) in remote_manifests(s3) and gone("clicks", clicks_next), 20,
                 "the witness topic was not offloaded")
        assert ("orders", 0, orders_next) not in remote_manifests(s3)
        assert set(before) <= set(orders_files(env.log_dir))

        resumed = run_cli("resume", "--config", str(config), "--topic", "orders")
        assert resumed.returncode == 0 and "tiering is on again for topic orders" in resumed.stdout
        # New segments go up again; the restored ones were never removed from the store.
        wait_for(lambda: ("orders", 0, orders_next) in remote_manifests(s3) and gone("orders", 0), 20,
                 "resume did not turn tiering back on")
        assert ("orders", 0, 0) in remote_manifests(s3)
        assert daemon.metric("tiering_disabled_topics") == 0
    finally:
        daemon.stop()
    broker.close()


def test_sigterm_then_kill_9_in_the_middle_of_a_restore_then_a_rerun_finishes_it(env, s3):
    broker, before = build(env, rounds=8)
    # ~130 KB/s: a restore takes several seconds, so each stop lands in the middle of it.
    config = env.write_config(OFFLOAD_ALL + "\n[read]\nrate_limit_bytes_per_second = 130000\n")
    offload(env, config, broker)
    total = len(orders_remote(s3, 0)) + len(orders_remote(s3, 1))
    command = [sys.executable, "-m", "tiering", "rollback", "--config", str(config), "--topic", "orders", "--confirm"]

    def stop_after_first_segment(signum: int) -> subprocess.Popen:
        rollback = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert rollback.stdout is not None
        for line in rollback.stdout:
            if '"segment restored"' in line:
                break
        else:
            raise AssertionError(f"no segment restored: {rollback.stderr.read() if rollback.stderr else ''}")
        rollback.send_signal(signum)
        rollback.wait(30)
        return rollback

    # SIGTERM: a clean stop, exit 130, no temporary file left, checkpoints right for what is there.
    stopped = stop_after_first_segment(signal.SIGTERM)
    assert stopped.returncode == 130
    assert stopped.stderr is not None and "rerun the same command to finish" in stopped.stderr.read()
    assert not [n for n in orders_files(env.log_dir) if n.endswith(".restore.tmp")]
    assert_nothing_half_visible(env.log_dir, before)
    starts = parse_offset_checkpoint((env.log_dir / "log-start-offset-checkpoint").read_text())
    for p in (0, 1):
        first = min(int(f.name[:20]) for f in (env.log_dir / f"orders-{p}").glob("*.log"))
        assert _start(starts, p) == first     # the broker would keep every restored segment
    assert not tiering_enabled(config, "orders")     # turned off durably before the first byte was written

    # kill -9: no chance to clean up; nothing half-written is visible all the same.
    stop_after_first_segment(signal.SIGKILL)
    assert_nothing_half_visible(env.log_dir, before)

    rerun = run_cli("rollback", "--config", str(config), "--topic", "orders", "--confirm")
    assert rerun.returncode == 0, rerun.stderr
    summary = next(e for e in events(rerun.stdout) if e["event"] == "rollback finished")
    assert 0 < summary["segments_restored"] <= total - 2   # what the stopped runs restored is not downloaded again
    assert orders_files(env.log_dir) == before
    broker.close()


def _limit_file_size(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_disk_that_refuses_writes_fails_cleanly_and_a_rerun_finishes(env, s3):
    broker, before = build(env, segment_bytes=256_000, rounds=8)
    config = env.write_config(OFFLOAD_ALL)
    offload(env, config, broker)
    largest = max(len(v) for k, v in before.items() if k.endswith(".log"))
    assert largest > 200_000
    # Files may not grow past 150 KB in this process: the first .log restored hits the limit
    # (EFBIG, as a full disk gives ENOSPC); the journal and the index files stay well below it.
    result = subprocess.run([sys.executable, "-m", "tiering", "rollback", "--config", str(config), "--topic", "orders",
                             "--confirm"], capture_output=True, text=True, timeout=120,
                            preexec_fn=_limit_file_size(150_000))
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines and all(line.startswith("tiering: orders-") for line in lines)
    assert any("File too large" in line and ".log.restore.tmp" in line and "free space" in line for line in lines)
    assert "Traceback" not in result.stderr
    assert not [n for n in orders_files(env.log_dir) if n.endswith(".restore.tmp")]   # cleaned up
    assert_nothing_half_visible(env.log_dir, before)

    rerun = run_cli("rollback", "--config", str(config), "--topic", "orders", "--confirm")
    assert rerun.returncode == 0, rerun.stderr
    assert orders_files(env.log_dir) == before
    broker.close()


def test_a_manifest_pointing_outside_its_partition_is_refused(env, s3):
    broker, before = build(env)
    config = env.write_config(OFFLOAD_ALL)
    offload(env, config, broker)
    manifests = orders_remote(s3, 0)
    doc = manifests[min(manifests)]
    stem = next(o["key"] for o in doc["objects"] if o["kind"] == "log").rsplit(".", 1)[0]
    log_object = next(o for o in doc["objects"] if o["kind"] == "log")
    log_object["key"] = f"{PREFIX}../../../../etc/{Path(stem).name}.log"        # a traversal
    manifest_key = stem + ".manifest.json"
    s3.put_object(Bucket=BUCKET, Key=manifest_key, Body=json.dumps(doc).encode())
    partition_0 = {k: v for k, v in local_files(env.log_dir).items() if k.startswith("orders-0/")}
    outside = {k: v for k, v in local_files(env.log_dir).items() if not k.startswith("orders-")}

    dry = run_cli("rollback", "--config", str(config), "--topic", "orders")
    assert dry.returncode == 0 and f"orders-0: refused: manifest {manifest_key} is not usable" in dry.stdout
    result = run_cli("rollback", "--config", str(config), "--topic", "orders", "--confirm")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and manifest_key in lines[0] and "is not this segment's log key" in lines[0]
    assert {k: v for k, v in local_files(env.log_dir).items() if k.startswith("orders-0/")} == partition_0
    assert {k: v for k, v in orders_files(env.log_dir).items() if k.startswith("orders-1/")} == \
        {k: v for k, v in before.items() if k.startswith("orders-1/")}           # the other partition restored
    assert {k: v for k, v in local_files(env.log_dir).items()
            if not k.startswith("orders-") and k != "log-start-offset-checkpoint"} == \
        {k: v for k, v in outside.items() if k != "log-start-offset-checkpoint"}
    broker.close()


def test_delete_remote_after_a_verified_restore_and_a_disk_space_refusal(env, s3):
    broker, before = build(env)
    config = env.write_config(OFFLOAD_ALL)
    offload(env, config, broker)
    files, bucket = local_files(env.log_dir), bucket_snapshot(s3)
    short = run_cli("rollback", "--config", str(config), "--topic", "orders", "--confirm", "--keep-free", "1000TiB")
    assert short.returncode == 3
    line = short.stderr.strip()
    assert "\n" not in line and "not enough free disk space" in line and "needs" in line and "nothing was changed" in line
    assert local_files(env.log_dir) == files and bucket_snapshot(s3) == bucket and tiering_enabled(config, "orders")

    clicks = {k: v for k, v in bucket.items() if "/clicks-" in k}
    # With the cluster known, the dry run names each partition's replica brokers.
    from tests.kafka_wire import FakeKafka
    cluster = FakeKafka({"orders": 2, "clicks": 1}, replicas={("orders", 1): [3, 1, 2]})
    try:
        known = env.root / "known.toml"
        known.write_text(config.read_text().replace("[kafka]\n", f'[kafka]\nbootstrap_servers = "{cluster.bootstrap}"\n'))
        dry = run_cli("rollback", "--config", str(known), "--topic", "orders", "--delete-remote")
        assert dry.returncode == 0, dry.stderr
        assert "  orders-0: broker 1 (this broker, leader)\n" in dry.stdout
        assert "  orders-1: brokers 3, 1 (this broker, leader), 2\n" in dry.stdout
        assert "  broker 3: stop it; tiering rollback --topic orders --confirm with that broker's own sidecar " \
               "config (orders-1)\n" in dry.stdout
        assert dry.stderr.startswith("tiering: warning: orders-1 has replicas on other brokers: a rollback of this "
                                     "broker alone is undone by replication") and dry.stderr.count("\n") == 1
        assert "not in the command that restores" in dry.stdout
    finally:
        cluster.close()
    result = run_cli("rollback", "--config", str(config), "--topic", "orders", "--confirm", "--delete-remote")
    assert result.returncode == 0, result.stderr
    assert orders_files(env.log_dir) == before
    # The restoring command deletes nothing from the store (issue 22): the broker is stopped,
    # and a follower adopts the leader's log start when it comes back.
    assert bucket_snapshot(s3) == bucket
    assert "orders-0: the store's copies are kept until the running cluster confirms log start 0" in result.stderr
    # The cluster is not asked here (no bootstrap servers): the replica set recorded by the dry run warns.
    assert result.stderr.startswith("tiering: warning: orders-1 has replicas on other brokers")

    # Run again with no cluster to ask: nothing deleted, said so, exit 1.
    again = run_cli("rollback", "--config", str(config), "--topic", "orders", "--confirm", "--delete-remote")
    assert again.returncode == 1 and bucket_snapshot(s3) == bucket
    assert "kafka.bootstrap_servers" in again.stdout and "store's copies are kept" in again.stderr

    # The cluster says the log start moved up again (a follower took the leader's): undone,
    # loudly, the copies kept.
    from tests.kafka_wire import FakeKafka
    kafka = FakeKafka({"orders": 2, "clicks": 1}, earliest={("orders", 0): 221, ("orders", 1): 0})
    try:
        config = env.write_config(f'bootstrap_servers = "{kafka.bootstrap}"\n' + OFFLOAD_ALL)
        undone = run_cli("rollback", "--config", str(config), "--topic", "orders", "--confirm", "--delete-remote")
        assert undone.returncode == 1
        assert "orders-0: rollback undone: the cluster's log start is 221, above the restored first offset 0" \
            in undone.stderr
        assert [e for e in events(undone.stdout) if e["event"] == "rollback undone by Kafka; store copies kept"]
        remaining = bucket_snapshot(s3)
        assert [k for k in remaining if "/orders-" in k and "/0/" in k] == [k for k in bucket if "/orders-" in k
                                                                             and "/0/" in k]
        assert not [k for k in remaining if "/orders-" in k and "/1/" in k]      # orders-1 confirmed: gone
        kafka.earliest[("orders", 0)] = 0                                           # all replicas rolled back
        result = run_cli("rollback", "--config", str(config), "--topic", "orders", "--confirm", "--delete-remote")
        assert result.returncode == 0, result.stderr
    finally:
        kafka.close()
    config = env.write_config(OFFLOAD_ALL)
    remaining = bucket_snapshot(s3)
    assert not [k for k in remaining if "/orders-" in k]          # manifests and data of orders: gone
    assert {k: v for k, v in remaining.items() if "/clicks-" in k} == clicks
    status = json.loads(run_cli("status", "--config", str(config), "--json").stdout)
    assert all(r["remote_segments"] == 0 for r in status["partitions"] if r["topic"] == "orders")

    # After resume, the restored segments are uploaded again (the journal forgot the deleted copies).
    assert run_cli("resume", "--config", str(config), "--topic", "orders").returncode == 0
    again = run_cli("run", "--config", str(config), "--once")
    assert again.returncode == 0, again.stderr
    assert len(orders_remote(s3, 0)) == len([k for k in before if k.startswith("orders-0/") and k.endswith(".log")]) - 1
    broker.close()


def test_a_retention_pass_planned_before_a_rollback_deletes_nothing_of_the_topic(env, s3):
    """The race a running daemon has with a rollback: a pass planned while the topic was still
    tiered must ask again, under the broker's lock, right before it unlinks."""
    from tests.integration.test_cli_and_recovery import ListLog
    from tiering.config import load_config
    from tiering.journal import Journal
    from tiering.kafka.logdir import scan_log_dirs
    from tiering.retention.run import RetentionRunner
    from tiering.wiring import open_store

    broker, before = build(env)
    keep = env.write_config('\n[retention]\nlocal_delete = "off"\n')
    assert run_cli("run", "--config", str(keep), "--once").returncode == 0     # uploaded, still local
    config = load_config(env.write_config(OFFLOAD_ALL))
    clicks_before = len(list((env.log_dir / "clicks-0").glob("*.log")))
    journal, store = Journal(env.state_dir), open_store(config)
    try:
        runner = RetentionRunner(store, ListLog(), lambda: 0, disabled_now=lambda: frozenset({"orders"}))
        report = runner.run(config, scan_log_dirs([env.log_dir]), journal.all(), frozenset())   # a stale set
    finally:
        journal.close()
        store.close()
    assert {d.segment.topic for d in report.deleted} == {"clicks"}
    assert orders_files(env.log_dir) == before
    assert len(list((env.log_dir / "clicks-0").glob("*.log"))) < clicks_before
    broker.close()
