"""The scan processes' allocators: Arrow on malloc, and malloc's large blocks on mmap for good (so a
run's end gives its tables back). Each check runs in a fresh interpreter, as a scan process starts."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

# How each scan process starts, in a fresh interpreter: the CLI's entry point, and a flow run (a
# deployment's runs in a process of its own), which fails here for want of a Prefect flow context,
# after its first line.
STARTS = {
    "cli": """
import sys
from fleetscan import cli
sys.argv = ["fleetscan", "version"]
try:
    cli.main()
except SystemExit:
    pass
""",
    "flow": """
from flows.fleet import scan_run
from fleetscan.settings import ScanParams
try:
    scan_run(ScanParams())
except Exception:
    pass
""",
}

# Then: Arrow's pool, and whether a 1 MiB block malloc'd after another one was freed still comes
# from mmap. glibc's default raises its mmap threshold to the size freed, so the second block would
# come from the heap.
PROBE = """
import ctypes

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


def _probe(start: str = "cli", env: dict[str, str] | None = None) -> str:
    code = STARTS[start] + PROBE
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return out.stdout.split("\n")[-2]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt and mallinfo2 are glibc's")
@pytest.mark.parametrize("start", sorted(STARTS))
def test_a_scan_process_puts_arrow_on_malloc_and_large_blocks_on_mmap(start: str) -> None:
    assert _probe(start) == "system mmap"


def test_a_users_own_arrow_pool_is_kept() -> None:
    env = {**os.environ, "ARROW_DEFAULT_MEMORY_POOL": "mimalloc"}
    assert _probe(env=env).split()[0] == "mimalloc"


# A thread's malloc arena holding 40 MB it freed below a block still in use (so the arena cannot
# simply shrink): the RSS before and after give_back(), or a run's end (an empty run, its modules
# imported and its first call made beforehand, so they add nothing to the count).
GIVE_BACK = """
import ctypes, sys, tempfile, threading
from pathlib import Path
from fleetscan.heap import give_back
from fleetscan.pipeline.aggregate import aggregate
from fleetscan.results.rundir import RunDir

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

with tempfile.TemporaryDirectory() as name:
    (Path(name) / "r").mkdir()
    run = RunDir(Path(name) / "r", "r")
    def end():
        aggregate(run, started_at="2026-12-02T00:00:00Z", profile="p", threshold="t")
    end()
    worker = threading.Thread(target=churn)
    worker.start()
    worker.join()
    before = rss_mb()
    {"give_back": give_back, "run_end": end}[sys.argv[1]]()
    print(before, rss_mb())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
@pytest.mark.parametrize("call", ["give_back", "run_end"])
def test_what_a_scan_thread_freed_is_given_back(call: str) -> None:
    cmd = [sys.executable, "-c", GIVE_BACK, call]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    before, after = map(int, out.stdout.split())
    assert before - after >= 30, out.stdout  # of the 40 MB freed
