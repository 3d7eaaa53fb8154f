"""Allocators that give a run's end back: a run is a long scan followed by a few large tables built
once (the aggregation), and memory a pool keeps after those tables is held until the process ends.
With these, a 10,000-container scan peaked at 334 MB instead of 391, and 297 MB with give_back()
(docs/performance.md).

Called first thing by the processes that run scans (the CLI, a flow run), before pyarrow loads."""

from __future__ import annotations

import ctypes
import functools
import gc
import os
from typing import Any

# glibc's mallopt parameter and its own starting value, set once so that it stays: by default the
# threshold rises to the size of each large block freed (up to 32 MiB), after which blocks of that
# size come from the heap, where a free page between live blocks is never returned.
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 128 * 1024


def lean_allocators() -> None:
    """Arrow allocates from malloc instead of its own mimalloc pool, which keeps its largest use
    (the tables' text columns) for good and cannot lend it to numpy or Python; and malloc serves
    large blocks from mmap, so each one freed goes back to the system. A user's own
    ARROW_DEFAULT_MEMORY_POOL is kept."""
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")  # read when pyarrow loads
    if libc := _glibc():
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def give_back() -> None:
    """Before a run's end builds its tables: the garbage collected, and every malloc arena's free
    pages returned. The scan's threads freed their buffers into arenas of their own, which the
    thread building the tables never allocates from."""
    gc.collect()
    if libc := _glibc():
        libc.malloc_trim(0)


@functools.cache
def _glibc() -> Any:
    """The C library, if it is glibc (mallopt and malloc_trim are its own); None otherwise."""
    try:
        is_glibc = os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (ValueError, OSError):  # a C library without the name
        is_glibc = False
    return ctypes.CDLL(None) if is_glibc else None
