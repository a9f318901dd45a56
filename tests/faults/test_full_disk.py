"""Full disks: the state dir, and a rollback's target, run out of space on a real file system
(a small tmpfs mounted for the test). Each stops with one clear line; the journal stays
sound; nothing half-written is visible; once space returns, a restart or a rerun finishes."""

from __future__ import annotations

import errno
import signal
import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.faults.harness import Ledger, StoreView, config_text, whereabouts
from tests.integration.daemon_process import DaemonProcess, wait_for
from tests.integration.test_retention import local_files
from tiering.demo import free_port
from tiering.simulate import SimulatedBroker

pytestmark = [pytest.mark.integration, pytest.mark.faults]


@pytest.fixture
def small_fs(tmp_path):
    """Mount a tmpfs of the given size; unmounted after the test. Mounting needs root (or
    CAP_SYS_ADMIN): without it the test cannot make a real full disk and says so."""
    mounts = []

    def mount(name: str, size: str) -> Path:
        path = tmp_path / name
        path.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {result.stderr.strip()}")
        mounts.append(path)
        return path
    yield mount
    for path in mounts:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    """Write a filler file until the file system refuses (ENOSPC); returns it."""
    filler = directory / "filler"
    with open(filler, "wb") as out:
        block = b"\0" * 65536
        try:
            while True:
                out.write(block)
                out.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


def journal_rows(state_dir: Path) -> tuple[str, dict[str, int]]:
    with sqlite3.connect(state_dir / "journal.sqlite") as db:
        check = db.execute("PRAGMA integrity_check").fetchone()[0]
        states = dict(db.execute("SELECT state, count(*) FROM segments GROUP BY state").fetchall())
    return check, states


def test_a_full_state_dir_stops_the_daemon_with_one_line_and_a_restart_finishes(env, s3, tmp_path, small_fs,
                                                                                fault_report):
    state = small_fs("state", "4m")
    env = replace(env, state_dir=state)
    broker = SimulatedBroker(env.log_dir, segment_bytes=1 << 30, seed=8)
    broker.create_topic("events", 2)
    ledger = Ledger(broker)
    port = free_port()
    config = config_text(env, env.endpoint, metrics_port=port, retention="local_retention_ms = 0",
                         daemon="retention_interval_ms = 200")
    view = StoreView(s3)

    def produce(rounds: int) -> None:
        for _ in range(rounds):
            for partition in (0, 1):
                broker.produce("events", partition, 300, value_size=200)
                ledger.roll("events", partition)

    produce(3)
    daemon = DaemonProcess(config, tmp_path, port)
    try:
        daemon.wait_ready()
        wait_for(lambda: len(whereabouts(ledger, env.log_dir, view).remote) == 6, 30, "first segments not uploaded")
        filler = fill(state)
        produce(3)                        # the daemon must journal these before uploading them
        code = daemon.proc.wait(30)
    finally:
        daemon.kill()
    stderr = daemon.stderr()
    assert code == 1, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "journal" in lines[0] and "full" in lines[0] and "free space in state.dir" in lines[0], lines[0]
    where = whereabouts(ledger, env.log_dir, view)
    assert not where.lost and not where.duplicates and not where.broken

    # Still full: a start says the same thing, at once, and changes nothing.
    start = run_cli("run", "--config", str(config), "--once")
    assert start.returncode == 1 and len(start.stderr.strip().splitlines()) == 1, start.stderr
    assert "free space" in start.stderr and "Traceback" not in start.stderr

    filler.unlink()                       # space returns
    check, states = journal_rows(state)
    assert check == "ok", check
    daemon = DaemonProcess(config, tmp_path, port)
    try:
        daemon.wait_ready()

        def done() -> bool:
            where = whereabouts(ledger, env.log_dir, view)
            return set(where.remote) == set(ledger.segments) and not where.local
        wait_for(done, 60, "the restarted daemon did not finish after space returned")
        assert daemon.stop(signal.SIGTERM)[0] == 0, daemon.stderr()
    finally:
        daemon.kill()
    where = whereabouts(ledger, env.log_dir, view)
    assert not where.duplicates and not where.orphans and journal_rows(state)[0] == "ok"
    fault_report("full state dir", error=repr(lines[0]), journal_when_full=states, segments=len(ledger.segments),
                 offloaded=len(where.remote), lost=len(where.lost), duplicates_visible=len(where.duplicates))
    broker.close()


def test_a_rollback_target_that_fills_up_mid_restore_fails_cleanly_and_a_rerun_finishes(env, s3, tmp_path,
                                                                                      small_fs, fault_report):
    logs = small_fs("kafka-logs", "24m")
    env = replace(env, log_dir=logs)
    broker = SimulatedBroker(logs, segment_bytes=1 << 30, seed=9)
    broker.create_topic("orders", 1)
    ledger = Ledger(broker)
    for _ in range(6):
        broker.produce("orders", 0, 2000, value_size=1000, batch_records=50)   # 2 MB segments
        ledger.roll("orders", 0)
    before = {k: v for k, v in local_files(logs).items() if k.startswith("orders-0/")}
    # A slow restore (2 MiB/s from the store), so the disk can fill while it runs.
    config = config_text(env, env.endpoint, retention="local_retention_ms = 0",
                         extra='[read]\nrate_limit_bytes_per_second = "2MiB"')
    once = run_cli("run", "--config", str(config), "--once")
    assert once.returncode == 0, once.stderr
    assert len(list((logs / "orders-0").glob("*.log"))) == 1
    broker.restart()
    view = StoreView(s3)

    rollback = subprocess.Popen([sys.executable, "-m", "tiering", "rollback", "--config", str(config),
                                 "--topic", "orders", "--confirm", "--keep-free", "0"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Another writer on the disk (the broker, say) takes the space once the restore has begun.
    wait_for(lambda: any(p.name.endswith(".restore.tmp") for p in (logs / "orders-0").iterdir())
             or rollback.poll() is not None, 30, "the restore never started")
    filler = fill(logs)
    out, err = rollback.communicate(timeout=120)
    assert rollback.returncode == 1, out + err
    lines = err.strip().splitlines()
    assert lines and all(line.startswith("tiering: orders-0") for line in lines), err
    assert any("No space left on device" in line and "free space" in line for line in lines), err
    assert "Traceback" not in err
    assert not [p for p in (logs / "orders-0").iterdir() if p.name.endswith(".restore.tmp")]
    for name, data in local_files(logs).items():
        if name.startswith("orders-0/") and name.endswith((".log", ".index", ".timeindex")):
            assert data == before[name], f"{name} is visible but not what the broker wrote"
    where = whereabouts(ledger, logs, view)
    assert not where.lost and set(where.remote) == set(ledger.segments)     # the store keeps everything

    filler.unlink()
    rerun = run_cli("rollback", "--config", str(config), "--topic", "orders", "--confirm", "--keep-free", "0")
    assert rerun.returncode == 0, rerun.stderr
    after = {k: v for k, v in local_files(logs).items() if k.startswith("orders-0/")}
    for name, data in before.items():
        if name.endswith((".log", ".index", ".timeindex")):
            assert after.get(name) == data, f"{name} not restored byte for byte"
    restored = whereabouts(ledger, logs, view)
    fault_report("full rollback target", error=repr(next(line for line in lines if "No space" in line)),
                 segments=len(ledger.segments), restored=len(restored.local),
                 lost=len(restored.lost), duplicates_visible=len(restored.duplicates))
    broker.close()
