"""The page-cache benchmark's memory cgroup, on the real kernel: a process in it cannot keep
more of a file in the page cache than the budget, while the machine has plenty of memory."""

import os
import subprocess
import sys

import pytest

from bench.cachelimit import CacheBudget, Unavailable
from tiering.files import drop_cached_pages as drop
from tiering.read.pagecache import cached_bytes as cached

MiB = 1024 * 1024


def read_in_child(path, procs_file) -> None:
    code = ("import sys; from bench.cachelimit import join\n"
            "if sys.argv[2]: join(sys.argv[2])\n"
            "f = open(sys.argv[1], 'rb', buffering=0)\n"
            "while f.read(1 << 20): pass\n")
    subprocess.run([sys.executable, "-c", code, str(path), procs_file or ""], check=True)


def test_a_process_in_the_budget_keeps_at_most_the_budget_of_a_file_cached(tmp_path):
    data = tmp_path / "data"
    data.write_bytes(os.urandom(64 * MiB))
    os.sync()
    try:
        budget = CacheBudget(8 * MiB, name=f"tiering-test-{os.getpid()}")
    except Unavailable as exc:
        pytest.skip(f"no memory cgroup can be made here: {exc}")
    path = budget.path
    try:
        drop(data)
        read_in_child(data, budget.procs_file)
        inside = cached(data)
        charged = budget.page_cache_bytes()
    finally:
        budget.close()
    assert not path.exists()                       # removed at close
    assert inside <= 8 * MiB + 2 * MiB             # the kernel's per-CPU batching is a little slack
    assert charged <= 8 * MiB + 2 * MiB
    assert inside >= 2 * MiB                       # and it was read through the page cache

    # The same read outside the cgroup keeps the whole file: the limit was what evicted it.
    drop(data)
    read_in_child(data, None)
    assert cached(data) >= 60 * MiB
