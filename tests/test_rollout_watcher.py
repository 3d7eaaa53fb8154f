"""The rollout watcher on the emulator, under the least-privilege identity of deployments/rbac/watcher.yaml:
one report per completed rollout, none for what was rolled out before it started, and a re-list
when its resourceVersion has been compacted away (410 Gone)."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest
import yaml

from fleetscan.emulator.server import Emulator
from fleetscan.errors import Forbidden
from fleetscan.kube.rollouts import Rollout, RolloutWatcher

from .conftest import DATA
from .kube_helpers import admin_kube

WATCHER_RBAC = Path(__file__).resolve().parent.parent / "deployments" / "rbac" / "watcher.yaml"


def deployment(image: str) -> dict:
    labels = {"app": "api"}
    return {
        "metadata": {"name": "api"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "api", "image": image, "command": ["sleep", "3600"]}]},
            },
        },
    }


def watcher_identity(emu: Emulator, tmp_path: Path) -> str:
    """A token bound to the watcher's ClusterRole, as deployments/rbac/watcher.yaml grants it."""
    _, role, binding = yaml.safe_load_all(WATCHER_RBAC.read_text())
    admin = admin_kube(emu, tmp_path)
    admin.rbac.create_cluster_role(role)
    token = emu.client().add_user("fleetscan-watch")
    binding["subjects"] = [{"kind": "User", "name": "fleetscan-watch"}]
    admin.rbac.create_cluster_role_binding(binding)
    return token


def start(watcher: RolloutWatcher) -> threading.Thread:
    ready = threading.Event()
    thread = threading.Thread(target=watcher.watch_kind, args=("Deployment",), kwargs={"ready": ready}, daemon=True)
    thread.start()
    assert ready.wait(30)
    return thread


def wait_until(predicate: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError("timed out")


@pytest.fixture()
def emu() -> Emulator:
    from fleetscan.emulator.scenario import parse_scenario

    with Emulator(parse_scenario((DATA / "small.yaml").read_text(), "small.yaml"), watch_history=5) as e:
        yield e


def test_each_rollout_is_reported_once_with_least_privilege(emu: Emulator, tmp_path: Path) -> None:
    admin = admin_kube(emu, tmp_path)
    admin.apps.create_namespaced_deployment("alpha", deployment("busybox:1.36"))  # rolled out before: not news
    kube = admin_kube(emu, tmp_path, watcher_identity(emu, tmp_path))
    with pytest.raises(Forbidden) as denied:  # the watcher may not read pods
        kube.core.list_namespaced_pod("alpha")
    assert denied.value.status == 403
    seen: list[Rollout] = []
    watcher = RolloutWatcher(kube, seen.append, timeout_seconds=2)
    thread = start(watcher)
    try:
        patch = {"spec": {"template": {"spec": {"containers": [{"name": "api", "image": "busybox:1.37"}]}}}}
        admin.apps.patch_namespaced_deployment("api", "alpha", patch)
        wait_until(lambda: seen)
        time.sleep(3)  # a watch reconnect in between must not report it again
        admin.apps.patch_namespaced_deployment("api", "alpha", {"metadata": {"labels": {"team": "x"}}})
        time.sleep(1)  # metadata only: no new generation, no new rollout
    finally:
        watcher.stop.set()
        thread.join(10)
    assert seen == [Rollout("alpha", "Deployment", "api", 2, ("busybox:1.37",))]


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_compacted_resource_version_relists_and_resumes(emu: Emulator, tmp_path: Path) -> None:
    admin = admin_kube(emu, tmp_path)
    admin.apps.create_namespaced_deployment("alpha", deployment("busybox:1.36"))
    seen: list[Rollout] = []
    watcher = RolloutWatcher(admin, seen.append, timeout_seconds=1)
    logs, logger = Lines(), logging.getLogger("fleetscan.kube.rollouts")
    logger.addHandler(logs)
    logger.setLevel(logging.INFO)
    try:
        thread = start(watcher)
        try:
            for i in range(10):  # other objects move the history past the watcher's version
                admin.core.create_namespaced_service_account("alpha", {"metadata": {"name": f"sa{i}"}})
            wait_until(lambda: any("listing again" in line for line in logs.lines))
            patch = {"spec": {"template": {"spec": {"containers": [{"name": "api", "image": "busybox:1.37"}]}}}}
            admin.apps.patch_namespaced_deployment("api", "alpha", patch)
            wait_until(lambda: seen)
            time.sleep(2)
        finally:
            watcher.stop.set()
            thread.join(10)
    finally:
        logger.removeHandler(logs)
    assert seen == [Rollout("alpha", "Deployment", "api", 2, ("busybox:1.37",))]
