"""The scan processes' allocators: Arrow on malloc, and malloc's large blocks on mmap for good (so a
run's end gives its tables back). Each check runs in a fresh interpreter, as the CLI starts."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

# After `fleetscan version` ran through the CLI's entry point in this interpreter: Arrow's pool, and
# whether a 1 MiB block malloc'd after another one was freed still comes from mmap. glibc's
# default raises its mmap threshold to the size freed, so the second block would come from the heap.
PROBE = """
import ctypes, sys
from fleetscan import cli
sys.argv = ["fleetscan", "version"]
try:
    cli.main()
except SystemExit:
    pass

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split())]

libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.mallinfo2.restype = MallInfo2
libc.free(libc.malloc(1 << 20))
before = libc.mallinfo2().hblkhd
block = libc.malloc(1 << 20)
mapped = libc.mallinfo2().hblkhd - before >= 1 << 20
libc.free(block)
import pyarrow
print(pyarrow.default_memory_pool().backend_name, "mmap" if mapped else "heap")
"""


def _probe(env: dict[str, str] | None = None) -> str:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, env=env)
    return out.stdout.split("\n")[-2]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt and mallinfo2 are glibc's")
def test_the_cli_puts_arrow_on_malloc_and_large_blocks_on_mmap() -> None:
    assert _probe() == "system mmap"


def test_a_users_own_arrow_pool_is_kept() -> None:
    env = {**os.environ, "ARROW_DEFAULT_MEMORY_POOL": "mimalloc"}
    assert _probe(env).split()[0] == "mimalloc"


# A thread's malloc arena holding 40 MB it freed below a block still in use (so the arena cannot
# simply shrink): the RSS before and after give_back().
GIVE_BACK = """
import ctypes, threading
from fleetscan.heap import give_back

libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]

def rss_mb():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 // 2**20

def churn():
    blocks = [libc.malloc(4000) for _ in range(10_000)]
    for block in blocks:
        ctypes.memset(block, 1, 4000)
    for block in blocks[:-1]:
        libc.free(block)

worker = threading.Thread(target=churn)
worker.start()
worker.join()
before = rss_mb()
give_back()
print(before, rss_mb())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_give_back_returns_what_a_scan_thread_freed() -> None:
    out = subprocess.run([sys.executable, "-c", GIVE_BACK], capture_output=True, text=True, check=True)
    before, after = map(int, out.stdout.split())
    assert before - after >= 30, out.stdout  # of the 40 MB freed
