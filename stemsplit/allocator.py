"""Process-wide tuning of the C allocator for a separating process (the CLI calls it).

The networks allocate and free tensors of tens of megabytes for every segment. glibc serves
such sizes with ``mmap`` and gives them back with ``munmap`` on free (always so in the
arenas of non-main threads), so every segment faults its working memory in again, page by
page, and the kernel zeroes each page: on a full segment of the default model about 240,000 page faults,
half a second of system time, and 15% of the wall time on two threads. Keeping freed memory
in the process instead (no ``mmap`` for allocations, no trimming, one arena shared by the
threads) removes the faults; the peak RSS went down too (1333 -> about 1050 MiB), since the
same blocks are reused segment after segment, and it stays flat over a 10-minute track.
The price is fragmentation the system cannot reclaim: a pattern of identical large
temporaries can settle at several times its working set (64 MiB x 3 held ~650 MiB), and
memory freed at the end is kept until the process exits, which is fine for a CLI run.

This changes the whole process, so the Python API leaves it alone: only the CLI, which owns
its process, calls ``keep_freed_memory``. A process that has started threads already (a Ray
worker: two dozen) is past the point where the arena limit helps, so a cluster's workers get
the same settings as glibc's variables instead, read when they start
(``child_environment``): in a Ray worker the ``mallopt`` route left a file of the default
model faulting 4x as often and running 23% slower than in a plain process. It does nothing
off glibc, or when the user has set glibc's own malloc variables (``MALLOC_*_``,
``GLIBC_TUNABLES``), or with ``STEMSPLIT_MALLOC_TUNING=0``.
"""

from __future__ import annotations

import os
import sys

from . import settings

# mallopt parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8

TRIM_THRESHOLD_BYTES = 1 << 30
"""Free memory at the top of the heap kept rather than returned to the system."""

USER_SETTINGS = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_",
                 "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES", "LD_PRELOAD")
"""Environment variables that mean the user chose an allocator setting (or allocator)."""


def _applies() -> bool:
    return settings.malloc_tuning() and sys.platform.startswith("linux") \
        and not any(v in os.environ for v in USER_SETTINGS)


def child_environment() -> dict[str, str]:
    """The variables that make glibc's malloc in a new process behave as
    ``keep_freed_memory`` makes this one (none when the tuning is off or the user chose
    allocator settings); for processes that start many threads before our code runs."""
    if not _applies():
        return {}
    return {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_MAX_": "0",
            "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD_BYTES)}


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep and reuse freed memory; True if it was applied.

    Call it early, before the worker threads exist (the arena limit applies to threads
    that have not allocated yet).
    """
    if not _applies():
        return False
    try:
        import ctypes  # here: only a Linux process gets this far

        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # glibc only: musl has no mallopt parameters to set
    except (ImportError, OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return all(mallopt(parameter, value) == 1 for parameter, value in (
        (M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)))
