"""PolicyReports through the CLI under exactly the shipped orchestrator RBAC: one per scanned
namespace, valid against the shipped CRD's schema, results per workload and control that follow
the run's records, create-or-replace on the next run, and nothing foreign touched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator

from fleetscan.emulator.scenario import parse_scenario
from fleetscan.emulator.server import Emulator
from fleetscan.report.policy_reports import _parts

from .conftest import make_kubectl
from .kube_helpers import admin_kube
from .test_orchestrator_rbac import orchestrator

ROOT = Path(__file__).resolve().parent.parent
CRD = ROOT / "deployments" / "policy-reports" / "policyreports.crd.yaml"
FLEETSCAN = [sys.executable, "-m", "fleetscan"]
GROUP, VERSION, PLURAL = "wgpolicyk8s.io", "v1alpha2", "policyreports"
SCENARIO = """
namespaces:
  - name: fleetscan
  - name: team-a
    pods:
      - {name: web-1, owner: {kind: Deployment, name: web}, containers: [{name: web, image: busybox}]}
      - {name: web-2, owner: {kind: Deployment, name: web}, containers: [{name: web, image: busybox}]}
      - {name: root-shell, containers: [{name: main, image: busybox, securityContext: {privileged: true}}]}
  - name: team-b
    pods:
      - {name: lonely, containers: [{name: main, image: busybox}]}
"""


def schema() -> Draft7Validator:
    return Draft7Validator(yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def scan(kubeconfig: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    return subprocess.run(
        [*FLEETSCAN, "scan", "--kubeconfig", str(kubeconfig), "-q", "--namespaces", "team-a,team-b",
         "--out", str(out), *extra],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip


def reports(kubectl: Any, namespace: str) -> list[dict[str, Any]]:
    listed = json.loads(kubectl("get", "policyreports", "-n", namespace, "-o", "json", check=True).stdout)
    return sorted(listed["items"], key=lambda r: r["metadata"]["name"])


@pytest.mark.slow
def test_policy_reports_follow_the_run_and_replace_their_own(tmp_path: Path) -> None:
    with Emulator(parse_scenario(SCENARIO, "polr.yaml")) as emu:
        kubectl = make_kubectl(emu, tmp_path)
        kc = orchestrator(emu, tmp_path)
        # without the CRD: the run's verdicts stand, the missing CRD is a warning that says what to do
        done = scan(kc, tmp_path / "no-crd", "--policy-reports")
        assert done.returncode == 1, done.stderr  # root-shell is privileged
        assert "install deployments/policy-reports/policyreports.crd.yaml" in done.stderr

        kubectl("apply", "-f", str(CRD), check=True)
        kubectl("wait", "--for=condition=Established", "crd/policyreports.wgpolicyk8s.io", check=True)
        foreign = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "PolicyReport",
                   "metadata": {"name": "kyverno-web", "namespace": "team-a"}, "results": []}  # fmt: skip
        kubectl("apply", "-f", "-", stdin=yaml.safe_dump(foreign).encode(), check=True)
        files = tmp_path / "polr"
        done = scan(kc, tmp_path / "one", "--policy-reports", "--policy-reports-dir", str(files))
        assert done.returncode == 1, done.stderr
        assert "warning" not in done.stderr, done.stderr
        first = reports(kubectl, "team-a")
        assert [r["metadata"]["name"] for r in first] == ["fleetscan", "kyverno-web"]
        ours = first[0]
        assert ours["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "fleetscan"
        assert [r["metadata"]["name"] for r in reports(kubectl, "team-b")] == ["fleetscan"]
        # what the cluster holds is what the files say, and both match the CRD's schema
        (from_file,) = list(yaml.safe_load_all((files / "team-a.yaml").read_text()))
        assert from_file["results"] == ours["results"] and from_file["summary"] == ours["summary"]
        assert list(schema().iter_errors(ours)) == []
        # one result per workload and control, judged as the run's records judged each container
        summary = json.loads((tmp_path / "one" / "summary.json").read_text())
        controls = {t["pod"]: t for t in summary["targets"] if t["namespace"] == "team-a"}
        workloads = {(r["resources"][0]["kind"], r["resources"][0]["name"]) for r in ours["results"]}
        assert workloads == {("Deployment", "web"), ("Pod", "root-shell")}
        per_workload = len(ours["results"]) // 2
        assert per_workload == sum(controls["root-shell"]["counts"].values())
        shell = {r["policy"]: r["result"] for r in ours["results"] if r["resources"][0]["name"] == "root-shell"}
        assert list(shell.values()).count("fail") == controls["root-shell"]["counts"]["failed"]
        assert list(shell.values()).count("pass") == controls["root-shell"]["counts"]["passed"]
        counted = {k: sum(1 for r in ours["results"] if r["result"] == k) for k in ("pass", "fail", "error", "skip")}
        assert ours["summary"] == {**counted, "warn": 0}
        assert {r["source"] for r in ours["results"]} == {"fleetscan"}

        # the next run replaces its own report, leaves the foreign one alone
        done = scan(kc, tmp_path / "two", "--policy-reports")
        assert done.returncode == 1, done.stderr
        second = reports(kubectl, "team-a")
        assert [r["metadata"]["name"] for r in second] == ["fleetscan", "kyverno-web"]
        assert second[0]["metadata"]["uid"] == ours["metadata"]["uid"]  # replaced, not recreated
        run_of = [r["metadata"]["labels"]["fleetscan.io/run-id"] for r in (ours, second[0])]
        assert run_of[0] != run_of[1]
        assert second[1] == first[1]

        # a report named like fleetscan's but not managed by it is not overwritten
        admin = admin_kube(emu, tmp_path)
        admin.custom.delete_namespaced_custom_object(GROUP, VERSION, "team-b", PLURAL, "fleetscan")
        squatter = {**foreign, "metadata": {"name": "fleetscan", "namespace": "team-b"}}
        admin.custom.create_namespaced_custom_object(GROUP, VERSION, "team-b", PLURAL, squatter)
        done = scan(kc, tmp_path / "three", "--policy-reports")
        assert done.returncode == 1 and "fleetscan does not manage it" in done.stderr, done.stderr
        assert reports(kubectl, "team-b")[0]["results"] == []


def test_a_large_namespace_is_split_into_parts_that_add_up() -> None:
    results = [
        {"policy": f"CB-{i:02d}", "result": "fail" if i % 3 else "pass", "resources": [{"name": f"w{i}"}]}
        for i in range(300)
    ]
    parts = _parts("big", results, "r1", "container-baseline", part_bytes=4_000)
    assert len(parts) > 1 and [p["metadata"]["name"] for p in parts[:2]] == ["fleetscan", "fleetscan-2"]
    assert sum(len(p["results"]) for p in parts) == 300
    assert sum(p["summary"]["fail"] for p in parts) == 200 and sum(p["summary"]["pass"] for p in parts) == 100
    assert all(len(json.dumps(p["results"])) <= 4_000 + 200 for p in parts)
