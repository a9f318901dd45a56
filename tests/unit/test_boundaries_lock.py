"""The broker-lock test's answers, each exact (found by mutation testing: the details reach the
operator and the `held` flag decides whether anything is unlinked). A lock on part of the file
only, a FIFO or a directory at `.lock`, a link, no `.lock` at all."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tiering.kafka.lock import BrokerRunning, LockState, broker_stopped, probe_lock


def test_no_lock_file_means_no_broker_ever_started():
    assert probe_lock(Path("/nonexistent-log-dir-24")) == LockState(
        False, "no .lock (no broker has started on this log dir)")


def test_an_unlocked_lock_file_is_named(tmp_path):
    (tmp_path / ".lock").touch()
    assert probe_lock(tmp_path) == LockState(False, f"no process holds {tmp_path / '.lock'}")


@pytest.mark.parametrize("make", [lambda p: os.mkfifo(p), lambda p: p.mkdir()])
def test_a_lock_path_that_is_not_a_regular_file_counts_as_held(tmp_path, make):
    make(tmp_path / ".lock")
    assert probe_lock(tmp_path) == LockState(True, f"{tmp_path / '.lock'} is not a regular file; treated as held")
    with pytest.raises(BrokerRunning, match=str(tmp_path)):
        with broker_stopped(tmp_path):
            raise AssertionError("the body must not run")


def test_a_link_at_the_lock_path_is_never_followed(tmp_path):
    (tmp_path / "elsewhere").touch()
    (tmp_path / ".lock").symlink_to(tmp_path / "elsewhere")
    state = probe_lock(tmp_path)
    assert state.held and state.detail.startswith(f"cannot open {tmp_path / '.lock'} to test the broker's lock (")
    assert state.detail.endswith("); treated as held")


@pytest.mark.parametrize("start", [0, 99], ids=["first byte", "last byte"])
def test_a_lock_on_one_byte_only_is_still_seen(tmp_path, start):
    """The test asks about the whole file, whatever range the holder locked."""
    path = tmp_path / ".lock"
    path.write_bytes(b"x" * 100)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, time\n"
        f"f = open({str(path)!r}, 'r+')\n"
        f"fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, {start}, os.SEEK_SET)\n"
        "print('locked', flush=True)\ntime.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert probe_lock(tmp_path) == LockState(True, f"a broker (pid {holder.pid}) holds {path}")
    finally:
        holder.kill()
        holder.wait()


def test_broker_running_names_the_log_dir_and_the_detail(tmp_path):
    state = LockState(True, "a broker (pid 7) holds x")
    error = BrokerRunning(tmp_path, state)
    assert str(error) == f"{tmp_path}: a broker (pid 7) holds x"
    assert error.log_dir == tmp_path and error.state is state
