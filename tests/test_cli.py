"""The command line as a person uses it: output, exit codes, and usage errors before any cluster call."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

FLEETSCAN = [sys.executable, "-m", "fleetscan"]


def test_rbac_prints_the_manifests_a_run_creates() -> None:
    out = subprocess.run(
        [*FLEETSCAN, "rbac", "--namespace", "shop", "--pods", "web-1,api-0", "--debug", "api-0", "--run-id", "nightly"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    sa, role, binding = yaml.safe_load_all(out.stdout)
    assert [d["kind"] for d in (sa, role, binding)] == ["ServiceAccount", "Role", "RoleBinding"]
    assert {d["metadata"]["name"] for d in (sa, role, binding)} == {"fleetscan-nightly"}
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"], "resourceNames": ["api-0", "web-1"]},
        {
            "apiGroups": [""],
            "resources": ["pods/exec"],
            "verbs": ["get", "create"],
            "resourceNames": ["api-0", "web-1"],
        },
        # a debug container's readiness is watched, on exactly its pod
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"], "resourceNames": ["api-0"]},
        {
            "apiGroups": [""],
            "resources": ["pods/ephemeralcontainers"],
            "verbs": ["get", "patch"],
            "resourceNames": ["api-0"],
        },
    ]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "fleetscan-nightly", "namespace": "shop"}]
    assert sa["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "fleetscan"


def test_usage_errors_exit_64() -> None:
    for args in (
        ["rbac", "--namespace", "Shop", "--pods", "a"],
        ["rbac", "--namespace", "shop", "--pods", "a;rm"],
        ["rbac", "--namespace", "shop", "--pods", "a", "--token-seconds", "300"],
        ["--no-such-option"],
    ):
        out = subprocess.run([*FLEETSCAN, *args], capture_output=True, text=True, timeout=60, check=False)
        assert out.returncode == 64, args
        assert "error" in out.stderr.lower() or "usage" in out.stderr.lower()


def test_gc_with_an_unreadable_kubeconfig(tmp_path: Path) -> None:
    out = subprocess.run(
        [*FLEETSCAN, "gc", "--kubeconfig", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 64 and "cannot load" in out.stderr
