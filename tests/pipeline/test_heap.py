"""Freed memory goes back to the OS after each batch: a long-lived worker's resident size stays flat."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.heap import release_heap


def test_release_heap_is_safe_to_call_anywhere():
    assert release_heap() in (True, False)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim; a no-op elsewhere")
def test_freed_buffers_stop_counting_after_release():
    """Many mid-sized buffers (below glibc's mmap threshold, like decoded rows and tensors), all but the last
    freed: glibc keeps the freed ones resident until trimmed. Run apart: this process's heap is not a clean one."""
    code = """
import ctypes, gc
from pipeline.heap import release_heap

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

keep = []
blocks = [ctypes.create_string_buffer(100_000) for _ in range(3000)]  # ~290 MiB from the heap
keep.append(ctypes.create_string_buffer(100_000))  # one live block above them keeps the heap from shrinking
del blocks
gc.collect()
before = rss_mib()
released = release_heap()
print(released, before, rss_mib())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr
    released, before, after = out.stdout.split()
    assert released == "True"
    assert float(before) - float(after) > 200, (before, after)  # most of the 290 MiB handed back


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt; a no-op elsewhere")
def test_a_pinned_threshold_gives_big_buffers_back_as_soon_as_they_are_freed():
    """Without the pin, freeing one 8 MiB mapping raises glibc's adaptive threshold to 8 MiB, so the next such
    buffers come from the heap and stay resident after they are freed (until a trim)."""
    code = """
import ctypes, gc, sys
from pipeline.heap import pin_mmap_threshold

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

pinned = pin_mmap_threshold() if sys.argv[1] == "pin" else False
first = ctypes.create_string_buffer(8 << 20); del first  # a freed mapping: glibc raises its threshold here
blocks = [ctypes.create_string_buffer(8 << 20) for _ in range(30)]  # 240 MiB
keep = ctypes.create_string_buffer(100_000)  # a live block above them keeps the heap from shrinking
before = rss_mib()
del blocks
gc.collect()
print(pinned, before - rss_mib())
"""
    freed = {}
    for mode in ("pin", "adaptive"):
        out = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True, timeout=60,
                             cwd=Path(__file__).resolve().parents[2])
        assert out.returncode == 0, out.stderr
        flag, mib = out.stdout.split()
        freed[mode] = (flag, float(mib))
    assert freed["pin"][0] == "True"
    assert freed["pin"][1] > 200, freed  # pinned: the 240 MiB left with the buffers
    assert freed["adaptive"][1] < 100, freed  # adaptive: they stayed in the heap
