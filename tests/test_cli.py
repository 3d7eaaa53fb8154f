"""The command line as a person uses it: output, exit codes, and usage errors before any cluster call."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

FLEETSCAN = [sys.executable, "-m", "fleetscan"]
ROOT = Path(__file__).resolve().parents[1]


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
    assert {d["metadata"]["name"] for d in (sa, role, binding)} == {"fleetscan-scan-0"}  # a slot
    assert {d["metadata"]["labels"]["fleetscan.io/run-id"] for d in (sa, role, binding)} == {"nightly"}
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
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "fleetscan-scan-0", "namespace": "shop"}]
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


def test_a_kubeconfig_that_is_not_yaml_is_bad_usage(tmp_path: Path) -> None:
    broken = tmp_path / "kubeconfig"
    broken.write_text("apiVersion: v1\nclusters: [unclosed\n  : : :\n")
    for command in (["scan", "--out", str(tmp_path / "run")], ["gc"], ["watch"]):
        out = subprocess.run(
            [*FLEETSCAN, *command, "--kubeconfig", str(broken)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api"},
        )
        assert out.returncode == 64, (command, out.stderr)
        assert f"cannot load {broken}" in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_a_workload_scan_needs_a_kind_and_one_namespace(tmp_path: Path) -> None:
    for args, message in (
        (["--workload", "web"], "write KIND/NAME"),
        (["--workload", "cronjob/web", "--namespaces", "shop"], "write KIND/NAME"),
        (["--workload", "deployment/web"], "exactly one namespace"),
        (["--workload", "deployment/web", "--namespaces", "a,b"], "exactly one namespace"),
    ):
        out = subprocess.run(
            [*FLEETSCAN, "scan", "--out", str(tmp_path / "run"), *args], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 64 and message in out.stderr, (args, out.stderr)


def test_an_installed_wheel_finds_the_saf_cli_or_says_how_to_install_it(tmp_path: Path) -> None:
    """Outside a checkout there is no .tools/: FLEETSCAN_TOOLS or FLEETSCAN_SAF point at the tools,
    and without them the message says how to install the SAF CLI."""
    code = (
        "from fleetscan.results.saf import SafCli\n"
        "from fleetscan.tools import SAF_HINT, tools_dir\n"
        "cli = SafCli.find()\n"
        "print(tools_dir(), cli.executable if cli else SAF_HINT)\n"
    )
    site = tmp_path / "site"  # the package as a wheel installs it: no pyproject.toml, no .tools/ beside it
    shutil.copytree(ROOT / "fleetscan", site / "fleetscan", ignore=shutil.ignore_patterns("__pycache__"))
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{site}:{':'.join(p for p in sys.path if 'site-packages' in p)}"}
    alone = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr
    assert alone.stdout.startswith("None ") and "npm install -g @mitre/saf@1.5.3" in alone.stdout
    tools = ROOT / ".tools"
    if not (tools / "saf" / "node_modules" / ".bin" / "saf").exists():
        return
    pointed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**env, "FLEETSCAN_TOOLS": str(tools)}
    )
    assert pointed.stdout.split()[1].endswith("saf"), pointed.stdout
