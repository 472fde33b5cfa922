"""Give freed heap memory back to the OS after a big upload.

glibc keeps memory freed by a request in its arenas (worker threads get arenas of their own, and freed
blocks below the adaptive mmap threshold stay there), so without this the ingress's RSS ratchets up by
tens of MiB per burst of big uploads. ``malloc_trim(0)`` releases the free pages of every arena. A no-op
where the C library has no ``malloc_trim`` (musl, macOS).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache


@cache
def _malloc_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


def give_back_heap() -> bool:
    """Return free heap pages to the OS; True when some were returned. Blocking (ms): call it in a thread."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
