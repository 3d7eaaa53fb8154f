"""Container memory limits, OOM kills, restarts and pods deleted mid-exec, as a node would show them."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from fleetscan.emulator.cluster import PODS
from fleetscan.emulator.scenario import parse_scenario
from fleetscan.emulator.server import Emulator

from .conftest import DATA, api_client, make_kubectl
from .test_emulator_exec import run

# dd holds a buffer of `bs` bytes, touched as it reads: 100 MB against a 48 Mi limit.
HOG = ["dd", "if=/dev/zero", "of=/dev/null", "bs=100M", "count=1"]


def _pod(name: str, *, memory: str | None = None, command: list[str] | None = None, **spec: Any) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": "busybox"}
    if memory:
        container["resources"] = {"limits": {"memory": memory}}
    if command:
        container["command"] = command
    return {"metadata": {"name": name}, "spec": {"containers": [container], **spec}}


def _until(check: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.2)
    raise AssertionError("the condition did not hold in time")


class Background:
    """An exec that runs while the test acts on its container."""

    def __init__(self, core: client.CoreV1Api, ns: str, pod: str, argv: list[str]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(core, ns, pod, argv), daemon=True)
        self._thread.start()

    def _run(self, core: client.CoreV1Api, ns: str, pod: str, argv: list[str]) -> None:
        try:
            self.result = run(core, ns, pod, argv)
        except BaseException as exc:
            self.error = exc

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the exec outlived its container"


def _wait_for_exec(emu: Emulator, ns: str, pod: str) -> None:
    """Until a process besides the main one runs in the container's cgroup: the exec's command."""
    assert emu.cluster is not None
    uid = emu.cluster.store.get(PODS, ns, pod)["metadata"]["uid"]
    ctr = emu.cluster.pods.container({"metadata": {"uid": uid}}, "main")
    assert ctr is not None and ctr.cgroup is not None and ctr.cgroup.folders
    procs = ctr.cgroup.folders[0] / "cgroup.procs"
    _until(lambda: len(procs.read_text().split()) >= 2)


@pytest.fixture()
def limits_mode(fresh_emulator: Emulator) -> str:
    return str(fresh_emulator.client().settings()["memory_limits"])


def test_an_exec_over_the_memory_limit_is_oom_killed(
    fresh_emulator: Emulator, tmp_path: Path, limits_mode: str
) -> None:
    core = client.CoreV1Api(api_client(fresh_emulator, tmp_path))
    core.create_namespaced_pod("alpha", _pod("capped", memory="48Mi"))
    status, _, err = run(core, "alpha", "capped", HOG)
    if limits_mode == "rlimit":  # no memory cgroup: the allocation fails instead
        assert status["status"] == "Failure" and status["details"]["causes"][0]["message"] != "0"
    else:
        assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "137"}], err
    # The container itself lives on: the kernel killed the biggest process, the exec.
    assert run(core, "alpha", "capped", ["true"])[0]["status"] == "Success"
    # Under the limit the same command succeeds; kubectl reports the OOM kill as exit code 137.
    assert run(core, "alpha", "capped", ["dd", "if=/dev/zero", "of=/dev/null", "bs=8M", "count=4"])[0]["status"] == (
        "Success"
    )
    k = make_kubectl(fresh_emulator, tmp_path)
    proc = k("exec", "-n", "alpha", "capped", "--", *HOG)
    assert proc.returncode == (1 if limits_mode == "rlimit" else 137)


def test_every_container_gets_the_default_limit(fresh_emulator: Emulator, tmp_path: Path, limits_mode: str) -> None:
    handle = fresh_emulator.client()
    assert handle.settings()["default_memory_limit"] == 512 * 2**20
    handle.settings(default_memory_limit="40Mi")
    core = client.CoreV1Api(api_client(fresh_emulator, tmp_path))
    core.create_namespaced_pod("alpha", _pod("unlimited-spec"))
    assert run(core, "alpha", "unlimited-spec", HOG)[0]["status"] == "Failure"
    assert fresh_emulator.cluster is not None
    pod = core.read_namespaced_pod("unlimited-spec", "alpha").to_dict()
    ctr = fresh_emulator.cluster.pods.container({"metadata": {"uid": pod["metadata"]["uid"]}}, "main")
    assert ctr is not None and ctr.memory_limit == 40 * 2**20
    if limits_mode != "rlimit":
        assert ctr.cgroup is not None and ctr.cgroup.memory is not None
    with pytest.raises(client.ApiException) as err:
        core.create_namespaced_pod("alpha", _pod("bad-quantity", memory="lots"))
    assert err.value.status == 422 and "resources.limits[memory]" in err.value.body


def test_a_main_process_oom_killed_is_restarted(fresh_emulator: Emulator, tmp_path: Path, limits_mode: str) -> None:
    if limits_mode == "rlimit":
        pytest.skip("without a memory cgroup an allocation fails rather than being OOM-killed")
    core = client.CoreV1Api(api_client(fresh_emulator, tmp_path))
    core.create_namespaced_pod("alpha", _pod("hog", memory="48Mi", command=HOG))

    def restarted() -> Any:
        st = core.read_namespaced_pod("hog", "alpha").status.container_statuses[0]
        return st if st.restart_count >= 1 and st.last_state.terminated is not None else None

    st = _until(restarted)
    assert (st.last_state.terminated.reason, st.last_state.terminated.exit_code) == ("OOMKilled", 137)
    reasons = {e.reason for e in core.list_namespaced_event("alpha", field_selector="involvedObject.name=hog").items}
    assert "OOMKilled" in reasons


def test_a_crashing_container_backs_off(fresh_emulator: Emulator, tmp_path: Path) -> None:
    core = client.CoreV1Api(api_client(fresh_emulator, tmp_path))
    core.create_namespaced_pod("alpha", _pod("crasher", command=["false"]))

    def backing_off() -> Any:
        st = core.read_namespaced_pod("crasher", "alpha").status.container_statuses[0]
        return st if st.state.waiting is not None and st.state.waiting.reason == "CrashLoopBackOff" else None

    st = _until(backing_off)
    assert st.restart_count >= 1 and st.last_state.terminated.exit_code == 1 and not st.ready
    k = make_kubectl(fresh_emulator, tmp_path)
    assert "CrashLoopBackOff" in k("get", "pod", "crasher", "-n", "alpha", check=True).stdout.decode()
    assert "BackOff" in k("events", "-n", "alpha", "--for", "pod/crasher", check=True).stdout.decode()
    # restartPolicy Never: the container stays terminated and the pod fails.
    core.create_namespaced_pod("alpha", _pod("once", command=["false"], restartPolicy="Never"))
    _until(lambda: core.read_namespaced_pod("once", "alpha").status.phase == "Failed")
    st = core.read_namespaced_pod("once", "alpha").status.container_statuses[0]
    assert st.restart_count == 0 and st.state.terminated.exit_code == 1
    # restartPolicy OnFailure: a clean exit is the end.
    core.create_namespaced_pod("alpha", _pod("done", command=["true"], restartPolicy="OnFailure"))
    _until(lambda: core.read_namespaced_pod("done", "alpha").status.phase == "Succeeded")
    st = core.read_namespaced_pod("done", "alpha").status.container_statuses[0]
    assert st.restart_count == 0 and st.state.terminated.reason == "Completed"


@pytest.mark.parametrize("shared", [False, True], ids=["own-pid-namespace", "shared-pid-namespace"])
def test_restart_cuts_execs_in_flight(tmp_path: Path, shared: bool) -> None:
    scenario = parse_scenario((DATA / "small.yaml").read_text(), "small.yaml")
    with Emulator(scenario) as emu:
        core = client.CoreV1Api(api_client(emu, tmp_path))
        core.create_namespaced_pod("alpha", _pod("victim", shareProcessNamespace=shared))
        assert run(core, "alpha", "victim", ["sh", "-c", "echo here > /tmp/marker"])[0]["status"] == "Success"
        before = core.read_namespaced_pod("victim", "alpha").status.container_statuses[0]
        emu.client().clear_audit()
        long_exec = Background(core, "alpha", "victim", ["sleep", "60"])
        _wait_for_exec(emu, "alpha", "victim")
        emu.client().restart_container("alpha", "victim", "main")
        long_exec.join(15)
        assert long_exec.error is None and long_exec.result[0]["status"] == "Failure"
        after = core.read_namespaced_pod("victim", "alpha").status.container_statuses[0]
        assert after.restart_count == before.restart_count + 1 == 1
        assert after.last_state.terminated.exit_code == 137 and after.state.running is not None
        # A fresh start from the image: the writable layer is new.
        status, _, _ = run(core, "alpha", "victim", ["cat", "/tmp/marker"])
        assert status["status"] == "Failure"
        k = make_kubectl(emu, tmp_path)
        jsonpath = "--for=jsonpath={.status.containerStatuses[0].restartCount}=1"
        assert k("wait", jsonpath, "pod/victim", "-n", "alpha", "--timeout=10s").returncode == 0
        row = k("get", "pod", "victim", "-n", "alpha", "--no-headers", check=True).stdout.decode().split()
        assert row[1:4] == ["1/1", "Running", "1"]
        assert (
            "Stopping container main" in k("events", "-n", "alpha", "--for", "pod/victim", check=True).stdout.decode()
        )


def test_a_pod_deleted_mid_exec_ends_the_exec_and_leaves_nothing(fresh_emulator: Emulator, tmp_path: Path) -> None:
    core = client.CoreV1Api(api_client(fresh_emulator, tmp_path))
    assert fresh_emulator.cluster is not None
    uid = core.read_namespaced_pod("two", "alpha").metadata.uid
    ctr = fresh_emulator.cluster.pods.container({"metadata": {"uid": uid}}, "main")
    assert ctr is not None and ctr.cgroup is not None
    long_exec = Background(core, "alpha", "two", ["sleep", "60"])
    _wait_for_exec(fresh_emulator, "alpha", "two")
    fresh_emulator.client().delete_pod("alpha", "two")
    long_exec.join(15)
    assert not ctr.alive and all(not f.exists() for f in ctr.cgroup.folders)
    assert ctr.directory is not None and not ctr.directory.exists()


def test_stopping_the_emulator_removes_its_cgroups(tmp_path: Path) -> None:
    scenario = parse_scenario((DATA / "small.yaml").read_text(), "small.yaml")
    emu = Emulator(scenario).start()
    try:
        assert emu.cluster is not None
        roots = list(emu.cluster.pods.runtime.cgroups.roots)
        folders = [f for ctr_root in roots for f in ctr_root.iterdir() if f.is_dir()]
        assert all(r.exists() for r in roots)
    finally:
        emu.stop()
    assert not any(p.exists() for p in roots + folders)


KILL_SCENARIO = """
faults:
  exec_kill: [{path: "/pods/doomed/exec$", after: 0.5, action: restart, count: 1}]
namespaces:
  - name: web
    pods:
      - {name: doomed, containers: [{name: main, image: busybox}]}
"""


def test_a_scenario_declares_a_restart_mid_exec(tmp_path: Path) -> None:
    with Emulator(parse_scenario(KILL_SCENARIO, "kill.yaml")) as emu:
        core = client.CoreV1Api(api_client(emu, tmp_path))
        status, _, _ = run(core, "web", "doomed", ["sleep", "30"])  # cut after half a second
        assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "137"}]
        assert core.read_namespaced_pod("doomed", "web").status.container_statuses[0].restart_count == 1
        k = make_kubectl(emu, tmp_path)
        assert k("exec", "-n", "web", "doomed", "--", "true").returncode == 0  # the count is spent
        emu.client().set_faults(exec_kill=[{"path": "/pods/doomed/exec$", "after": 0.5, "action": "delete"}])
        cut = k("exec", "-n", "web", "doomed", "--", "sleep", "30")
        assert cut.returncode != 0
        assert b"NotFound" in k("get", "pod", "doomed", "-n", "web").stderr


def test_a_scenario_with_a_bad_fault_is_refused() -> None:
    from fleetscan.emulator.scenario import ScenarioError

    with pytest.raises(ScenarioError, match=r"bad.yaml:2: faults: exec_kill action 'explode'"):
        parse_scenario("namespaces: []\nfaults: {exec_kill: [{action: explode}]}\n", "bad.yaml")
