"""Events and the shipped automation recipes on a real `prefect server`: a scan with a namespace
below its threshold and a container it cannot scan notifies a local webhook sink once per failing
namespace and once for the run's errors; the events carry what the docs say."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleetscan.emulator.scenario import parse_scenario
from fleetscan.emulator.server import Emulator

from .http_sink import http_sink
from .test_deployments import BIN, ROOT, client, run, server, wait_for

__all__ = ["server"]  # the real server fixture of the deployment tests

RECIPES = ROOT / "deployments" / "automations"
SCENARIO = """
images:
  acme/static:1.0: {base: distroless}
namespaces:
  - name: good
    pods: [{name: plain, containers: [{name: main, image: busybox}]}]
  - name: bad
    pods: [{name: root-shell, containers: [{name: main, image: busybox, securityContext: {privileged: true}}]}]
  - name: broken
    pods: [{name: static, containers: [{name: main, image: "acme/static:1.0"}]}]
"""


def fleetscan_scan(env: dict[str, str], kubeconfig: Path, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`fleetscan scan` forced to exec (the distroless container then cannot be scanned), its run id
    the run directory's name."""
    command = [str(BIN / "fleetscan"), "scan", "--kubeconfig", str(kubeconfig), "--approach", "exec", "-q"]
    command += ["--run-id", out.name, "--out", str(out), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_failing_namespaces_and_errors_reach_the_webhook(server: dict[str, str], tmp_path: Path) -> None:
    with http_sink() as sink, Emulator(parse_scenario(SCENARIO, "events.yaml")) as emu:
        made = run(
            server,
            sys.executable,
            "-c",
            "from prefect.blocks.webhook import Webhook\n"
            f"print(Webhook(method='POST', url='{sink.url}/hook', allow_private_urls=True)"
            ".save('fleetscan-alerts', overwrite=True))",
        )
        assert made.returncode == 0, made.stderr
        block_id = made.stdout.strip().splitlines()[-1]
        for recipe in ("namespace-below-threshold.yaml", "run-with-errors.yaml"):
            text = (RECIPES / recipe).read_text().replace("WEBHOOK_BLOCK_ID", block_id)
            (tmp_path / recipe).write_text(text)
            created = run(server, str(BIN / "prefect"), "automation", "create", "--from-file", str(tmp_path / recipe))
            assert created.returncode == 0, created.stdout + created.stderr
        kubeconfig = emu.write_kubeconfig(tmp_path / "kc")
        scan = fleetscan_scan(server, kubeconfig, tmp_path / "events-1", "--namespaces", "good,bad,broken")
        assert scan.returncode == 2, scan.stderr  # broken/static has no shell: an error, forced to exec

        def posted() -> list[dict[str, str]]:
            return [json.loads(r.body) for r in sink.requests if r.path == "/hook"]

        wait_for(lambda: len(posted()) >= 3, timeout=180, what="three webhook calls")
    calls = posted()
    namespaces = sorted(c["namespace"] for c in calls if c["event"] == "fleetscan.namespace.scanned")
    assert namespaces == ["bad", "broken"]  # good met its threshold: no call
    (errors,) = [c for c in calls if c["event"] == "fleetscan.run.completed"]
    assert errors["run_id"] == "events-1" and "could not scan 1 of 3 containers" in errors["text"]
    assert all(c["run_id"] == "events-1" for c in calls)

    def stored() -> list[dict[str, Any]]:
        found = httpx.post(
            f"{server['PREFECT_API_URL']}/events/filter",
            json={"filter": {"event": {"prefix": ["fleetscan."]}}, "limit": 50},
            timeout=30,
        )
        assert found.status_code == 200, found.text
        return list(found.json()["events"])

    # The server persists events a moment after the automations act on them: wait for all four.
    wait_for(lambda: len(stored()) >= 4, timeout=60, what="the run's four events stored")
    events = stored()
    completed = next(e for e in events if e["event"] == "fleetscan.run.completed")
    assert completed["resource"]["fleetscan.outcome"] == "error"
    assert completed["payload"]["totals"]["error"] == 1 and completed["payload"]["threshold"] == "error"
    assert completed["payload"]["report"].endswith("report.html")
    scanned = {e["resource"]["fleetscan.namespace"]: e for e in events if e["event"] == "fleetscan.namespace.scanned"}
    assert scanned["good"]["resource"]["fleetscan.threshold"] == "passed"
    assert scanned["bad"]["payload"]["failed"] == 1 and scanned["bad"]["payload"]["compliance"] is not None
    related = {r["prefect.resource.role"]: r["prefect.resource.id"] for r in scanned["bad"]["related"]}
    assert related["run"] == "fleetscan.run.events-1" and related["cluster"].startswith("fleetscan.cluster.")
    assert os.path.basename(completed["payload"]["report"]) == "report.html"
    with client(server) as c:  # the UI lists the run by what it scanned and its run id
        runs = {r.name: r for r in c.read_flow_runs(limit=200)}
    # the state policy: more than max_error_ratio (10%) unscanned fails the flow run; exit code as ever
    failed = runs["fleet good,bad,broken events-1"].state
    assert failed.is_failed() and "1 of 3 containers could not be scanned" in failed.message
    # without a share, the report link says which machine and path hold the report
    of_run = {"id": {"any_": [str(runs["fleet good,bad,broken events-1"].id)]}}
    links = httpx.post(
        f"{server['PREFECT_API_URL']}/artifacts/filter",
        json={"artifacts": {"key": {"any_": ["fleetscan-report"]}}, "flow_runs": of_run},
        timeout=30,
    ).json()
    (link,) = links
    where = str((tmp_path / "events-1" / "report.html").resolve())
    assert f"(on {socket.gethostname()}: {where})" in link["data"]


@pytest.mark.slow
def test_a_run_that_scanned_completes_whatever_its_verdicts(server: dict[str, str], tmp_path: Path) -> None:
    with Emulator(parse_scenario(SCENARIO, "events.yaml")) as emu:
        kubeconfig = emu.write_kubeconfig(tmp_path / "kc")
        tolerant = ["--namespaces", "good,bad,broken", "--max-error-ratio", "0.5"]
        scans = [
            fleetscan_scan(server, kubeconfig, tmp_path / "verdicts-1", "--namespaces", "good,bad"),
            fleetscan_scan(server, kubeconfig, tmp_path / "tolerated-1", *tolerant),
        ]
    assert [s.returncode for s in scans] == [1, 2], [s.stderr for s in scans]  # exit codes follow the records
    with client(server) as c:
        states = {r.name: r.state for r in c.read_flow_runs(limit=200)}
    assert states["fleet good,bad verdicts-1"].is_completed()  # a failed threshold is a verdict, not a failure
    assert states["fleet good,bad,broken tolerated-1"].is_completed()  # 1 of 3 is within its 50%
