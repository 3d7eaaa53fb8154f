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


# A stand-in for a container's helper: ready once its handler is set; on SIGTERM it notes that,
# takes a moment to end its container, notes its exit and exits.
_SLOW_HELPER = """import os, signal, sys, time
log = sys.argv[2]
def note(what):
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"{what} {sys.argv[1]}\\n".encode()); os.close(fd)
def ending(signum, frame):
    note("term"); time.sleep(0.3); note("exit"); sys.exit(0)
signal.signal(signal.SIGTERM, ending)
note("ready")
while True:
    time.sleep(1)
"""


def test_a_cluster_shutting_down_signals_every_container_before_waiting_for_one(tmp_path: Path) -> None:
    """Stopping many pods at once (the emulator shutting down), every container's helper is told
    to end before the first is waited for: one after the other, 10,000 pods took minutes and the
    emulator gave up with thousands left behind."""
    from fleetscan.emulator.clock import Clock
    from fleetscan.emulator.images import Image, ImageStore
    from fleetscan.emulator.pods import PodRunner
    from fleetscan.emulator.runtime import Container, Credentials, Runtime, Sandbox

    runtime = Runtime(tmp_path / "runtime", helper=Path("/nonexistent"))  # nothing is launched
    pods = PodRunner(runtime, ImageStore(tmp_path / "images", Path("/nonexistent")), Clock())
    log = tmp_path / "log"
    sandboxes = []
    for i in range(4):
        sandbox = Sandbox(tmp_path / "runtime" / f"pod-{i}", share_pid=False)
        sandbox.directory.mkdir()
        ctr = Container("c", Image("x", tmp_path, None, (), "scratch"), Credentials(), {}, "/")
        ctr.helper = subprocess.Popen([sys.executable, "-c", _SLOW_HELPER, str(i), str(log)])
        sandbox.containers["c"] = ctr
        sandboxes.append(sandbox)
        pods.sandboxes[f"uid-{i}"] = sandbox
    try:
        deadline = time.monotonic() + 30
        while (log.read_text().count("ready") if log.exists() else 0) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        pods.stop_all()
        events = [line.split()[0] for line in log.read_text().splitlines() if not line.startswith("ready")]
        assert events == ["term"] * 4 + ["exit"] * 4
        assert all(s.containers["c"].helper.poll() == 0 for s in sandboxes)  # type: ignore[union-attr]
        assert not any(s.directory.exists() for s in sandboxes) and pods.sandboxes == {}
    finally:
        for sandbox in sandboxes:
            helper = sandbox.containers["c"].helper
            if helper is not None and helper.poll() is None:
                helper.kill()
                helper.wait()
        runtime.cgroups.close()
