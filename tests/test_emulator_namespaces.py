"""Process namespaces with the kernel's own rules: sidecars, ephemeral debug containers, SYS_PTRACE."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from fleetscan.emulator.scenario import parse_scenario
from fleetscan.emulator.server import Emulator

from .conftest import DATA, api_client
from .test_emulator_exec import run


@pytest.fixture(scope="module")
def sharing() -> Iterator[Emulator]:
    with Emulator(parse_scenario((DATA / "sharing.yaml").read_text(), "sharing.yaml")) as emu:
        yield emu


@pytest.fixture()
def core(sharing: Emulator, tmp_path: Path) -> client.CoreV1Api:
    return client.CoreV1Api(api_client(sharing, tmp_path))


def app_pid(core: client.CoreV1Api, container: str) -> str:
    """The app's PID as the sidecar sees it, found by its root filesystem (as a scanner would)."""
    script = (
        'for p in /proc/[0-9]*; do [ -e $p/root/app/server ] && [ "$(readlink $p/exe)" != /bin/busybox ] '
        "&& echo ${p#/proc/} && exit 0; done; exit 1"
    )
    _, out, _ = run(core, "shared", "app-with-sidecars", ["sh", "-c", script], container=container)
    return out.decode().split()[0] if out.split() else ""


def test_shared_pid_namespace_shows_every_container(core: client.CoreV1Api) -> None:
    status, out, _ = run(core, "shared", "app-with-sidecars", ["ps", "-o", "pid,user,comm"], container="scanner")
    assert status["status"] == "Success"
    lines = out.decode().splitlines()[1:]
    assert lines[0].split()[0] == "1"  # the pod's pause process
    assert any(line.split()[1:] == ["65532", "server"] for line in lines)


def test_sidecar_with_sys_ptrace_reads_the_app_root(core: client.CoreV1Api) -> None:
    pid = app_pid(core, "scanner")
    assert pid
    status, out, _ = run(
        core,
        "shared",
        "app-with-sidecars",
        ["cat", f"/proc/{pid}/root/etc/os-release", f"/proc/{pid}/root/app/secret.txt"],
        container="scanner",
    )
    assert status["status"] == "Success"
    assert b"PRETTY_NAME=Distroless" in out and b"only-for-the-app" in out


def test_same_read_is_denied_without_sys_ptrace(core: client.CoreV1Api) -> None:
    _, pids, _ = run(core, "shared", "app-with-sidecars", ["sh", "-c", "ls -d /proc/[0-9]*"], container="plain")
    assert len(pids.split()) >= 4  # it sees the app's process...
    pid = app_pid(core, "scanner")
    status, out, err = run(
        core, "shared", "app-with-sidecars", ["cat", f"/proc/{pid}/root/etc/os-release"], container="plain"
    )
    assert status["reason"] == "NonZeroExitCode"
    assert b"Permission denied" in err and out == b""  # ...but may not enter its root


def test_pause_process_root_is_empty(core: client.CoreV1Api) -> None:
    _, out, _ = run(core, "shared", "app-with-sidecars", ["ls", "-A", "/proc/1/root/"], container="scanner")
    assert set(out.split()) <= {b"proc", b"dev", b"tmp"}  # never the host's root filesystem


def test_separate_pid_namespaces_without_sharing(core: client.CoreV1Api) -> None:
    _, out, _ = run(core, "shared", "isolated", ["ps", "-o", "pid,comm"], container="other")
    assert [line.split()[0] for line in out.decode().splitlines()[1:]][:1] == ["1"]
    assert b"server" not in out


@pytest.mark.parametrize(("caps", "readable"), [(["SYS_PTRACE"], True), ([], False)])
def test_ephemeral_container_joins_its_target(core: client.CoreV1Api, caps: list[str], readable: bool) -> None:
    name = f"dbg-{len(caps)}"
    dbg = {
        "name": name,
        "image": "fleetscan/debug:1.0",
        "command": ["sleep", "3600"],
        "targetContainerName": "app",
        "securityContext": {"capabilities": {"add": caps}},
    }
    core.patch_namespaced_pod_ephemeralcontainers("isolated", "shared", {"spec": {"ephemeralContainers": [dbg]}})
    status, out, err = run(core, "shared", "isolated", ["cat", "/proc/1/root/etc/os-release"], container=name)
    if readable:
        assert status["status"] == "Success" and b"PRETTY_NAME=Distroless" in out
    else:
        assert status["status"] == "Failure" and b"Permission denied" in err
    _, ps, _ = run(core, "shared", "isolated", ["ps", "-o", "pid,comm"], container=name)
    assert ps.decode().splitlines()[1].split() == ["1", "server"]  # the target's PID namespace
