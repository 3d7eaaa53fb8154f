"""Real Prefect flow runs of the pipeline against the emulator (a temporary Prefect server)."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.testing.utilities import prefect_test_harness

from fleetscan.emulator.scenario import load_scenario, parse_scenario
from fleetscan.emulator.server import Emulator
from fleetscan.results.records import exit_code
from fleetscan.settings import ScanParams

from .kube_helpers import admin_kube

RBAC = "rbac.authorization.k8s.io"
FLEETSCAN = [sys.executable, "-m", "fleetscan"]


@pytest.fixture(scope="module")
def prefect_api() -> Iterator[str]:
    """A temporary Prefect server; its URL lets CLI subprocesses use it too."""
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    with prefect_test_harness(server_startup_timeout=120):
        from prefect.settings import PREFECT_API_URL

        yield str(PREFECT_API_URL.value())


def leftovers(emu: Emulator, tmp_path: Path) -> list[str]:
    kube = admin_kube(emu, tmp_path)
    selector = "app.kubernetes.io/managed-by=fleetscan"
    return (
        [
            f"sa/{x.metadata.name}"
            for x in kube.core.list_service_account_for_all_namespaces(label_selector=selector).items
        ]
        + [f"role/{x.metadata.name}" for x in kube.rbac.list_role_for_all_namespaces(label_selector=selector).items]
        + [
            f"rb/{x.metadata.name}"
            for x in kube.rbac.list_role_binding_for_all_namespaces(label_selector=selector).items
        ]
    )


def summary_of(out: Path) -> dict[str, Any]:
    return json.loads((out / "summary.json").read_text())


def by_key(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{t['namespace']}/{t['pod']}/{t['container']}": t for t in summary["targets"]}


def test_demo_fleet_scan(prefect_api: str, tmp_path: Path) -> None:
    from flows.fleet import fleet_scan, run_to_end

    with Emulator(load_scenario("demo")) as emu:
        kubeconfig = emu.write_kubeconfig(tmp_path / "kc")
        out = tmp_path / "run"
        result = run_to_end(
            fleet_scan,
            ScanParams(kubeconfig=str(kubeconfig), out=str(out), run_id="demo-test", debug_image="fleetscan/debug:1.0"),
        )
        assert leftovers(emu, tmp_path) == []
        audit = emu.client().audit()
    assert result.exit_code == 1 and result.run_id == "demo-test"
    s = summary_of(out)
    t = by_key(s)
    # 24 scanned, the maintenance shell skipped by annotation, and the two payments pods' scanner
    # sidecars accounted for as skipped: every container of a selected pod has a record
    assert s["totals"] == {"targets": 27, "passed": 14, "failed": 10, "error": 0, "skipped": 3}
    assert {t[k]["approach"] for k in ("shop/web-7d9f-abcde/web", "batch/etl-0/sidecar")} == {"exec"}
    assert t["shop/api-0/api"]["approach"] == "debug"  # distroless: no shell, no sidecar
    assert t["batch/importer/importer"]["approach"] == "debug"  # forced by its annotation
    assert t["payments/payments-6c5b-aaaaa/app"]["approach"] == "sidecar"
    assert t["platform/maintenance-shell/shell"]["outcome"] == "skipped"
    web = t["shop/web-7d9f-abcde/web"]
    assert web["outcome"] == "failed" and "failed.critical.max" in web["reason"] and web["exec_calls"] <= 3
    assert all(x["exec_calls"] <= 4 for x in s["targets"])  # sidecars: probe, locate, check, scan
    assert t["platform/node-agent-x1y2z/agent"]["outcome"] == "failed"  # privileged
    hdf = json.loads((out / web["hdf"]).read_text())
    failed = {c["id"] for c in hdf["profiles"][0]["controls"] if any(r["status"] == "failed" for r in c["results"])}
    assert {"CB-01", "CB-02", "CB-10"} <= failed  # world-writable, setuid helper, empty root password
    assert (out / "results.csv").read_text().count("\n") == 36 * 24 + 1  # scanned containers x controls
    report = (out / "report.md").read_text()
    assert "Most failed controls" in report
    assert '<table class="data" id="containers">' in (out / "report.html").read_text()
    # one aggregation: the console table and artifacts (summary.json) rank as report.md does
    worst = report.split("## Worst namespaces")[1].split("##")[0]
    ranked = [line.split("|")[1].strip() for line in worst.splitlines() if line.startswith("| ") and "---" not in line]
    assert ranked[1:] == [n["namespace"] for n in s["namespaces"]][: len(ranked) - 1]
    controls = report.split("## Most failed controls")[1].split("##")[0]
    top = [line.split("|")[1].strip() for line in controls.splitlines() if line.startswith("| ") and "---" not in line]
    assert top[1:] == [c["control"] for c in s["worst_controls"]][: len(top) - 1]
    scan_users = {a["user"] for a in audit if a["subresource"] == "exec"}
    assert scan_users and all(u.startswith("system:serviceaccount:") for u in scan_users)  # never the admin


def test_workload_scan_of_one_deployment(prefect_api: str, tmp_path: Path) -> None:
    from flows.fleet import run_to_end, workload_scan

    with Emulator(load_scenario("demo")) as emu:
        kubeconfig = emu.write_kubeconfig(tmp_path / "kc")
        result = run_to_end(
            workload_scan,
            "shop",
            "Deployment",
            "web",
            ScanParams(kubeconfig=str(kubeconfig), out=str(tmp_path / "w"), run_id="wl"),
        )
        assert leftovers(emu, tmp_path) == []
    assert result.totals["targets"] == 3 and result.totals["failed"] == 3
    web = {"web-7d9f-abcde", "web-7d9f-fghij", "web-7d9f-klmno"}
    assert {x["pod"] for x in summary_of(tmp_path / "w")["targets"]} == web


def test_task_runs_carry_no_tags(prefect_api: str, tmp_path: Path) -> None:
    """A task run with tags asks the server for its tag limits before it starts. On a SQLite server
    (the CLI's temporary one) that write fails with "database is locked" while other writes go on,
    and the client retries after 2 s: every namespace starting then stalled (docs/performance.md)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    from flows.fleet import fleet_scan, run_to_end

    one = "namespaces:\n  - name: ok\n    pods:\n      - {name: a, containers: [{name: c, image: busybox}]}\n"
    with Emulator(parse_scenario(one, "one.yaml")) as emu:
        kubeconfig = emu.write_kubeconfig(tmp_path / "kc")
        run_to_end(fleet_scan, ScanParams(kubeconfig=str(kubeconfig), out=str(tmp_path / "t"), run_id="untagged"))
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=["fleet untagged"])))
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [r.id for r in runs]}))
    assert len(runs) == 1 and {t.name.split("-")[0] for t in tasks} >= {"plan", "scan", "aggregate"}
    assert {t.name: t.tags for t in tasks if t.tags} == {}


def test_workload_scan_from_the_cli_as_a_ci_gate(prefect_api: str, tmp_path: Path) -> None:
    """`fleetscan scan --workload KIND/NAME --namespaces NS`: the same path, outputs and exit codes."""
    with Emulator(load_scenario("demo")) as emu:
        kubeconfig = emu.write_kubeconfig(tmp_path / "kc")
        gate = ["--workload", "statefulset/api", "--namespaces", "shop", "--output", "json"]
        run = cli(
            [
                "scan",
                "--kubeconfig",
                str(kubeconfig),
                *gate,
                "--out",
                str(tmp_path / "ci"),
                "--debug-image",
                "fleetscan/debug:1.0",
            ],
            prefect_api,
        )
        out, err = run.communicate(timeout=300)
        assert leftovers(emu, tmp_path) == []
        nope = ["--workload", "Deployment/nope", "--namespaces", "shop", "--out", str(tmp_path / "nope")]
        missing = cli(["scan", "--kubeconfig", str(kubeconfig), *nope], prefect_api)
        _, missing_err = missing.communicate(timeout=300)
    assert run.returncode == json.loads(out)["exit_code"], err
    assert {t["pod"] for t in summary_of(tmp_path / "ci")["targets"]} == {"api-0", "api-1"}
    assert (tmp_path / "ci" / "report.html").exists() and (tmp_path / "ci" / "results.csv").exists()
    assert missing.returncode == 2 and 'Deployment "shop/nope" does not exist' in missing_err


SMALL = """
namespaces:
  - name: ok
    pods:
      - {name: a, containers: [{name: c, image: busybox}]}
      - {name: b, containers: [{name: c, image: busybox}]}
  - name: refused
    pods:
      - {name: x, containers: [{name: c, image: busybox}]}
"""


def test_refused_namespace_is_errors_while_the_rest_completes(prefect_api: str, tmp_path: Path) -> None:
    """The orchestrator may manage credentials in `ok` but not in `refused`: its containers are errors."""
    import yaml

    from flows.fleet import fleet_scan, run_to_end

    with Emulator(parse_scenario(SMALL, "small.yaml")) as emu:
        kube = admin_kube(emu, tmp_path)
        role, _ = yaml.safe_load_all(Path("deployments/rbac/orchestrator.yaml").read_text())
        discovery_only = {"metadata": {"name": "discovery"}, "rules": role["rules"][:5]}
        kube.rbac.create_cluster_role(role)
        kube.rbac.create_cluster_role(discovery_only)
        token = emu.client().add_user("orchestrator")
        subject = [{"kind": "User", "name": "orchestrator"}]
        kube.rbac.create_cluster_role_binding(
            {
                "metadata": {"name": "discovery"},
                "subjects": subject,
                "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "discovery"},
            }
        )
        kube.rbac.create_namespaced_role_binding(
            "ok",
            {
                "metadata": {"name": "orchestrator"},
                "subjects": subject,
                "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": role["metadata"]["name"]},
            },
        )
        kubeconfig = emu.write_kubeconfig(tmp_path / "orch", token)
        result = run_to_end(
            fleet_scan,
            ScanParams(
                kubeconfig=str(kubeconfig), namespaces=["ok", "refused"], out=str(tmp_path / "r"), run_id="refused"
            ),
        )
        assert leftovers(emu, tmp_path) == []
    t = by_key(summary_of(tmp_path / "r"))
    assert result.exit_code == 2
    assert t["refused/x/c"]["outcome"] == "error"
    assert "no scan credentials for namespace 'refused'" in t["refused/x/c"]["reason"]
    assert "403" in t["refused/x/c"]["reason"]
    assert {t["ok/a/c"]["outcome"], t["ok/b/c"]["outcome"]} <= {"passed", "failed"}


def test_retries_for_throttling_and_dropped_streams_but_not_403(prefect_api: str, tmp_path: Path) -> None:
    from flows.fleet import fleet_scan, run_to_end

    with Emulator(parse_scenario(SMALL, "small.yaml")) as emu:
        kubeconfig = emu.write_kubeconfig(tmp_path / "kc")
        handle = emu.client()
        params = ScanParams(kubeconfig=str(kubeconfig), namespaces=["ok"], approach="exec", concurrency=1, retries=3)
        # a: two throttled exec upgrades, then fine; b: one stream cut mid-way, then fine
        handle.set_faults(
            errors=[{"path": "/namespaces/ok/pods/a/exec", "code": 503, "count": 2, "retry_after": 0}],
            exec_drop_after_bytes=50,
            exec_drop_count=1,
        )
        run_to_end(fleet_scan, params.model_copy(update={"out": str(tmp_path / "1"), "run_id": "retry1"}))
        t = by_key(summary_of(tmp_path / "1"))
        assert t["ok/a/c"]["outcome"] in ("passed", "failed") and t["ok/b/c"]["outcome"] in ("passed", "failed")
        assert t["ok/a/c"]["attempts"] + t["ok/b/c"]["attempts"] >= 3
        # a 403 is final: one attempt, an error with the reason
        handle.set_faults(errors=[{"path": "/namespaces/ok/pods/a/exec", "code": 403}])
        run_to_end(fleet_scan, params.model_copy(update={"out": str(tmp_path / "2"), "run_id": "retry2"}))
        t = by_key(summary_of(tmp_path / "2"))
        handle.clear_faults()
        assert t["ok/a/c"]["outcome"] == "error" and "403" in t["ok/a/c"]["reason"]
        assert t["ok/b/c"]["outcome"] != "error"
        assert leftovers(emu, tmp_path) == []


def cli(args: list[str], api: str, **kwargs: Any) -> subprocess.Popen[str]:
    env = dict(os.environ, PREFECT_API_URL=api, PREFECT_SERVER_ANALYTICS_ENABLED="false")
    return subprocess.Popen(
        [*FLEETSCAN, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs
    )


def test_resume_after_an_interrupted_run(prefect_api: str, tmp_path: Path) -> None:
    fleet = "namespaces:\n" + "".join(
        f"  - name: n{i}\n    pods:\n"
        + "".join(f"      - {{name: p{j}, containers: [{{name: c, image: busybox}}]}}\n" for j in range(4))
        for i in range(3)
    )
    with Emulator(parse_scenario(fleet, "fleet.yaml")) as emu:
        kubeconfig = emu.write_kubeconfig(tmp_path / "kc")
        emu.client().set_faults(latency=[{"path": "/exec$", "seconds": 0.5}])
        out = tmp_path / "run"
        args = [
            "scan",
            "--kubeconfig",
            str(kubeconfig),
            "--out",
            str(out),
            "--run-id",
            "resume1",
            "--concurrency",
            "2",
            "--quiet",
        ]
        first = cli(args, prefect_api)
        deadline = time.monotonic() + 120
        while len(list((out / "records").rglob("*.json"))) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        first.send_signal(signal.SIGKILL)  # interrupted half-way, without any chance to clean up
        first.wait()
        done_before = {p.relative_to(out / "records") for p in (out / "records").rglob("*.json")}
        assert 3 <= len(done_before) < 12
        emu.client().clear_faults()
        emu.client().clear_audit()
        second = cli(args, prefect_api)
        _, err = second.communicate(timeout=300)
        assert second.returncode in (0, 1), err
        rescanned = {(a["namespace"], a["name"]) for a in emu.client().audit(subresource="exec")}
        assert leftovers(emu, tmp_path) == []
    s = summary_of(out)
    assert s["totals"]["targets"] == 12 and s["totals"]["error"] == 0
    finished = {(str(p.parent.parent), str(p.parent.name)) for p in done_before}
    assert not (finished & rescanned)  # what was done is not scanned again


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--namespaces", "ok", "--threshold", "LENIENT"], 0),
        (["--namespaces", "ok", "--threshold", "STRICT"], 1),
        (["--namespaces", "ok", "--approach", "debug", "--no-debug", "--debug-image", "nope/missing:1"], 2),
        (["--profile", "no-such-profile"], 64),
        (["--approach", "teleport"], 64),
    ],
)
def test_exit_codes(prefect_api: str, tmp_path: Path, args: list[str], code: int) -> None:
    lenient = tmp_path / "lenient.yml"
    lenient.write_text("compliance:\n  min: 1\n")
    strict = Path(__file__).parent.parent / "fleetscan" / "profiles" / "strict.yml"
    args = [str(lenient) if a == "LENIENT" else str(strict) if a == "STRICT" else a for a in args]
    with Emulator(parse_scenario(SMALL, "small.yaml")) as emu:
        kubeconfig = emu.write_kubeconfig(tmp_path / "kc")
        run = cli(
            ["scan", "--kubeconfig", str(kubeconfig), "--out", str(tmp_path / "o"), "--output", "json", *args],
            prefect_api,
        )
        out, err = run.communicate(timeout=300)
    assert run.returncode == code, err
    if code in (0, 1, 2):
        assert json.loads(out)["exit_code"] == code


def test_namespace_that_keeps_failing_is_recorded_not_lost(prefect_api: str, tmp_path: Path) -> None:
    """Credential requests throttled beyond every retry: that namespace's containers become errors."""
    from flows.fleet import fleet_scan, run_to_end

    with Emulator(parse_scenario(SMALL, "small.yaml")) as emu:
        kubeconfig = emu.write_kubeconfig(tmp_path / "kc")
        emu.client().set_faults(
            errors=[{"path": "/namespaces/refused/serviceaccounts$", "code": 503, "method": "POST", "retry_after": 0}]
        )
        result = run_to_end(
            fleet_scan,
            ScanParams(
                kubeconfig=str(kubeconfig), namespaces=["ok", "refused"], out=str(tmp_path / "f"), run_id="keepsfailing"
            ),
        )
        emu.client().clear_faults()
        assert leftovers(emu, tmp_path) == []
    t = by_key(summary_of(tmp_path / "f"))
    assert result.exit_code == 2
    assert t["refused/x/c"]["outcome"] == "error" and "503" in t["refused/x/c"]["reason"]
    assert t["refused/x/c"]["reason"].startswith("namespace refused could not be scanned")
    assert t["ok/a/c"]["outcome"] == "passed"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--context", "nope"], 64, "context 'nope'"),
        (["--threshold", "MISSING"], 64, "cannot read the threshold file"),
        (["--namespaces", "does-not-exist"], 2, "none of the namespaces does-not-exist exists"),
        (["--selector", "app=nothing-has-this"], 2, "no container matched"),
    ],
)
def test_helpful_errors(prefect_api: str, tmp_path: Path, args: list[str], code: int, message: str) -> None:
    args = [str(tmp_path / "missing.yml") if a == "MISSING" else a for a in args]
    with Emulator(parse_scenario(SMALL, "small.yaml")) as emu:
        kubeconfig = emu.write_kubeconfig(tmp_path / "kc")
        run = cli(["scan", "--kubeconfig", str(kubeconfig), "--out", str(tmp_path / "o"), *args], prefect_api)
        _, err = run.communicate(timeout=300)
    assert run.returncode == code, err
    assert message in err and "Traceback" not in err


def test_unreachable_cluster(prefect_api: str, tmp_path: Path) -> None:
    dead = tmp_path / "dead.kubeconfig"
    dead.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: x\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"
    )
    run = cli(["scan", "--kubeconfig", str(dead), "--out", str(tmp_path / "o")], prefect_api)
    _, err = run.communicate(timeout=300)
    assert run.returncode == 2 and "cannot reach the API server" in err and "Traceback" not in err


def _servers_of(home: Path) -> list[int]:
    """Prefect API servers started for the Prefect home `home` (by its environment)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline, environ = (proc / "cmdline").read_bytes(), (proc / "environ").read_bytes()
        except OSError:
            continue
        if b"prefect.server.api.server:create_app" in cmdline and f"PREFECT_HOME={home}".encode() in environ:
            found.append(int(proc.name))
    return found


def test_the_temporary_server_waits_for_a_first_start_unless_told_otherwise(tmp_path: Path) -> None:
    """A new database's migrations can outlast Prefect's 20 s default on a busy machine, so the
    scan waits longer by default; a user's own PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS
    still wins, and when it runs out the scan says so and leaves no server behind."""
    from flows.ephemeral import STARTUP_TIMEOUT, _startup_timeout

    assert "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" not in os.environ
    assert _startup_timeout() == STARTUP_TIMEOUT >= 60
    home = tmp_path / "prefect"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="1")
    with Emulator(parse_scenario(SMALL, "small.yaml")) as emu:
        kubeconfig = emu.write_kubeconfig(tmp_path / "kc")
        args = ["scan", "--kubeconfig", str(kubeconfig), "--namespaces", "ok", "-q", "--out", str(tmp_path / "run")]
        done = subprocess.run([*FLEETSCAN, *args], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stderr[-3000:]
        assert "did not answer within 1 s (PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS)" in done.stderr
        assert "Traceback" not in done.stderr
        assert _servers_of(home) == [] and leftovers(emu, tmp_path) == []


def test_a_scan_that_stops_early_stops_its_temporary_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Without PREFECT_API_URL the server starts before the scan's checks, so its start-up overlaps
    them; a check that fails (a profile that does not exist, a cluster that does not answer) stops
    it: no server outlives the call, in a process that goes on (the kernel ends it when the
    process ends). The started server's pid comes from the log, since a check can fail sooner
    than a watcher of /proc sees it."""
    import typer

    from fleetscan.cli import run_scan

    home = tmp_path / "prefect"
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(home))
    for name, value in (("PREFECT_SERVER_ANALYTICS_ENABLED", "false"), ("PREFECT_LOGGING_LEVEL", "CRITICAL")):
        monkeypatch.setenv(name, value)  # run_scan's defaults, restored after the test
    caplog.set_level(logging.INFO, logger="flows.ephemeral")
    dead = tmp_path / "dead.kubeconfig"
    dead.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: x\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"
    )
    cases = [({"profile": str(tmp_path / "none.yml")}, 64), ({}, 2)]
    for extra, code in cases:
        caplog.clear()
        params = ScanParams(kubeconfig=str(dead), out=str(tmp_path / f"o{code}"), run_id="early", **extra)
        with pytest.raises(typer.Exit) as stopped:
            run_scan(params, show_progress=False, verbose=False)
        assert stopped.value.exit_code == code
        started = [int(m[1]) for r in caplog.records if (m := re.search(r"server starting: pid (\d+)", r.getMessage()))]
        assert len(started) == 1, "the temporary server was not started before the checks"
        assert not Path(f"/proc/{started[0]}").exists(), "the temporary server outlived the scan"
        assert _servers_of(home) == []


_HEARTBEAT_PROBE = """
from prefect import flow
from prefect.settings import get_current_settings
from flows.ephemeral import temporary_server

@flow
def probe() -> object:
    return get_current_settings().flows.heartbeat_frequency

with temporary_server() as url:
    print(url is not None, probe())
print(get_current_settings().flows.heartbeat_frequency)
"""


@pytest.mark.slow
def test_flow_runs_on_the_temporary_server_send_no_heartbeats(tmp_path: Path) -> None:
    """Nothing watches the heartbeats of a server that ends with the scan, and ending them costs
    each flow run up to a second; outside the temporary server Prefect's default is back."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_LOGGING_LEVEL="CRITICAL")
    done = subprocess.run(
        [sys.executable, "-c", _HEARTBEAT_PROBE], env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["True", "None", "180"]
    assert _servers_of(tmp_path / "prefect") == []


@pytest.mark.slow
def test_without_a_prefect_server_the_scan_starts_its_own_and_leaves_none(tmp_path: Path) -> None:
    """No PREFECT_API_URL: `fleetscan scan` runs against a temporary Prefect server in a subprocess,
    without importing Prefect's server itself (79 MB), and no server outlives the scan, even a
    scan killed with SIGKILL."""
    home = tmp_path / "prefect"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", PYTHONPROFILEIMPORTTIME="1")
    with Emulator(parse_scenario(SMALL, "small.yaml")) as emu:
        kubeconfig = emu.write_kubeconfig(tmp_path / "kc")
        args = [*FLEETSCAN, "scan", "--kubeconfig", str(kubeconfig), "--namespaces", "ok", "-q", "--output", "json"]
        done = subprocess.run(
            [*args, "--out", str(tmp_path / "run")], env=env, capture_output=True, text=True, timeout=240
        )
        said = "\n".join(line for line in done.stderr.splitlines() if "import time:" not in line)
        assert (tmp_path / "run" / "summary.json").exists(), f"exit {done.returncode}: {said[-3000:]}"
        summary = summary_of(tmp_path / "run")
        code = json.loads(done.stdout)["exit_code"]
        assert done.returncode == code == exit_code(summary["totals"]), done.stderr[-3000:]
        assert {t["pod"] for t in summary["targets"]} == {"a", "b"}
        imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "import time:" in line}
        assert "prefect.client.orchestration" in imported  # the import log is there
        assert "prefect.server.api.server" not in imported
        assert _servers_of(home) == [] and leftovers(emu, tmp_path) == []
        killed = subprocess.Popen(
            [*args, "--out", str(tmp_path / "killed")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            deadline = time.monotonic() + 120
            while not _servers_of(home) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert _servers_of(home), "no temporary server was started"
        finally:
            killed.kill()
            killed.wait()
        deadline = time.monotonic() + 30
        while _servers_of(home) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _servers_of(home) == []  # (a killed scan's credentials are for `fleetscan gc`)
