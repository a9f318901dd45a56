"""Where a segment's bytes come from, chunk by chunk: a remote object or a cold local file.

Both fill pool slabs. A remote chunk is one ranged GET, paced by the read rate limit. A cold
local chunk (a rolled segment still on disk) is read so that it does not stay in the page
cache: with O_DIRECT into the page-aligned slab when the file system allows it, otherwise with
a buffered read after which exactly the pages that read brought in are dropped again
(posix_fadvise DONTNEED); a page that was resident before belongs to someone's hot read and
stays. The active segment is hot by definition and is read plainly, outside the pool.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Hashable, Protocol

from tiering.files import open_regular
from tiering.read import pagecache
from tiering.read.meter import StoreMeter
from tiering.read.pool import Loader
from tiering.store.protocol import ObjectStore
from tiering.upload.ratelimit import RateLimiter

DIRECT = "direct"
FADVISE = "fadvise"


class ChunkSource(Protocol):
    size: int

    def chunk_key(self, index: int) -> Hashable: ...

    def loader(self, index: int, chunk_bytes: int) -> Loader: ...


@dataclass(frozen=True)
class RemoteObject:
    store: ObjectStore
    key: str
    size: int
    limiter: RateLimiter | None = None
    meter: StoreMeter | None = None     # hears each GET's times (adaptive prefetch)

    def chunk_key(self, index: int) -> Hashable:
        return ("store", self.key, index)

    def loader(self, index: int, chunk_bytes: int) -> Loader:
        start = index * chunk_bytes
        length = min(chunk_bytes, self.size - start)

        def load(slab: memoryview) -> int:
            if self.limiter is not None:
                self.limiter.charge(length)
            got = self._timed_get(start, slab[:length])
            if got != length:
                raise ShortRead(f"{self.key}: {got} bytes at {start}, expected {length} (the object is "
                                "shorter than its manifest says)")
            return got
        return load

    def _timed_get(self, start: int, target: memoryview) -> int:
        if self.meter is None:
            return self.store.get_range_into(self.key, start, target)
        clock = self.meter.monotonic
        sent = clock()
        first: list[float] = []
        got = self.store.get_range_into(self.key, start, target, on_first_byte=lambda: first.append(clock()))
        done = clock()
        self.meter.observe((first[0] if first else done) - sent, done - sent, got)
        return got


class ShortRead(IOError):
    pass


class ColdFile:
    """A rolled local segment, read without leaving its pages in the page cache."""

    def __init__(self, path: Path, method: str | None = None):
        self.path = path
        self._fd: int | None = open_regular(path)   # never through a link, never a FIFO
        # No readahead on our descriptor: pages the kernel read ahead of one chunk would be
        # resident when the next chunk looks, and would be kept as if someone else's.
        os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_RANDOM)
        stat = os.fstat(self._fd)
        self.size = stat.st_size
        self._identity = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
        self._direct_fd: int | None = None
        self.method = method or DIRECT
        if self.method == DIRECT:
            self._open_direct()

    def _open_direct(self) -> None:
        try:
            # By name again (O_DIRECT is a property of the open), so checked to be the same file.
            self._direct_fd = os.open(self.path, os.O_RDONLY | os.O_DIRECT | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP, errno.ELOOP):
                raise
            self.method = FADVISE  # tmpfs before 6.6, some FUSE and network file systems
            return
        assert self._fd is not None
        if not os.path.samestat(os.fstat(self._direct_fd), os.fstat(self._fd)):
            os.close(self._direct_fd)
            self._direct_fd = None
            self.method = FADVISE   # replaced since the first open: read what was opened first

    def chunk_key(self, index: int) -> Hashable:
        return ("file", *self._identity, index)

    def loader(self, index: int, chunk_bytes: int) -> Loader:
        start = index * chunk_bytes
        length = min(chunk_bytes, self.size - start)

        def load(slab: memoryview) -> int:
            if self.method == DIRECT and self._direct_fd is not None:
                try:
                    # O_DIRECT wants an aligned buffer, offset and length: the slab is
                    # page-aligned, offsets are multiples of chunk_bytes (a multiple of the
                    # page size), and the whole slab is asked for; the file's end shortens it.
                    got = os.preadv(self._direct_fd, [slab], start)
                    return self._checked(got, length, start)
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise
                    self.method = FADVISE
            before = pagecache.resident_map(self._fd, start, length)
            got = os.preadv(self._fd, [slab[:length]], start)
            pagecache.drop_pages_not_in(self._fd, start, before)
            return self._checked(got, length, start)
        return load

    def _checked(self, got: int, length: int, start: int) -> int:
        if got < length:
            raise ShortRead(f"{self.path}: {got} bytes at {start}, expected {length} (the file shrank)")
        return length

    def close(self) -> None:
        fds, self._fd, self._direct_fd = (self._fd, self._direct_fd), None, None
        for fd in fds:
            if fd is not None:
                os.close(fd)
