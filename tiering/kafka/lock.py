"""Is a broker running on this log dir? The broker holds a POSIX record lock (`fcntl`, Java's
`FileChannel.tryLock`) on `<log dir>/.lock` for as long as it runs.

`flock` locks are a separate kind on Linux: a `flock` test always succeeds and proves nothing,
so both functions here use `fcntl` record locks only.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

LOCK_FILE = ".lock"
# struct flock on 64-bit Linux: l_type, l_whence (short), l_start, l_len (off_t), l_pid (pid_t),
# padded to 32 bytes. Python's fcntl module has lockf() but no F_GETLK wrapper, and F_GETLK is
# the only test that works on a descriptor opened read-only and names the holder's pid.
_FLOCK = "hhqqi4x"
# `.lock` is in a directory the broker's user writes: never followed if it is a link, and a
# FIFO there cannot block the open (a `.lock` that is not a regular file counts as held).
_OPEN_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


@dataclass(frozen=True)
class LockState:
    held: bool
    detail: str           # for an operator: who holds it, or why we could not tell


class BrokerRunning(Exception):
    def __init__(self, log_dir: Path, state: LockState):
        super().__init__(f"{log_dir}: {state.detail}")
        self.log_dir = log_dir
        self.state = state


def probe_lock(log_dir: Path) -> LockState:
    """Test (never take) the broker's lock; works with read access only."""
    path = Path(log_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | _OPEN_FLAGS)
    except FileNotFoundError:
        return LockState(False, f"no {LOCK_FILE} (no broker has started on this log dir)")
    except OSError as exc:
        return LockState(True, f"cannot open {path} to test the broker's lock ({exc.strerror}); "
                               "treated as held")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return LockState(True, f"{path} is not a regular file; treated as held")
    try:
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0))
        lock_type, _, _, _, pid = struct.unpack(_FLOCK, answer)
    except OSError as exc:
        return LockState(True, f"cannot test the broker's lock on {path} ({exc.strerror}); treated as held")
    finally:
        os.close(fd)
    if lock_type == fcntl.F_UNLCK:
        return LockState(False, f"no process holds {path}")
    return LockState(True, f"a broker (pid {pid}) holds {path}")


@contextmanager
def broker_stopped(log_dir: Path) -> Iterator[None]:
    """Run the body only while no broker runs on `log_dir`; raises BrokerRunning otherwise.

    Where `.lock` is writable we take the lock ourselves for the body's few milliseconds, so a
    broker starting meanwhile fails its own lock (and is restarted by its supervisor) instead of
    loading a log dir whose files are being unlinked. Where it is read-only to us, we can only
    test it (a narrow race with a broker start, said in the README).
    """
    path = Path(log_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | _OPEN_FLAGS)
    except FileNotFoundError:
        yield
        return
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise BrokerRunning(Path(log_dir), LockState(True, f"cannot open {path} ({exc.strerror})")) from None
        state = probe_lock(log_dir)
        if state.held:
            raise BrokerRunning(Path(log_dir), state) from None
        yield
        return
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BrokerRunning(Path(log_dir), LockState(True, f"{path} is not a regular file; treated as held"))
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise BrokerRunning(Path(log_dir), LockState(True, f"cannot lock {path} ({exc.strerror})")) from None
            raise BrokerRunning(Path(log_dir), probe_lock(log_dir)) from None
        yield
    finally:
        os.close(fd)   # closing the descriptor releases our record lock
