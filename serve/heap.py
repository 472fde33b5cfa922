"""Give freed heap memory back to the OS after a big upload.

glibc keeps memory freed by a request in its arenas (worker threads get arenas of their own, and freed
blocks below the adaptive mmap threshold stay there), so without this the ingress's RSS ratchets up by
tens of MiB per burst of big uploads. ``malloc_trim(0)`` releases the free pages of every arena, but not
pages that share an arena with blocks still alive. So the ingress also pins glibc's mmap threshold: once
a 12 MiB buffer is freed, the adaptive threshold rises to 12 MiB and later uploads of that size come
from the arenas, where fragmentation keeps them (a fresh-clone run kept +33 MiB of a 48 MiB burst). With
the threshold fixed, every buffer of 1 MiB or more is its own mapping and goes back to the OS when freed.
No-ops where the C library has neither call (musl, macOS).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter; setting it turns the adaptive threshold off


@cache
def _libc_call(name: str):
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None


def pin_mmap_threshold(threshold_bytes: int = 1 << 20) -> bool:
    """Allocations of ``threshold_bytes`` or more get their own mapping, for good; True when set."""
    mallopt = _libc_call("mallopt")
    return bool(mallopt(M_MMAP_THRESHOLD, threshold_bytes)) if mallopt is not None else False


def give_back_heap() -> bool:
    """Return free heap pages to the OS; True when some were returned. Blocking (ms): call it in a thread."""
    trim = _libc_call("malloc_trim")
    return bool(trim(0)) if trim is not None else False
