"""Durable file operations on the broker's disk: checksums, fsync of a directory, atomic
replacement of a small file, and dropping a file's pages from the page cache."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import crc32c

_READ_BLOCK = 1 << 20
# Errors of writing to the local disk (full, file size limit, quota, read-only, I/O, permission).
LOCAL_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES})


def file_crc32c(path: Path) -> tuple[int, str] | None:
    """(size, CRC-32C as 8 hex digits) of a file; None when there is no such file."""
    try:
        with open(path, "rb") as f:
            value, size = 0, 0
            while block := f.read(_READ_BLOCK):
                value = crc32c.crc32c(block, value)
                size += len(block)
    except FileNotFoundError:
        return None
    return size, f"{value:08x}"


def fsync_dir(path: Path) -> None:
    """Make the renames and unlinks in a directory durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_file(path: Path, data: bytes) -> None:
    """Write `data` under `path` so a reader (or a crash) sees the old file or the new one,
    never a mix: a temporary file in the same directory, fsync, rename, fsync of the
    directory. The temporary name ends in `.tmp`, as the broker's own checkpoint writes do."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        try:
            owner = os.stat(path)
            os.fchmod(fd, owner.st_mode & 0o7777)
            give_to_owner(fd, owner)
        except FileNotFoundError:
            give_to_owner(fd, os.stat(path.parent))
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def give_to_owner(fd: int, owner: os.stat_result) -> None:
    """Make a file we create in the broker's log dir belong to the broker's user (when we run
    as root, e.g. `sudo tiering rollback`): a root-owned segment or checkpoint is one the
    broker cannot rewrite or delete, and it takes the whole log dir offline over it."""
    if os.geteuid() == 0 and (owner.st_uid, owner.st_gid) != (0, 0):
        os.fchown(fd, owner.st_uid, owner.st_gid)


def drop_cached_pages(path: Path) -> None:
    """Ask the kernel to drop a file's clean pages (posix_fadvise DONTNEED); best effort.

    A restored segment is cold data: leaving it in the page cache would evict the hot tail
    the broker's consumers read, which is what tiering exists to prevent."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError:
        pass
    finally:
        os.close(fd)
