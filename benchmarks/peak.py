"""A process's own peak RSS. Not `ru_maxrss`: a child started by vfork (Python's subprocess) reports
the larger of its own peak and its parent's RSS at the start, so a benchmark that ran flows first
would measure itself."""

from __future__ import annotations


def high_water_mb(pid: int | str = "self") -> float:
    """VmHWM: the peak RSS of the program since its exec; 0 once the process is gone."""
    return _status_mb(pid, "VmHWM:")


def rss_mb(pid: int | str = "self") -> float:
    """VmRSS: its RSS now; 0 once the process is gone."""
    return _status_mb(pid, "VmRSS:")


def _status_mb(pid: int | str, field: str) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return next((int(line.split()[1]) / 1024 for line in fh if line.startswith(field)), 0.0)
    except OSError:
        return 0.0
