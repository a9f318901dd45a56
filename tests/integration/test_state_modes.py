"""Finding 10: whatever the umask, state.dir and pin dirs are 0700 and the journal's files 0600
(outside systemd, the usual umask 022 made them 0755 and 0644)."""

from __future__ import annotations

import os
import stat

import pytest

from tests.conftest import run_cli
from tiering.simulate import SimulatedBroker

pytestmark = pytest.mark.integration


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_state_dir_journal_and_pins_are_private_under_umask_022(env, s3, tmp_path, umask_022):
    broker = SimulatedBroker(env.log_dir, segment_bytes=8 * 1024, seed=10)
    broker.create_topic("orders", 2)
    for partition in (0, 1):
        broker.produce("orders", partition, 300, value_size=100)
    pin_dir = tmp_path / "pins-here"
    config = env.write_config()
    text = config.read_text().replace(f'dir = "{env.state_dir}"', f'dir = "{env.state_dir}"\npin_dirs = ["{pin_dir}"]')
    config.write_text(text)
    result = run_cli("run", "--config", str(config), "--once")
    assert result.returncode == 0, result.stderr

    assert mode(env.state_dir) == 0o700
    journal = env.state_dir / "journal.sqlite"
    files = [journal, *(p for p in (env.state_dir / "journal.sqlite-wal", env.state_dir / "journal.sqlite-shm")
                        if p.exists())]
    assert {str(p): mode(p) for p in files} == {str(p): 0o600 for p in files}
    # Pins were made (and released after the upload); every directory they used is private.
    pin_dirs = [pin_dir, *(p for p in pin_dir.rglob("*") if p.is_dir())]
    assert len(pin_dirs) >= 3, pin_dirs          # the root, a topic id, a partition
    assert {str(p): mode(p) for p in pin_dirs} == {str(p): 0o700 for p in pin_dirs}


def test_a_journal_left_wide_by_an_older_run_is_tightened(env, s3, umask_022):
    env.state_dir.mkdir(mode=0o755)
    (env.state_dir / "journal.sqlite").touch(mode=0o644)
    os.chmod(env.state_dir / "journal.sqlite", 0o644)
    SimulatedBroker(env.log_dir, seed=11).create_topic("orders", 1)
    result = run_cli("run", "--config", str(env.write_config()), "--once")
    assert result.returncode == 0, result.stderr
    assert mode(env.state_dir) == 0o700
    assert mode(env.state_dir / "journal.sqlite") == 0o600
