"""Handing the heap's free memory back to the kernel once start-up is over (glibc's malloc_trim).

Building the S3 client parses several MB of botocore's JSON models and frees most of what the
parse made; glibc keeps freed chunks for reuse (and raises its mmap threshold after freeing
large ones, so big temporaries come from the heap too), and they stay resident for the life of
the process: part of design.md invariant 6's base, under `run`'s part buffers. One call after
start-up returns them (1.7 MiB of `run --once`'s peak; README "Upload memory").
Hand-written: no maintained package wraps this one libc call.
"""

from __future__ import annotations

import ctypes


def release_free_memory() -> bool:
    """Return the heap's free pages to the kernel; False where the C library has no
    malloc_trim (not glibc), where it is a no-op."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim(0)
    return True
