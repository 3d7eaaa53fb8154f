"""`fleetscan emulator serve` as a person runs it: ready file, real clients, clean exit, nothing left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kubernetes import client, config

from fleetscan.emulator.server import WORKDIR_PREFIX

SERVE = [sys.executable, "-m", "fleetscan", "emulator", "serve"]


def workdirs() -> set[str]:
    return {p.name for p in Path(os.environ.get("TMPDIR", "/tmp")).glob(f"{WORKDIR_PREFIX}*")}


def descendants(root: int) -> dict[int, str]:
    """pid -> start time of every process below `root` (start time guards against pid reuse)."""
    parents: dict[int, list[int]] = {}
    starts: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        parents.setdefault(int(fields[1]), []).append(int(entry))
        starts[int(entry)] = fields[19]
    found: dict[int, str] = {}
    todo = [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            found[child] = starts[child]
            todo.append(child)
    return found


def alive(pid: int, start: str) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[19] == start and fields[0] != "Z"


def wait_for(path: Path, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"serve exited early: {proc.stderr.read().decode() if proc.stderr else ''}")
        if time.monotonic() > deadline:
            raise AssertionError("the kubeconfig never appeared")
        time.sleep(0.1)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_runs_and_leaves_nothing_behind(tmp_path: Path, sig: signal.Signals) -> None:
    kubeconfig = tmp_path / "kc"
    before = workdirs()
    proc = subprocess.Popen(
        [*SERVE, "--scenario", "demo", "--kubeconfig-out", str(kubeconfig)],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        wait_for(kubeconfig, proc)
        assert kubeconfig.stat().st_mode & 0o777 == 0o600
        core = client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))
        assert len(core.list_pod_for_all_namespaces().items) >= 20
        tree = descendants(proc.pid)
        assert len(tree) >= 40  # helpers and container main processes
        assert len(workdirs() - before) == 1
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    leftovers = [pid for pid, start in tree.items() if alive(pid, start)]
    assert leftovers == []
    assert not kubeconfig.exists()  # it held the admin token of a cluster that is gone
    assert workdirs() - before == set()
    mounts = Path("/proc/self/mountinfo").read_text()
    assert WORKDIR_PREFIX not in mounts
    assert b"emulator stopped" in (proc.stderr.read() if proc.stderr else b"")


def test_bad_scenario_is_a_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("namespaces:\n  - name: Not_Valid\n")
    proc = subprocess.run(
        [
            *SERVE,
            "--scenario",
            str(bad),
            "--kubeconfig-out",
            str(tmp_path / "kc"),
        ],
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 64
    assert f"{bad}:2: namespaces.0.name" in proc.stderr.decode()
    assert not (tmp_path / "kc").exists()
