"""The heap's free memory goes back to the kernel when asked (glibc's malloc_trim): run in a
fresh interpreter so what the heap holds is this test's alone."""

from __future__ import annotations

import subprocess
import sys

_PROBE = """
import re
from tiering.heap import release_free_memory

def rss_kib():
    return int(re.search(r"VmRSS:\\s+(\\d+)", open("/proc/self/status").read()).group(1))

start = rss_kib()
chunks = [bytearray(100 * 1024) for _ in range(400)]   # 40 MiB of heap chunks (below the mmap threshold)
keep = chunks[-1]                                       # the heap's top stays in use: no trim on free
del chunks
freed = rss_kib()
released = release_free_memory()
print(released, freed - start, freed - rss_kib())
"""


def test_freed_heap_memory_is_resident_until_released_then_returned():
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True).stdout.split()
    released, held_kib, returned_kib = out[0] == "True", int(out[1]), int(out[2])
    assert released
    assert held_kib > 30 * 1024           # glibc kept the freed chunks resident
    assert returned_kib > 30 * 1024       # and gave them back when asked
