"""Hand freed heap memory back to the OS, so long-lived processes (scan actors, `score` loops, serve replicas
and the ingress) stay flat. The one home of both glibc calls; no-ops where the C library is not glibc.

glibc keeps what a process frees for reuse; each video's frame buffers (about 90 MB at 720p, 32 frames) are
freed and the next video's allocations fragment that space, so the resident size of a scan actor or a `score`
loop creeps up video after video (+16% over 24 FF++ videos in one process, still rising). ``malloc_trim(0)``
after every batch kept it flat (+1.4%, docs/perf-history.md). It cannot release pages that share an arena with
blocks still alive, and once a big mapped buffer is freed glibc's adaptive mmap threshold rises to its size, so
later buffers of that size come from the arenas (the serve ingress kept +33 MiB of a 48 MiB upload burst).
``pin_mmap_threshold`` fixes the threshold: every buffer of 1 MiB or more is its own mapping, returned when freed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter; setting it turns the adaptive threshold off


@functools.cache
def _libc_call(name: str):
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None


def release_heap() -> bool:
    """Return free heap pages to the OS; True when the call exists (glibc). Blocking (ms): async code calls it
    in a thread."""
    trim = _libc_call("malloc_trim")
    if trim is None:
        return False
    trim(0)
    return True


def pin_mmap_threshold(threshold_bytes: int = 1 << 20) -> bool:
    """Allocations of ``threshold_bytes`` or more get their own mapping, for good; True when set."""
    mallopt = _libc_call("mallopt")
    return bool(mallopt(M_MMAP_THRESHOLD, threshold_bytes)) if mallopt is not None else False
