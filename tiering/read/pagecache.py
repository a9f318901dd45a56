"""What of a file is in the page cache, from the kernel: cachestat(2) and mincore(2).

Python's standard library wraps neither, and no maintained package does, so both are called
through ctypes here. cachestat (Linux 6.5+) counts a file's cached pages without mapping it;
mincore tells page by page, which is what the fadvise fallback of a cold read needs (it drops
only the pages its own read brought in).
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import platform

PAGE = mmap.PAGESIZE
_CACHESTAT = 451                          # the same number on x86_64, arm64 and every newer ABI
_MAP_FAILED = ctypes.c_void_p(-1).value

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
_libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
_libc.syscall.restype = ctypes.c_long


class _Range(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _Cachestat(ctypes.Structure):
    _fields_ = [("nr_cache", ctypes.c_uint64), ("nr_dirty", ctypes.c_uint64), ("nr_writeback", ctypes.c_uint64),
                ("nr_evicted", ctypes.c_uint64), ("nr_recently_evicted", ctypes.c_uint64)]


def resident_map(fd: int, offset: int, length: int) -> bytes:
    """One byte per page of [offset, offset + length) (offset page-aligned): bit 0 set when
    the page is in the page cache. Mapping the file does not fault its pages in."""
    if length <= 0:
        return b""
    address = _libc.mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, offset)
    if address in (None, _MAP_FAILED):
        raise OSError(ctypes.get_errno(), f"mmap for mincore: {os.strerror(ctypes.get_errno())}")
    try:
        vector = ctypes.create_string_buffer((length + PAGE - 1) // PAGE)
        if _libc.mincore(ctypes.c_void_p(address), length, vector) != 0:
            raise OSError(ctypes.get_errno(), f"mincore: {os.strerror(ctypes.get_errno())}")
        return vector.raw
    finally:
        _libc.munmap(ctypes.c_void_p(address), length)


def cached_pages(fd: int, offset: int = 0, length: int | None = None) -> tuple[int, str]:
    """How many pages of the range are in the page cache, and which call said so
    ("cachestat" or "mincore")."""
    if length is None:
        length = os.fstat(fd).st_size - offset
    if length <= 0:
        return 0, "mincore"
    if platform.system() == "Linux":
        cache_range, stat = _Range(offset, length), _Cachestat()
        if _libc.syscall(_CACHESTAT, fd, ctypes.byref(cache_range), ctypes.byref(stat), 0) == 0:
            return stat.nr_cache, "cachestat"
        if ctypes.get_errno() not in (errno.ENOSYS, errno.EPERM, errno.EOPNOTSUPP):
            raise OSError(ctypes.get_errno(), f"cachestat: {os.strerror(ctypes.get_errno())}")
    return sum(b & 1 for b in resident_map(fd, offset, length)), "mincore"


def cached_bytes(path: str | os.PathLike) -> int:
    """Bytes of a file in the page cache; 0 for a file that is not there."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return 0
    try:
        return cached_pages(fd)[0] * PAGE
    finally:
        os.close(fd)


def drop_pages_not_in(fd: int, offset: int, before: bytes) -> None:
    """posix_fadvise(DONTNEED) the pages of a read at `offset` that were not resident in
    `before` (its mincore map taken before the read): those our read brought in. Runs of
    pages go in one call each."""
    run_start = None
    for i, flag in enumerate(before + b"\x01"):
        if not flag & 1 and i < len(before):
            if run_start is None:
                run_start = i
        elif run_start is not None:
            os.posix_fadvise(fd, offset + run_start * PAGE, (i - run_start) * PAGE, os.POSIX_FADV_DONTNEED)
            run_start = None
