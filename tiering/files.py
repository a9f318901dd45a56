"""File operations on the broker's disk: checksums, fsync of a directory, atomic replacement
of a small file, dropping a file's pages from the page cache, and reading the broker's files
without ever following a link or blocking on a FIFO.

The broker's log dir and partition dirs are writable by the broker's user, and `rollback` (or
`run --once`) may run as root there: whoever can write the directory may plant a symbolic
link, a FIFO or a device under any name we are about to open. So every file here is opened by
name relative to a directory descriptor (`dir_fd=`), with `O_NOFOLLOW`; what we create is
created `O_EXCL` (a name already taken is unlinked first: unlink removes a link, never its
target); what we read must be a regular file (checked on the descriptor, after an open that
cannot block); ownership, modes and times are set on the descriptor we created, never by name.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path

import crc32c

_READ_BLOCK = 1 << 20
# Errors of writing to the local disk (full, file size limit, quota, read-only, I/O, permission).
LOCAL_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES})
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_CREATE_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class NotRegularFile(OSError):
    """A name we were to read or write is a symbolic link, FIFO, socket, device or directory:
    never followed, opened or read. Its message names the file and its kind, never its content."""

    def __init__(self, path: str | os.PathLike, kind: str):
        super().__init__(errno.EINVAL, f"is {kind}, not a regular file: not followed or read", str(path))

    def __str__(self) -> str:
        return f"{self.filename} {self.strerror}"


def file_kind(mode: int) -> str:
    """What a non-regular file is, for an operator."""
    for test, kind in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISDIR, "a directory")):
        if test(mode):
            return kind
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"


def open_regular(path: str | os.PathLike, *, dir_fd: int | None = None, shown: str | os.PathLike | None = None) -> int:
    """A read-only descriptor of a regular file, never through a link; raises NotRegularFile
    for anything else (`shown`: the name to report, when `path` is relative to `dir_fd`).

    lstat first, so a device node is never opened (opening one can have effects); O_NONBLOCK on
    the open, so a FIFO put there between the lstat and the open cannot hang us (cleared after
    the fstat has shown a regular file)."""
    name = shown if shown is not None else path
    info = os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
    if not stat.S_ISREG(info.st_mode):
        raise NotRegularFile(name, file_kind(info.st_mode))
    try:
        fd = os.open(path, _READ_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotRegularFile(name, "a symbolic link") from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(name, file_kind(mode))
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_regular_file(path: str | os.PathLike):
    """`open_regular` as a binary file object (unbuffered)."""
    return os.fdopen(open_regular(path), "rb", buffering=0)


def read_regular(path: str | os.PathLike, *, dir_fd: int | None = None) -> bytes:
    """The bytes of a regular file (see `open_regular`)."""
    fd = open_regular(path, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as f:
        return f.read()


def read_regular_text(path: str | os.PathLike, *, dir_fd: int | None = None) -> str:
    """The text of a small regular file (UTF-8; raises UnicodeDecodeError otherwise)."""
    return read_regular(path, dir_fd=dir_fd).decode()


def open_dir(path: str | os.PathLike, *, follow: bool = False, dir_fd: int | None = None) -> int:
    """A descriptor of a directory. `follow=False`: a link at the last component is refused
    (a partition dir, which the broker's user could swap for a link); `follow=True` for a path
    the operator configured (a log dir may be a link by design)."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        return os.open(path, flags, dir_fd=dir_fd)
    except NotADirectoryError:
        info = os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
        raise NotADirectoryError(errno.ENOTDIR, f"is {file_kind(info.st_mode)}, not a directory: not followed",
                                 str(path)) from None


def fd_crc32c(fd: int) -> tuple[int, str]:
    """(size, CRC-32C as 8 hex digits) of an open file, read from its start."""
    value, size = 0, 0
    while block := os.pread(fd, _READ_BLOCK, size):
        value = crc32c.crc32c(block, value)
        size += len(block)
    return size, f"{value:08x}"


def file_crc32c(path: Path, *, dir_fd: int | None = None) -> tuple[int, str] | None:
    """(size, CRC-32C as 8 hex digits) of a regular file; None when there is no such file.
    Raises NotRegularFile for a link, FIFO or device."""
    try:
        fd = open_regular(path, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    try:
        return fd_crc32c(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make the renames and unlinks in a directory durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def unlink_name(dir_fd: int, name: str) -> bool:
    """Remove whatever `name` is in the directory (a link is removed, never its target);
    False when there was nothing. A directory under the name raises IsADirectoryError."""
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    except PermissionError as exc:
        # unlink(2) says EPERM (not EISDIR) for a directory on Linux
        if exc.errno == errno.EPERM and stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory", name) from None
        raise
    return True


def create_fresh(dir_fd: int, name: str, mode: int = 0o644) -> int:
    """Create `name` in the directory as a new, empty file of ours (read-write descriptor):
    whatever the name held before (a leftover, or a link someone planted) is unlinked first,
    and the create is O_EXCL|O_NOFOLLOW, so no link is ever followed and no existing file is
    ever written. Raises FileExistsError when the name is taken again in between (another
    process is writing the directory)."""
    unlink_name(dir_fd, name)
    return os.open(name, _CREATE_FLAGS, mode, dir_fd=dir_fd)


def same_file(dir_fd: int, name: str, fd: int) -> bool:
    """Does `name` in the directory (not followed) still name the file open as `fd`?"""
    try:
        named = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (mine.st_dev, mine.st_ino)


def replace_file(path: Path, data: bytes, *, follow_dir: bool = False) -> None:
    """Write `data` under `path` so a reader (or a crash) sees the old file or the new one,
    never a mix: a temporary file in the same directory, fsync, rename, fsync of the
    directory. The temporary name ends in `.tmp`, as the broker's own checkpoint writes do.

    Relative to a descriptor of the directory (`follow_dir`: whether the directory itself may
    be a link, see `open_dir`); the temporary file is created fresh (`create_fresh`), takes
    the owner and mode of the file it replaces (of the directory and 0644 for a new file) on
    its descriptor, and a `path` that is not a regular file is refused (NotRegularFile)."""
    dir_fd = open_dir(path.parent, follow=follow_dir)
    try:
        name, tmp = path.name, path.name + ".tmp"
        try:
            existing = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if not stat.S_ISREG(existing.st_mode):
                raise NotRegularFile(path, file_kind(existing.st_mode))
            owner, mode = existing, existing.st_mode & 0o7777
        except FileNotFoundError:
            owner, mode = os.fstat(dir_fd), 0o644
        try:
            fd = create_fresh(dir_fd, tmp, 0o600)
        except FileExistsError:
            raise FileExistsError(errno.EEXIST, "was created again while we replaced it (another process writes "
                                                "this directory)", str(path.parent / tmp)) from None
        except IsADirectoryError:
            raise IsADirectoryError(errno.EISDIR, "is a directory (remove it)", str(path.parent / tmp)) from None
        try:
            give_to_owner(fd, owner)
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
            if not same_file(dir_fd, tmp, fd):
                raise FileExistsError(errno.EEXIST, "was replaced while we wrote it (another process writes this "
                                                    "directory)", str(path.parent / tmp))
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            if same_file(dir_fd, tmp, fd):
                unlink_name(dir_fd, tmp)
            raise
        finally:
            os.close(fd)
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


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
        fd = open_regular(path)
    except OSError:
        return
    try:
        drop_cached_pages_fd(fd)
    finally:
        os.close(fd)


def drop_cached_pages_fd(fd: int) -> None:
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError:
        pass
