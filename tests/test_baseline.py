"""The baseline gate through the CLI on a private emulator: with --fail-on-new, exit 1 means a
container/control fails now that did not fail in the baseline; pods replaced by a rollout are the
same workload, not new findings; fixed findings are listed; bad baselines fail before any cluster
call."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fleetscan.emulator.scenario import parse_scenario
from fleetscan.emulator.server import Emulator

from .kube_helpers import unreachable_kubeconfig

FLEETSCAN = [sys.executable, "-m", "fleetscan"]

SCENARIO = """\
images:
  test/app:1.0:
    base: busybox
    files:
      /etc/app.conf: {content: "mode=test\\n", mode: "0600", uid: 0, gid: 0}
namespaces:
  - name: gate
    pods:
      - name: web-5d8f-aaaaa
        owner: {kind: Deployment, name: web}
        containers: [{name: app, image: "test/app:1.0"}]
      - name: solo      # fails its threshold in every run: privileged
        containers: [{name: main, image: "test/app:1.0", securityContext: {privileged: true}}]
"""


def scan(kubeconfig: Path, out: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    done = subprocess.run(
        [*FLEETSCAN, "scan", "--kubeconfig", str(kubeconfig), "--namespaces", "gate", "-q", "--out", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    return done.returncode, summary, done.stderr


def kubectl(kubeconfig: Path, *args: str) -> str:
    binary = shutil.which("kubectl")
    if binary is None:
        pytest.skip("kubectl is not installed")
    done = subprocess.run([binary, "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def web_pod(kubeconfig: Path) -> str:
    names = kubectl(kubeconfig, "get", "pods", "-n", "gate", "-o", "name").split()
    (web,) = [n.removeprefix("pod/") for n in names if n.startswith("pod/web-")]
    return web


def finding(control: str) -> dict[str, str]:
    return {"namespace": "gate", "workload": "Deployment/web", "container": "app", "control": control}


@pytest.mark.slow
def test_fail_on_new_gates_on_new_findings_only(browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    runs = tmp_path / "runs"
    with Emulator(parse_scenario(SCENARIO, "gate.yaml")) as emu:
        kc = emu.write_kubeconfig(tmp_path / "kc")
        code, one, err = scan(kc, runs / "one")
        assert code == 1, err  # solo is privileged
        first_web = web_pod(kc)
        kubectl(kc, "rollout", "restart", "deployment/web", "-n", "gate")  # the pod gets a new name
        web = web_pod(kc)
        assert web != first_web
        kubectl(kc, "exec", "-n", "gate", web, "--", "chmod", "0666", "/etc/app.conf")  # world-writable now

        code, two, err = scan(kc, runs / "two", "--baseline", "previous", "--fail-on-new")
        assert code == 1, err
        assert two["baseline"]["run_id"] == one["run_id"]
        assert two["baseline"]["new_findings"] == [finding("CB-01")]  # not every control of the new pod
        assert (two["baseline"]["new"], two["baseline"]["fixed"]) == (1, 0)
        assert two["baseline"]["still_failing"] > 0

        code, three, err = scan(kc, runs / "three", "--baseline", str(runs / "two"), "--fail-on-new")
        assert code == 0, err  # nothing new, although solo still fails its threshold
        assert three["totals"]["failed"] >= 1 and three["baseline"]["new"] == 0

        kubectl(kc, "exec", "-n", "gate", web, "--", "chmod", "0600", "/etc/app.conf")
        code, four, err = scan(kc, runs / "four", "--baseline", "previous")
        assert code == 1, err  # without --fail-on-new the thresholds decide
        assert four["baseline"]["run_id"] == three["run_id"]
        assert four["baseline"]["fixed_findings"] == [finding("CB-01")]
    markdown = (runs / "two" / "report.md").read_text()
    assert f"## Against baseline run {one['run_id']}" in markdown
    assert "| gate | Deployment/web | app | CB-01 |" in markdown
    page = browser.new_page()
    page.goto((runs / "two" / "report.html").as_uri())
    assert page.inner_text("#baseline-counts").startswith(f"Against run {one['run_id']}: 1 new, 0 fixed")
    assert "gate / Deployment/web / app / CB-01" in page.inner_text("section:has(#baseline-counts)")
    page.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fail-on-new"], "--fail-on-new needs --baseline"),
        (["--baseline", "/nonexistent/run"], "--baseline /nonexistent/run: not a fleetscan run directory"),
        (["--baseline", "previous"], "--baseline previous: no earlier run in the history"),
    ],
)
def test_a_bad_baseline_fails_before_any_cluster_call(tmp_path: Path, args: list[str], message: str) -> None:
    kubeconfig = unreachable_kubeconfig(tmp_path / "kc")  # a call to it would exit 2, not 64
    code, _, err = scan(kubeconfig, tmp_path / "runs" / "x", *args)
    assert code == 64 and message in err, err
