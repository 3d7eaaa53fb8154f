"""Rootless mode: containers inside a user namespace, as a non-root user runs the emulator."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from fleetscan.emulator.native import helper_binary
from fleetscan.emulator.scenario import parse_scenario
from fleetscan.emulator.server import Emulator

from .conftest import DATA, api_client
from .test_emulator_exec import run


@pytest.fixture(scope="module")
def rootless() -> Iterator[Emulator]:
    with Emulator(parse_scenario((DATA / "sharing.yaml").read_text(), "sharing.yaml"), rootless=True) as emu:
        yield emu


def test_containers_live_in_the_emulators_user_namespace(rootless: Emulator, tmp_path: Path) -> None:
    assert rootless.cluster is not None and rootless.cluster.userns is not None
    keeper = rootless.cluster.userns.pid
    core = client.CoreV1Api(api_client(rootless, tmp_path))
    pod = core.read_namespaced_pod("isolated", "shared")
    main = rootless.cluster.pods.sandboxes[pod.metadata.uid].containers["other"]
    assert os.readlink(f"/proc/{main.pid}/ns/user") == os.readlink(f"/proc/{keeper}/ns/user")
    assert os.readlink(f"/proc/{main.pid}/ns/user") != os.readlink("/proc/self/ns/user")
    status, out, err = run(core, "shared", "isolated", ["sh", "-c", "id -u; cat /proc/self/uid_map"], container="other")
    assert status["status"] == "Success" and out.split()[:4] == [b"0", b"0", b"0", b"65536"], (status, out, err)


def test_process_namespace_rules_hold_inside_it(rootless: Emulator, tmp_path: Path) -> None:
    core = client.CoreV1Api(api_client(rootless, tmp_path))
    script = "for p in /proc/[0-9]*; do [ -e $p/root/app/server ] && echo ${p#/proc/}; done"
    _, pids, _ = run(core, "shared", "app-with-sidecars", ["sh", "-c", script], container="scanner")
    pid = next(p for p in pids.decode().split() if p != "1")
    ok, out, _ = run(
        core, "shared", "app-with-sidecars", ["cat", f"/proc/{pid}/root/app/secret.txt"], container="scanner"
    )
    assert ok["status"] == "Success" and out == b"only-for-the-app\n"
    denied, _, err = run(
        core, "shared", "app-with-sidecars", ["cat", f"/proc/{pid}/root/etc/os-release"], container="plain"
    )
    assert denied["status"] == "Failure" and b"Permission denied" in err


def test_a_non_root_user_runs_containers(tmp_path: Path) -> None:
    """The helper's rootless path as uid 65534 (nobody): keeper, overlay container, exec."""
    if shutil.which("setpriv") is None or os.geteuid() != 0:
        pytest.skip("needs setpriv and root to become another user")
    work = Path(tempfile.mkdtemp(prefix="fleetscan-rootless-"))
    try:
        os.chmod(work, 0o755)
        helper = work / "ctr"
        shutil.copy(helper_binary(), helper)
        image = work / "image"
        (image / "bin").mkdir(parents=True)
        shutil.copy("/bin/busybox", image / "bin" / "busybox")
        (image / "bin" / "sh").symlink_to("busybox")
        (image / "marker").write_text("inside\n")
        for d in ("upper", "work", "merged"):
            (work / d).mkdir()
            os.chown(work / d, 65534, 65534)
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        keeper = subprocess.Popen([*nobody, "unshare", "--user", "--map-root-user", "--mount", str(helper), "pause"])
        try:
            time.sleep(0.3)
            container = subprocess.Popen(
                [
                    *nobody,
                    str(helper),
                    "start",
                    "-N",
                    str(keeper.pid),
                    "-r",
                    str(work / "merged"),
                    "-l",
                    str(image),
                    "-u",
                    str(work / "upper"),
                    "-w",
                    str(work / "work"),
                    "-P",
                ],
                stdout=subprocess.PIPE,
            )
            assert container.stdout is not None
            main = container.stdout.readline().strip().decode()
            out = subprocess.run(
                [
                    *nobody,
                    str(helper),
                    "exec",
                    "-N",
                    str(keeper.pid),
                    "-t",
                    main,
                    "--",
                    "/bin/busybox",
                    "sh",
                    "-c",
                    "cat /marker; /bin/busybox id -u; echo written > /new",
                ],
                capture_output=True,
                timeout=30,
                check=False,
            )
            assert out.returncode == 0, out.stderr
            assert out.stdout.split() == [b"inside", b"0"]
            upper = work / "upper" / "new"
            assert upper.read_text() == "written\n" and upper.stat().st_uid == 65534  # root inside = nobody outside
            container.terminate()
            container.wait(timeout=10)
        finally:
            keeper.terminate()
            keeper.wait(timeout=10)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_without_cgroups_memory_limits_fall_back_to_rlimits(rootless: Emulator, tmp_path: Path) -> None:
    """Rootless, no cgroup is ours: each process's address space is capped instead, so an allocation
    over the limit fails (the command exits non-zero) rather than the kernel killing it."""
    handle = rootless.client()
    assert handle.settings()["memory_limits"] == "rlimit"
    core = client.CoreV1Api(api_client(rootless, tmp_path))
    body = {"metadata": {"name": "capped"}, "spec": {"containers": [
        {"name": "main", "image": "busybox", "resources": {"limits": {"memory": "48Mi"}}}]}}  # fmt: skip
    core.create_namespaced_pod("shared", body)
    try:
        status, _, err = run(core, "shared", "capped", ["dd", "if=/dev/zero", "of=/dev/null", "bs=100M", "count=1"])
        assert status["status"] == "Failure" and status["details"]["causes"][0]["message"] != "137", err
        assert (
            run(core, "shared", "capped", ["dd", "if=/dev/zero", "of=/dev/null", "bs=8M", "count=2"])[0]["status"]
            == "Success"
        )
    finally:
        core.delete_namespaced_pod("capped", "shared")
