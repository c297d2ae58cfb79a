"""Whether a process of this host still runs: for finding work a killed process left behind.

psutil answers the same way on Linux, macOS and Windows (no signal 0, no /proc).
"""

from __future__ import annotations

import psutil


def pid_alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (dead, not yet reaped by its parent) counts as dead."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # someone else's process: it exists
