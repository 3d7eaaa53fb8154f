"""The cluster-agnostic part of the suite: scans and access checks that need no emulator-only control
(no faults, no clock). `make test` runs them against a private emulator; `make e2e
KUBECONFIG=... FLEETSCAN_E2E_CONTEXTS=ctx` runs them against a real cluster, in namespaces they
create and delete, with pods from public images, and only when the kubeconfig's current context is
in the allow-list."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleetscan.emulator.scenario import parse_scenario
from fleetscan.emulator.server import Emulator

pytestmark = [pytest.mark.e2e, pytest.mark.kubectl]

BUSYBOX = "busybox:1.36"
DISTROLESS = "gcr.io/distroless/static-debian12:nonroot"  # no shell: reached by a debug container
# What a real registry serves and the emulator does not know until told (fixture setup only).
EMULATOR_IMAGES = f"images:\n  {DISTROLESS}: {{base: distroless}}\n"


@dataclass
class Cluster:
    kubeconfig: Path
    real: bool

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["kubectl", "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {done.stderr}")
        return done


def allowed_context(kubeconfig: str) -> str:
    """The kubeconfig's current context, if FLEETSCAN_E2E_CONTEXTS names it; else the run stops."""
    context = subprocess.run(
        ["kubectl", "--kubeconfig", kubeconfig, "config", "current-context"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    allowed = [c.strip() for c in os.environ.get("FLEETSCAN_E2E_CONTEXTS", "").split(",") if c.strip()]
    if context not in allowed:
        pytest.exit(
            f"refusing to run end-to-end tests against context {context!r}: name it in FLEETSCAN_E2E_CONTEXTS "
            "(a comma-separated allow-list) if this cluster is meant for them",
            returncode=4,
        )
    return context


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    real = os.environ.get("FLEETSCAN_E2E_KUBECONFIG", "")
    if real:
        allowed_context(real)
        yield Cluster(Path(real), True)
        return
    with Emulator(parse_scenario(EMULATOR_IMAGES, "e2e-images")) as emu:
        yield Cluster(emu.write_kubeconfig(tmp_path_factory.mktemp("e2e") / "kubeconfig"), False)


@pytest.fixture()
def namespace(cluster: Cluster) -> Iterator[str]:
    """A namespace of its own with a shell pod and a distroless pod, deleted afterwards."""
    name = f"fleetscan-e2e-{secrets.token_hex(3)}"
    cluster.kubectl("create", "namespace", name)
    try:
        pods = [_pod(name, "shell", BUSYBOX, ["sleep", "3600"]), _pod(name, "static", DISTROLESS, None)]
        cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(pods))
        cluster.kubectl("wait", "-n", name, "--for=condition=Ready", "pod", "--all", "--timeout=180s")
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def _pod(namespace: str, name: str, image: str, command: list[str] | None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": image, "resources": {"limits": {"memory": "64Mi"}}}
    if command:
        container["command"] = command
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {"containers": [container], "terminationGracePeriodSeconds": 0},
    }


def _scan(cluster: Cluster, namespace: str, out: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "fleetscan", "scan", "--kubeconfig", str(cluster.kubeconfig), "--namespaces",
         namespace, "-q", "--out", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"},
        check=False,
    )  # fmt: skip
    assert (out / "summary.json").exists(), done.stderr
    return done.returncode, json.loads((out / "summary.json").read_text())


def test_a_scan_reaches_shell_and_distroless_containers(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    code, summary = _scan(cluster, namespace, tmp_path / "run")
    targets = {t["pod"]: t for t in summary["targets"]}
    assert sorted(targets) == ["shell", "static"]  # one record per container
    assert targets["shell"]["approach"] == "exec" and targets["static"]["approach"] == "debug"
    assert all(t["outcome"] in ("passed", "failed") for t in targets.values()), targets
    assert code == (1 if any(t["outcome"] == "failed" for t in targets.values()) else 0)


def test_a_scan_leaves_nothing_in_the_cluster(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    def objects() -> set[str]:
        listed = cluster.kubectl("get", "serviceaccounts,roles,rolebindings,secrets", "-n", namespace, "-o", "name")
        return set(listed.stdout.split())

    before = objects()
    _scan(cluster, namespace, tmp_path / "run", "--approach", "exec")
    assert objects() == before
    pods = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]
    assert sorted(p["metadata"]["name"] for p in pods) == ["shell", "static"]


def test_a_namespace_reader_cannot_read_secrets_or_exec(cluster: Cluster, namespace: str) -> None:
    """The roles fleetscan relies on behave as documented on this cluster: view reads pods, not
    secrets, and grants no exec."""
    cluster.kubectl("create", "serviceaccount", "reader", "-n", namespace)
    cluster.kubectl("create", "rolebinding", "reader", "-n", namespace, "--clusterrole=view",
                    f"--serviceaccount={namespace}:reader")  # fmt: skip
    who = f"--as=system:serviceaccount:{namespace}:reader"
    verdicts = {
        check: cluster.kubectl("auth", "can-i", *check.split(), "-n", namespace, who, check=False).stdout.strip()
        for check in ("list pods", "get secrets", "create pods/exec", "list nodes")
    }
    assert verdicts == {"list pods": "yes", "get secrets": "no", "create pods/exec": "no", "list nodes": "no"}
