"""A page cache of a chosen size for an experiment: a memory cgroup created for it.

The machine has far more memory than the benchmark's data, so without a limit nothing would
ever be evicted. A memory cgroup limits what its processes' pages may take, page cache
included, and the kernel reclaims inside it exactly as it does for the whole machine. The
limit covers the processes' own memory too (the interpreter, the reader's buffer pool), which
differs between the modes; so a thread keeps the limit at `budget` + whatever of the cgroup's
memory is not page cache, every 20 ms, and the page cache gets `budget` in either mode.

Page cache is charged to the cgroup of the process that first reads a page in, so the caller
drops the experiment's files from the page cache before each run.

cgroup v1 (memory.limit_in_bytes) and v2 (memory.max) are both handled; anything that stops
the cgroup being made (no memory controller, no permission, v2's rule that a cgroup with
processes cannot enable controllers for its children) raises Unavailable with the reason.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path


class Unavailable(Exception):
    pass


def _mounts() -> list[tuple[str, str, str]]:
    """(mount point, file system type, super options) of every cgroup mount."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if tail and tail[0] in ("cgroup", "cgroup2"):
            found.append((fields[4], tail[0], tail[2] if len(tail) > 2 else ""))
    return found


def _own_path(version: int) -> str:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        number, controllers, path = line.split(":", 2)
        if version == 2 and number == "0" and controllers == "":
            return path
        if version == 1 and "memory" in controllers.split(","):
            return path
    raise Unavailable("this process is in no memory cgroup")


def join(procs_file: str) -> None:
    """Move the calling process into the experiment's cgroup (a process joins by itself, at its
    start, rather than in a preexec_fn: forking a threaded parent and running Python before exec
    can deadlock)."""
    Path(procs_file).write_text(str(os.getpid()))


class CacheBudget:
    """with CacheBudget(256 << 20) as budget: each process of the experiment calls
    join(budget.procs_file) before it reads anything."""

    def __init__(self, budget_bytes: int, name: str | None = None):
        self.budget = budget_bytes
        self.path, self.version = self._create(name or f"tiering-bench-{os.getpid()}")
        self._stop = threading.Event()
        try:
            self._apply()
        except OSError as exc:
            self._remove()
            raise Unavailable(f"cannot set a limit on {self.path}: {exc.strerror}") from None
        self._thread = threading.Thread(target=self._follow, name="cache-budget", daemon=True)
        self._thread.start()

    @property
    def method(self) -> str:
        return f"memory cgroup v{self.version}"

    def _create(self, name: str) -> tuple[Path, int]:
        mounts = _mounts()
        reasons = []
        for point, kind, options in mounts:
            if kind == "cgroup" and "memory" in options.split(","):
                path = Path(point) / _own_path(1).lstrip("/") / name
                try:
                    path.mkdir()
                    return path, 1
                except OSError as exc:
                    reasons.append(f"{path}: {exc.strerror}")
        for point, kind, _ in mounts:
            if kind == "cgroup2":
                parent = Path(point) / _own_path(2).lstrip("/")
                try:
                    if "memory" not in (parent / "cgroup.controllers").read_text().split():
                        reasons.append(f"{parent}: no memory controller")
                        continue
                    (parent / "cgroup.subtree_control").write_text("+memory")
                    path = parent / name
                    path.mkdir()
                    return path, 2
                except OSError as exc:
                    reasons.append(f"{parent}: {exc.strerror}")
        raise Unavailable("; ".join(reasons) or "no cgroup file system is mounted")

    # -- membership ----------------------------------------------------------------------------

    @property
    def procs_file(self) -> str:
        return str(self.path / "cgroup.procs")

    # -- what it holds -------------------------------------------------------------------------

    def stat(self) -> dict[str, int]:
        values = {}
        for line in (self.path / "memory.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            values[key] = int(value)
        return values

    def page_cache_bytes(self) -> int:
        """File pages of the cgroup (shared anonymous memory, such as the buffer pool's
        mapping, is counted by the kernel as cache and is taken out here)."""
        stat = self.stat()
        if self.version == 1:
            return stat["cache"] - stat.get("shmem", 0)
        return stat["file"] - stat.get("shmem", 0)

    def _usage(self) -> int:
        name = "memory.usage_in_bytes" if self.version == 1 else "memory.current"
        return int((self.path / name).read_text())

    def _apply(self) -> None:
        limit = self.budget + max(0, self._usage() - self.page_cache_bytes())
        name = "memory.limit_in_bytes" if self.version == 1 else "memory.max"
        (self.path / name).write_text(str(limit))

    def _follow(self) -> None:
        while not self._stop.wait(0.02):
            try:
                self._apply()
            except OSError:   # EBUSY: the kernel could not reclaim down to it yet; next time
                pass

    # -- end -----------------------------------------------------------------------------------

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._remove()

    def _remove(self) -> None:
        # The cgroup is empty once its processes have exited; its page cache charges move to
        # the parent when it is removed.
        try:
            self.path.rmdir()
        except OSError:
            pass

    def __enter__(self) -> CacheBudget:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
