"""Restrictive modes for what we keep: state.dir, the journal, pin dirs.

The journal names every topic and partition and where its segments are in the store, and
pins are hard links to the broker's data: neither is anyone else's business. Directories are
0700 and the journal's files 0600 whatever the umask (outside systemd the usual 022 made them
0755 and 0644): created that way, and tightened when an older run left them wider.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> None:
    """Create `path` (and missing parents) and make `path` itself 0700. Parents that exist are
    left alone (/var/lib is not ours); missing ones are created 0700 too."""
    missing = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, DIR_MODE)    # umask only takes bits away: at most 0700
        except FileExistsError:
            pass
    tighten(path, DIR_MODE)


def private_file(path: Path) -> None:
    """Create `path` empty and 0600 if it does not exist (an empty file is a valid empty SQLite
    database, and SQLite gives its -wal and -shm files the database's mode); tighten it if it
    does. A link there is refused (O_NOFOLLOW), never followed."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    try:
        _tighten_fd(fd, FILE_MODE)
    finally:
        os.close(fd)


def tighten(path: Path, mode: int) -> None:
    """Take away group and other bits from something of ours that has them; something we do
    not own (a shared directory an operator chose) is left as it is."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode) or info.st_uid != os.geteuid():
        return
    if stat.S_IMODE(info.st_mode) & ~mode:
        os.chmod(path, stat.S_IMODE(info.st_mode) & mode)


def _tighten_fd(fd: int, mode: int) -> None:
    info = os.fstat(fd)
    if info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) & ~mode:
        os.fchmod(fd, stat.S_IMODE(info.st_mode) & mode)
