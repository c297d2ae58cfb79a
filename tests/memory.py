"""Measuring memory in tests: NumPy's and Python's peak (tracemalloc), and what a memory-mapped file
holds resident in this process (Linux's /proc/self/smaps)."""

import os
import tracemalloc

import pytest

needs_smaps = pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="reads Linux's /proc/self/smaps")


def traced_peak(function):
    """What `function()` returns, and the most memory NumPy and Python held at once while it ran."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        result = function()
        return result, tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def resident_bytes(path) -> int:
    """How much of the file `path` this process's memory maps hold resident."""
    total, inside = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:  # a mapping's first line
                inside = fields[-1] == str(path)
            elif inside and fields[0] == "Rss:":
                total += int(fields[1]) * 1024
    return total
