"""Hand freed heap memory back to the OS after each batch, so a long-lived worker's memory stays flat.

glibc keeps what a process frees for reuse; each video's frame buffers (about 90 MB at 720p, 32 frames) are
freed and the next video's allocations fragment that space, so the resident size of a scan actor or a `score`
loop creeps up video after video (+16% over 24 FF++ videos in one process, still rising). ``malloc_trim(0)``
after every batch kept it flat (+1.4%, docs/benchmarks.md). A no-op where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim  # glibc only
    except (OSError, AttributeError):
        return None


def release_heap() -> bool:
    """True when freed memory was handed back (glibc), False where this does nothing."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
